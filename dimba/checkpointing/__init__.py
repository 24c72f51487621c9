"""The core of progressive checkpointing, free of torch: milestones, the save policy, the
checkpoint format and crash-safe file writes. The manager that writes checkpoints with
torch is `dimba.io.manager` (also importable as `dimba.utils.checkpointing`); the Lightning
callback is `dimba.training.milestone_callback`."""

from dimba.checkpointing.milestones import (
    MilestoneTracker,
    format_param_count,
    milestone_label,
    parse_milestone_input,
    parse_milestones,
)

__all__ = ["MilestoneTracker", "format_param_count", "milestone_label", "parse_milestone_input", "parse_milestones"]
