"""The one writer of milestone checkpoints, for both trainers and the ProgressiveCheckpointManager.

A save is a `PendingSave` (what the milestone checkpointer decided) plus a checkpoint dictionary. The
bytes go into a temporary beside the final name and are fsynced; then, per milestone, its
sidecar is written and only then does the checkpoint get its final name (a hard link to
the same bytes). A checkpoint under its final name therefore always has its sidecar, and a
sidecar never describes bytes that are not durable. Sharded checkpoints (a directory of
shards every rank wrote) are published the same way by rank zero.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence

import torch

from dimba.checkpointing import atomic_io
from dimba.checkpointing import format as ckpt_format
from dimba.checkpointing.milestones import format_param_count, milestone_label
from dimba.checkpointing.pending import PendingSave
from dimba.errors import CheckpointWriteError

log = logging.getLogger("dimba.checkpointing")


def describe_write_failure(exc: BaseException, directory: Path) -> str:
    """One line for a failed write. torch's zip writer reports a full disk as a bare
    RuntimeError ("unexpected pos ..."), so the free space is checked to name it."""
    if isinstance(exc, CheckpointWriteError) and exc.__cause__ is not None:
        exc = exc.__cause__
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    try:
        if shutil.disk_usage(directory).free < 1 << 20:
            return "No space left on device"
    except OSError:
        pass
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def milestone_failure(exc: BaseException, final: Path) -> str:
    if isinstance(exc, CheckpointWriteError) and str(exc).startswith("Cannot write milestone"):
        return str(exc)
    return f"Cannot write milestone checkpoint {final}: {describe_write_failure(exc, final.parent)}"


def save_atomically(checkpoint: Dict[str, Any], final: Path) -> None:
    """`torch.save` to `final` through a temporary beside it (Lightning's own checkpoints)."""
    final = Path(final)
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        atomic_io.write_atomic(final, lambda tmp: torch.save(checkpoint, tmp))
    except Exception as exc:
        raise CheckpointWriteError(f"Cannot write checkpoint {final}: {describe_write_failure(exc, final.parent)}") from exc


def milestone_paths(save_dir: Path, pending: PendingSave) -> Dict[int, Path]:
    return {m: Path(save_dir) / ckpt_format.checkpoint_name(m, pending.global_step) for m in sorted(pending.milestones)}


def staging_path(save_dir: Path, pending: PendingSave) -> Path:
    """Where the bytes of a save are written before they are published (one per save)."""
    return atomic_io.temporary_path(milestone_paths(save_dir, pending)[pending.largest], tag=".data")


def model_record(model: Any, growth_history: Sequence[Mapping[str, Any]] = (), **extra: Any) -> Dict[str, Any]:
    """What every checkpoint records about the model under its `dimba` key: enough to rebuild
    it alone (the architecture after growth) and to tell how it got there."""
    record: Dict[str, Any] = {"growth_history": [dict(e) for e in growth_history], **extra}
    config = getattr(model, "config", None)
    if hasattr(config, "to_dict"):
        record["architecture"] = config.to_dict()
    return record


def build_milestone_checkpoint(base: Mapping[str, Any], model_state: Mapping[str, Any],
                               optimizer_state: Optional[Mapping[str, Any]], param_names: Optional[List[List[str]]],
                               pending: PendingSave, milestones: Sequence[int], reached: Sequence[int]) -> Dict[str, Any]:
    """A milestone checkpoint: `base` (Lightning's own dict, or empty) plus the milestone format's
    keys. `model_state` and `optimizer_state` may alias tensors of `base`: `torch.save`
    stores each storage once, so nothing is written twice."""
    checkpoint = dict(base)
    checkpoint["model_state_dict"] = dict(model_state)
    if optimizer_state is not None:
        checkpoint["optimizer_state_dict"] = optimizer_state
        checkpoint["optimizer_param_names"] = param_names
    checkpoint.update(ckpt_format.milestone_entries(pending.global_step, list(pending.milestones),
                                                    pending.current_params, list(milestones), list(reached),
                                                    pending.metadata))
    return checkpoint


def save_file(checkpoint: Mapping[str, Any], tmp: Path, final: Path) -> None:
    """Write and fsync the bytes of a save into its temporary (never under a final name)."""
    try:
        tmp.parent.mkdir(parents=True, exist_ok=True)
        torch.save(dict(checkpoint), tmp)
        atomic_io.fsync_path(tmp)
    except BaseException as exc:
        atomic_io.discard(tmp)
        if isinstance(exc, Exception):
            raise CheckpointWriteError(milestone_failure(exc, final)) from exc
        raise


def publish(written: Path, pending: PendingSave, save_dir: Path, milestones: Sequence[int],
            reached: Sequence[int]) -> Dict[int, Path]:
    """Give durable bytes (a file, or a directory of shards) each milestone's name, with its
    sidecar first. Consumes `written`. Errors name the checkpoint."""
    paths = milestone_paths(save_dir, pending)
    final = paths[pending.largest]
    all_reached = sorted(set(int(m) for m in reached) | set(pending.milestones))
    try:
        atomic_io.fsync_path(written)
        size = atomic_io.size_on_disk(written)
        for milestone, path in paths.items():
            if path.exists():  # never replace a checkpoint: it is another save's (a sidecar describes it)
                raise FileExistsError("a checkpoint of that name exists and is not replaced")
            sidecar = ckpt_format.new_sidecar(path, milestone, list(paths.values()), pending.global_step,
                                              pending.current_params, list(milestones), all_reached,
                                              pending.metadata, size, sharded=written.is_dir())
            sidecar.write(ckpt_format.sidecar_of(path))
            atomic_io.link_or_copy_atomic(written, path)
    except Exception as exc:
        raise CheckpointWriteError(milestone_failure(exc, final)) from exc
    finally:
        atomic_io.discard(written)
    for milestone, path in paths.items():
        log.info("🎯 Progressive checkpoint saved: %s (current: %s) at step %d\n   Path: %s",
                 milestone_label(milestone), format_param_count(pending.current_params), pending.global_step, path)
    return paths


def write_milestones(checkpoint: Mapping[str, Any], pending: PendingSave, save_dir: Path,
                     milestones: Sequence[int], reached: Sequence[int]) -> Dict[int, Path]:
    """Write a one-file milestone checkpoint and publish it under every milestone it saves."""
    tmp = staging_path(save_dir, pending)
    try:
        save_file(checkpoint, tmp, milestone_paths(save_dir, pending)[pending.largest])
        return publish(tmp, pending, save_dir, milestones, reached)
    finally:
        atomic_io.discard(tmp)  # published (linked under its names) or failed: never left behind
