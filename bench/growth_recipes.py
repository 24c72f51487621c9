"""Recipes (how a run grows and schedules its learning rate) and scales (model sizes and
scratch's step budget), and the plan that turns a recipe into steps for one scale.

A recipe's growth events sit at fractions of its own schedule length (`total_steps`). That
length follows from `horizon`: the schedule is planned to end where the run has used
`horizon` times scratch's training FLOPs. Every run may train on until it has used as many
FLOPs as scratch (then it stops), unless it reaches scratch's final loss first.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Any, Callable, Dict, List, Tuple

from dimba.config.lr import SCHEDULE_KINDS, check_growth_lr, validate_lr_options
from dimba.config.training import OptimConfig
from dimba.errors import ConfigError
from dimba.model import DIMBAConfig
from dimba.model.config import ORIGINAL_RECIPE

from growth_runner import Event  # noqa: E402


DEFAULT_LR = OptimConfig().lr


@dataclass(frozen=True)
class Scale:
    name: str
    d_model: int  # final width
    n_layers: int  # final depth
    scratch_steps: int

    @property
    def final(self) -> DIMBAConfig:
        return DIMBAConfig(d_model=self.d_model, n_layers=self.n_layers, **ORIGINAL_RECIPE)  # as the experiment ran


SCALES = {
    "grid": Scale("grid", 128, 4, 240),  # d64x2 -> d128x4 (model=small), the default run's 240 steps
    "mid": Scale("mid", 128, 8, 300),  # d64x4 -> d128x8
    "confirm": Scale("confirm", 256, 8, 400),  # today's size: d128x4 -> d256x8, the 400 steps
}


@dataclass(frozen=True)
class Recipe:
    ops: str  # scratch | small | dw (depth, then width twice, as growth=early) | depth-stack | depth-identity
    at: Tuple[float, ...] = ()  # growth events, as fractions of total_steps
    schedule: str = "cosine"
    rewarm_steps: int = 0
    lr_restart: bool = False
    horizon: float = 1.0
    decay_fraction: float = 0.2
    lr_width_exponent: float = 0.0  # growth.lr_width_exponent (0 here: the recipes searched before it existed)
    lr: float = DEFAULT_LR  # optim.lr, the peak (the final width's rate with lr_width_exponent)

    @property
    def name(self) -> str:
        lr = self.schedule + ("+restart" if self.lr_restart else "") + (f"+rewarm{self.rewarm_steps}" if self.rewarm_steps else "")
        lr += f"+df{self.decay_fraction:g}" if self.decay_fraction != 0.2 and self.schedule == "wsd" else ""
        lr += f"+wlr{self.lr_width_exponent:g}" if self.lr_width_exponent else ""
        lr += f"+lr{self.lr:g}" if self.lr != DEFAULT_LR else ""
        at = "@" + ",".join(f"{a:g}" for a in self.at) if self.at else ""
        return f"{self.ops}{at}|{lr}|h{self.horizon:g}"

    def to_dict(self) -> Dict[str, Any]:
        return {**asdict(self), "name": self.name}


def stages(recipe: Recipe, scale: Scale) -> Tuple[DIMBAConfig, List[Tuple[str, int, str]]]:
    """The start architecture and the ops (op, size, mode) of each growth event."""
    final, d, n = scale.final, scale.d_model, scale.n_layers
    if recipe.ops == "scratch":
        return final, []
    if recipe.ops == "small":  # half the width, no growth: does a smaller model alone reach the target?
        return replace(final, d_model=d // 2), []
    if recipe.ops == "dw":
        return (replace(final, d_model=d // 2, n_layers=n // 2),
                [("depth", n, "identity"), ("width", 3 * d // 4, ""), ("width", d, "")])
    if recipe.ops in ("depth-stack", "depth-identity"):
        return replace(final, n_layers=n // 2), [("depth", n, recipe.ops.split("-")[1])]
    raise ValueError(f"unknown ops {recipe.ops!r}")


def plan_steps(recipe: Recipe, scale: Scale, step_flops: Callable[[DIMBAConfig], int]) -> Tuple[DIMBAConfig, List[Event], int]:
    """Start, events at their steps, and the schedule length whose FLOPs are `horizon` x scratch's."""
    start, ops = stages(recipe, scale)
    if len(ops) != len(recipe.at):
        raise ValueError(f"{recipe.name}: {len(ops)} growth events need {len(ops)} fractions in `at`")
    configs, config = [start], start
    for op, size, _ in ops:
        config = replace(config, n_layers=size) if op == "depth" else replace(config, d_model=size)
        configs.append(config)
    bounds = [0.0, *recipe.at, 1.0]
    per_step = sum((bounds[i + 1] - bounds[i]) * step_flops(c) for i, c in enumerate(configs))
    budget = scale.scratch_steps * step_flops(scale.final)
    total = round(recipe.horizon * budget / per_step)
    events = [Event(max(1, round(a * total)), op, size, mode or "identity") for a, (op, size, mode) in zip(recipe.at, ops)]
    return start, events, total


SCRATCH = Recipe("scratch")
DEFAULT_RECIPE = "dw@0.5,0.7,0.85|wsd+wlr1|h0.6"  # what growth=early and the optim defaults run (tests/test_growth_experiment.py)
STAGE1_HORIZON = 0.6


