"""The noise schedules of continuous diffusion: alpha_bar(t) for t = 0..T.

`cosine` and `cosine_zero_snr` are fixed functions of T; `learned` is the cosine schedule
under a learned monotone time warping (`LearnedSchedule`), trained through the bound.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


def cosine_alpha_bar(steps: int, offset: float = 0.008, max_beta: float = 0.999) -> Tensor:
    """Nichol & Dhariwal (2021): alpha_bar follows cos^2, its betas clipped at `max_beta`."""
    t = torch.arange(steps + 1, dtype=torch.float64, device="cpu") / steps  # real numbers even under a meta device
    f = torch.cos((t + offset) / (1 + offset) * math.pi / 2) ** 2
    betas = (1 - f[1:] / f[:-1]).clamp(max=max_beta)
    return torch.cat([torch.ones(1, dtype=torch.float64, device="cpu"), torch.cumprod(1 - betas, 0)])


def zero_terminal_snr(alpha_bar: Tensor) -> Tensor:
    """Lin et al. (2024): sqrt(alpha_bar) shifted and scaled so that it keeps its value at
    t = 0 and reaches exactly zero at t = T: the last timestep is pure noise, as sampling
    from N(0, I) assumes, and the prior term of the bound vanishes."""
    root = alpha_bar.sqrt()
    first, last = root[0].clone(), root[-1].clone()
    return ((root - last) * first / (first - last)) ** 2


class CosineSchedule(nn.Module):
    """alpha_bar(t) for t = 0..T; derived from (T, kind) alone, so it is not saved in checkpoints.

    `kind`: `cosine`, or `cosine_zero_snr` (its zero-terminal-SNR rescaling)."""

    def __init__(self, steps: int, kind: str = "cosine") -> None:
        super().__init__()
        if kind not in ("cosine", "cosine_zero_snr"):
            raise ValueError(f"unknown noise schedule {kind!r}")
        self.steps = steps
        self.kind = kind
        self.register_buffer("alpha_bar", self.exact(), persistent=False)

    def exact(self) -> Tensor:
        """alpha_bar in float64 on the CPU, computed from (T, kind)."""
        alpha_bar = cosine_alpha_bar(self.steps)
        return zero_terminal_snr(alpha_bar) if self.kind == "cosine_zero_snr" else alpha_bar

    def _apply(self, fn, recurse: bool = True):
        """Keep alpha_bar exact, in float64, whatever the model is cast or moved to (`to_empty`
        leaves it uninitialised): near t = 0, 1 - alpha_bar is 4e-5, and the bound's weights
        1/2 (SNR(t-1) - SNR(t)) lose whole digits to float32."""
        super()._apply(fn, recurse)
        if self.alpha_bar.device.type != "meta":
            self.alpha_bar = self.exact().to(self.alpha_bar.device)
        return self

    def sample_timesteps(self, batch: int, device: torch.device, generator: torch.Generator | None = None) -> Tensor:
        return torch.randint(1, self.steps + 1, (batch,), device=device, generator=generator)

    def add_noise(self, x0: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        """x_t = sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) noise."""
        ab = self.alpha_bar.to(x0.device)[t].to(x0.dtype).view(-1, *([1] * (x0.dim() - 1)))
        return ab.sqrt() * x0 + (1 - ab).sqrt() * noise


class LearnedSchedule(nn.Module):
    """The cosine schedule read at warped times: alpha_bar(t) = cosine(T * tau(t / T)), with
    tau a monotone piecewise-linear map of [0, 1] onto itself, `SEGMENTS` segments whose
    lengths are softmax(`warp`). Both ends stay where the cosine schedule has them (t = 0
    clean, t = T its noisiest); everything between moves where the bound, the loss it is
    trained through (`objective.weighting=bound`, as Plaid trains its learned gamma(t)),
    puts it. At `warp` = 0, the initial value, tau is the identity: exactly the cosine.
    Between integer cosine steps 1 - alpha_bar is interpolated linearly, in float64.
    """

    SEGMENTS = 32

    def __init__(self, steps: int, kind: str = "learned") -> None:
        super().__init__()
        self.steps = steps
        self.kind = kind
        self.warp = nn.Parameter(torch.zeros(self.SEGMENTS))
        self._noise = 1 - cosine_alpha_bar(steps)  # 1 - alpha_bar at integer steps, float64 (not a buffer: no cast)

    @property
    def alpha_bar(self) -> Tensor:
        """alpha_bar(t) for t = 0..T, float64, differentiable in `warp`."""
        device = self.warp.device
        lengths = torch.softmax(self.warp.to(torch.float64), 0)
        knots = torch.cat([lengths.new_zeros(1), lengths.cumsum(0)])
        s = torch.arange(self.steps + 1, dtype=torch.float64, device=device) * (self.SEGMENTS / self.steps)
        segment = s.floor().long().clamp(max=self.SEGMENTS - 1)
        tau = knots[segment] + lengths[segment] * (s - segment)
        x = (tau * self.steps).clamp(0, self.steps)
        below = x.detach().floor().long().clamp(max=self.steps - 1)
        frac = x - below
        noise = self._noise.to(device)
        return 1 - (noise[below] * (1 - frac) + noise[below + 1] * frac)

    def exact(self) -> Tensor:
        return self.alpha_bar.detach().cpu()

    def sample_timesteps(self, batch: int, device: torch.device, generator: torch.Generator | None = None) -> Tensor:
        return torch.randint(1, self.steps + 1, (batch,), device=device, generator=generator)

    def add_noise(self, x0: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        """x_t = sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) noise (differentiable in the warp)."""
        ab = self.alpha_bar.to(x0.device)[t].to(x0.dtype).view(-1, *([1] * (x0.dim() - 1)))
        return ab.sqrt() * x0 + (1 - ab).sqrt() * noise


def build_schedule(steps: int, kind: str) -> nn.Module:
    """The schedule module of `model.noise_schedule`."""
    return LearnedSchedule(steps) if kind == "learned" else CosineSchedule(steps, kind)
