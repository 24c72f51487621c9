"""The seed document's import path: `from dimba.utils.checkpointing import ...`."""

from dimba.checkpointing.manager import ProgressiveCheckpointManager
from dimba.checkpointing.milestones import format_param_count, parse_milestone_input

__all__ = ["ProgressiveCheckpointManager", "format_param_count", "parse_milestone_input"]
