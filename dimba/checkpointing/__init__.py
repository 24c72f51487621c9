"""Milestone checkpoints: pure milestone logic, crash-safe IO, the manager, the callback."""

from dimba.checkpointing.milestones import (
    MilestoneTracker,
    format_param_count,
    milestone_label,
    parse_milestone_input,
    parse_milestones,
)

__all__ = [
    "MilestoneTracker",
    "ProgressiveCheckpointCallback",
    "ProgressiveCheckpointManager",
    "format_param_count",
    "milestone_label",
    "parse_milestone_input",
    "parse_milestones",
]


def __getattr__(name: str):  # torch and Lightning load only when these are asked for
    if name == "ProgressiveCheckpointManager":
        from dimba.checkpointing.manager import ProgressiveCheckpointManager

        return ProgressiveCheckpointManager
    if name == "ProgressiveCheckpointCallback":
        from dimba.checkpointing.callback import ProgressiveCheckpointCallback

        return ProgressiveCheckpointCallback
    raise AttributeError(name)
