"""Learning-rate multipliers for `LambdaLR` that know when the model grows.

Every multiplier is a pure function of the optimizer step, given plain-data attributes:
LambdaLR's state_dict stores those attributes (and its step count), so a resumed run
computes exactly the learning rates the uninterrupted one would have, with nothing else to
carry, and the state loads with `torch.load(weights_only=True)`.

Steps are counted as LambdaLR counts them: optimizer step `s` (0-based) runs at
`base_lr * multiplier(s)`. A growth event at schedule step `S` happens after `S` optimizer
steps, so step `S` is the grown model's first.

Kinds (`optim.schedule`): `cosine` (warmup, then cosine decay to `min_ratio` at
`total_steps`), `wsd` (warmup, stable at the peak, then linear decay to `min_ratio` over the
last `decay_fraction` of the steps) and `constant` (warmup, then the peak). The warmup is
linear, `(s + 1) / (warmup_steps + 1)`, as `WarmupCosine` has always been.

Growth options:

- `rewarm_steps` R: after each growth at S, steps S .. S+R-1 run at the schedule's value
  times `(s - S + 1) / (R + 1)`: a linear re-warm from about 0 back onto the schedule
  (staged training). The newest growth governs when two re-warms overlap.
- `lr_restart`: at each growth the schedule starts afresh from its peak over the steps that
  remain: from S on, the multiplier is the same kind of schedule with `total_steps - S`
  steps, evaluated at `s - S`, with no warmup (MSG, G_stack). For cosine that is a new
  cosine from the peak at S to `min_ratio` at `total_steps`; for wsd the stable phase
  resumes at the peak and the decay covers the last `decay_fraction` of the remaining
  steps; a constant schedule has nothing to restart (refused). With `rewarm_steps` R as
  well, the restarted schedule warms up linearly over R steps instead of starting at the
  peak.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

from dimba.config.lr import DEFAULT_DECAY_FRACTION, validate_lr_options
from dimba.growth.schedule import GrowthEvent, GrowthOp


class WarmupCosine:
    """LR multiplier for LambdaLR. An object with plain attributes, so LambdaLR's
    state_dict stores them and a resumed run continues the same schedule."""

    def __init__(self, warmup_steps: int, total_steps: int, min_ratio: float = 0.1) -> None:
        self.warmup_steps = int(warmup_steps)
        self.total_steps = max(int(total_steps), 1)
        self.min_ratio = float(min_ratio)

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / (self.warmup_steps + 1)
        span = max(self.total_steps - self.warmup_steps, 1)
        progress = min((step - self.warmup_steps) / span, 1.0)
        return self.min_ratio + (1 - self.min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def wsd_decay_start(total_steps: int, warmup_steps: int, decay_fraction: float) -> int:
    """The first step of wsd's decay: until it, a run planned to `total_steps` trains exactly as
    any longer one does (a warmup-stable-decay run branches its decays off one stable phase)."""
    total = max(int(total_steps), 1)
    return max(warmup_steps, total - max(1, round(decay_fraction * total)))


def base_multiplier(kind: str, step: int, warmup_steps: int, total_steps: int, min_ratio: float,
                    decay_fraction: float) -> float:
    """The schedule without growth: warmup, then `kind`'s shape up to `total_steps`."""
    total = max(int(total_steps), 1)
    if step < warmup_steps:
        return (step + 1) / (warmup_steps + 1)
    if kind == "constant":
        return 1.0
    if kind == "cosine":
        progress = min((step - warmup_steps) / max(total - warmup_steps, 1), 1.0)
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
    decay_start = wsd_decay_start(total, warmup_steps, decay_fraction)
    if step < decay_start:
        return 1.0
    progress = min((step - decay_start) / max(total - decay_start, 1), 1.0)
    return 1.0 - (1.0 - min_ratio) * progress


