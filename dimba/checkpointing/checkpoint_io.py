"""Lightning CheckpointIO that writes every checkpoint atomically and loads it safely.

Lightning's default IO serializes into memory and then writes the final path, so a kill
during the write leaves a truncated `last.ckpt`. This one streams `torch.save` into a
temporary file beside the target, fsyncs it, renames it and fsyncs the directory; and it
always loads with `weights_only=True`.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Callable, Dict, Optional

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

from dimba.checkpointing import atomic_io


class CheckpointWriteError(RuntimeError):
    """A checkpoint could not be written; the message names the file and the cause."""


def describe_write_failure(exc: BaseException, directory: Path) -> str:
    """One line for a failed write. torch's zip writer reports a full disk as a bare
    RuntimeError ("unexpected pos ..."), so the free space is checked to name it."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    try:
        if shutil.disk_usage(directory).free < 1 << 20:
            return "No space left on device"
    except OSError:
        pass
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def save_atomically(checkpoint: Dict[str, Any], path: Path) -> None:
    """Write `path` atomically; a path that is itself a temporary (the milestone callback
    publishes its own) is only written and fsynced: no second rename is needed."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if atomic_io.is_temporary(path):
            try:
                torch.save(checkpoint, path)
                atomic_io.fsync_path(path)
            except BaseException:
                atomic_io.discard(path)
                raise
            return
        atomic_io.write_atomic(path, lambda tmp: torch.save(checkpoint, tmp))
    except Exception as exc:
        raise CheckpointWriteError(f"Cannot write checkpoint {path}: {describe_write_failure(exc, path.parent)}") from exc


class AtomicCheckpointIO(TorchCheckpointIO):
    def save_checkpoint(self, checkpoint: Dict[str, Any], path: Any, storage_options: Optional[Any] = None) -> None:
        save_atomically(checkpoint, Path(path))

    def load_checkpoint(self, path: Any, map_location: Optional[Callable] = lambda storage, loc: storage,
                        weights_only: Optional[bool] = None) -> Dict[str, Any]:
        return super().load_checkpoint(path, map_location=map_location, weights_only=True)
