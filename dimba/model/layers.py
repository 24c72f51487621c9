"""Small layers of the DIMBA network: norms, timestep features, the Mamba-2 mixer."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dimba.model.config import DIMBAConfig
from dimba.model.gated_norm import gated_rms_norm
from dimba.model.causal_conv import causal_conv
from dimba.model.kernels import select_scan
from dimba.model.ssd import ssd_scan


class RMSNorm(nn.Module):
    """RMSNorm (optionally per group of channels).

    `eps` is a buffer, saved with the weights: width growth rescales it (with the gain) to
    keep the function exact, and a model rebuilt from its architecture gets it back from
    the state dict.
    """

    def __init__(self, dim: int, eps: float = 1e-5, group_size: int | None = None) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.register_buffer("eps", torch.tensor(float(eps)))
        self.group_size = group_size or dim

    def forward(self, x: Tensor) -> Tensor:
        shape = x.shape
        grouped = x.reshape(*shape[:-1], -1, self.group_size).to(self.weight.dtype)  # no-op unless autocast
        normed = grouped * torch.rsqrt(grouped.pow(2).mean(-1, keepdim=True) + self.eps)
        return normed.reshape(shape) * self.weight

    def gated(self, y: Tensor, z: Tensor) -> Tensor:
        """self(y * silu(z)), as one op with a hand-written backward (the mixer's output)."""
        return gated_rms_norm(y, z, self.weight, self.eps, self.group_size)


def timestep_features(t: Tensor, dim: int, max_period: float = 10_000.0) -> Tensor:
    """Sinusoidal features of integer timesteps t (batch,) -> (batch, dim)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float64) / half)
    angles = t.to(torch.float64)[:, None] * freqs[None]
    return torch.cat([angles.sin(), angles.cos()], dim=-1)


@dataclass
class MixerState:
    """What a causal mixer carries from one position to the next: the last d_conv - 1 inputs
    of its convolution (batch, d_conv - 1, conv channels) and the SSM state (batch, heads,
    head_dim, d_state). Updated in place by `Mamba2Mixer.step`."""

    conv: Tensor
    ssm: Tensor


class Mamba2Mixer(nn.Module):
    """A (bi)directional Mamba-2 mixer: projections, causal conv, SSD scan, gated norm.

    Both directions share the input and output projections (as in Caduceus); each has its
    own convolution and SSM parameters. The gated norm works per head, so heads added by
    width growth cannot disturb the existing ones.
    """

    def __init__(self, cfg: DIMBAConfig) -> None:
        super().__init__()
        self.d_inner, self.n_heads, self.head_dim = cfg.d_inner, cfg.n_heads, cfg.head_dim
        self.d_state, self.chunk_size, self.scan = cfg.d_state, cfg.chunk_size, cfg.scan
        directions = 2 if cfg.bidirectional else 1
        conv_dim = self.d_inner + 2 * cfg.d_state
        self.in_proj = nn.Linear(cfg.d_model, self.d_inner + conv_dim + self.n_heads, bias=False)
        self.convs = nn.ModuleList(
            nn.Conv1d(conv_dim, conv_dim, cfg.d_conv, groups=conv_dim, padding=cfg.d_conv - 1)
            for _ in range(directions)
        )
        # dt initialised log-uniformly in [1e-3, 1e-1], as in Mamba-2.
        dt = torch.exp(torch.rand(directions, self.n_heads) * (math.log(0.1) - math.log(1e-3)) + math.log(1e-3))
        self.dt_bias = nn.Parameter(dt + torch.log(-torch.expm1(-dt)))  # inverse softplus
        self.A_log = nn.Parameter(torch.log(torch.empty(directions, self.n_heads).uniform_(1, 16)))
        self.D = nn.Parameter(torch.ones(directions, self.n_heads))
        self.norm = RMSNorm(self.d_inner, cfg.norm_eps, group_size=self.head_dim)
        self.out_proj = nn.Linear(self.d_inner, cfg.d_model, bias=False)

    def forward(self, u: Tensor) -> Tensor:
        batch, length, _ = u.shape
        directions, heads, head_dim = len(self.convs), self.n_heads, self.head_dim
        z, xbc, dt = torch.split(
            self.in_proj(u), [self.d_inner, self.d_inner + 2 * self.d_state, heads], dim=-1
        )
        # Both directions as one batch of batch * directions rows (row i * directions + d);
        # the backward direction reads the sequence reversed.
        rows = batch * directions
        seq = F.silu(causal_conv(xbc, [c.weight for c in self.convs], [c.bias for c in self.convs]))
        seq = seq.view(rows, length, -1)
        if directions == 2:
            dt = torch.cat([dt, dt.flip(1)], dim=-1)
        x, B, C = torch.split(seq, [self.d_inner, self.d_state, self.d_state], dim=-1)
        x = x.reshape(rows, length, heads, head_dim)
        step = F.softplus(dt + self.dt_bias.view(-1))
        step = step.view(batch, length, directions, heads).transpose(1, 2).reshape(rows, length, heads)
        A = -torch.exp(self.A_log)  # (directions, heads)
        scan = select_scan(self.scan, u)
        if scan is ssd_scan:  # one scan for both directions: A and D per row
            out = scan(x, step, A.repeat(batch, 1), B, C, self.chunk_size, D=self.D.repeat(batch, 1))
        else:  # a kernel that takes one A for the whole batch: one call per direction
            xs, steps, Bs, Cs = (t.unflatten(0, (batch, directions)) for t in (x, step, B, C))
            out = torch.stack([scan(xs[:, d], steps[:, d], A[d], Bs[:, d], Cs[:, d], self.chunk_size, D=self.D[d])
                               for d in range(directions)], dim=1)
        out = out.reshape(batch, directions, length, self.d_inner).unbind(1)  # unbind: its backward is one stack
        y = out[0] + out[1].flip(1) if directions == 2 else out[0]
        return self.out_proj(self.norm.gated(y, z))

    def empty_state(self, batch: int, device: torch.device, dtype: torch.dtype) -> MixerState:
        """The state before the first position: what the convolution's zero padding and the
        scan's zero initial state are in `forward`."""
        conv = self.convs[0]
        return MixerState(conv=torch.zeros(batch, conv.kernel_size[0] - 1, conv.in_channels, device=device, dtype=dtype),
                          ssm=torch.zeros(batch, self.n_heads, self.head_dim, self.d_state, device=device,
                                          dtype=torch.float32))

    def step(self, u: Tensor, state: MixerState) -> Tensor:
        """`forward` at one more position (batch, d_model) of a causal mixer, from `state`
        (the recurrence `ssd_reference` writes out), without reading the earlier positions again."""
        assert len(self.convs) == 1, "step() runs a causal (one-direction) mixer"
        heads, head_dim = self.n_heads, self.head_dim
        z, xbc, dt = torch.split(self.in_proj(u), [self.d_inner, self.d_inner + 2 * self.d_state, heads], dim=-1)
        window = torch.cat([state.conv, xbc.unsqueeze(1)], dim=1)  # (b, K, channels), oldest first
        conv = self.convs[0]
        xbc = F.silu(torch.einsum("bkc,ck->bc", window, conv.weight[:, 0]) + conv.bias)
        state.conv = window[:, 1:]
        x, B, C = torch.split(xbc, [self.d_inner, self.d_state, self.d_state], dim=-1)
        x = x.view(-1, heads, head_dim)
        step = F.softplus(dt + self.dt_bias[0]).float()  # (b, h)
        decay = torch.exp(step * -torch.exp(self.A_log[0].float()))
        state.ssm = state.ssm * decay[:, :, None, None] + torch.einsum(
            "bhp,bn->bhpn", x.float() * step[:, :, None], B.float())
        y = torch.einsum("bhpn,bn->bhp", state.ssm, C.float()) + x.float() * self.D[0].float()[:, None]
        return self.out_proj(self.norm.gated(y.reshape(u.shape[0], self.d_inner).to(u.dtype), z))


class DIMBABlock(nn.Module):
    """Pre-norm residual block; where the model takes the timestep (continuous diffusion), it
    modulates the normalized input (shift, scale)."""

    def __init__(self, cfg: DIMBAConfig) -> None:
        super().__init__()
        self.norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        if cfg.time_conditioned:
            self.modulation = nn.Linear(cfg.d_model, 2 * cfg.d_model)
            nn.init.zeros_(self.modulation.weight)
            nn.init.zeros_(self.modulation.bias)
        self.mixer = Mamba2Mixer(cfg)

    def forward(self, h: Tensor, cond: Optional[Tensor] = None) -> Tensor:
        if cond is None:
            return h + self.mixer(self.norm(h))
        shift, scale = self.modulation(cond).unsqueeze(1).chunk(2, dim=-1)
        return h + self.mixer(self.norm(h) * (1 + scale) + shift)

    def step(self, h: Tensor, state: "MixerState") -> Tensor:
        """One position (batch, d_model) of a causal, unconditioned block, carrying `state`."""
        return h + self.mixer.step(self.norm(h), state)
