"""The milestone checkpointer: the one owner of progressive checkpointing's decisions.

It holds a save directory's milestone state (configured, reached, being written), decides
what is due after an optimizer step, assembles what a save writes (the milestone format's
keys around a trainer's checkpoint) and writes it, learns each save's outcome, and checks
the state against the disk after a resume. The `ProgressiveCheckpointManager` API, the
Lightning callback and `SimpleTrainer` are adapters over it: they decide *when* to ask
(their hooks) and *how* tensors are gathered (their strategies), never what is reached.

Outcomes are learned on the training thread only: `published` once files are durable,
`abandoned` if a write failed. A background write therefore never changes the state behind
the trainer's back; it returns a result the trainer applies (as torchtitan's
`CheckpointManager` does with its async saves).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

from dimba.checkpointing import atomic_io
from dimba.checkpointing import format as ckpt_format
from dimba.checkpointing.milestones import MilestoneTracker, milestone_label, parse_milestones
from dimba.checkpointing.pending import PendingSave
from dimba.io import writer

log = logging.getLogger("dimba.checkpointing")
PathLike = Union[str, os.PathLike]


class MilestoneCheckpointer:
    """Milestone state, save policy, assembly, writes and the check against the disk."""

    def __init__(self, milestones: Sequence[Any], save_dir: PathLike, enabled: bool = True) -> None:
        self.enabled = bool(enabled)
        self.save_dir = Path(save_dir)
        self._tracker = MilestoneTracker(parse_milestones(list(milestones)) if milestones else [])
        self.in_flight: Tuple[int, ...] = ()  # milestones whose background write is not yet durable
        self._last_step: Optional[int] = None

    # ----------------------------------------------------------------- state
    @property
    def milestones(self) -> List[int]:
        return list(self._tracker.milestones)

    @property
    def reached(self) -> List[int]:
        return list(self._tracker.reached)

    def next_milestone(self) -> Optional[int]:
        return self._tracker.next_milestone()

    def crossed(self, count: int) -> List[int]:
        """Milestones at or below `count` not saved yet, smallest first."""
        return self._tracker.crossed(count)

    def state_dict(self) -> Dict[str, List[int]]:
        return self._tracker.state_dict()

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self._tracker.load_state_dict(dict(state))

    def adopt_reached(self, reached: Iterable[int]) -> None:
        """Take rank zero's reached list (after it checked the disk), so every rank decides alike."""
        self._tracker.reached = sorted({int(m) for m in reached})

    # ----------------------------------------------------------------- the policy
    def start_at(self, step: int) -> None:
        self._last_step = step

    def due(self, step: int, count: int, metadata: Optional[Dict[str, Any]] = None) -> Optional[PendingSave]:
        """The save to make after optimizer step `step` with `count` parameters, or None.

        A batch without an optimizer step (gradient accumulation) leaves the step unchanged,
        and nothing is due twice for one step; a milestone being written is not due again."""
        if not self.enabled or step == self._last_step:
            return None
        self._last_step = step
        crossed = [m for m in self.crossed(count) if m not in self.in_flight]
        return PendingSave(tuple(crossed), step, count, dict(metadata or {})) if crossed else None

    def started(self, pending: PendingSave, background: bool) -> None:
        if background:
            self.in_flight = tuple(sorted(set(self.in_flight) | set(pending.milestones)))

    def published(self, milestones: Iterable[int]) -> None:
        done = {int(m) for m in milestones}
        self._tracker.mark_reached(sorted(done))
        self.in_flight = tuple(m for m in self.in_flight if m not in done)

    def abandoned(self, milestones: Iterable[int]) -> None:
        failed = {int(m) for m in milestones}
        self.in_flight = tuple(m for m in self.in_flight if m not in failed)

    # ----------------------------------------------------------------- what is written
    def assemble(self, base: Dict[str, Any], model_state: Mapping[str, Any], optimizer_state: Optional[Mapping[str, Any]],
                 param_names: Optional[List[List[str]]], pending: PendingSave) -> Dict[str, Any]:
        """`base` (a trainer's checkpoint) with the milestone format's keys, tensors included."""
        return writer.build_milestone_checkpoint(base, model_state, optimizer_state, param_names, pending,
                                                 self.milestones, self.reached)

    def describe(self, pending: PendingSave) -> Dict[str, Any]:
        """The milestone format's plain-data keys alone (a sharded checkpoint keeps its tensors in shards)."""
        return ckpt_format.milestone_entries(pending.global_step, list(pending.milestones), pending.current_params,
                                             self.milestones, self.reached, pending.metadata)

    def write(self, checkpoint: Mapping[str, Any], pending: PendingSave) -> Dict[int, Path]:
        """Write and publish `pending` now (rank zero); its milestones are reached when this returns."""
        paths = writer.write_milestones(checkpoint, pending, self.save_dir, self.milestones, self.reached)
        self.published(pending.milestones)
        return paths

    def writer_for(self, pending: PendingSave) -> Callable[[Mapping[str, Any]], Dict[int, Path]]:
        """A write of `pending` to run later (in the background) against this moment's state;
        its outcome comes back through `published` or `abandoned`."""
        save_dir, milestones, reached = self.save_dir, self.milestones, self.reached
        return lambda checkpoint: writer.write_milestones(checkpoint, pending, save_dir, milestones, reached)

    def final_path(self, pending: PendingSave) -> Path:
        return writer.milestone_paths(self.save_dir, pending)[pending.largest]

    def failure(self, exc: BaseException, pending: PendingSave) -> str:
        return writer.milestone_failure(exc, self.final_path(pending))

    def prepare_save_dir(self) -> None:
        """Create the directory and drop leftovers of interrupted writes: temporary files,
        and sidecars of ours whose checkpoint never got its final name. A checkpoint file
        is never deleted: one without a sidecar is simply not a milestone checkpoint."""
        self.save_dir.mkdir(parents=True, exist_ok=True)
        leftovers = list(atomic_io.remove_stale_temporaries(self.save_dir))
        for sidecar in ckpt_format.sidecars_in(self.save_dir):
            if not sidecar.with_suffix(".pt").exists() and ckpt_format.is_our_sidecar(sidecar):
                sidecar.unlink(missing_ok=True)
                leftovers.append(sidecar)
        for path in leftovers:
            log.warning("Removed an incomplete checkpoint write: %s", path)

    # ----------------------------------------------------------------- the disk
    def list_checkpoints(self) -> List[Dict[str, Any]]:
        """Milestone checkpoints in `save_dir` from their sidecars alone (no torch); an
        unreadable one is listed with its error, one without its sidecar is not listed."""
        listed = []
        for entry in ckpt_format.entries_in(self.save_dir):
            if entry.status == "missing":
                continue
            if entry.status == "unreadable":
                log.warning("Unreadable milestone checkpoint %s: %s", entry.checkpoint_path, entry.error)
            listed.append(entry.as_dict())
        return listed

    def valid_checkpoints(self) -> List[Dict[str, Any]]:
        return [e for e in self.list_checkpoints() if e["status"] == "ok"]

    def saved_milestones(self) -> List[int]:
        return sorted({e["target_milestone"] for e in self.valid_checkpoints()})

    def reconcile_with_disk(self, held_elsewhere: Iterable[int] = ()) -> List[int]:
        """After a resume a milestone counts as reached exactly when its checkpoint is on disk.

        A crash between the files of one save (or before a background write was durable)
        leaves a milestone the restored state calls reached but no file holds: it is saved
        again, never skipped. A background write that finished after the restored state was
        taken left a file the state does not know: it counts, so it is never saved twice.
        `held_elsewhere`: milestones whose checkpoints another run's directory holds (a new
        run started from one of its checkpoints); they stay reached. Returns the milestones
        that will be saved again, and says so once."""
        saved = set(self.saved_milestones()) | {int(m) for m in held_elsewhere}
        lost = [m for m in self.reached if m not in saved]
        self.adopt_reached((set(self.reached) & saved) | (saved & set(self.milestones)))
        if lost:
            log.warning("Milestones without a checkpoint in %s will be saved again: %s",
                        self.save_dir, ", ".join(milestone_label(m) for m in lost))
        return lost
