"""The learning-rate schedule options as data, and their validation.

Free of torch (like `dimba.objective`), so the config schema can check `optim.schedule`,
`optim.decay_fraction`, `growth.rewarm_steps`, `growth.lr_restart` and
`growth.lr_width_exponent` before anything is
imported or trained, with the same messages as `dimba.training.lr_schedule`.
"""

from __future__ import annotations

import math
from typing import Any

from dimba.errors import ConfigError

SCHEDULE_KINDS = ("cosine", "wsd", "constant")
"""cosine: warmup, cosine decay to min_lr_ratio at the last step. wsd: warmup, stable at
the peak, linear decay to min_lr_ratio over the last `decay_fraction` of the steps.
constant: warmup, then the peak."""

DEFAULT_DECAY_FRACTION = 0.2
"""Share of the steps a `wsd` schedule spends decaying (Hägele et al. 2024 use 0.1 to 0.2)."""


def check_schedule(schedule: Any, decay_fraction: Any = DEFAULT_DECAY_FRACTION) -> None:
    """The `optim` group's schedule options."""
    if not isinstance(schedule, str) or schedule not in SCHEDULE_KINDS:
        raise ConfigError("optim.schedule", schedule, " | ".join(SCHEDULE_KINDS))
    if (isinstance(decay_fraction, bool) or not isinstance(decay_fraction, (int, float))
            or not math.isfinite(decay_fraction) or not 0 < decay_fraction <= 1):
        raise ConfigError("optim.decay_fraction", decay_fraction, "a number in (0, 1]: the share of the steps "
                                                                  "optim.schedule=wsd spends decaying")


MAX_WIDTH_EXPONENT = 2.0


def check_growth_lr(rewarm_steps: Any = 0, lr_restart: Any = False, lr_width_exponent: Any = 0.0) -> None:
    """The `growth` group's learning-rate options."""
    if isinstance(rewarm_steps, bool) or not isinstance(rewarm_steps, int) or rewarm_steps < 0:
        raise ConfigError("growth.rewarm_steps", rewarm_steps, "an integer >= 0 (0: no re-warm after growth)")
    if not isinstance(lr_restart, bool):
        raise ConfigError("growth.lr_restart", lr_restart, "true or false")
    if (isinstance(lr_width_exponent, bool) or not isinstance(lr_width_exponent, (int, float))
            or not math.isfinite(lr_width_exponent) or not 0 <= lr_width_exponent <= MAX_WIDTH_EXPONENT):
        raise ConfigError("growth.lr_width_exponent", lr_width_exponent,
                          f"a number in [0, {MAX_WIDTH_EXPONENT:g}]: a stage of width d trains at "
                          "(final width / d)**exponent times the schedule (0: the same rate at every width)")


def validate_lr_options(schedule: Any, decay_fraction: Any = DEFAULT_DECAY_FRACTION, rewarm_steps: Any = 0,
                        lr_restart: Any = False) -> None:
    """A ConfigError for the first option that cannot be used, alone or with the others; the
    keys are the config's."""
    check_schedule(schedule, decay_fraction)
    check_growth_lr(rewarm_steps, lr_restart)
    if lr_restart and schedule == "constant":
        raise ConfigError("growth.lr_restart", lr_restart,
                          "false with optim.schedule=constant (a constant schedule is always at its peak; "
                          "growth.rewarm_steps gives a re-warm after each growth)")
