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


def sample(model, prompt_ids: Tensor, length: int, steps: int, seed: int, clamp: bool = True) -> Tensor:
    """Generate `length` token ids (prompt included) with `steps` DDIM steps.

    `prompt_ids` is a 1-D LongTensor (P,) that fills the first P positions; the result is a
    LongTensor (length,) on the CPU whose first P entries equal the prompt. The same seed
    gives the same output. Raises ValueError for a length or step count it cannot use.
    """
    return sample_many(model, prompt_ids, length, steps, [seed], clamp)[0]


def sample_many(model, prompt_ids: Tensor, length: int, steps: int, seeds: Sequence[int],
                clamp: bool = True) -> Tensor:
    """`sample` for several seeds at once: one batch, so a DDIM step costs one forward pass
    of the whole batch. Returns (len(seeds), length) token ids; row i starts from seed i's
    noise, as `sample(..., seed=seeds[i])` does (rows do not interact).
    """
    total = int(model.config.diffusion_steps)
    vocab = int(model.config.vocab_size)
    prompt_ids = torch.as_tensor(prompt_ids)
    if prompt_ids.dim() != 1:
        raise ValueError(f"prompt_ids must be a 1-D tensor of token ids, got shape {tuple(prompt_ids.shape)}")
    if prompt_ids.numel() and (prompt_ids.is_floating_point() or prompt_ids.is_complex()):
        raise ValueError(f"prompt_ids must be integer token ids, got dtype {prompt_ids.dtype}")
    n_prompt = prompt_ids.numel()
    if isinstance(length, bool) or not isinstance(length, int) or length < 1:
        raise ValueError(f"length must be a positive integer, got {length!r}")
    if length < n_prompt:
        raise ValueError(f"length ({length}) must be at least the prompt length ({n_prompt} tokens)")
    if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= total:
        raise ValueError(f"steps must be an integer between 1 and the model's diffusion_steps ({total}), got {steps!r}")
    if n_prompt and not (0 <= int(prompt_ids.min()) and int(prompt_ids.max()) < vocab):
        raise ValueError(f"prompt token ids must lie in [0, {vocab})")
    seeds = [int(seed) for seed in seeds]
    if not seeds:
        raise ValueError("seeds must name at least one seed")

    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            return _ddim(model, prompt_ids.long(), length, ddim_timesteps(total, steps), seeds, clamp)
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


def _ddim(model, prompt_ids: Tensor, length: int, timesteps: List[int], seeds: List[int], clamp: bool) -> Tensor:
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
    known[:, :n_prompt] = model.embedding(prompt_ids.to(device))[None]  # (N, P, d_embed)
    known_mask = torch.zeros(len(seeds), length, dtype=torch.bool, device=device)
    known_mask[:, :n_prompt] = True

    x_t = noise.clone()
    if n_prompt:  # the prompt noised to level T, with the same noise as its x_T draw
        ab = alpha_bar[timesteps[0]].item()
        x_t[:, :n_prompt] = ab**0.5 * known[:, :n_prompt] + (1 - ab) ** 0.5 * noise[:, :n_prompt]

    tokens, _ = _ddim_loop(model, x_t, timesteps, clamp, known if n_prompt else None, known_mask if n_prompt else None)
    result = tokens.cpu().clone()
    result[:, :n_prompt] = prompt_ids
    return result


def _ddim_loop(model, x_t: Tensor, timesteps: List[int], clamp: bool,
               known: Optional[Tensor], known_mask: Optional[Tensor]) -> Tuple[Tensor, Tensor]:
    """The DDIM (eta 0) updates along `timesteps`; the one copy of the sampler's math."""
    device = x_t.device
    alpha_bar = model.schedule.alpha_bar.to(device=device, dtype=torch.float64)
    tokens = logits = None
    for t, t_prev in zip(timesteps[:-1], timesteps[1:]):
        x0_hat = model.denoise(x_t, torch.full((x_t.shape[0],), t, device=device, dtype=torch.long))
        logits = model.logits(x0_hat)
        tokens = logits.argmax(-1)  # (B, L)
        x0 = model.embedding(tokens) if clamp else x0_hat
        if known is not None:
            x0 = torch.where(known_mask[..., None], known, x0)
        ab_t, ab_prev = alpha_bar[t].item(), alpha_bar[t_prev].item()
        eps_hat = (x_t - ab_t**0.5 * x0) / (1 - ab_t) ** 0.5
        x_t = ab_prev**0.5 * x0 + (1 - ab_prev) ** 0.5 * eps_hat
    return tokens, logits
