"""The core of progressive checkpointing, free of torch: milestones, the checkpoint format,
what a path is, and crash-safe file writes. The one owner of the milestone decisions is
`dimba.io.checkpointer.MilestoneCheckpointer`; the API over it is `dimba.io.manager`
(also importable as `dimba.utils.checkpointing`), the Lightning callback
`dimba.training.milestone_callback`."""

from dimba.checkpointing.milestones import (
    MilestoneTracker,
    format_param_count,
    milestone_label,
    parse_milestone_input,
    parse_milestones,
)

__all__ = ["MilestoneTracker", "format_param_count", "milestone_label", "parse_milestone_input", "parse_milestones"]
