"""Crash-safe file writes: temporary file in the same directory, fsync, rename, fsync dir.

A reader (or a resumed run) only ever sees a complete file under its final name; a
crash leaves at worst a `*.tmp` file, which listings ignore and `remove_stale_temporaries`
cleans up.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any, Callable, Iterator

TMP_SUFFIX = ".tmp"


def temporary_path(final: Path, tag: str = "") -> Path:
    """The temporary name beside `final`: same directory, so the rename is atomic.

    Deterministic, so every rank of a distributed run names the same file; a leftover
    from an interrupted write under this name is simply overwritten. `tag` tells apart
    two temporaries for one final name (the serialized bytes, and a link being placed).
    """
    final = Path(final)
    return final.parent / f".{final.name}{tag}{TMP_SUFFIX}"


def fsync_path(path: Path) -> None:
    """Flush a file, or every file in a directory tree, to disk."""
    if path.is_dir():
        for child in sorted(path.rglob("*")):
            if child.is_file():
                fsync_path(child)
        fsync_dir(path)
        return
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def commit(tmp: Path, final: Path) -> None:
    """Make a fully written temporary file (or directory) durable under its final name."""
    fsync_path(tmp)
    os.replace(tmp, final)
    fsync_dir(final.parent)


def discard(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def write_atomic(final: Path, write: Callable[[Path], Any]) -> None:
    """Call `write(tmp_path)`, then commit it as `final`; on any error leave nothing behind."""
    final = Path(final)
    tmp = temporary_path(final)
    try:
        write(tmp)
        commit(tmp, final)
    except BaseException:
        discard(tmp)
        raise


def write_json_atomic(final: Path, payload: Any) -> None:
    def write(tmp: Path) -> None:
        with open(tmp, "w", encoding="utf-8") as handle:
            json.dump(payload, handle, indent=2, sort_keys=True)
            handle.write("\n")

    write_atomic(final, write)


def is_sharded_checkpoint(path: Any) -> bool:
    """A Distributed Checkpoint directory (FSDP's sharded format): DCP writes `.metadata` last."""
    path = Path(path)
    return path.is_dir() and (path / ".metadata").is_file()


def size_on_disk(path: Path) -> int:
    """Bytes of a file, or of every file in a directory checkpoint (sharded formats)."""
    path = Path(path)
    if path.is_dir():
        return sum(child.stat().st_size for child in path.rglob("*") if child.is_file())
    return path.stat().st_size


def _link_or_copy(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def link_or_copy_atomic(source: Path, final: Path) -> None:
    """Give an already durable file (or directory checkpoint) a second name without
    writing its bytes again: hard links, file by file for a directory."""
    tmp = temporary_path(final)
    discard(tmp)
    try:
        if source.is_dir():
            for child in sorted(source.rglob("*")):
                target = tmp / child.relative_to(source)
                if child.is_dir():
                    target.mkdir(parents=True, exist_ok=True)
                else:
                    target.parent.mkdir(parents=True, exist_ok=True)
                    _link_or_copy(child, target)
            tmp.mkdir(exist_ok=True)
        else:
            _link_or_copy(source, tmp)
        commit(tmp, final)
    except BaseException:
        discard(tmp)
        raise


def is_temporary(path: Path) -> bool:
    return path.name.startswith(".") and path.name.endswith(TMP_SUFFIX)


def replace_directory(written: Path, final: Path) -> None:
    """Put a fully written directory in place of `final` (which may exist): fsync its files,
    move the old one aside, move the new one in, fsync the parent, delete the old one.
    Readers see the old directory or the new one, never a mix of both."""
    fsync_path(written)
    old = temporary_path(final, tag=".old")
    discard(old)
    if final.exists():
        os.replace(final, old)
    os.replace(written, final)
    fsync_dir(final.parent)
    discard(old)


def stale_temporaries(directory: Path) -> Iterator[Path]:
    return (p for p in Path(directory).glob(f".*{TMP_SUFFIX}"))


def remove_stale_temporaries(directory: Path) -> list[Path]:
    """Delete leftovers of interrupted writes (only ever our own `.name.XXXX.tmp` files)."""
    removed = []
    for path in stale_temporaries(directory):
        discard(path)
        removed.append(path)
    return removed
