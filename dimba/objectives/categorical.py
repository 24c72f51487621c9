"""Drawing tokens from logits: temperature and nucleus (top-p) sampling, from a given generator."""

from __future__ import annotations

import torch
from torch import Tensor


def draw(logits: Tensor, generator: torch.Generator, temperature: float = 1.0, top_p: float = 1.0) -> Tensor:
    """One token id per row of `logits` (k, vocab), on the CPU. `temperature` divides the logits
    (0: the most likely token); `top_p` keeps the smallest set of most likely tokens whose
    probability reaches it (1: all)."""
    logits = logits.detach().float().cpu()
    if temperature == 0:
        return logits.argmax(-1)
    probs = torch.softmax(logits / temperature, dim=-1)
    if top_p < 1:
        sorted_probs, order = probs.sort(dim=-1, descending=True)
        before = sorted_probs.cumsum(-1) - sorted_probs  # mass of the more likely tokens
        sorted_probs = torch.where(before < top_p, sorted_probs, torch.zeros_like(sorted_probs))
        probs = torch.zeros_like(probs).scatter(-1, order, sorted_probs)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)
