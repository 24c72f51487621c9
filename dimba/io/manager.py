"""ProgressiveCheckpointManager: the Python API for milestone checkpoints.

It holds the milestone state of one save directory and answers the API's questions
(count, should I save, save, load, list). The file layout and sidecars are
`dimba.checkpointing.format`'s, the bytes are written by `dimba.io.writer`, the same
writer the Lightning callback and SimpleTrainer use.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from dimba.checkpointing import atomic_io
from dimba.checkpointing import format as ckpt_format
from dimba.checkpointing.milestones import MilestoneTracker, format_param_count, milestone_label, parse_milestones
from dimba.checkpointing.policy import MilestonePolicy, PendingSave
from dimba.errors import CheckpointLoadError
from dimba.io import writer
from dimba.io.load import grow_to_checkpoint, load_optimizer_state, optimizer_param_names
from dimba.io.read import open_checkpoint
from dimba.model.params import count_parameters

log = logging.getLogger("dimba.checkpointing")
PathLike = Union[str, os.PathLike]


def ensure_console_logging() -> None:
    """Show dimba's INFO lines (the 🎯 line) in plain scripts where nobody configured logging.

    Under Hydra the root logger already has handlers and nothing is added, so the lines
    reach the run's log file through the normal propagation.
    """
    package_logger = logging.getLogger("dimba")
    if logging.getLogger().handlers or package_logger.handlers:
        return
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(message)s"))
    package_logger.addHandler(handler)
    package_logger.setLevel(logging.INFO)


class ProgressiveCheckpointManager:
    """Milestone state plus the files that record it, as its API documents them."""

    def __init__(self, milestones: Sequence[Any], save_dir: PathLike = "./progressive_checkpoints",
                 enabled: bool = True) -> None:
        self.enabled = bool(enabled)
        self.tracker = MilestoneTracker(parse_milestones(list(milestones)) if milestones else [])
        self.save_dir = Path(save_dir)
        ensure_console_logging()

    # ----------------------------------------------------------------- state
    @property
    def milestones(self) -> List[int]:
        return list(self.tracker.milestones)

    @property
    def reached_milestones(self) -> List[int]:
        return list(self.tracker.reached)

    def get_next_milestone(self) -> Optional[int]:
        return self.tracker.next_milestone()

    def state_dict(self) -> Dict[str, List[int]]:
        return self.tracker.state_dict()

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.tracker.load_state_dict(state)

    @staticmethod
    def format_param_count(count: int) -> str:
        return format_param_count(count)

    @staticmethod
    def count_parameters(model: nn.Module) -> int:
        """Trainable parameters, as milestones count them."""
        return count_parameters(model)

    def should_save_checkpoint(self, model: nn.Module) -> Tuple[bool, Optional[int]]:
        """(True, smallest unsaved milestone the model has reached) or (False, None)."""
        if not self.enabled:
            return False, None
        crossed = self.tracker.crossed(self.count_parameters(model))
        return (True, crossed[0]) if crossed else (False, None)

    # ----------------------------------------------------------------- writing
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

    def checkpoint_path(self, milestone: int, global_step: int) -> Path:
        return self.save_dir / ckpt_format.checkpoint_name(milestone, global_step)

    def save_checkpoint(self, model: nn.Module, optimizer: Optional[torch.optim.Optimizer] = None,
                        global_step: int = 0, milestone: Optional[int] = None,
                        metadata: Optional[Dict[str, Any]] = None) -> str:
        """Save one checkpoint for `milestone`, or for every milestone the model has crossed.

        Returns the path of the largest milestone's checkpoint. The weights are serialized
        once even when several milestones are saved together.
        """
        current = self.count_parameters(model)
        milestones = [int(milestone)] if milestone is not None else self.tracker.crossed(current)
        if not milestones:
            raise ValueError(f"No milestone to save: the model has {format_param_count(current)} trainable "
                             f"parameters and the next milestone is {self._next_str()}")
        pending = PendingSave(tuple(sorted(set(milestones))), int(global_step), current, dict(metadata or {}))
        self.prepare_save_dir()
        state = optimizer.state_dict() if optimizer is not None else None
        names = optimizer_param_names(optimizer, model) if optimizer is not None else None
        base = {"dimba": writer.model_record(model, (metadata or {}).get("growth_history", ()))}
        checkpoint = writer.build_milestone_checkpoint(base, model.state_dict(), state, names, pending,
                                                       self.milestones, self.tracker.reached)
        paths = writer.write_milestones(checkpoint, pending, self.save_dir, self.milestones, self.tracker.reached)
        self.tracker.mark_reached(pending.milestones)
        return str(paths[pending.largest])

    # ----------------------------------------------------------------- reading
    def list_checkpoints(self) -> List[Dict[str, Any]]:
        """Milestone checkpoints in `save_dir`, sorted by milestone then step, from the
        sidecars alone (no torch load). Each entry has `status`: "ok", or "unreadable" with
        an `error` (a sidecar that does not parse, a checkpoint of the wrong size). A
        checkpoint without its sidecar is an interrupted write and is not listed."""
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

    def get_checkpoint_path_for_milestone(self, milestone: Any) -> Optional[str]:
        """The newest complete checkpoint saved for exactly this milestone, if any."""
        target = parse_milestones([milestone])[0]
        matches = [e for e in self.valid_checkpoints() if e["target_milestone"] == target]
        return matches[-1]["path"] if matches else None

    def saved_milestones(self) -> List[int]:
        return sorted({e["target_milestone"] for e in self.valid_checkpoints()})

    def reconcile_with_disk(self, held_elsewhere: Sequence[int] = ()) -> List[int]:
        """After a resume a milestone counts as reached exactly when its checkpoint is on disk
        (`MilestonePolicy.reconcile`, the one statement of the rule, used by both trainers):
        one the restored state calls reached but no file holds is saved again, never skipped.
        Returns those, and says so once."""
        lost = MilestonePolicy(self.tracker).reconcile(self.saved_milestones(), held_elsewhere)
        if lost:
            log.warning("Milestones without a checkpoint in %s will be saved again: %s",
                        self.save_dir, ", ".join(milestone_label(m) for m in lost))
        return lost

    def forget_unsaved_milestones(self) -> List[int]:
        """`reconcile_with_disk` against this save directory alone."""
        return self.reconcile_with_disk()

    def load_checkpoint(self, filepath: PathLike, model: Optional[nn.Module] = None,
                        optimizer: Optional[torch.optim.Optimizer] = None, map_location: Any = "cpu",
                        strict: bool = True) -> Dict[str, Any]:
        """Load weights (and optimizer state) and restore which milestones were reached.

        A DIMBA smaller than the checkpoint is first grown to the recorded shape, and the
        optimizer pointed at the grown parameters. Always `weights_only=True`: a
        checkpoint is data, never code.
        """
        record = open_checkpoint(filepath, map_location=map_location)
        if not record.is_milestone:
            raise CheckpointLoadError(f"{filepath} is not a dimba milestone checkpoint (no 'model_state_dict')")
        if model is not None:
            grow_to_checkpoint(model, optimizer, record, filepath)
            model.load_state_dict(record.model_state, strict=strict)
        if optimizer is not None and record.optimizer_state is not None:
            load_optimizer_state(optimizer, record.optimizer_state, filepath, model, record.optimizer_param_names)
        self.tracker.mark_reached(record.reached_milestones)
        self.forget_unsaved_milestones()
        info = record.summary()
        info["path"] = str(filepath)
        return info

    def _next_str(self) -> str:
        nxt = self.get_next_milestone()
        return "none (all reached)" if nxt is None else milestone_label(nxt)
