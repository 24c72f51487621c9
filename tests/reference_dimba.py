"""A plain, obviously-correct DIMBA forward pass, kept as the yardstick for the fast one.

It reads a `DIMBA`'s parameters by name and recomputes the x0 prediction the
straightforward way: one time step at a time through the Mamba-2 recurrence, each
direction on its own copy of the sequence, the causal convolution as an explicit sum of
shifted inputs, every norm written out. No chunking, no einsum tricks, no shared
intermediates: if the fast path (chunked SSD scan, fused projections, autocast) ever
computes something else, `tests/test_reference_agreement.py` sees it. `bench/throughput.py
--implementation reference` times it too: it is the ~1k tokens/s baseline the speed work started from.
"""

from __future__ import annotations

import math
from typing import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor

from dimba.model.config import DIMBAConfig


def rms_norm(x: Tensor, weight: Tensor, eps: Tensor, group: int) -> Tensor:
    """Normalize each run of `group` channels to unit RMS, then scale by the gain."""
    pieces = []
    for start in range(0, x.shape[-1], group):
        chunk = x[..., start:start + group]
        pieces.append(chunk / torch.sqrt((chunk * chunk).mean(-1, keepdim=True) + eps))
    return torch.cat(pieces, dim=-1) * weight


def causal_conv(seq: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    """Depthwise causal convolution: out_t = bias + sum_k w_k * in_{t-(K-1)+k}."""
    kernel = weight.shape[-1]
    padded = F.pad(seq, (0, 0, kernel - 1, 0))
    out = bias.expand_as(seq).clone()
    for k in range(kernel):
        out = out + padded[:, k:k + seq.shape[1]] * weight[:, 0, k]
    return out


def recurrent_scan(x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor) -> Tensor:
    """h_t = exp(dt_t A) h_{t-1} + dt_t x_t B_t^T;  y_t = h_t C_t, one step at a time."""
    batch, length, heads, head_dim = x.shape
    state = x.new_zeros(batch, heads, head_dim, B.shape[-1])
    outputs = []
    for t in range(length):
        decay = torch.exp(dt[:, t] * A)[:, :, None, None]
        update = (x[:, t] * dt[:, t, :, None])[..., None] * B[:, t, None, None, :]
        state = decay * state + update
        outputs.append((state * C[:, t, None, None, :]).sum(-1))
    return torch.stack(outputs, dim=1)


def mixer(p: Mapping[str, Tensor], prefix: str, cfg: DIMBAConfig, u: Tensor) -> Tensor:
    batch, length, _ = u.shape
    d_inner, d_state, heads = cfg.d_inner, cfg.d_state, cfg.n_heads
    projected = u @ p[f"{prefix}in_proj.weight"].t()
    z = projected[..., :d_inner]
    xbc = projected[..., d_inner:2 * d_inner + 2 * d_state]
    dt_raw = projected[..., 2 * d_inner + 2 * d_state:]
    y = torch.zeros(batch, length, heads, cfg.head_dim, dtype=u.dtype)
    for direction in range(2 if cfg.bidirectional else 1):
        reverse = direction == 1
        seq = xbc.flip(1) if reverse else xbc
        dt_in = dt_raw.flip(1) if reverse else dt_raw
        seq = F.silu(causal_conv(seq, p[f"{prefix}convs.{direction}.weight"], p[f"{prefix}convs.{direction}.bias"]))
        x = seq[..., :d_inner].reshape(batch, length, heads, cfg.head_dim)
        B, C = seq[..., d_inner:d_inner + d_state], seq[..., d_inner + d_state:]
        dt = F.softplus(dt_in + p[f"{prefix}dt_bias"][direction])
        A = -torch.exp(p[f"{prefix}A_log"][direction])
        out = recurrent_scan(x, dt, A, B, C) + x * p[f"{prefix}D"][direction][:, None]
        y = y + (out.flip(1) if reverse else out)
    gated = y.reshape(batch, length, d_inner) * F.silu(z)
    normed = rms_norm(gated, p[f"{prefix}norm.weight"], p[f"{prefix}norm.eps"], cfg.head_dim)
    return normed @ p[f"{prefix}out_proj.weight"].t()


def timestep_embedding(t: Tensor, dim: int, dtype: torch.dtype) -> Tensor:
    half = dim // 2
    freqs = [math.exp(-math.log(10_000.0) * i / half) for i in range(half)]
    angles = t.double()[:, None] * torch.tensor(freqs, dtype=torch.float64)[None]
    return torch.cat([angles.sin(), angles.cos()], dim=-1).to(dtype)


def denoise(p: Mapping[str, Tensor], cfg: DIMBAConfig, x_t: Tensor, t: Tensor) -> Tensor:
    """The x0 prediction of a DIMBA whose state dict (with buffers) is `p`."""
    features = timestep_embedding(t, cfg.d_time, x_t.dtype)
    hidden = F.silu(features @ p["time_mlp.0.weight"].t() + p["time_mlp.0.bias"])
    cond = hidden @ p["time_mlp.2.weight"].t() + p["time_mlp.2.bias"]
    h = x_t @ p["in_proj.weight"].t() + p["in_proj.bias"]
    for i in range(cfg.n_layers):
        prefix = f"blocks.{i}."
        modulation = cond @ p[prefix + "modulation.weight"].t() + p[prefix + "modulation.bias"]
        shift, scale = modulation[:, None, :cfg.d_model], modulation[:, None, cfg.d_model:]
        normed = rms_norm(h, p[prefix + "norm.weight"], p[prefix + "norm.eps"], cfg.d_model)
        h = h + mixer(p, prefix + "mixer.", cfg, normed * (1 + scale) + shift)
    h = rms_norm(h, p["norm_f.weight"], p["norm_f.eps"], cfg.d_model)
    return h @ p["out_proj.weight"].t() + p["out_proj.bias"]


def loss(p: Mapping[str, Tensor], cfg: DIMBAConfig, tokens: Tensor, t: Tensor, noise: Tensor,
         alpha_bar: Tensor) -> Tensor:
    """x0 MSE + token cross-entropy, as `DIMBA.loss` defines it."""
    x0 = p["embedding.weight"][tokens]
    ab = alpha_bar[t].to(x0.dtype)[:, None, None]
    x0_hat = denoise(p, cfg, ab.sqrt() * x0 + (1 - ab).sqrt() * noise, t)
    logits = x0_hat @ p["embedding.weight"].t()
    return F.mse_loss(x0_hat, x0) + F.cross_entropy(logits.flatten(0, 1).float(), tokens.flatten())
