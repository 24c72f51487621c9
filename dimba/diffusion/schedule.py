"""The cosine noise schedule of Nichol & Dhariwal (2021)."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


class CosineSchedule(nn.Module):
    """alpha_bar(t) for t = 0..T; derived from T alone, so it is not saved in checkpoints."""

    def __init__(self, steps: int, offset: float = 0.008, max_beta: float = 0.999) -> None:
        super().__init__()
        self.steps = steps
        t = torch.arange(steps + 1, dtype=torch.float64) / steps
        f = torch.cos((t + offset) / (1 + offset) * math.pi / 2) ** 2
        betas = (1 - f[1:] / f[:-1]).clamp(max=max_beta)
        alpha_bar = torch.cat([torch.ones(1, dtype=torch.float64), torch.cumprod(1 - betas, 0)])
        self.register_buffer("alpha_bar", alpha_bar, persistent=False)

    def sample_timesteps(self, batch: int, device: torch.device, generator: torch.Generator | None = None) -> Tensor:
        return torch.randint(1, self.steps + 1, (batch,), device=device, generator=generator)

    def add_noise(self, x0: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        """x_t = sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) noise."""
        ab = self.alpha_bar.to(x0.device)[t].to(x0.dtype).view(-1, *([1] * (x0.dim() - 1)))
        return ab.sqrt() * x0 + (1 - ab).sqrt() * noise
