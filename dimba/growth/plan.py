"""The growth plan: parameters after each growth event and the step of each milestone.

Parameter counts come from models built on the meta device: exact, and free of memory,
so a 30B-parameter plan takes seconds on a laptop.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

from dimba.checkpointing.milestones import milestone_label
from dimba.growth.schedule import GrowthEvent, validate_schedule
from dimba.model import DIMBAConfig
from dimba.model.params import architecture_parameters as count_parameters


@dataclass
class Stage:
    step: int  # the optimizer step after which this architecture exists (0: from the start)
    description: str
    config: DIMBAConfig
    params: int


@dataclass
class GrowthPlan:
    stages: List[Stage]
    max_steps: int
    milestone_stage: Dict[int, Optional[int]] = field(default_factory=dict)
    """Each milestone's stage index: the first stage within max_steps that reaches it."""

    @property
    def milestone_steps(self) -> Dict[int, Optional[int]]:
        """The optimizer step whose check saves each milestone (None: never reached)."""
        return {m: None if i is None else max(self.stages[i].step, 1) for m, i in self.milestone_stage.items()}

    @property
    def unreached(self) -> List[int]:
        return [m for m, i in self.milestone_stage.items() if i is None]

    @property
    def final(self) -> Stage:
        return [s for s in self.stages if s.step <= self.max_steps][-1]

    def table(self) -> str:
        lines = [f"{'step':>8}  {'growth':<32} {'layers':>6} {'d_model':>7} {'params':>16}  milestones saved"]
        for index, stage in enumerate(self.stages):
            saved = [milestone_label(m) for m, i in self.milestone_stage.items() if i == index]
            late = "  (after trainer.max_steps: never happens)" if stage.step > self.max_steps else ""
            lines.append(
                f"{stage.step:>8}  {stage.description:<32} {stage.config.n_layers:>6} {stage.config.d_model:>7} "
                f"{stage.params:>16,}  {', '.join(saved)}{late}"
            )
        return "\n".join(lines)


def build_plan(model: DIMBAConfig, schedule: Sequence[GrowthEvent], milestones: Sequence[int], max_steps: int) -> GrowthPlan:
    configs = validate_schedule(model, schedule)
    stages = [Stage(0, "start", model, count_parameters(model))]
    stages += [Stage(e.step, e.describe(), c, count_parameters(c)) for e, c in zip(schedule, configs)]
    plan = GrowthPlan(stages, max_steps)
    for m in sorted(milestones):
        first = next((i for i, s in enumerate(stages) if s.step <= max_steps and s.params >= m), None)
        # Every event of a step happens before that step's milestone check: the save holds the last one's model.
        while first is not None and first + 1 < len(stages) and stages[first + 1].step == stages[first].step > 0:
            first += 1
        plan.milestone_stage[m] = first
    return plan
