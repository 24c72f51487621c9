"""Recipes (how a run grows and schedules its learning rate) and scales (model sizes and
scratch's step budget), and the plan that turns a recipe into steps for one scale.

A recipe's growth events sit at fractions of its own schedule length (`total_steps`). That
length follows from `horizon`: the schedule is planned to end where the run has used
`horizon` times scratch's training FLOPs. Every run may train on until it has used as many
FLOPs as scratch (then it stops), unless it reaches scratch's final loss first.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any, Callable, Dict, List, Tuple

from dimba.config.training import OptimConfig
from dimba.model import DIMBAConfig

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
        return DIMBAConfig(d_model=self.d_model, n_layers=self.n_layers)


SCALES = {
    "grid": Scale("grid", 128, 4, 240),  # d64x2 -> d128x4 (model=small), the default run's 240 steps
    "mid": Scale("mid", 128, 8, 300),  # d64x4 -> d128x8
    "confirm": Scale("confirm", 256, 8, 400),  # today's size: d128x4 -> d256x8, the 400 steps
}


@dataclass(frozen=True)
class Recipe:
    ops: str  # scratch | small | dw (depth, then width twice, as growth=default) | depth-stack | depth-identity
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


def parse_recipe(name: str) -> Recipe:
    """The recipe a name stands for, e.g. `dw@0.25,0.5,0.75|cosine+restart|h0.6`."""
    ops_at, lr, horizon = name.split("|")
    ops, _, at = ops_at.partition("@")
    parts = lr.split("+")
    options: Dict[str, Any] = {"schedule": parts[0]}
    for part in parts[1:]:
        if part == "restart":
            options["lr_restart"] = True
        elif part.startswith("rewarm"):
            options["rewarm_steps"] = int(part[6:])
        elif part.startswith("df"):
            options["decay_fraction"] = float(part[2:])
        elif part.startswith("wlr"):
            options["lr_width_exponent"] = float(part[3:])
        elif part.startswith("lr"):
            options["lr"] = float(part[2:])
        else:
            raise ValueError(f"unknown schedule option {part!r} in {name!r}")
    recipe = Recipe(ops, tuple(float(a) for a in at.split(",")) if at else (), horizon=float(horizon[1:]), **options)
    if recipe.name != name:
        raise ValueError(f"{name!r} is not a canonical recipe name (did you mean {recipe.name!r}?)")
    return recipe


def with_horizon(recipe: Recipe, horizon: float) -> Recipe:
    return replace(recipe, horizon=horizon)
