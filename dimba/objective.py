"""The training objective as data: continuous diffusion (optionally with CDLM consistency),
masked diffusion, or the autoregressive yardstick.

Kept free of torch, like `dimba.model.config`, so the Hydra schema (`objective` group), the
Lightning module and SimpleTrainer validate the same options with the same messages.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any, Dict

if TYPE_CHECKING:
    from dimba.model.config import DIMBAConfig

from dimba.errors import ConfigError
from dimba.model.config import OBJECTIVES

WEIGHTINGS = ("uniform", "min_snr", "bound")
"""What continuous diffusion trains on (see `ObjectiveConfig.weighting`)."""
DIFFUSION_ONLY = ("weighting", "mse_weight", "ce_weight", "min_snr_gamma", "self_condition_rate",
                  "use_consistency_training", "consistency_loss_weight", "consistency_delta_min",
                  "consistency_delta_max")
"""The options of continuous diffusion: refused under `masked` and `ar` unless left at their defaults."""


@dataclass
class ObjectiveConfig:
    """`objective=diffusion` (consistency off), `objective=cdlm` (on), `objective=masked` or
    `objective=ar` (`name`; see `dimba.objectives`).

    With consistency training on, each step adds `consistency_loss_weight` times the MSE
    between the model's x0 prediction at t and a stop-gradient prediction at t - δ, on the
    same noise trajectory, with δ an integer drawn per sample from
    [consistency_delta_min, consistency_delta_max] (see `dimba.diffusion.consistency`).
    """

    name: str = "diffusion"
    """`diffusion` (continuous, in the embedding space), `masked` (absorbing-state diffusion,
    MDLM) or `ar` (autoregressive, causal). It decides the network (`model.objective`)."""
    weighting: str = "uniform"
    """What continuous diffusion trains on (`dimba.objectives.continuous`): `uniform` (t
    uniform, mse_weight x MSE + ce_weight x rounding cross-entropy), `min_snr` (the MSE
    weighted by min(SNR(t), min_snr_gamma)) or `bound` (the variational bound itself, with
    importance-sampled timesteps: the figure `dimba eval` reports)."""
    mse_weight: float = 1.0
    """Weight of the x0 mean-squared error in the diffusion loss (`uniform`, `min_snr`)."""
    ce_weight: float = 1.0
    """Weight of the token cross-entropy of the rounding logits in the diffusion loss (`uniform`, `min_snr`)."""
    min_snr_gamma: float = 5.0
    """The SNR cap of `weighting=min_snr` (Hang et al. use 5)."""
    self_condition_rate: float = 0.5
    """Share of training steps on which a self-conditioned model (`model.self_condition`)
    reads its own no-gradient x0 estimate (the rest read zeros)."""
    use_consistency_training: bool = False
    """Add the consistency term to the diffusion loss (one extra no-grad forward per step)."""
    consistency_loss_weight: float = 1.0
    """Weight of the consistency term; 0 computes and logs it without training on it."""
    # Typed Any, like milestones: OmegaConf would refuse `2.5` for an int field while Hydra
    # composes, with a multi-line error; here it reaches __post_init__ and its one-line message.
    consistency_delta_min: Any = 16
    """Smallest timestep gap δ: an integer >= 1."""
    consistency_delta_max: Any = 250
    """Largest timestep gap δ: an integer in [consistency_delta_min, model.diffusion_steps)."""

    def __post_init__(self) -> None:
        if self.name not in OBJECTIVES:
            raise ConfigError("objective.name", self.name, " | ".join(OBJECTIVES))
        if self.weighting not in WEIGHTINGS:
            raise ConfigError("objective.weighting", self.weighting, " | ".join(WEIGHTINGS))
        gamma = self.min_snr_gamma
        if isinstance(gamma, bool) or not isinstance(gamma, (int, float)) or not math.isfinite(gamma) or gamma <= 0:
            raise ConfigError("objective.min_snr_gamma", gamma, "a finite number > 0")
        rate = self.self_condition_rate
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 <= rate <= 1:
            raise ConfigError("objective.self_condition_rate", rate, "a number in [0, 1]")
        for name in ("mse_weight", "ce_weight"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ConfigError(f"objective.{name}", value, "a finite number >= 0")
        if not isinstance(self.use_consistency_training, bool):
            raise ConfigError("objective.use_consistency_training", self.use_consistency_training, "true or false")
        weight = self.consistency_loss_weight
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight) or weight < 0:
            raise ConfigError("objective.consistency_loss_weight", weight, "a finite number >= 0")
        for name in ("consistency_delta_min", "consistency_delta_max"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"objective.{name}", value, "an integer >= 1")
        if self.consistency_delta_max < self.consistency_delta_min:
            raise ConfigError("objective.consistency_delta_max", self.consistency_delta_max,
                              f"an integer >= objective.consistency_delta_min ({self.consistency_delta_min})")

        defaults = {f.name: f.default for f in fields(self)}
        if self.weighting == "bound":
            for option in ("mse_weight", "ce_weight"):
                if getattr(self, option) != defaults[option]:
                    raise ConfigError(f"objective.{option}", getattr(self, option),
                                      f"its default ({defaults[option]}) with objective.weighting=bound: the "
                                      f"bound weighs its own terms")
        if self.name != "diffusion":
            for option in DIFFUSION_ONLY:
                if getattr(self, option) != defaults[option]:
                    raise ConfigError(f"objective.{option}", getattr(self, option),
                                      f"its default ({defaults[option]}) with objective={self.name}: "
                                      f"it applies to continuous diffusion only")

    def network(self, model: "DIMBAConfig") -> "DIMBAConfig":
        """`model` built for this objective: `model.objective` follows `name`, and `ar` is causal.
        A `model.objective` set by hand to another objective is refused."""
        from dataclasses import replace

        if model.objective not in ("diffusion", self.name):
            raise ConfigError("model.objective", model.objective,
                              f"{self.name}, as objective={self.name} says (or leave it unset)")
        if self.name == "diffusion" and model.noise_schedule == "learned" and self.weighting != "bound":
            raise ConfigError("model.noise_schedule", "learned",
                              f"cosine | cosine_zero_snr with objective.weighting={self.weighting} (a learned "
                              f"schedule is trained through the bound: objective.weighting=bound)")
        if model.objective == self.name and (self.name != "ar" or not model.bidirectional):
            return model
        # (continuous-only options left at their defaults are turned off by DIMBAConfig itself)
        return replace(model, objective=self.name, bidirectional=self.name != "ar" and model.bidirectional)

    def check_diffusion_steps(self, diffusion_steps: int) -> None:
        """δ must leave t - δ a real timestep for some t: delta_max < model.diffusion_steps.

        Checked only while consistency training is on, so `objective=diffusion` never
        refuses a model with few diffusion steps over an unused default.
        """
        if self.use_consistency_training and self.consistency_delta_max >= diffusion_steps:
            raise ConfigError("objective.consistency_delta_max", self.consistency_delta_max,
                              f"an integer below model.diffusion_steps ({diffusion_steps})")

    def to_dict(self) -> Dict[str, Any]:
        """Plain data for hyperparameters (checkpoints load with weights_only=True)."""
        return {
            "name": str(self.name),
            "weighting": str(self.weighting),
            "mse_weight": float(self.mse_weight),
            "ce_weight": float(self.ce_weight),
            "min_snr_gamma": float(self.min_snr_gamma),
            "self_condition_rate": float(self.self_condition_rate),
            "use_consistency_training": bool(self.use_consistency_training),
            "consistency_loss_weight": float(self.consistency_loss_weight),
            "consistency_delta_min": int(self.consistency_delta_min),
            "consistency_delta_max": int(self.consistency_delta_max),
        }
