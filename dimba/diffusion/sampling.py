"""Text generation from a DIMBA: deterministic DDIM sampling in the embedding space.

Why this sampler:

- DDIM with eta = 0 (Song et al., 2021) is deterministic once x_T is drawn, so the only
  randomness is the starting noise. Drawing it from a `torch.Generator` seeded with `seed`
  (on the CPU, whatever the model's device) makes a (model, prompt, length, steps, seed)
  always produce the same text, and it needs far fewer steps than the T of training.
- Clamping (Diffusion-LM, Li et al., 2022): after every prediction x0_hat is replaced by
  the embedding of its nearest token (argmax of the logits). The trajectory then stays on
  real token embeddings instead of drifting between them, which is what keeps a continuous
  diffusion LM from decoding to mush.
- Prompts by inpainting: at prompt positions the "prediction" is the true prompt
  embedding, and x_T starts as that embedding noised to level T. DDIM then keeps those
  positions exactly on the forward-noised prompt sqrt(ab_t) e + sqrt(1 - ab_t) z at every
  t, so the denoiser sees a consistently noised prompt as context for the rest.

The ancestral sampler (`sampler="ancestral"`) is the other one: each step draws z_s from the
Gaussian posterior q(z_s | z_t, x0 := x0_hat), the reverse process whose likelihood
`dimba eval` bounds, with noise from a per-row generator seeded with the row's seed (so it is
as reproducible as DDIM). A self-conditioned model reads the previous step's estimate.

`sample` generates from a prompt (`sample_many`: a batch of seeds at once); `denoise` runs the same DDIM loop on a whole batch from
a given x_t (any starting timestep, optional known positions), for evaluation.
"""

from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import torch
from torch import Tensor


