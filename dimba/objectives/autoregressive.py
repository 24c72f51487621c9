"""The autoregressive yardstick: the same Mamba-2 stack, causal, trained on next-token
cross-entropy.

Each sequence is read after a beginning-of-sequence token (row `vocab_size` of the
embedding), so the first token is predicted too and -log p(x) = sum_i -log p(x_i | x_<i) is
the exact log-likelihood of the whole window: the same quantity the diffusion objectives
bound, from the same windows, so their bits per byte compare directly. Generation carries
each block's convolution and SSM state from token to token (`DIMBA.step_logits`): a token
costs one position of the network, whatever the prefix.
"""

from __future__ import annotations

from typing import Dict, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from dimba.diffusion.bound import SequenceBound


def bos_id(model) -> int:
    return int(model.config.vocab_size)


def shifted_inputs(model, tokens: Tensor) -> Tensor:
    """The network's inputs for `tokens` (n, L): the beginning-of-sequence token, then x_<L."""
    bos = torch.full_like(tokens[:, :1], bos_id(model))
    return torch.cat([bos, tokens[:, :-1]], dim=1)


def token_nats(model, tokens: Tensor) -> Tensor:
    """-log p(x_i | x_<i) at every position (n, L), in nats, float32."""
    logits = model.token_logits(shifted_inputs(model, tokens)).float()
    return F.cross_entropy(logits.flatten(0, 1), tokens.flatten(), reduction="none").view(tokens.shape)


def loss(model, tokens: Tensor) -> Dict[str, Tensor]:
    """Mean next-token cross-entropy (nats per token)."""
    value = token_nats(model, tokens).mean()
    return {"loss": value, "ce": value.detach()}


@torch.no_grad()
def sequence_bound(model, tokens: Tensor, max_batch: int = 64) -> SequenceBound:
    """The exact -log p of each sequence (n, L) in nats: no Monte Carlo, so no variance."""
    device = model.embedding.weight.device
    was_training = model.training
    model.eval()
    try:
        nats = torch.cat([token_nats(model, tokens[s:s + max_batch].to(device)).double().sum(1).cpu()
                          for s in range(0, tokens.shape[0], max_batch)])
    finally:
        model.train(was_training)
    zeros = torch.zeros_like(nats)
    return SequenceBound(nats=nats, mc_var=zeros, prior=zeros.clone(), diffusion=zeros.clone(), reconstruction=nats.clone())


@torch.no_grad()
def sample(model, prompt_ids: Tensor, length: int, seeds: Sequence[int], temperature: float = 1.0,
           top_p: float = 1.0) -> Dict[str, object]:
    """Generate len(seeds) sequences of `length` tokens (the prompt first), left to right, each
    row from its own seed's generator. Returns {"ids": (N, length) on the CPU, "forwards":
    positions run (one per token after the beginning-of-sequence token)}."""
    from dimba.objectives.categorical import draw

    device = model.embedding.weight.device
    n, n_prompt = len(seeds), prompt_ids.numel()
    generators = [torch.Generator().manual_seed(int(seed)) for seed in seeds]
    ids = torch.zeros(n, length, dtype=torch.long)
    ids[:, :n_prompt] = prompt_ids
    states = model.empty_states(n)
    current = torch.full((n,), bos_id(model), dtype=torch.long)
    for position in range(length):
        logits = model.step_logits(current.to(device), states).float().cpu()
        if position >= n_prompt:
            ids[:, position] = torch.stack([draw(logits[row:row + 1], generator, temperature, top_p)[0]
                                            for row, generator in enumerate(generators)])
        current = ids[:, position]
    return {"ids": ids, "forwards": length}
