"""The documented import path of the ProgressiveCheckpointManager API: `from dimba.utils.checkpointing import ...`."""

from dimba.checkpointing.milestones import format_param_count, parse_milestone_input
from dimba.io.manager import ProgressiveCheckpointManager

__all__ = ["ProgressiveCheckpointManager", "format_param_count", "parse_milestone_input"]
