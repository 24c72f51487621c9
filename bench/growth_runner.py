"""One training run of the growth experiment, trained by dimba's own `SimpleTrainer`, with
evaluations on a FLOP grid.

Training is `SimpleTrainer`'s step (the step recipe it shares with the Lightning module:
`training_loss`, GrowableAdamW with weight decay on matrices only, gradient clipping, growth
after the optimizer step with the optimizer state carried over, the data order of
`EpochShuffleSampler(seed)`, the LR schedule of `steps.lr_multiplier`); only the recipe's
optim and growth options vary. The experiment adds its evaluations and its FLOP budget as a
`TrainerCallback` (`Runner`). Evaluation (`bench.growth_eval`) is timed and counted apart
from training.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch

from dimba.config.recipe import Recipe
from dimba.config.training import GrowthConfig, OptimConfig
from dimba.growth.schedule import GrowthEvent, as_events
from dimba.model import DIMBAConfig
from dimba.training.simple import SimpleTrainer, TrainerCallback

from growth_eval import EvalSet, evaluate  # noqa: E402  (bench/ is on sys.path)

log = logging.getLogger("bench.growth_runner")

OPTIM = OptimConfig()  # the schema's lr, betas, weight decay, warmup
POST_GROWTH_EVALS = (4, 16)  # extra evaluations this many steps after each growth: the recovery


@dataclass(frozen=True)
class Event:
    step: int
    op: str  # depth | width
    size: int
    mode: str = "identity"


@dataclass
class Plan:
    """What a run does: its start, growth steps, LR schedule and FLOP budget, fixed before it starts."""

    start: DIMBAConfig
    events: List[Event]
    schedule: str
    total_steps: int  # the LR schedule's length
    decay_fraction: float
    rewarm_steps: int
    lr_restart: bool
    lr_width_exponent: float
    lr: float  # the peak rate (optim.lr)
    budget_flops: int  # stop before a step would exceed it
    eval_every_flops: float  # the coarse grid
    fine_every_flops: float  # the grid once within `fine_margin` of the target
    fine_margin: float
    targets: Optional[Dict[str, float]] = None  # "split" or "split@which": stop once at or below all ...
    after_crossing_flops: float = 0.0  # ... and this many FLOPs more (to see whether it stays there)

    def recipe(self, seed: int) -> Recipe:
        """The plan as dimba's training recipe (`objective=diffusion`, no milestones)."""
        optim = replace(OPTIM, lr=self.lr, schedule=self.schedule, decay_fraction=self.decay_fraction)
        growth = GrowthConfig(schedule=growth_schedule(self.events), rewarm_steps=self.rewarm_steps,
                              lr_restart=self.lr_restart, lr_width_exponent=self.lr_width_exponent)
        return Recipe(model=self.start, optim=optim, growth=growth, seed=seed, total_steps=self.total_steps)


@dataclass
class Trace:
    points: List[Dict[str, Any]] = field(default_factory=list)
    train_loss: List[float] = field(default_factory=list)
    lr: List[float] = field(default_factory=list)
    growth: List[Dict[str, Any]] = field(default_factory=list)
    crossing: Dict[str, Dict[str, Any]] = field(default_factory=dict)
    eval_wall_s: float = 0.0
    eval_flops: int = 0


def growth_schedule(events: Sequence[Event]) -> List[GrowthEvent]:
    """The plan's events as a `growth.schedule` (what the trainers grow and schedule by)."""
    return as_events([{"step": e.step, "op": e.op, **({"n_layers": e.size, "mode": e.mode} if e.op == "depth"
                                                        else {"d_model": e.size})} for e in events])


