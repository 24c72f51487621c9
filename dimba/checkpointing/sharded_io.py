"""Sharded checkpoint directories, swapped in whole.

Lightning's FSDP strategy writes a sharded checkpoint (`last.ckpt/` under
`state_dict_type="sharded"`) in place: shards are overwritten file by file and `meta.pt` is
a plain `torch.save`, so a crash in the middle leaves an old `.metadata` beside torn
shards, which a resume would trust. With this mixin every rank writes into a temporary
directory beside the target; after a barrier rank 0 swaps it in
(`atomic_io.replace_directory`). Paths that already are temporaries (the milestone
callback publishes its own) are written as given.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Optional

from dimba.checkpointing import atomic_io


class AtomicShardedSaves:
    """Mix in before a Lightning strategy class whose sharded `save_checkpoint` writes a directory."""

    def save_checkpoint(self, checkpoint: Dict[str, Any], filepath: Any, storage_options: Optional[Any] = None) -> None:
        if getattr(self, "_state_dict_type", None) != "sharded":
            return super().save_checkpoint(checkpoint, filepath, storage_options)  # type: ignore[misc]
        final = Path(self.broadcast(filepath))  # type: ignore[attr-defined]
        if atomic_io.is_temporary(final):
            return super().save_checkpoint(checkpoint, final, storage_options)  # type: ignore[misc]
        tmp = atomic_io.temporary_path(final, tag=".shards")
        if self.is_global_zero:  # type: ignore[attr-defined]
            atomic_io.discard(tmp)  # a leftover of an interrupted write
        self.barrier("dimba_sharded_save_start")  # type: ignore[attr-defined]
        super().save_checkpoint(checkpoint, tmp, storage_options)  # type: ignore[misc]
        self.barrier("dimba_sharded_save_written")  # type: ignore[attr-defined]
        if self.is_global_zero:  # type: ignore[attr-defined]
            atomic_io.replace_directory(tmp, final)
        self.barrier("dimba_sharded_save_published")  # type: ignore[attr-defined]
