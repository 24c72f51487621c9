"""The training loss of continuous diffusion, under each weighting over time.

A continuous DIMBA predicts x0 from x_t = sqrt(ab_t) e + sqrt(1 - ab_t) noise. What it is
trained on decides what it is good at (`objective.weighting`):

- `uniform` (the original recipe): t uniform over 1..T, `mse_weight` times the mean squared
  error of the x0 estimate plus `ce_weight` times the rounding logits' cross-entropy. Cheap
  and stable, but not the likelihood: it spends its effort where the cosine schedule puts
  its timesteps, not where the bound's weights are.
- `min_snr` (Hang et al., 2023): the same with the squared error weighted by
  min(SNR(t), `min_snr_gamma`), the x0-prediction form of min-SNR-gamma.
- `bound`: the variational bound itself (`dimba.diffusion.bound`), per token, as the loss:
  prior + reconstruction + sum_t w_t ||e - e_hat(z_t, t)||^2 with w_t = 1/2 (SNR(t-1) -
  SNR(t)) and e_hat the reverse process's estimate (the rounding distribution's mean), so
  the number trained is the number `dimba eval` reports. One timestep per sequence, drawn
  from a proposal q over 1..T: `RECONSTRUCTION_SHARE` of it on t = 1, whose draw pays the
  reconstruction term -log p(x | z_1) / q_1, the rest the bound's own importance proposal
  over 2..T (half proportional to w_t, half uniform), whose draw pays w_t ||e - e_hat||^2 /
  q_t. Each draw is an unbiased estimate of the bound; the weights span nine orders of
  magnitude, and the proposal keeps the estimate's variance bearable (Kingma et al. 2021's
  argument for importance sampling in time, with the proposal of the evaluation).

Self-conditioning (`model.self_condition`, Chen et al.'s Analog Bits): on a share
`objective.self_condition_rate` of the steps the network first estimates x0 without
gradient and then reads that estimate; on the others it reads zeros, as at the first step
of sampling.
"""

from __future__ import annotations

from typing import Dict, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from dimba.diffusion.bound import diffusion_weights, prior_nats, snr, timestep_proposal
from dimba.objective import WEIGHTINGS
RECONSTRUCTION_SHARE = 0.125
"""The share of `bound`'s timestep proposal on t = 1 (the reconstruction term)."""


def training_proposal(alpha_bar: Tensor) -> Tensor:
    """q_t for t = 0..T of `weighting=bound`: q_1 = RECONSTRUCTION_SHARE, the rest the bound's
    own proposal over 2..T (q_0 = 0)."""
    proposal = (1 - RECONSTRUCTION_SHARE) * timestep_proposal(alpha_bar)
    proposal[1] = RECONSTRUCTION_SHARE
    return proposal


def sample_timesteps(model, weighting: str, batch: int, device: torch.device,
                     generator: Optional[torch.Generator] = None) -> Tensor:
    """One timestep per sequence: uniform over 1..T, or from `training_proposal` for `bound`."""
    if weighting != "bound":
        return model.schedule.sample_timesteps(batch, device, generator)
    proposal = training_proposal(model.schedule.alpha_bar.detach().cpu())
    draws = torch.multinomial(proposal.to(device, torch.float32), batch, replacement=True, generator=generator)
    return draws


def loss(model, tokens: Tensor, t: Tensor, noise: Tensor, weighting: str = "uniform", mse_weight: float = 1.0,
         ce_weight: float = 1.0, min_snr_gamma: float = 5.0, self_condition: bool = False,
         return_prediction: bool = False) -> Dict[str, Tensor]:
    """The loss dict of one batch: "loss", and "mse", "ce" (the uniform recipe's terms, logged
    under every weighting). `self_condition`: run the self-conditioning pass this step (a
    self-conditioned model reads zeros otherwise). With `return_prediction` the dict also
    holds "x0_hat" (the CDLM consistency term reuses it)."""
    x0 = model.embed(tokens)
    x_t = model.schedule.add_noise(x0, t, noise)
    previous = None
    if self_condition and model.config.self_condition:
        with torch.no_grad():
            previous = model.x0_hat(model.denoise(x_t, t)).detach()
    out = model.denoise(x_t, t, previous)
    x0_hat = model.x0_hat(out)
    logits = model.logits(out).float()
    if weighting == "bound":
        result = _bound_loss(model, tokens, x0, t, out, x0_hat, logits)
    else:
        mse = F.mse_loss(x0_hat, x0)
        ce = F.cross_entropy(logits.flatten(0, 1), tokens.flatten())
        if weighting == "min_snr":
            weight = snr(model.schedule.alpha_bar)[t].clamp(max=min_snr_gamma).to(x0.dtype)
            per_sequence = ((x0_hat - x0) ** 2).mean(dim=(1, 2))
            loss_value = mse_weight * (weight * per_sequence).mean() + ce_weight * ce
        elif weighting == "uniform":
            loss_value = mse_weight * mse + ce_weight * ce
        else:
            raise ValueError(f"unknown weighting {weighting!r}: {' | '.join(WEIGHTINGS)}")
        result = {"loss": loss_value, "mse": mse, "ce": ce}
    if return_prediction:
        result["x0_hat"] = x0_hat
    return result


def _bound_loss(model, tokens: Tensor, x0: Tensor, t: Tensor, out: Tensor, x0_hat: Tensor,
                logits: Tensor) -> Dict[str, Tensor]:
    """The bound per token, in nats, one importance-weighted timestep per sequence."""
    alpha_bar = model.schedule.alpha_bar.to(torch.float64)
    proposal = training_proposal(alpha_bar.detach().cpu()).to(t.device)
    weights = diffusion_weights(alpha_bar).to(t.device)
    length = tokens.shape[1]
    e_hat = model.rounding_mean(out) if model.config.x0_estimate == "regression" else x0_hat
    sq_err = ((x0 - e_hat).to(torch.float64) ** 2).sum(dim=(1, 2))
    nll = F.cross_entropy(logits.flatten(0, 1), tokens.flatten(), reduction="none").view(tokens.shape)
    at_one = (t == 1).to(torch.float64)
    diffusion = (1 - at_one) * weights[t] / proposal[t] * sq_err
    reconstruction = at_one * nll.to(torch.float64).sum(1) / proposal[1]
    prior = prior_nats(x0, alpha_bar[-1].item())  # (alpha_bar_T is fixed, learned or not)
    bound = ((prior + reconstruction + diffusion) / length).mean()
    return {"loss": bound.to(x0.dtype), "mse": ((x0 - x0_hat) ** 2).mean().detach(),
            "ce": nll.mean().detach()}
