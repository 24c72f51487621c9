"""The groups that say how a DIMBA trains: `optim`, `growth`, `progressive_checkpoints`.

`objective` (dimba.objective) and `model` (dimba.model.DIMBAConfig) complete the recipe.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, List, Optional

from dimba.checkpointing.milestones import ACCEPTED_FORMS, MilestoneError, parse_milestones
from dimba.checkpointing.layout import MILESTONE_DIR
from dimba.config.checks import finite, int_at_least
from dimba.config.lr import DEFAULT_DECAY_FRACTION, check_growth_lr, check_schedule, validate_lr_options
from dimba.errors import ConfigError
from dimba.growth.schedule import GrowthEvent


MAX_LR = 1.0
"""The largest `optim.lr` accepted: a peak rate above it cannot be meant (`1e9` trained)."""


@dataclass
class OptimConfig:
    """AdamW with linear warmup, then `schedule` (by default wsd: stable at the peak, then a
    linear decay to `min_lr_ratio * lr` over the last fifth of `trainer.max_steps`, the
    recipe the growth experiment found best). Growth can re-warm or restart it
    (`growth.rewarm_steps`, `growth.lr_restart`)."""

    lr: float = 2e-3
    weight_decay: float = 0.01
    betas: List[float] = field(default_factory=lambda: [0.9, 0.99])
    warmup_steps: int = 20
    min_lr_ratio: float = 0.1
    total_steps: Optional[int] = None
    """The LR schedule's horizon; null: trainer.max_steps. Set it to stop a run early (or to
    extend one) without changing the schedule."""
    schedule: str = "wsd"
    """wsd (warmup, stable at the peak, linear decay over the last `decay_fraction` of the
    steps: growth events fall in the stable phase) | cosine (warmup, cosine decay to
    min_lr_ratio at the last step) | constant (warmup, then the peak)."""
    decay_fraction: float = DEFAULT_DECAY_FRACTION
    """The share of the steps `schedule=wsd` spends decaying."""

    def __post_init__(self) -> None:
        if not finite(self.lr) or not 0 < self.lr <= MAX_LR:
            raise ConfigError("optim.lr", self.lr, f"a positive number up to {MAX_LR:g} (AdamW diverges far below that)")
        if not finite(self.weight_decay) or self.weight_decay < 0:
            raise ConfigError("optim.weight_decay", self.weight_decay, "a number >= 0")
        self.betas = list(self.betas)
        if len(self.betas) != 2 or not all(finite(b) and 0 <= b < 1 for b in self.betas):
            raise ConfigError("optim.betas", list(self.betas), "two numbers in [0, 1), e.g. [0.9,0.99]")
        if not int_at_least(self.warmup_steps, 0):
            raise ConfigError("optim.warmup_steps", self.warmup_steps, "an integer >= 0")
        if not finite(self.min_lr_ratio) or not 0 <= self.min_lr_ratio <= 1:
            raise ConfigError("optim.min_lr_ratio", self.min_lr_ratio, "a number in [0, 1]")
        if self.total_steps is not None and not int_at_least(self.total_steps, 1):
            raise ConfigError("optim.total_steps", self.total_steps, "a positive integer, or null for trainer.max_steps")
        check_schedule(self.schedule, self.decay_fraction)


@dataclass
class GrowthConfig:
    """When and how the model grows: `growth.schedule=[{step:100,op:depth,n_layers:8}]`."""

    schedule: List[GrowthEvent] = field(default_factory=list)
    """Events in increasing step order; each grows depth (n_layers, mode) or width (d_model)."""
    rewarm_steps: int = 0
    """After each growth, the learning rate climbs linearly from about 0 back onto the
    schedule over this many steps (staged training); 0: none."""
    lr_restart: bool = False
    """At each growth the schedule starts again from its peak over the steps that remain
    (MSG, G_stack); with rewarm_steps, it warms up over them first."""
    lr_width_exponent: float = 1.0
    """A stage narrower than the widest the schedule grows to trains at
    (final d_model / d_model)**lr_width_exponent times the schedule's rate: 1 is muP's rule
    for Adam (the best rate scales as 1 / width), what the growth experiment found best; 0
    keeps one rate for every width."""

    def __post_init__(self) -> None:
        check_growth_lr(self.rewarm_steps, self.lr_restart, self.lr_width_exponent)


@dataclass
class ProgressiveCheckpointsConfig:
    """The milestone options. Milestones may be written 1000000000, 1e9 or 1B."""

    enabled: bool = True
    milestones: Any = field(default_factory=list)
    """Parameter counts; after validation a sorted list of unique ints."""
    save_dir: str = MILESTONE_DIR
    """Where milestone checkpoints go; a relative path is inside the run's output directory."""
    async_save: bool = False
    """Write milestone checkpoints in a background thread: training waits only for a copy of
    the state in memory. A milestone counts as saved once its write is durable."""

    def __post_init__(self) -> None:
        key = "progressive_checkpoints.milestones"
        try:
            self.milestones = parse_milestones(self.milestones)
        except MilestoneError as exc:
            raise ConfigError(key, exc.value, ACCEPTED_FORMS) from None
        if self.enabled and not self.milestones:
            raise ConfigError(key, [], f"at least one milestone while enabled=true ({ACCEPTED_FORMS}), or progressive_checkpoints=disabled")
        if not isinstance(self.save_dir, str) or not self.save_dir.strip():
            raise ConfigError("progressive_checkpoints.save_dir", self.save_dir, "a non-empty directory path")


@dataclass
class ValidationConfig:
    """The likelihood bound each validation reports (`val/bpb`, `val/bpb_se`), also written into
    every milestone's sidecar (`val_bpb`). Typed Any, like milestones, so a bad value reaches
    the one-line check below instead of OmegaConf's multi-line error."""

    bpb_sequences: Any = 16
    """Windows of the validation split, evenly spaced, the bound is estimated on (0: off)."""
    bpb_samples: Any = 4
    """Timestep draws per window (an even number >= 2: two replicates give the standard error)."""

    def __post_init__(self) -> None:
        if not int_at_least(self.bpb_sequences, 0):
            raise ConfigError("validation.bpb_sequences", self.bpb_sequences, "an integer >= 0 (0 turns val/bpb off)")
        if not int_at_least(self.bpb_samples, 2) or self.bpb_samples % 2:
            raise ConfigError("validation.bpb_samples", self.bpb_samples, "an even integer >= 2")


def check_lr_options(optim: OptimConfig, growth: GrowthConfig) -> None:
    """The options of two groups that only make sense together (a restart needs a schedule
    that decays)."""
    validate_lr_options(optim.schedule, optim.decay_fraction, growth.rewarm_steps, growth.lr_restart)
