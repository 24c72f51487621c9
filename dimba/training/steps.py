"""The one training-step recipe both loops run: noise, loss, optimizer, LR schedule, growth.

`DIMBALightningModule` and `SimpleTrainer` call these functions and nothing else for the
arithmetic of a step, so the two trainers compute the same numbers. After each optimizer
step both grow first and check milestones second (`after_optimizer_step`; under Lightning
the same order is the order of `training_callbacks`): a milestone crossed by growth is
saved at that step, with the grown weights and the carried-over optimizer state.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Mapping, Sequence

import torch

from dimba.config.training import GrowthConfig, OptimConfig
from dimba.diffusion.consistency import objective_loss, sample_deltas
from dimba.growth.optim import GrowableAdamW
from dimba.growth.schedule import GrowthEvent
from dimba.model import DIMBA
from dimba.objective import ObjectiveConfig
from dimba import objectives
from dimba.objectives import continuous
from dimba.training.lr_schedule import GrowthAwareLR, build_lr_multiplier, width_lr_scales


# ---------------------------------------------------------------------- noise and loss
def step_generator(device: torch.device, seed: int, step: int, rank: int = 0, stream: int = 0) -> torch.Generator:
    """A generator seeded from (seed, step, rank); `stream` 1 is the consistency gaps δ and 2
    the self-conditioning draw, apart from stream 0 (t and noise), so turning either on leaves
    the diffusion noise unchanged."""
    generator = torch.Generator(device=device)
    generator.manual_seed((seed * 1_000_003 + step) * 1009 + rank + stream * 2**62)
    return generator


def step_noise(model: DIMBA, batch: torch.Tensor, seed: int, step: int, rank: int = 0,
               weighting: str = "uniform") -> tuple[torch.Tensor, torch.Tensor]:
    """Timesteps (drawn as `weighting` wants them) and noise for one training step, drawn from
    (seed, step, rank) alone.

    A resumed run draws exactly what the uninterrupted one would have, with no RNG state
    to carry, and the Lightning path and SimpleTrainer draw the same numbers.
    """
    generator = step_generator(batch.device, seed, step, rank)
    t = continuous.sample_timesteps(model, weighting, batch.shape[0], batch.device, generator)
    noise = torch.randn(*batch.shape, model.config.d_embed, generator=generator, device=batch.device,
                        dtype=model.embedding.weight.dtype)
    return t, noise


def step_deltas(t: torch.Tensor, objective: ObjectiveConfig, seed: int, step: int, rank: int = 0) -> torch.Tensor:
    """The consistency gaps δ of one training step, drawn from (seed, step, rank) alone."""
    generator = step_generator(t.device, seed, step, rank, stream=1)
    return sample_deltas(t, objective.consistency_delta_min, objective.consistency_delta_max, generator)


def training_loss(model: DIMBA, batch: torch.Tensor, objective: ObjectiveConfig, seed: int, step: int,
                  rank: int = 0) -> Dict[str, torch.Tensor]:
    """One training step's loss dict under `objective`: what both trainers optimize and log
    ("loss", and its terms: "mse" and "ce" for diffusion, "ce" for masked and ar)."""
    if not objective.use_consistency_training:  # (t, then noise, from the step's generator: as step_noise)
        return objectives.loss(model, batch, objective, step_generator(batch.device, seed, step, rank),
                               self_condition=self_conditions(model, objective, seed, step))
    t, noise = step_noise(model, batch, seed, step, rank, objective.weighting)
    delta = step_deltas(t, objective, seed, step, rank)
    return objective_loss(model, batch, t, noise, objective, delta, self_conditions(model, objective, seed, step))


def self_conditions(model: DIMBA, objective: ObjectiveConfig, seed: int, step: int) -> bool:
    """Whether this step runs the self-conditioning pass: a draw from (seed, step) alone, the
    same on every rank (so every rank runs the same forwards)."""
    if not model.config.self_condition:
        return False
    draw = torch.rand((), generator=step_generator(torch.device("cpu"), seed, step, 0, stream=2))
    return bool(draw < objective.self_condition_rate)


def validation_loss(model: DIMBA, batch: torch.Tensor, objective: ObjectiveConfig, batch_idx: int) -> Dict[str, torch.Tensor]:
    """Fixed timesteps and noise (or masks) per validation batch, so losses compare across steps."""
    if objective.name != "diffusion":
        return objectives.loss(model, batch, objective, torch.Generator(device=batch.device).manual_seed(batch_idx))
    generator = torch.Generator().manual_seed(batch_idx)  # on the CPU: the same draws on any device
    t = model.schedule.sample_timesteps(batch.shape[0], torch.device("cpu"), generator).to(batch.device)
    noise = torch.randn(*batch.shape, model.config.d_embed, generator=generator)
    return objectives.loss(model, batch, objective, t=t, noise=noise.to(batch.device, model.embedding.weight.dtype))


# ---------------------------------------------------------------------- optimizer
def param_group_for(param: torch.nn.Parameter) -> int:
    """Group 0 (weight decay) for matrices, group 1 (none) for gains, biases and SSM scalars."""
    return 0 if param.dim() >= 2 else 1


def build_optimizer(model: torch.nn.Module, optim: OptimConfig) -> GrowableAdamW:
    params = [p for p in model.parameters() if p.requires_grad]
    return GrowableAdamW(
        [{"params": [p for p in params if param_group_for(p) == 0], "weight_decay": optim.weight_decay},
         {"params": [p for p in params if param_group_for(p) == 1], "weight_decay": 0.0}],
        lr=optim.lr, betas=tuple(optim.betas),
    )


def lr_multiplier(optim: OptimConfig, growth: GrowthConfig, total_steps: int, d_model: int) -> GrowthAwareLR:
    """The LR schedule as a multiplier of `optim.lr` at each optimizer step (for LambdaLR):
    `optim.schedule`, re-warmed or restarted at the growth steps as `growth` asks, and
    scaled per width from the start width `d_model` (`growth.lr_width_exponent`). A pure
    function of the step with plain-data attributes: LambdaLR's state resumes it exactly."""
    return build_lr_multiplier(optim.schedule, optim.warmup_steps, total_steps, optim.min_lr_ratio,
                               growth_steps=[event.step for event in growth.schedule],
                               rewarm_steps=growth.rewarm_steps, lr_restart=growth.lr_restart,
                               decay_fraction=optim.decay_fraction,
                               width_scales=width_lr_scales(d_model, growth.schedule, growth.lr_width_exponent))


# ---------------------------------------------------------------------- growth
def growth_seed(seed: int, event: GrowthEvent) -> int:
    """The seed of a growth event's new weights: the same on every rank and after a resume."""
    return seed * 1_000_003 + event.step


def due_growth(schedule: Sequence[GrowthEvent], step: int, history: Sequence[Mapping[str, Any]]) -> List[GrowthEvent]:
    """Events whose step has come and that the model has not been through yet: the first
    len(history) events of the schedule are done, whatever step they were resolved to (a run
    resumed with another trainer.max_steps resolves `at:` fractions to other steps)."""
    return [event for event in list(schedule)[len(history):] if event.step <= step]


def after_optimizer_step(step: int, schedule: Sequence[GrowthEvent], history: Sequence[Mapping[str, Any]],
                         grow: Callable[[GrowthEvent], None], check_milestones: Callable[[], None]) -> None:
    """Grow first, then check milestones (the order of `training_callbacks` under Lightning)."""
    for event in due_growth(schedule, step, history):
        grow(event)
    check_milestones()