def ddim_timesteps(total: int, steps: int) -> List[int]:
    """`steps + 1` integer timesteps evenly spaced from `total` down to 0 (all distinct)."""
    return [(total * (steps - i) + steps // 2) // steps for i in range(steps + 1)]


SAMPLERS = ("ddim", "ancestral")


def sample(model, prompt_ids: Tensor, length: int, steps: int, seed: int, clamp: bool = True,
           sampler: str = "ddim") -> Tensor:
    """Generate `length` token ids (prompt included) with `steps` DDIM steps.

    `prompt_ids` is a 1-D LongTensor (P,) that fills the first P positions; the result is a
    LongTensor (length,) on the CPU whose first P entries equal the prompt. The same seed
    gives the same output. Raises ValueError for a length or step count it cannot use.
    """
    return sample_many(model, prompt_ids, length, steps, [seed], clamp, sampler)[0]


def sample_many(model, prompt_ids: Tensor, length: int, steps: int, seeds: Sequence[int],
                clamp: bool = True, sampler: str = "ddim") -> Tensor:
    """`sample` for several seeds at once: one batch, so a DDIM step costs one forward pass
    of the whole batch. Returns (len(seeds), length) token ids; row i starts from seed i's
    noise, as `sample(..., seed=seeds[i])` does (rows do not interact).
    """
    from dimba.objectives.requests import check_request

    total = int(model.config.diffusion_steps)
    prompt_ids = check_request(model, prompt_ids, length, steps, seeds, 1.0, 1.0)
    seeds = [int(seed) for seed in seeds]
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler must be one of {', '.join(SAMPLERS)}, got {sampler!r}")

    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            return _ddim(model, prompt_ids.long(), length, ddim_timesteps(total, steps), seeds, clamp, sampler)
    finally:
        model.train(was_training)


def denoise(
    model, x_t: Tensor, t_start: int, steps: int, clamp: bool = True,
    known: Optional[Tensor] = None, known_mask: Optional[Tensor] = None,
) -> Tuple[Tensor, Tensor]:
    """DDIM from a batch x_t (B, L, d_embed) at timestep `t_start` down to 0 in `steps` steps.

    Where `known_mask` (B, L) is true, the prediction is replaced by `known` (B, L, d_embed)
    at every step (inpainting, as `sample` does for a prompt). The caller puts those
    positions of `x_t` on their forward-noised trajectory (`schedule.add_noise(known, t_start,
    z)`); DDIM then keeps them there. Returns the last step's token
    ids (B, L) and logits (B, L, vocab), so a caller can score the model's final belief.
    Runs in eval mode without gradients; the model's mode is restored.
    """
    if isinstance(t_start, bool) or not isinstance(t_start, int) or not 1 <= t_start <= model.config.diffusion_steps:
        raise ValueError(f"t_start must be an integer between 1 and the model's diffusion_steps "
                         f"({model.config.diffusion_steps}), got {t_start!r}")
    if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= t_start:
        raise ValueError(f"steps must be an integer between 1 and t_start ({t_start}), got {steps!r}")
    if (known is None) != (known_mask is None):
        raise ValueError("known and known_mask go together: pass both or neither")
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            return _ddim_loop(model, x_t, ddim_timesteps(t_start, steps), clamp, known, known_mask)
    finally:
        model.train(was_training)


def _ddim(model, prompt_ids: Tensor, length: int, timesteps: List[int], seeds: List[int], clamp: bool,
          sampler: str = "ddim") -> Tensor:
    weight = model.embedding.weight
    device, dtype = weight.device, weight.dtype
    alpha_bar = model.schedule.alpha_bar.to(device=device, dtype=torch.float64)
    n_prompt = prompt_ids.numel()

    noise = torch.cat([  # each row from its own seed, so a row does not depend on the batch it is in
        torch.randn(1, length, model.config.d_embed, generator=torch.Generator(device="cpu").manual_seed(seed),
                    dtype=torch.float64)
        for seed in seeds])
    noise = noise.to(device=device, dtype=dtype)
    known = torch.zeros_like(noise)
    known[:, :n_prompt] = model.embed(prompt_ids.to(device))[None]  # (N, P, d_embed)
    known_mask = torch.zeros(len(seeds), length, dtype=torch.bool, device=device)
    known_mask[:, :n_prompt] = True

    x_t = noise.clone()
    if n_prompt:  # the prompt noised to level T, with the same noise as its x_T draw
        ab = alpha_bar[timesteps[0]].item()
        x_t[:, :n_prompt] = ab**0.5 * known[:, :n_prompt] + (1 - ab) ** 0.5 * noise[:, :n_prompt]

    generators = ([torch.Generator(device="cpu").manual_seed((seed * 1_000_003 + 1) % 2**64) for seed in seeds]
                  if sampler == "ancestral" else None)
    tokens, _ = _ddim_loop(model, x_t, timesteps, clamp, known if n_prompt else None, known_mask if n_prompt else None,
                           generators)
    result = tokens.cpu().clone()
    result[:, :n_prompt] = prompt_ids
    return result


def _ddim_loop(model, x_t: Tensor, timesteps: List[int], clamp: bool, known: Optional[Tensor],
               known_mask: Optional[Tensor], generators: Optional[List[torch.Generator]] = None) -> Tuple[Tensor, Tensor]:
    """The updates along `timesteps`, DDIM (eta 0), or ancestral when `generators` (one per
    row) are given; the one copy of the samplers' math."""
    device = x_t.device
    alpha_bar = model.schedule.alpha_bar.to(device=device, dtype=torch.float64)
    tokens = logits = previous = None
    for t, t_prev in zip(timesteps[:-1], timesteps[1:]):
        out = model.estimate(x_t, torch.full((x_t.shape[0],), t, device=device, dtype=torch.long), previous)
        x0_hat = model.x0_hat(out)
        previous = x0_hat
        logits = model.logits(out)
        tokens = logits.argmax(-1)  # (B, L)
        x0 = model.embed(tokens) if clamp else x0_hat
        if known is not None:
            x0 = torch.where(known_mask[..., None], known, x0)
        ab_t, ab_prev = alpha_bar[t].item(), alpha_bar[t_prev].item()
        if generators is None:
            eps_hat = (x_t - ab_t**0.5 * x0) / (1 - ab_t) ** 0.5
            x_t = ab_prev**0.5 * x0 + (1 - ab_prev) ** 0.5 * eps_hat
        else:
            # (at prompt positions x0 is the prompt, so the draw is the forward-noised prompt at s)
            x_t = _posterior_draw(x_t, x0, ab_t, ab_prev, generators)
    return tokens, logits


def _posterior_draw(x_t: Tensor, x0: Tensor, ab_t: float, ab_s: float, generators: List[torch.Generator]) -> Tensor:
    """z_s ~ q(z_s | z_t, x0) for s < t: mean a x0 + b z_t, variance (1 - ab_s)(1 - ab_t/ab_s)/(1 - ab_t)."""
    alpha_ts = ab_t / ab_s
    beta_ts = 1 - alpha_ts
    a = ab_s**0.5 * beta_ts / (1 - ab_t)
    b = alpha_ts**0.5 * (1 - ab_s) / (1 - ab_t)
    std = ((1 - ab_s) * beta_ts / (1 - ab_t)) ** 0.5
    noise = torch.cat([torch.randn(1, *x_t.shape[1:], generator=g, dtype=torch.float64) for g in generators])
    return a * x0 + b * x_t + std * noise.to(x_t.device, x_t.dtype)
