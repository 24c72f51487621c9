"""Masked (absorbing-state) diffusion, as MDLM (Sahoo et al., 2024) and MD4 do it.

The forward process replaces each token, independently, by the mask token (row `vocab_size`
of the embedding) with probability 1 - alpha_t; with the log-linear schedule alpha_t = 1 - t,
t in [0, 1], everything is masked at t = 1 and nothing at t = 0. The network predicts the
clean token at every position from the partly masked sequence; SUBS: its distribution puts
no mass on the mask token (`DIMBA.logits` has no mask column), and a position that is not
masked is copied, so it costs nothing in the bound and is never resampled.

The bound. The continuous-time bound (MDLM eq. 10) with alpha_t = 1 - t is

    -log p(x) <= int_0^1 (1/t) E_{z_t} [ sum_{i masked in z_t} -log p(x_i | z_t) ] dt,

with no prior term (z_1 is all masks, whatever x) and no reconstruction term (z_0 = x).
Given that m of the L positions are masked, the set is a uniform m-subset, and
int_0^1 (1/t) C(L, m) t^m (1 - t)^(L - m) dt = C(L, m) B(m, L - m + 1) = 1/m, so

    bound = sum_{m=1..L} (1/m) E_{|S| = m} [ sum_{i in S} -log p(x_i | x outside S) ]
          = L * E_{m ~ U{1..L}} [ mean over the m masked positions of -log p(x_i | ...) ].

That is the estimator used here, in training (per token: the mean cross-entropy over the
masked positions, m uniform) and in `sequence_bound` (stratified over m): integrating t out
removes the 1/t weight, whose variance is infinite near t = 0 when t is sampled directly.
The bound is the same for every schedule (MD4, sec. 4); the schedule only says how
`sample` unmasks.

Sampling: ancestral, from all masks at t = 1 to t = 0 in `steps` equal steps of t. From t
to s < t each still-masked position is unmasked with probability (t - s) / t, its token
drawn from the network's distribution (the posterior of MDLM's eq. 7 under SUBS). The
network takes no timestep, so where a step unmasked nothing its output would be the same:
it is not run again (MDLM's caching sampler).
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from dimba.diffusion.bound import REPLICATES, SequenceBound


def mask_id(model) -> int:
    return int(model.config.vocab_size)


def draw_masks(counts: Tensor, length: int, generator: Optional[torch.Generator]) -> Tensor:
    """(n, length) booleans, row r masking a uniformly random subset of `counts[r]` positions."""
    scores = torch.rand(counts.numel(), length, generator=generator, device=counts.device)
    ranks = scores.argsort(dim=1).argsort(dim=1)
    return ranks < counts[:, None]


def stratified_counts(n: int, length: int, generator: Optional[torch.Generator], device: torch.device) -> Tensor:
    """n mask counts in 1..length, stratified: one uniform draw inside each of n equal slices of
    [0, 1), mapped to a count (a batch covers the noise levels evenly, as MDLM's antithetic t)."""
    u = (torch.arange(n, device=device, dtype=torch.float64)
         + torch.rand(n, generator=generator, device=device, dtype=torch.float64)) / n
    return counts_at(u, length)


def counts_at(u: Tensor, length: int) -> Tensor:
    """Mask counts 1..length at quantiles u in [0, 1) of the uniform distribution over them."""
    return (u * length).floor().long().clamp(0, length - 1) + 1


def masked_cross_entropy(model, tokens: Tensor, masks: Tensor) -> Tensor:
    """Per sequence, the mean -log p(x_i | z) over its masked positions (nats), z = tokens with
    `masks` replaced by the mask token."""
    noised = torch.where(masks, torch.full_like(tokens, mask_id(model)), tokens)
    logits = model.token_logits(noised).float()
    nll = F.cross_entropy(logits.flatten(0, 1), tokens.flatten(), reduction="none").view(tokens.shape)
    return (nll * masks).sum(1) / masks.sum(1).clamp(min=1)


def loss(model, tokens: Tensor, generator: Optional[torch.Generator]) -> Dict[str, Tensor]:
    """The bound per token, estimated on a batch: one stratified mask count per sequence
    (`generator` None: torch's global one)."""
    counts = stratified_counts(tokens.shape[0], tokens.shape[1], generator, tokens.device)
    masks = draw_masks(counts, tokens.shape[1], generator)
    per_sequence = masked_cross_entropy(model, tokens, masks)
    return {"loss": per_sequence.mean(), "ce": per_sequence.mean().detach()}


@torch.no_grad()
def sequence_bound(model, tokens: Tensor, samples: int, generator: torch.Generator, max_batch: int = 64) -> SequenceBound:
    """The bound of each sequence of `tokens` (n, L) in nats: `samples` mask draws per sequence,
    split between two replicates, each stratified over the mask count 1..L. All randomness
    from `generator` (CPU); the two replicates give the Monte Carlo variance, as for the
    continuous bound."""
    n, length = tokens.shape
    k = samples // REPLICATES
    u = (torch.arange(k, dtype=torch.float64) + torch.rand(n, REPLICATES, k, generator=generator, dtype=torch.float64)) / k
    counts = counts_at(u, length).reshape(-1)
    masks = draw_masks(counts, length, generator)
    rows = torch.arange(n).repeat_interleave(REPLICATES * k)
    device = model.embedding.weight.device
    was_training = model.training
    model.eval()
    try:
        values = torch.cat([
            masked_cross_entropy(model, tokens[rows[part]].to(device), masks[part].to(device)).double().cpu()
            for part in (slice(s, s + max_batch) for s in range(0, rows.numel(), max_batch))])
    finally:
        model.train(was_training)
    replicates = length * values.view(n, REPLICATES, k).mean(-1)  # (n, R)
    zeros = torch.zeros(n, dtype=torch.float64)
    return SequenceBound(nats=replicates.mean(1), mc_var=(replicates[:, 0] - replicates[:, 1]) ** 2 / 4,
                         prior=zeros, diffusion=replicates.mean(1), reconstruction=zeros.clone())


def unmask_times(steps: int) -> List[float]:
    """t from 1 down to 0 in `steps` equal steps."""
    return [1.0 - i / steps for i in range(steps + 1)]


@torch.no_grad()
def sample(model, prompt_ids: Tensor, length: int, steps: int, seeds: Sequence[int], temperature: float = 1.0,
           top_p: float = 1.0) -> Dict[str, object]:
    """Generate len(seeds) sequences of `length` tokens (the prompt first) by ancestral unmasking
    in `steps` steps. Row i draws from seed i's own generator. Returns {"ids": (N, length) on
    the CPU, "forwards": network calls made} (fewer than `steps` where steps unmasked nothing)."""
    from dimba.objectives.categorical import draw

    device = model.embedding.weight.device
    n, n_prompt = len(seeds), prompt_ids.numel()
    generators = [torch.Generator().manual_seed(int(seed)) for seed in seeds]
    ids = torch.full((n, length), mask_id(model), dtype=torch.long)
    ids[:, :n_prompt] = prompt_ids
    logits: Optional[Tensor] = None
    forwards = 0
    times = unmask_times(steps)
    for t, s in zip(times[:-1], times[1:]):
        masked = ids == mask_id(model)
        if not masked.any():
            break
        if logits is None:  # the network's output only changes when a token was unmasked
            logits = model.token_logits(ids.to(device)).float().cpu()
            forwards += 1
        chance = (t - s) / t
        for row, generator in enumerate(generators):
            reveal = masked[row] & (torch.rand(length, generator=generator, dtype=torch.float64) < chance)
            if reveal.any():
                ids[row, reveal] = draw(logits[row, reveal], generator, temperature, top_p)
        if (ids != mask_id(model)).sum() != (~masked).sum():
            logits = None
    return {"ids": ids, "forwards": forwards}
