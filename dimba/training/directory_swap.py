"""Sharded checkpoint directories, swapped in whole: the on-disk half of sharded saving, for
`last.ckpt/` and milestones alike (`dimba.training.sharded_milestones` decides what a sharded
milestone holds and when it is written).

Lightning writes a sharded checkpoint (`last.ckpt/` under FSDP's `state_dict_type="sharded"`)
in place: shards are overwritten file by file and `meta.pt` is a plain `torch.save`, so a
crash in the middle would leave an old `.metadata` beside torn shards, which a resume would
trust. With this mixin every rank writes into a temporary directory beside the target;
after a barrier rank 0 swaps it in (`atomic_io.replace_directory`). Milestones are written
with `save_shards` into their own temporary and published by the milestone writer.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Optional

from dimba import internals
from dimba.checkpointing import atomic_io


class WholeDirectorySaves:
    """Mix in before a Lightning strategy class whose sharded `save_checkpoint` writes a directory."""

    def save_shards(self, checkpoint: Dict[str, Any], directory: Path) -> None:
        """Every rank writes its shards into `directory` as given."""
        super().save_checkpoint(checkpoint, directory)  # type: ignore[misc]

    def save_checkpoint(self, checkpoint: Dict[str, Any], filepath: Any, storage_options: Optional[Any] = None) -> None:
        if not internals.writes_sharded_checkpoints(self):
            return super().save_checkpoint(checkpoint, filepath, storage_options)  # type: ignore[misc]
        final = Path(self.broadcast(filepath))  # type: ignore[attr-defined]
        tmp = atomic_io.temporary_path(final, tag=".shards")
        if self.is_global_zero:  # type: ignore[attr-defined]
            atomic_io.discard(tmp)  # a leftover of an interrupted write
        self.barrier("dimba_sharded_save_start")  # type: ignore[attr-defined]
        super().save_checkpoint(checkpoint, tmp, storage_options)  # type: ignore[misc]
        self.barrier("dimba_sharded_save_written")  # type: ignore[attr-defined]
        if self.is_global_zero:  # type: ignore[attr-defined]
            atomic_io.replace_directory(tmp, final)
        self.barrier("dimba_sharded_save_published")  # type: ignore[attr-defined]