def scratch_baselines(lrs: List[float], schedules: Tuple[str, ...] = ("cosine", "wsd")) -> List[Recipe]:
    """Scratch on each schedule at each peak rate: the LR sweep a fair baseline needs."""
    return [Recipe("scratch", schedule=schedule, lr=lr) for lr in lrs for schedule in schedules]


def grid_recipes(horizon: float = STAGE1_HORIZON) -> List[Recipe]:
    """Stage 1 of the search: depth-only early growth (stack, identity; G_stack grows after
    ~3% of training), depth+width at today's fractions and early, each with cosine, wsd,
    re-warm and restart, all planned to end at `horizon` x scratch's FLOPs; plus controls:
    scratch with wsd, scratch and the half-width model alone on the same horizon."""
    lrs = [dict(schedule="cosine"), dict(schedule="wsd"), dict(schedule="cosine", rewarm_steps=10),
           dict(schedule="cosine", lr_restart=True)]
    recipes: List[Recipe] = [Recipe("scratch", schedule="wsd"), Recipe("scratch", horizon=horizon),
                             Recipe("small", horizon=horizon)]
    for ops in ("depth-stack", "depth-identity"):
        recipes += [Recipe(ops, (0.03,), horizon=horizon, **lr) for lr in lrs]
    for at in ((0.25, 0.5, 0.75), (0.1, 0.2, 0.3)):
        recipes += [Recipe("dw", at, horizon=horizon, **lr) for lr in lrs]
    return recipes


EVENTS_PER_OPS = {"scratch": 0, "small": 0, "dw": 3, "depth-stack": 1, "depth-identity": 1}
OPTIONS = {"restart": ("lr_restart", None), "rewarm": ("rewarm_steps", int), "df": ("decay_fraction", float),
           "wlr": ("lr_width_exponent", float), "lr": ("lr", float)}  # name prefix: (Recipe field, its type; None: a flag)
NAME_FORM = "OPS[@F,F,...]|SCHEDULE[+restart][+rewarmN][+dfX][+wlrX][+lrX]|hX, e.g. dw@0.25,0.5,0.75|wsd+wlr1|h0.6"


def parse_recipe(name: str) -> Recipe:
    """The recipe a name stands for, e.g. `dw@0.25,0.5,0.75|cosine+restart|h0.6`; a ValueError
    naming the bad part (and the form) for anything else, before a run starts."""
    def bad(why: str) -> ValueError:
        return ValueError(f"recipe {name!r}: {why}; accepted: {NAME_FORM}")

    fields = name.split("|")
    if len(fields) != 3 or not fields[2].startswith("h"):
        raise bad("not three fields joined by '|', the last hX")
    ops_at, lr, horizon = fields
    ops, _, at = ops_at.partition("@")
    if ops not in EVENTS_PER_OPS:
        raise bad(f"unknown ops {ops!r} (one of {', '.join(EVENTS_PER_OPS)})")
    parts = lr.split("+")
    if parts[0] not in SCHEDULE_KINDS:
        raise bad(f"unknown schedule {parts[0]!r} (one of {', '.join(SCHEDULE_KINDS)})")
    options: Dict[str, Any] = {"schedule": parts[0]}
    try:
        for part in parts[1:]:
            prefix = next((p for p in OPTIONS if part.startswith(p)), None)
            if prefix is None or (OPTIONS[prefix][1] is None) != (part == prefix):
                raise bad(f"unknown schedule option {part!r}")
            field, kind = OPTIONS[prefix]
            options[field] = True if kind is None else kind(part[len(prefix):])
        fractions = tuple(float(a) for a in at.split(",")) if at else ()
        recipe = Recipe(ops, fractions, horizon=float(horizon[1:]), **options)
    except ValueError as error:
        raise error if str(error).startswith("recipe ") else bad(f"not a number in it ({error})") from None
    if len(fractions) != EVENTS_PER_OPS[ops] or list(fractions) != sorted(set(fractions)) or not all(0 < a < 1 for a in fractions):
        count = EVENTS_PER_OPS[ops]
        raise bad(f"{ops} needs {count} increasing growth fraction{'s' if count != 1 else ''} in (0, 1) after '@'")
    if not (math.isfinite(recipe.horizon) and recipe.horizon > 0 and math.isfinite(recipe.lr) and recipe.lr > 0):
        raise bad("the horizon and the rate must be positive numbers")
    try:  # the trainers' own checks, so a rate option the schedule would refuse fails here, not mid-run
        validate_lr_options(recipe.schedule, recipe.decay_fraction, recipe.rewarm_steps, recipe.lr_restart)
        check_growth_lr(lr_width_exponent=recipe.lr_width_exponent)
    except ConfigError as error:
        raise bad(f"{error.key}={error.value!r} cannot be used (accepted: {error.accepted})") from None
    if recipe.name != name:
        raise bad(f"not canonical (did you mean {recipe.name!r}?)")
    return recipe


def with_horizon(recipe: Recipe, horizon: float) -> Recipe:
    return replace(recipe, horizon=horizon)
