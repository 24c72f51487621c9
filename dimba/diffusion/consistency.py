"""CDLM consistency training: the one place the consistency term is computed.

Consistency training (Song et al., 2023) asks the denoiser to give the same x0 along one
noise trajectory: x_t and x_{t-δ} are the same clean embeddings x0 noised with the *same*
noise z, and the prediction at the noisier t is pulled towards the prediction at the less
noisy t - δ. The target is computed under `torch.no_grad()` (stop-gradient), so only the
noisier prediction moves; a model consistent along its trajectories needs far fewer DDIM
steps, since one jump of size δ lands where several small ones would.

    consistency = mean over (batch, position, channel) of (x0_hat(x_t, t) - sg[target])²
    target = x0_hat(x_{t-δ}, t-δ), or the clean x0 itself where t - δ = 0

The boundary condition of consistency models, f(x_0, 0) = x_0: at t - δ = 0 the less
noisy point *is* the clean embedding, so it is the target. (The denoiser is never trained
or sampled at timestep 0; asking it there would pull the student towards an arbitrary
output. With δ in [16, 250] and T = 1000 this is about 13% of the pairs.)

The student prediction x0_hat(x_t, t) is the one the diffusion loss already computed, so a
step costs one extra no-grad forward, not another backward.
"""

from __future__ import annotations

from typing import Dict, Optional

import torch
import torch.nn.functional as F
from torch import Tensor


def sample_deltas(t: Tensor, delta_min: int, delta_max: int, generator: Optional[torch.Generator] = None) -> Tensor:
    """Per-sample integer gaps δ in [delta_min, delta_max], clipped to t so that t - δ >= 0."""
    delta = torch.randint(delta_min, delta_max + 1, t.shape, device=t.device, generator=generator)
    return torch.minimum(delta, t)


def consistency_target(model, tokens: Tensor, t: Tensor, noise: Tensor, delta: Tensor) -> Tensor:
    """The stop-gradient x0 prediction at t - δ, on the same noise as x_t (the clean x0
    where t - δ = 0)."""
    with torch.no_grad():
        s = t - delta
        x0 = model.embed(tokens)
        prediction = model.x0_hat(model.estimate(model.schedule.add_noise(x0, s, noise), s))
        at_zero = (s == 0).view(-1, *([1] * (x0.dim() - 1)))
        return torch.where(at_zero, x0.to(prediction.dtype), prediction)


def consistency_loss(model, tokens: Tensor, x0_hat: Tensor, t: Tensor, noise: Tensor, delta: Tensor) -> Tensor:
    """MSE between the prediction at t (`x0_hat`, with gradient) and the target at t - δ."""
    return F.mse_loss(x0_hat, consistency_target(model, tokens, t, noise, delta))


def objective_loss(
    model,
    tokens: Tensor,
    t: Tensor,
    noise: Tensor,
    objective=None,
    delta: Optional[Tensor] = None,
    self_condition: bool = False,
) -> Dict[str, Tensor]:
    """The training loss of continuous diffusion under `objective` (an `ObjectiveConfig`; None:
    the defaults), plus the consistency term when `delta` is given (the dict then holds
    "consistency" and "loss" includes its weight)."""
    from dimba.objective import ObjectiveConfig
    from dimba.objectives import continuous

    objective = objective if objective is not None else ObjectiveConfig()
    out = continuous.loss(model, tokens, t, noise, objective.weighting, objective.mse_weight, objective.ce_weight,
                          objective.min_snr_gamma, self_condition, return_prediction=delta is not None)
    if delta is None:
        return out
    x0_hat = out.pop("x0_hat")
    consistency = consistency_loss(model, tokens, x0_hat, t, noise, delta)
    out["consistency"] = consistency
    out["loss"] = out["loss"] + objective.consistency_loss_weight * consistency
    return out
