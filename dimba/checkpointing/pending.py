"""One save the milestone checkpointer asked for, as a value passed to the builder and writers."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Tuple


@dataclass(frozen=True)
class PendingSave:
    """The milestones a save publishes, at which step, at what size."""

    milestones: Tuple[int, ...]
    global_step: int
    current_params: int
    metadata: Dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def largest(self) -> int:
        return max(self.milestones)