class Runner(TrainerCallback):
    """Trains one plan on one seed through `SimpleTrainer` and records the curve: evaluations
    at the start, on the FLOP grid, around each growth and at the end; stops before a step
    would pass the budget, or once the targets are crossed (and `after_crossing_flops` more)."""

    def __init__(self, plan: Plan, seed: int, loader, evalsets: Sequence[EvalSet], step_flops, eval_flops) -> None:
        self.plan, self.seed, self.evalsets = plan, seed, list(evalsets)
        self.step_flops, self.eval_flops = step_flops, eval_flops  # callables: DIMBAConfig -> FLOPs
        self.trainer = SimpleTrainer(train_loader=loader, recipe=plan.recipe(seed), max_steps=2**62,
                                     device="cpu", log_every_n_steps=0, callbacks=[self])
        self.model = self.trainer.model
        self.trace, self.flops, self.next_eval = Trace(), 0, 0.0
        self.post_growth: List[int] = []
        self.stop_at = float("inf")

    @property
    def step(self) -> int:
        return self.trainer.global_step

    def run(self) -> Tuple[Trace, float]:
        start = time.perf_counter()
        self.evaluate("start")
        self.trainer.train()
        if self.trace.points[-1]["step"] != self.step:
            self.evaluate("end")
        self.trace.points[-1]["tag"] += "+final"
        return self.trace, time.perf_counter() - start - self.trace.eval_wall_s

    # ----------------------------------------------------------------- the trainer's hooks
    def should_stop(self, trainer: SimpleTrainer) -> bool:
        over_budget = self.flops + self.step_flops(self.model.config) > self.plan.budget_flops * (1 + 1e-9)
        return over_budget or self.flops >= self.stop_at

    def on_train_batch_end(self, trainer: SimpleTrainer, outputs: Dict[str, torch.Tensor], lr: float) -> None:
        self.trace.lr.append(lr)
        self.trace.train_loss.append(round(float(outputs["loss"]), 5))
        self.flops += self.step_flops(self.model.config)  # the size this step trained at

    def on_before_growth(self, trainer: SimpleTrainer, event: GrowthEvent) -> None:
        self.evaluate("before_growth")

    def on_after_growth(self, trainer: SimpleTrainer, event: GrowthEvent) -> None:
        self.evaluate("after_growth")
        planned = self.plan.events[len(self.trace.growth)]
        self.trace.growth.append({"step": self.step, "flops": self.flops, "op": planned.op, "size": planned.size,
                                  "mode": planned.mode, "params": sum(p.numel() for p in self.model.parameters()),
                                  "loss_before": self.trace.points[-2]["loss"],
                                  "loss_after": self.trace.points[-1]["loss"]})
        self.post_growth = [self.step + k for k in POST_GROWTH_EVALS]

    def on_step_end(self, trainer: SimpleTrainer) -> None:
        if self.flops >= self.next_eval or self.step in self.post_growth:
            self.evaluate("grid" if self.flops >= self.next_eval else "post_growth")
        if self.reached_targets() and self.stop_at == float("inf"):
            self.stop_at = self.flops + self.plan.after_crossing_flops

    # ----------------------------------------------------------------- evaluation
    def evaluate(self, tag: str) -> None:
        start = time.perf_counter()
        lr_next = self.trainer.optimizer.param_groups[0]["initial_lr"] * self.trainer.lr_schedule(self.step)
        point: Dict[str, Any] = {"step": self.step, "flops": self.flops, "tag": tag, "loss": {},
                                 "params": sum(p.numel() for p in self.model.parameters()), "lr_next": lr_next}
        for evalset in self.evalsets:
            losses = evaluate(self.model, evalset)
            point["loss"][evalset.name] = float(losses.mean())
            self.trace.eval_flops += self.eval_flops(self.model.config) * len(losses)
            point.setdefault("_samples", {})[evalset.name] = losses
        self.trace.points.append(point)
        self.trace.eval_wall_s += time.perf_counter() - start
        self._record_crossings(point)
        self._advance_grid(point)
        log.info("  step %5d  %.3e FLOPs  %s  lr %.2e  (%s)", self.step, self.flops,
                 "  ".join(f"{k} {v:.4f}" for k, v in point["loss"].items()), point["lr_next"], tag)

    def _record_crossings(self, point: Dict[str, Any]) -> None:
        for name, target in (self.plan.targets or {}).items():
            if name not in self.trace.crossing and point["loss"][name.split("@")[0]] <= target:
                previous = [p for p in self.trace.points[:-1] if p["tag"] != "after_growth"]
                self.trace.crossing[name] = {"step": point["step"], "flops": point["flops"],
                                             "previous_eval_flops": previous[-1]["flops"] if previous else 0,
                                             "samples": point["_samples"][name.split("@")[0]].tolist()}

    def _advance_grid(self, point: Dict[str, Any]) -> None:
        targets = self.plan.targets or {}
        near = any(point["loss"][n.split("@")[0]] <= t * (1 + self.plan.fine_margin) for n, t in targets.items())
        every = self.plan.fine_every_flops if near else self.plan.eval_every_flops
        while self.next_eval <= self.flops:
            self.next_eval += every

    def reached_targets(self) -> bool:
        targets = self.plan.targets
        return bool(targets) and all(name in self.trace.crossing for name in targets)


def finish_points(trace: Trace, keep_final_samples: bool) -> List[Dict[str, Any]]:
    """JSON-ready points; per-sample losses kept only at the final evaluation if asked."""
    out = []
    for i, point in enumerate(trace.points):
        clean = {k: v for k, v in point.items() if k != "_samples"}
        if keep_final_samples and i == len(trace.points) - 1:
            clean["samples"] = {k: v.tolist() for k, v in point["_samples"].items()}
        out.append(clean)
    return out
