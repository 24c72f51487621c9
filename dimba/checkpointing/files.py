"""Whether a path holds a checkpoint, told from its bytes before torch sees it. Torch-free.

The one owner of that question: loading (`dimba.io.read`) asks whether a file can be a
checkpoint at all; resuming (`ckpt_path=`, `resume=auto`) asks, more strictly, whether it is
a whole Lightning checkpoint, the only kind a run continues from: a zip archive written to
its end (a truncated zip has no central directory), or a sharded directory (`.metadata` is
written last). A legacy pickle-format file loads, but no run writes one to resume from.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path
from typing import Union

from dimba.checkpointing.atomic_io import is_sharded_checkpoint
from dimba.errors import CheckpointLoadError

PathLike = Union[str, os.PathLike]
ZIP_MAGIC, PICKLE_MAGIC = b"PK\x03\x04", b"\x80"


def is_whole_zip(path: Path) -> bool:
    try:
        with zipfile.ZipFile(path) as archive:
            archive.infolist()
    except (OSError, zipfile.BadZipFile):
        return False
    return True


def looks_complete(path: Path) -> bool:
    """A Lightning checkpoint that was written to the end: a whole zip, or a sharded directory."""
    path = Path(path)
    return is_sharded_checkpoint(path) if path.is_dir() else is_whole_zip(path)


def check_checkpoint_file(path: PathLike, resumable: bool = False) -> None:
    """A CheckpointLoadError naming `path` where it cannot be a checkpoint (`resumable`: a whole
    Lightning checkpoint): missing, a milestone's JSON sidecar, empty, a directory without
    shards, neither a zip archive nor a pickle (resumable: not a zip), or a truncated zip."""
    path = Path(path)
    if path.suffix == ".json" and path.is_file():
        raise CheckpointLoadError(f"{path} is a milestone's JSON sidecar; pass the checkpoint it describes "
                                  f"({path.with_suffix('.pt').name})")
    if not path.exists():
        raise CheckpointLoadError(f"{path}: no such file or directory")
    if path.is_dir():
        if not is_sharded_checkpoint(path):
            raise CheckpointLoadError(f"{path} is a directory without Distributed Checkpoint shards (no .metadata: "
                                      f"not a checkpoint, or an incomplete one)")
        return
    try:
        with path.open("rb") as handle:
            head = handle.read(4)
    except OSError as exc:
        raise CheckpointLoadError(f"cannot read {path}: {exc.strerror or exc}") from None
    if not head:
        raise CheckpointLoadError(f"{path} is empty (0 bytes): not a checkpoint, or an interrupted write")
    if resumable and head != ZIP_MAGIC:
        raise CheckpointLoadError(f"{path} is not a checkpoint a run resumes from (not a PyTorch zip archive)")
    if head != ZIP_MAGIC and head[:1] != PICKLE_MAGIC:
        raise CheckpointLoadError(f"{path} is not a checkpoint (neither a PyTorch zip archive nor a pickle)")
    if resumable and not is_whole_zip(path):
        raise CheckpointLoadError(f"{path} is truncated or corrupt (its zip archive has no central directory)")
