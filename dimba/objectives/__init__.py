"""What differs between the three objectives once a model is built: its loss, its likelihood
and its sampler. `model.config.objective` decides, here and nowhere else.

- `diffusion`: continuous diffusion in the embedding space (`dimba.diffusion`);
- `masked`: absorbing-state diffusion (`dimba.objectives.masked`);
- `ar`: the autoregressive yardstick (`dimba.objectives.autoregressive`).
"""

from __future__ import annotations

from typing import Dict, Optional, Sequence

import torch
from torch import Tensor

from dimba.diffusion.bound import SequenceBound
from dimba.objective import ObjectiveConfig
from dimba.objectives.requests import check_request

__all__ = ["check_request", "generate", "loss", "sequence_bound"]


def loss(model, tokens: Tensor, objective: Optional[ObjectiveConfig] = None, generator: Optional[torch.Generator] = None,
         t: Optional[Tensor] = None, noise: Optional[Tensor] = None, self_condition: bool = False,
         return_prediction: bool = False) -> Dict[str, Tensor]:
    """The training loss of a batch under the model's objective: the one dispatch `DIMBA.loss`
    and both trainers (`dimba.training.steps`) use. Randomness comes from `generator` (None:
    torch's global one); continuous diffusion draws its timesteps (as `objective.weighting`
    wants them) and then its noise, unless `t` and `noise` are given."""
    name = model.config.objective
    if name != "diffusion":
        if t is not None or noise is not None or return_prediction:
            raise ValueError(f"t, noise and return_prediction belong to continuous diffusion, not to an "
                             f"objective={name} model")
        if name == "masked":
            from dimba.objectives import masked

            return masked.loss(model, tokens, generator)
        from dimba.objectives import autoregressive

        return autoregressive.loss(model, tokens)
    from dimba.objectives import continuous

    objective = objective if objective is not None else ObjectiveConfig()
    if t is None:
        t = continuous.sample_timesteps(model, objective.weighting, tokens.shape[0], tokens.device, generator)
    if noise is None:
        noise = torch.randn(*tokens.shape, model.config.d_embed, generator=generator, device=tokens.device,
                            dtype=model.embedding.weight.dtype)
    return continuous.loss(model, tokens, t, noise, objective.weighting, objective.mse_weight, objective.ce_weight,
                           objective.min_snr_gamma, self_condition, return_prediction)


def sequence_bound(model, tokens: Tensor, samples: int, generator: torch.Generator,
                   max_batch: int = 64) -> SequenceBound:
    """-log p of each sequence of `tokens` (n, L), in nats: the continuous bound, the masked
    bound (both estimated with `samples` draws per sequence) or the exact autoregressive one."""
    objective = model.config.objective
    if objective == "masked":
        from dimba.objectives import masked

        return masked.sequence_bound(model, tokens, samples, generator, max_batch)
    if objective == "ar":
        from dimba.objectives import autoregressive

        return autoregressive.sequence_bound(model, tokens, max_batch)
    from dimba.diffusion import bound

    return bound.sequence_bound(model, tokens, samples, generator, max_batch=max_batch)


def generate(model, prompt_ids: Tensor, length: int, steps: int, seeds: Sequence[int], clamp: bool = True,
             temperature: float = 1.0, top_p: float = 1.0, sampler: Optional[str] = None) -> Dict[str, object]:
    """len(seeds) samples of `length` tokens after `prompt_ids`: {"ids": (N, length), "forwards"}.
    `steps` is the number of denoising steps (unused by `ar`); `clamp` and `sampler` (`ddim`,
    the default, or `ancestral`) are continuous diffusion's; `temperature` and `top_p` shape
    the token draws of `masked` and `ar`."""
    objective = model.config.objective
    prompt_ids = check_request(model, prompt_ids, length, steps, seeds, temperature, top_p)
    if not clamp and objective != "diffusion":
        raise ValueError(f"clamp (DDIM's snapping to token embeddings) applies to objective=diffusion, not {objective}")
    if sampler is not None and objective != "diffusion":
        raise ValueError(f"sampler (ddim or ancestral) applies to objective=diffusion; objective={objective} "
                         f"has its own")
    was_training = model.training
    model.eval()
    try:
        if objective == "masked":
            from dimba.objectives import masked

            return masked.sample(model, prompt_ids, length, steps, seeds, temperature, top_p)
        if objective == "ar":
            from dimba.objectives import autoregressive

            return autoregressive.sample(model, prompt_ids, length, seeds, temperature, top_p)
    finally:
        model.train(was_training)
    from dimba.diffusion.sampling import sample_many

    forwards = steps + (1 if model.config.self_condition else 0)  # the first estimate of a self-conditioned model: two
    return {"ids": sample_many(model, prompt_ids, length, steps, seeds, clamp, sampler or "ddim"),
            "forwards": forwards}
