"""What to save now: the milestone decision as a pure policy, with its saves as explicit values.

After each optimizer step a trainer asks `due(step, count)`; the answer is a `PendingSave`
(or None) that the trainer hands to the checkpoint builder and the writer. The policy
learns the outcome only from the training thread: `published` once the files are durable,
`abandoned` if the write failed. A background write therefore never changes the milestone
state behind the trainer's back; it only returns a result the trainer applies.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Optional, Tuple

from dimba.checkpointing.milestones import MilestoneTracker


@dataclass(frozen=True)
class PendingSave:
    """One save the policy asked for: the milestones it publishes, at which step, at what size."""

    milestones: Tuple[int, ...]
    global_step: int
    current_params: int
    metadata: Dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def largest(self) -> int:
        return max(self.milestones)


class MilestonePolicy:
    """Milestones crossed and not yet saved (nor being saved) are due, once per optimizer step."""

    def __init__(self, tracker: MilestoneTracker) -> None:
        self.tracker = tracker
        self.in_flight: Tuple[int, ...] = ()  # milestones whose background write is not yet durable
        self.last_step: Optional[int] = None

    def start_at(self, step: int) -> None:
        self.last_step = step

    def due(self, step: int, count: int, metadata: Optional[Dict[str, Any]] = None) -> Optional[PendingSave]:
        """The save to make after optimizer step `step` with `count` parameters, or None.

        A batch without an optimizer step (gradient accumulation) leaves the step unchanged,
        and nothing is due twice for one step."""
        if step == self.last_step:
            return None
        self.last_step = step
        crossed = [m for m in self.tracker.crossed(count) if m not in self.in_flight]
        return PendingSave(tuple(crossed), step, count, dict(metadata or {})) if crossed else None

    def started(self, pending: PendingSave, background: bool) -> None:
        if background:
            self.in_flight = tuple(sorted(set(self.in_flight) | set(pending.milestones)))

    def published(self, milestones: Iterable[int]) -> None:
        done = {int(m) for m in milestones}
        self.tracker.mark_reached(sorted(done))
        self.in_flight = tuple(m for m in self.in_flight if m not in done)

    def abandoned(self, milestones: Iterable[int]) -> None:
        failed = {int(m) for m in milestones}
        self.in_flight = tuple(m for m in self.in_flight if m not in failed)

    def reconcile(self, on_disk: Iterable[int], held_elsewhere: Iterable[int] = ()) -> List[int]:
        """After a resume a milestone counts as reached exactly when its checkpoint is on disk.

        A crash between the files of one save (or before a background write was durable)
        leaves a milestone the restored state calls reached but no file holds: it is saved
        again, never skipped. A background write that finished after the restored state was
        taken left a file the state does not know: it counts, so it is never saved twice.
        `held_elsewhere`: milestones whose checkpoints another run's directory holds (a new
        run started from one of its checkpoints); they stay reached. Returns the milestones
        that will be saved again."""
        saved = {int(m) for m in on_disk} | {int(m) for m in held_elsewhere}
        lost = [m for m in self.tracker.reached if m not in saved]
        configured = set(self.tracker.milestones)
        self.tracker.reached = sorted((set(self.tracker.reached) & saved) | (saved & configured))
        return lost