class GrowthAwareLR:
    """LR multiplier for LambdaLR: a schedule kind plus re-warm or restart at growth steps.

    Attributes are plain data (LambdaLR saves and restores them); see the module docstring
    for what each option does. With `kind="cosine"` and no growth options its values equal
    `WarmupCosine(warmup_steps, total_steps, min_ratio)`'s.
    """

    def __init__(self, kind: str = "cosine", warmup_steps: int = 0, total_steps: int = 1, min_ratio: float = 0.1,
                 decay_fraction: float = DEFAULT_DECAY_FRACTION, growth_steps: Sequence[int] = (),
                 rewarm_steps: int = 0, lr_restart: bool = False,
                 width_scales: Sequence[Tuple[int, float]] = ()) -> None:
        self.kind = str(kind)
        self.warmup_steps = int(warmup_steps)
        self.total_steps = max(int(total_steps), 1)
        self.min_ratio = float(min_ratio)
        self.decay_fraction = float(decay_fraction)
        self.growth_steps = sorted(int(s) for s in growth_steps)
        self.rewarm_steps = int(rewarm_steps)
        self.lr_restart = bool(lr_restart)
        self.width_scales = [[int(step), float(factor)] for step, factor in sorted(width_scales)]

    def last_growth(self, step: int) -> int:
        """The step of the newest growth at or before `step` (-1: none yet)."""
        started = [s for s in self.growth_steps if s <= step]
        return started[-1] if started else -1

    def width_scale(self, step: int) -> float:
        factor = 1.0
        for start, value in self.width_scales:
            if start <= step:
                factor = value
        return factor

    def __call__(self, step: int) -> float:
        return self._schedule(step) * self.width_scale(step)

    def _schedule(self, step: int) -> float:
        grown_at = self.last_growth(step)
        if grown_at < 0:
            return self._base(step)
        since = step - grown_at
        if self.lr_restart:
            return base_multiplier(self.kind, since, self.rewarm_steps, self.total_steps - grown_at,
                                   self.min_ratio, self.decay_fraction)
        value = self._base(step)
        if since < self.rewarm_steps:
            value *= (since + 1) / (self.rewarm_steps + 1)
        return value

    def _base(self, step: int) -> float:
        return base_multiplier(self.kind, step, self.warmup_steps, self.total_steps, self.min_ratio,
                               self.decay_fraction)


def width_lr_scales(d_model: int, schedule: Sequence[GrowthEvent], exponent: float) -> List[Tuple[int, float]]:
    """(step, (d_final / d)**exponent) from the start and from each width growth, where d is
    the width from then on and d_final the widest the schedule grows to; [] when no stage
    differs (no width growth, or exponent 0)."""
    widths = [(0, int(d_model))]
    for event in sorted(schedule, key=lambda e: e.step):
        if GrowthOp(event.op) is GrowthOp.WIDTH:
            widths.append((int(event.step), int(event.d_model)))
    final = widths[-1][1]
    if exponent == 0 or all(width == final for _, width in widths):
        return []
    return [(step, (final / width) ** exponent) for step, width in widths]


def build_lr_multiplier(kind: str, warmup_steps: int, total_steps: int, min_lr_ratio: float,
                        growth_steps: Sequence[int] = (), rewarm_steps: int = 0, lr_restart: bool = False,
                        decay_fraction: float = DEFAULT_DECAY_FRACTION,
                        width_scales: Optional[Sequence[Tuple[int, float]]] = None) -> GrowthAwareLR:
    """The multiplier the config asks for; a ConfigError (keys `optim.schedule`,
    `optim.decay_fraction`, `growth.rewarm_steps`, `growth.lr_restart`) if it cannot be built.

    `growth_steps` are the `step` values of the growth schedule (known before training);
    `width_scales` comes from `width_lr_scales` (None: the same rate at every width).
    """
    validate_lr_options(kind, decay_fraction, rewarm_steps, lr_restart)
    return GrowthAwareLR(kind, warmup_steps, total_steps, min_lr_ratio, decay_fraction, growth_steps,
                         rewarm_steps, lr_restart, width_scales or ())


def upgrade_scheduler_state(state: Dict[str, Any]) -> None:
    """Older LambdaLR states continue the schedule they were saved with, whatever the config's
    defaults are now: one saved with `WarmupCosine` (before `optim.schedule` existed) carries
    no kind and continues as the cosine it was, with no growth options; one saved before
    `growth.lr_width_exponent` existed continues at the same rate at every width."""
    for options in state.get("lr_lambdas") or []:
        if not isinstance(options, dict) or "warmup_steps" not in options:
            continue
        if "kind" not in options:
            options.update({"kind": "cosine", "growth_steps": [], "rewarm_steps": 0, "lr_restart": False,
                            "decay_fraction": DEFAULT_DECAY_FRACTION})
        options.setdefault("width_scales", [])


@dataclass(frozen=True)
class GrowthLR:
    """The learning rate around one growth event, for the dry-run plan."""

    step: int
    lr_before: float
    """Of the last step before growth (step - 1)."""
    lr_after: float
    """Of the grown model's first step."""
    lr_rejoined: float
    """Where the re-warm ends (step + rewarm_steps); equal to lr_after without a re-warm."""


def growth_event_lrs(multiplier: GrowthAwareLR, base_lr: float) -> List[GrowthLR]:
    """The learning rate before, at and after the re-warm of each growth event."""
    rows = []
    for step in multiplier.growth_steps:
        rows.append(GrowthLR(step, base_lr * multiplier(max(step - 1, 0)), base_lr * multiplier(step),
                             base_lr * multiplier(step + multiplier.rewarm_steps)))
    return rows
