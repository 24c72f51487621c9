"""The one check of a generation request's arguments, for every objective's sampler."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor


def check_request(model, prompt_ids: Tensor, length: int, steps: int, seeds: Sequence[int], temperature: float,
                  top_p: float) -> Tensor:
    """The prompt as a 1-D LongTensor, or ValueError naming what a generation request got wrong:
    the one check of every sampler's arguments."""
    prompt_ids = torch.as_tensor(prompt_ids)
    if prompt_ids.dim() != 1 or (prompt_ids.numel() and (prompt_ids.is_floating_point() or prompt_ids.is_complex())):
        raise ValueError(f"prompt_ids must be a 1-D tensor of integer token ids, got shape {tuple(prompt_ids.shape)} "
                         f"of {prompt_ids.dtype}")
    vocab = int(model.config.vocab_size)
    if prompt_ids.numel() and not (0 <= int(prompt_ids.min()) and int(prompt_ids.max()) < vocab):
        raise ValueError(f"prompt token ids must lie in [0, {vocab})")
    if isinstance(length, bool) or not isinstance(length, int) or length < max(1, prompt_ids.numel()):
        raise ValueError(f"length must be an integer >= max(1, the prompt's {prompt_ids.numel()} tokens), got {length!r}")
    if model.config.objective == "diffusion":
        total = int(model.config.diffusion_steps)
        if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= total:
            raise ValueError(f"steps must be an integer between 1 and the model's diffusion_steps ({total}), "
                             f"got {steps!r}")
    elif isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    if not seeds:
        raise ValueError("seeds must name at least one seed")
    if model.config.objective == "diffusion":
        if temperature != 1.0 or top_p != 1.0:
            raise ValueError("temperature and top_p apply to objective=masked and objective=ar (DDIM draws no tokens)")
    elif not (temperature >= 0 and temperature == temperature) or not 0 < top_p <= 1:
        raise ValueError(f"temperature must be >= 0 and top_p in (0, 1], got {temperature!r} and {top_p!r}")
    return prompt_ids.long()
