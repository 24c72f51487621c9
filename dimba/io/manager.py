"""ProgressiveCheckpointManager: the Python API for milestone checkpoints.

It answers the API's questions (count, should I save, save, load, list) for one save
directory; every decision (what is reached, what is due, what a save holds, what the disk
says after a resume) is its `MilestoneCheckpointer`'s, the object the Lightning callback
adapts too.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from dimba.checkpointing import format as ckpt_format
from dimba.checkpointing.milestones import format_param_count, milestone_label, parse_milestones
from dimba.checkpointing.pending import PendingSave
from dimba.errors import CheckpointLoadError
from dimba.io import writer
from dimba.io.checkpointer import MilestoneCheckpointer
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
    """Milestone checkpoints of one save directory, through the API its documentation gives:
    an adapter over `MilestoneCheckpointer` (`checkpointer`), which owns every decision."""

    def __init__(self, milestones: Sequence[Any], save_dir: PathLike = "./progressive_checkpoints",
                 enabled: bool = True) -> None:
        self.checkpointer = MilestoneCheckpointer(milestones, save_dir, enabled)
        ensure_console_logging()

    # ----------------------------------------------------------------- state
    @property
    def enabled(self) -> bool:
        return self.checkpointer.enabled

    @property
    def save_dir(self) -> Path:
        return self.checkpointer.save_dir

    @property
    def milestones(self) -> List[int]:
        return self.checkpointer.milestones

    @property
    def reached_milestones(self) -> List[int]:
        return self.checkpointer.reached

    def get_next_milestone(self) -> Optional[int]:
        return self.checkpointer.next_milestone()

    def state_dict(self) -> Dict[str, List[int]]:
        return self.checkpointer.state_dict()

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.checkpointer.load_state_dict(state)

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
        crossed = self.checkpointer.crossed(self.count_parameters(model))
        return (True, crossed[0]) if crossed else (False, None)

    # ----------------------------------------------------------------- writing
    def prepare_save_dir(self) -> None:
        """Create the directory and drop leftovers of interrupted writes (never a checkpoint)."""
        self.checkpointer.prepare_save_dir()

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
        milestones = [int(milestone)] if milestone is not None else self.checkpointer.crossed(current)
        if not milestones:
            raise ValueError(f"No milestone to save: the model has {format_param_count(current)} trainable "
                             f"parameters and the next milestone is {self._next_str()}")
        pending = PendingSave(tuple(sorted(set(milestones))), int(global_step), current, dict(metadata or {}))
        return str(self.save_pending(model, optimizer, pending))

    def save_pending(self, model: nn.Module, optimizer: Optional[torch.optim.Optimizer], pending: PendingSave) -> Path:
        """Write the save the checkpointer asked for (`checkpointer.due`) from a model and its
        optimizer; returns the largest milestone's path. SimpleTrainer saves through here."""
        self.prepare_save_dir()
        state = optimizer.state_dict() if optimizer is not None else None
        names = optimizer_param_names(optimizer, model) if optimizer is not None else None
        base = {"dimba": writer.model_record(model, pending.metadata.get("growth_history", ()))}
        checkpoint = self.checkpointer.assemble(base, model.state_dict(), state, names, pending)
        return self.checkpointer.write(checkpoint, pending)[pending.largest]

    # ----------------------------------------------------------------- reading
    def list_checkpoints(self) -> List[Dict[str, Any]]:
        """Milestone checkpoints in `save_dir`, sorted by milestone then step, from the
        sidecars alone (no torch load). Each entry has `status`: "ok", or "unreadable" with
        an `error` (a sidecar that does not parse, a checkpoint of the wrong size). A
        checkpoint without its sidecar is an interrupted write and is not listed."""
        return self.checkpointer.list_checkpoints()

    def valid_checkpoints(self) -> List[Dict[str, Any]]:
        return self.checkpointer.valid_checkpoints()

    def get_checkpoint_path_for_milestone(self, milestone: Any) -> Optional[str]:
        """The newest complete checkpoint saved for exactly this milestone, if any."""
        target = parse_milestones([milestone])[0]
        matches = [e for e in self.valid_checkpoints() if e["target_milestone"] == target]
        return matches[-1]["path"] if matches else None

    def saved_milestones(self) -> List[int]:
        return self.checkpointer.saved_milestones()

    def reconcile_with_disk(self, held_elsewhere: Sequence[int] = ()) -> List[int]:
        """After a resume a milestone counts as reached exactly when its checkpoint is on disk
        (`MilestoneCheckpointer.reconcile_with_disk`): one the restored state calls reached but
        no file holds is saved again, never skipped. Returns those."""
        return self.checkpointer.reconcile_with_disk(held_elsewhere)

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
        self.checkpointer.published(record.reached_milestones)
        self.forget_unsaved_milestones()
        info = record.summary()
        info["path"] = str(filepath)
        return info

    def _next_str(self) -> str:
        nxt = self.get_next_milestone()
        return "none (all reached)" if nxt is None else milestone_label(nxt)
