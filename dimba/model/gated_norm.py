"""The mixer's output gate and per-head RMSNorm, rms_norm(y * silu(z)) * weight, as one op.

Autograd's generic backward for this chain (a SiLU, a product, a grouped mean of squares,
an rsqrt, two scalings) keeps and rereads about a dozen activation-sized tensors; on a
CPU each costs about as much as its arithmetic. The backward written out below touches
each a few times, and reuses its own temporaries in place. `tests/test_model.py` checks
it against the plain composition.
"""

from __future__ import annotations

from typing import Any, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor


def gated_rms_norm(y: Tensor, z: Tensor, weight: Tensor, eps: Tensor, group: int) -> Tensor:
    """RMS-normalize y * silu(z) over each run of `group` channels, then scale by `weight`.

    Computed in the weight's dtype (float32 under autocast too, as the norm always was).
    """
    return GatedRMSNorm.apply(y, z, weight, eps, group)


class GatedRMSNorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, y: Tensor, z: Tensor, weight: Tensor, eps: Tensor, group: int) -> Tensor:
        with torch.autocast(y.device.type, enabled=False):
            dtype = weight.dtype
            y, z = y.to(dtype), z.to(dtype)
            shape = y.shape
            gated = (y * F.silu(z)).view(*shape[:-1], -1, group)
            inv_rms = torch.rsqrt(gated.square().mean(-1, keepdim=True) + eps)  # (..., groups, 1)
            normed = gated.mul_(inv_rms).view(shape)
            ctx.save_for_backward(y, z, normed, inv_rms, weight)
            ctx.group = group
            return normed * weight

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad: Tensor) -> Tuple[Any, ...]:
        y, z, normed, inv_rms, weight = ctx.saved_tensors
        with torch.autocast(grad.device.type, enabled=False):
            grad = grad.to(weight.dtype)
            shape, group = y.shape, ctx.group
            d_weight = (grad * normed).sum(tuple(range(grad.dim() - 1)))
            d_normed = (grad * weight).view(*shape[:-1], -1, group)
            n = normed.view(*shape[:-1], -1, group)
            mean = torch.linalg.vecdot(d_normed, n, dim=-1).unsqueeze(-1) / group
            d_gated = d_normed.sub_(n * mean).mul_(inv_rms).view(shape)  # d/d(y * silu(z))
            d_y = d_gated * F.silu(z)
            d_z = torch.ops.aten.silu_backward(d_gated.mul_(y), z)
            return d_y, d_z, d_weight.to(weight.dtype), None, None
