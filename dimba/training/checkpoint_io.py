"""Lightning CheckpointIO that writes every checkpoint atomically and loads it safely.

Lightning's default IO serializes into memory and then writes the final path, so a kill
during the write leaves a truncated `last.ckpt`. This one streams `torch.save` into a
temporary file beside the target, fsyncs it, renames it and fsyncs the directory; and it
always loads with `weights_only=True`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Dict, Optional

from lightning.fabric.plugins import TorchCheckpointIO

from dimba.io.writer import save_atomically


class AtomicCheckpointIO(TorchCheckpointIO):
    def save_checkpoint(self, checkpoint: Dict[str, Any], path: Any, storage_options: Optional[Any] = None) -> None:
        save_atomically(checkpoint, Path(path))

    def load_checkpoint(self, path: Any, map_location: Optional[Callable] = lambda storage, loc: storage,
                        weights_only: Optional[bool] = None) -> Dict[str, Any]:
        return super().load_checkpoint(path, map_location=map_location, weights_only=True)
