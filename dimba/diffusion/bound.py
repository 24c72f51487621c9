"""The variational bound on -log p(tokens) of a DIMBA, as it trains: its likelihood in bits.

Why the discrete-time bound. DIMBA's denoiser only ever sees integer timesteps 1..T of its
cosine schedule (`model.diffusion_steps`), so the model that exists is the discrete-time
one; the continuous-time bound would evaluate the network at times it never trained on.
With x = the token sequence, e = its embedding (model.embedding), ab_t the schedule's
alpha_bar and SNR(t) = ab_t / (1 - ab_t), the latent chain z_1..z_T has marginals
q(z_t | x) = N(sqrt(ab_t) e, (1 - ab_t) I) and Markov steps with beta_t = 1 - ab_t / ab_{t-1}.
The generative model is p(z_T) = N(0, I); p(z_{t-1} | z_t) = q(z_{t-1} | z_t, e := e_hat(z_t, t)),
the Gaussian posterior with the model's estimate of e in place of the data (see below;
variance: the posterior's);
and p(x | z_1) = prod_i softmax(x0_hat(z_1, 1)_i . E^T)[x_i], the rounding logits the model
trains with. For that model, exactly (Ho et al. 2020; Kingma et al. 2021, eq. 13-15):

    -log p(x) <= prior + diffusion + reconstruction
    prior          = KL(q(z_T | x) || N(0, I)) = 1/2 sum_dims [ab_T (e^2 - 1) - log(1 - ab_T)]
    diffusion      = sum_{t=2..T} E_q KL(q(z_{t-1} | z_t, x) || p(z_{t-1} | z_t))
                   = sum_{t=2..T} 1/2 (SNR(t-1) - SNR(t)) E_q ||e - e_hat(z_t, t)||^2
    reconstruction = E_q -log p(x | z_1)

The Gaussian KL of two posteriors that differ only in their mean is c^2 ||e - e_hat||^2 /
(2 var) with c = sqrt(ab_{t-1}) beta_t / (1 - ab_t) and var = (1 - ab_{t-1}) beta_t / (1 - ab_t),
which is the SNR difference above. Everything is summed over positions and embedding
dimensions, in nats. (DDIM, what `dimba generate` samples with, is another sampler of the same
denoiser; the bound is the likelihood of the ancestral one.)

The reverse process's estimate of e is the mean of the model's rounding distribution,
softmax(x0_hat . E^T) . E (`decoder="rounding"`, the default; Plaid's categorical
reparameterisation): the cross-entropy term trains those logits to be the token posterior at
every t, and the mean of a distribution over embeddings snaps to the exact embedding once it
is certain. The regression output x0_hat itself (`decoder="regression"`) is the other valid
choice; it never reproduces an embedding exactly (a relative error of a few percent even at
t = 1), and the weights 1/2 (SNR(t-1) - SNR(t)), in the thousands at low noise, turn that
floor into tens of thousands of bits per byte. Either way the figure is a bound.

The estimator. The sum over t has T - 1 terms whose weights span nine orders of magnitude, so
t is importance-sampled, each draw weighted by w_t / p_t (unbiased for any proposal with
p_t > 0 everywhere). Half the proposal is proportional to w_t itself: where the weights are
huge (low noise) w_t / p_t is then a constant, and a denoiser's error there, which barely
depends on the noise, is measured at every other draw instead of being a rare, enormous
spike. The other half is uniform in t, for the noisy half of the schedule where the error is
large and the weights small (see `timestep_proposal` and `bench/bound_estimator.py`). The
draws are stratified over the proposal's CDF, and every sequence gets two independent
stratified replicates (each with its own reconstruction noise): their mean is the estimate,
and (a - b)^2 / 4 is an unbiased estimate of its Monte Carlo variance, so every figure
carries its standard error.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

LN2 = math.log(2.0)
REPLICATES = 2
DECODERS = ("rounding", "regression")
PROPOSAL_MIX = (0.5, 0.0, 0.5)
"""Shares of the timestep proposal: (proportional to w_t, uniform in log-SNR, uniform in t).
Measured in docs/results/likelihood-bound.md; see `timestep_proposal`."""


@dataclass
class SequenceBound:
    """Per-sequence estimates of the bound, in nats: (n,) tensors, float64, on the CPU."""

    nats: Tensor
    """The estimate of -log p(sequence): prior + diffusion + reconstruction."""
    mc_var: Tensor
    """Unbiased estimate of the Monte Carlo variance of `nats`."""
    prior: Tensor
    diffusion: Tensor
    reconstruction: Tensor

    @staticmethod
    def cat(parts: "list[SequenceBound]") -> "SequenceBound":
        return SequenceBound(*(torch.cat([getattr(p, name) for p in parts]) for name in
                               ("nats", "mc_var", "prior", "diffusion", "reconstruction")))


def snr(alpha_bar: Tensor) -> Tensor:
    """SNR(t) = ab_t / (1 - ab_t) for t = 0..T (infinite at t = 0, where ab_0 = 1)."""
    alpha_bar = alpha_bar.to(torch.float64)
    return alpha_bar / (1 - alpha_bar)


def diffusion_weights(alpha_bar: Tensor) -> Tensor:
    """w_t = 1/2 (SNR(t-1) - SNR(t)) for t = 0..T; zero for t < 2 (not in the sum)."""
    ratio = snr(alpha_bar[1:])  # SNR(0) is infinite: left out, so no gradient meets it (a learned schedule)
    return torch.cat([ratio.new_zeros(2), 0.5 * (ratio[:-1] - ratio[1:])])


def timestep_proposal(alpha_bar: Tensor, mix: Tuple[float, float, float] = PROPOSAL_MIX) -> Tensor:
    """p_t for t = 0..T (zero for t < 2): a mixture of three shares, (proportional to the
    weight w_t, proportional to the step's drop in log-SNR, uniform over t = 2..T). Every
    t >= 2 has p_t > 0 as long as the uniform share is positive."""
    weights = diffusion_weights(alpha_bar)[2:]
    by_weight, by_logsnr, by_step = mix
    proposal = torch.zeros_like(alpha_bar, dtype=torch.float64)
    proposal[2:] = by_weight * weights / weights.sum() + by_step / weights.numel()
    if by_logsnr:  # (a zero-terminal-SNR schedule's last drop is infinite: that share then lands on t = T)
        log_snr = snr(alpha_bar).log()
        drops = (log_snr[1:-1] - log_snr[2:]).clamp(min=0)
        drops = torch.where(torch.isinf(drops), drops[torch.isfinite(drops)].sum().clamp(min=1.0), drops)
        proposal[2:] += by_logsnr * drops / drops.sum()
    return proposal / proposal.sum()


def stratified_timesteps(proposal: Tensor, n: int, per_replicate: int, generator: torch.Generator) -> Tensor:
    """(n, REPLICATES, per_replicate) timesteps, each replicate stratified over the CDF of
    `proposal` (one uniform draw inside each of `per_replicate` equal slices)."""
    cdf = proposal.cumsum(0)
    cdf = cdf / cdf[-1]
    offsets = torch.rand(n, REPLICATES, per_replicate, generator=generator, dtype=torch.float64)
    u = (torch.arange(per_replicate, dtype=torch.float64) + offsets) / per_replicate
    return torch.searchsorted(cdf, u.clamp(max=1 - 1e-12), right=True).clamp(2, proposal.numel() - 1)


def prior_nats(x0: Tensor, alpha_bar_T: float) -> Tensor:
    """KL(q(z_T | x) || N(0, I)) per sequence: x0 (n, L, d) embeddings."""
    x0 = x0.to(torch.float64)
    per_dim = 0.5 * (alpha_bar_T * (x0 ** 2 - 1) - math.log1p(-alpha_bar_T))
    return per_dim.sum(dim=(1, 2))


@torch.no_grad()
def sequence_bound(model, tokens: Tensor, samples: int, generator: torch.Generator,
                   proposal: Optional[Tensor] = None, max_batch: int = 64, decoder: str = "rounding") -> SequenceBound:
    """The bound of each sequence of `tokens` (n, L), estimated with `samples` timestep draws
    per sequence (split between the two replicates) plus one reconstruction draw each.

    All randomness (timesteps, noise) comes from `generator`, a CPU generator, drawn sequence
    group by group: the same generator state gives the same estimate on any device. `proposal`:
    p_t over 0..T (default: `timestep_proposal`). Forwards take at most `max_batch` rows.
    """
    if decoder not in DECODERS:
        raise ValueError(f"decoder must be one of {', '.join(DECODERS)}, got {decoder!r}")
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < REPLICATES or samples % REPLICATES:
        raise ValueError(f"samples must be an even number >= {REPLICATES}, got {samples!r}")
    alpha_bar = model.schedule.alpha_bar.detach().to("cpu", torch.float64)
    proposal = timestep_proposal(alpha_bar) if proposal is None else proposal.to(torch.float64)
    proposal = proposal / proposal.sum()
    group = max(1, max_batch // (samples + REPLICATES))
    was_training = model.training
    model.eval()
    try:
        parts = [_group_bound(model, tokens[start:start + group], samples, generator, alpha_bar, proposal, max_batch,
                              decoder)
                 for start in range(0, tokens.shape[0], group)]
    finally:
        model.train(was_training)
    return SequenceBound.cat(parts)


def _group_bound(model, tokens: Tensor, samples: int, generator: torch.Generator, alpha_bar: Tensor,
                 proposal: Tensor, max_batch: int, decoder: str) -> SequenceBound:
    n, length = tokens.shape
    k = samples // REPLICATES
    weights = diffusion_weights(alpha_bar)
    t = stratified_timesteps(proposal, n, k, generator)  # (n, R, k)
    noise = torch.randn(n, REPLICATES, k + 1, length, model.config.d_embed, generator=generator)
    device, dtype = model.embedding.weight.device, model.embedding.weight.dtype
    x0 = model.embed(tokens.to(device)).detach()  # (n, L, d)
    prior = prior_nats(x0, float(alpha_bar[-1])).cpu()
    # Diffusion: every (sequence, replicate, draw) is one row of a forward batch.
    rows_t = t.reshape(-1)
    rows_seq = torch.arange(n).repeat_interleave(REPLICATES * k)
    sq_err = _denoising_errors(model, x0, rows_seq, rows_t, noise[:, :, :k].reshape(-1, length, x0.shape[-1]),
                               alpha_bar, device, dtype, max_batch, decoder)
    diffusion = ((weights[rows_t] / proposal[rows_t]) * sq_err).view(n, REPLICATES, k).mean(-1)  # (n, R)
    # Reconstruction: one draw of z_1 per replicate.
    recon_seq = torch.arange(n).repeat_interleave(REPLICATES)
    recon = _reconstruction_nats(model, x0, tokens, recon_seq, noise[:, :, k].reshape(-1, length, x0.shape[-1]),
                                 alpha_bar, device, dtype, max_batch).view(n, REPLICATES)
    replicates = prior[:, None] + diffusion + recon  # (n, R)
    return SequenceBound(nats=replicates.mean(1), mc_var=(replicates[:, 0] - replicates[:, 1]) ** 2 / 4,
                         prior=prior, diffusion=diffusion.mean(1), reconstruction=recon.mean(1))


def posterior_mean(model, out: Tensor, decoder: str) -> Tensor:
    """The reverse process's estimate of e at (z_t, t) from the network's output: the rounding
    distribution's mean softmax(out . E^T) . E (`rounding`), or the model's own x0 estimate
    (`regression`: the output itself, or that same mean under `x0_estimate=softmax`)."""
    return model.x0_hat(out) if decoder == "regression" else model.rounding_mean(out)


def _noised(x0: Tensor, seq: Tensor, t: Tensor, noise: Tensor, alpha_bar: Tensor, device, dtype) -> Tensor:
    """z_t = sqrt(ab_t) e + sqrt(1 - ab_t) noise, on the model's device and in its dtype."""
    ab = alpha_bar[t].view(-1, 1, 1)  # both square roots in float64: 1 - ab is 4e-5 at t = 1
    return ab.sqrt().to(device, dtype) * x0[seq.to(device)] + (1 - ab).sqrt().to(device, dtype) * noise.to(device, dtype)


def _denoising_errors(model, x0: Tensor, seq: Tensor, t: Tensor, noise: Tensor, alpha_bar: Tensor, device, dtype,
                      max_batch: int, decoder: str) -> Tensor:
    """||e - x0_hat(z_t, t)||^2 summed over positions and dimensions, one value per row."""
    out = []
    for start in range(0, t.numel(), max_batch):
        part = slice(start, start + max_batch)
        z = _noised(x0, seq[part], t[part], noise[part], alpha_bar, device, dtype)
        x0_hat = posterior_mean(model, model.estimate(z, t[part].to(device)), decoder)
        err = (x0[seq[part].to(device)].to(torch.float64) - x0_hat.to(torch.float64)) ** 2
        out.append(err.sum(dim=(1, 2)).cpu())
    return torch.cat(out)


def _reconstruction_nats(model, x0: Tensor, tokens: Tensor, seq: Tensor, noise: Tensor, alpha_bar: Tensor, device,
                         dtype, max_batch: int) -> Tensor:
    """-log p(x | z_1) per row: the rounding logits' cross-entropy at t = 1, summed over positions."""
    out = []
    one = torch.ones(seq.numel(), dtype=torch.long)
    for start in range(0, seq.numel(), max_batch):
        part = slice(start, start + max_batch)
        z = _noised(x0, seq[part], one[part], noise[part], alpha_bar, device, dtype)
        logits = model.logits(model.estimate(z, one[part].to(device))).to(torch.float64)
        target = tokens[seq[part]].to(device)
        nll = F.cross_entropy(logits.flatten(0, 1), target.flatten(), reduction="none").view(target.shape)
        out.append(nll.sum(1).cpu())
    return torch.cat(out)


@dataclass
class BitsPerByte:
    """A bound over a body of text, in bits: the figure and its standard error."""

    bpb: float
    bpb_se: float
    bits_per_token: float
    bits: float
    tokens: int
    bytes: int
    sequences: int


def bits_per_byte(bound: SequenceBound, tokens_per_sequence: Tensor, bytes_per_sequence: Tensor,
                  total_bytes: Optional[int] = None, sampled: bool = False) -> BitsPerByte:
    """Total bits over total bytes. The standard error is the Monte Carlo one (`sampled`
    False: the sequences are the whole text being measured), or, when the sequences are a
    sample of a larger text (`sampled`: validation's fixed subset), the ratio estimator's
    standard error over sequences, which holds the Monte Carlo noise and the sampling of
    the text. `total_bytes`: the text's exact UTF-8 size, where the per-sequence sizes are
    approximate (a token cut between windows)."""
    bits = bound.nats / LN2
    byte_counts = bytes_per_sequence.to(torch.float64)
    total = float(total_bytes if total_bytes is not None else byte_counts.sum())
    n = bits.numel()
    bpb = float(bits.sum()) / total
    if sampled and n > 1:
        residual = bits - bpb * byte_counts * (total / float(byte_counts.sum()))
        se = math.sqrt(float(residual.var(unbiased=True)) * n) / total
    else:
        se = math.sqrt(float(bound.mc_var.sum())) / LN2 / total
    token_count = int(tokens_per_sequence.sum())
    return BitsPerByte(bpb=bpb, bpb_se=se, bits_per_token=float(bits.sum()) / token_count, bits=float(bits.sum()),
                       tokens=token_count, bytes=int(total), sequences=n)
