"""What a path is (a checkpoint file, a sharded directory, an export, a sidecar), told from
its name and bytes before torch sees it. Torch-free.

The one owner of that question (`checkpoint_kind`); `dimba.io.read.open_checkpoint` opens
what it finds. Loading asks whether a path can be a checkpoint at all; resuming (`ckpt_path=`, `resume=auto`) asks, more strictly, whether it is
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
from dimba.checkpointing.record import EXPORT_CONFIG
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


KINDS = ("file", "sharded", "export", "sidecar")
"""What a path can be: a one-file checkpoint (a milestone's .pt, Lightning's .ckpt), a
sharded (Distributed Checkpoint) directory, a `dimba checkpoints export` directory, or a
milestone's JSON sidecar."""


def checkpoint_kind(path: PathLike) -> str:
    """What `path` is (one of KINDS), told from its name and first bytes; a
    CheckpointLoadError naming it where it can be none of them: missing, empty, a directory
    with neither shards nor an export's config, neither a zip archive nor a pickle."""
    path = Path(path)
    if path.suffix == ".json" and path.is_file():
        return "sidecar"
    if not path.exists():
        raise CheckpointLoadError(f"{path}: no such file or directory")
    if path.is_dir():
        if is_sharded_checkpoint(path):
            return "sharded"
        if (path / EXPORT_CONFIG).is_file():
            return "export"
        raise CheckpointLoadError(f"{path} is a directory that holds no checkpoint (neither Distributed Checkpoint "
                                  f"shards with their .metadata nor an export's {EXPORT_CONFIG})")
    try:
        with path.open("rb") as handle:
            head = handle.read(4)
    except OSError as exc:
        raise CheckpointLoadError(f"cannot read {path}: {exc.strerror or exc}") from None
    if not head:
        raise CheckpointLoadError(f"{path} is empty (0 bytes): not a checkpoint, or an interrupted write")
    if head != ZIP_MAGIC and head[:1] != PICKLE_MAGIC:
        raise CheckpointLoadError(f"{path} is not a checkpoint (neither a PyTorch zip archive nor a pickle)")
    return "file"


def check_checkpoint_file(path: PathLike, resumable: bool = False) -> str:
    """`checkpoint_kind(path)` for a path that holds a checkpoint's tensors (`resumable`: a
    whole Lightning checkpoint a run continues from); a CheckpointLoadError naming `path`
    otherwise: a sidecar, (resumable) an export, a legacy pickle or a truncated zip."""
    path = Path(path)
    kind = checkpoint_kind(path)
    if kind == "sidecar":
        raise CheckpointLoadError(f"{path} is a milestone's JSON sidecar; pass the checkpoint it describes "
                                  f"({path.with_suffix('.pt').name})")
    if not resumable or kind == "sharded":
        return kind
    if kind == "export":
        raise CheckpointLoadError(f"{path} is an export (weights only): a run resumes from a Lightning checkpoint")
    with path.open("rb") as handle:
        zipped = handle.read(4) == ZIP_MAGIC
    if not zipped:
        raise CheckpointLoadError(f"{path} is not a checkpoint a run resumes from (not a PyTorch zip archive)")
    if not is_whole_zip(path):
        raise CheckpointLoadError(f"{path} is truncated or corrupt (its zip archive has no central directory)")
    return kind
