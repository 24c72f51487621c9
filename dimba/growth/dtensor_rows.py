"""Small facts about FSDP2's DTensors that growth needs: local shards and their rows.
(The growth of a sharded model itself is `dimba.growth.sharded`; the optimizer's is
`dimba.growth.optim`.)

Sharded growth supports what `dimba.training.fsdp_wrapping.shard_dimba` makes: a 1-D device mesh
with every parameter `Shard(0)`. A tensor is regrown by gathering it whole (one tensor at
a time), computing the grown value and keeping this rank's rows of it.
"""

from __future__ import annotations

from typing import Callable, Tuple

import torch
from torch import Tensor, nn
from torch.distributed.tensor import DTensor, Shard

from dimba.growth.shapes import shard_range


def local(t: Tensor) -> Tensor:
    """This rank's part of `t` (`t` itself when it is not a DTensor)."""
    return t.to_local() if isinstance(t, DTensor) else t


def is_sharded(model: nn.Module) -> bool:
    return any(isinstance(p, DTensor) for p in model.parameters())


def local_rows(p: DTensor) -> Tuple[int, int]:
    """The rows [start, stop) of `p`'s first dimension this rank holds."""
    mesh = p.device_mesh
    if mesh.ndim != 1 or tuple(p.placements) != (Shard(0),):
        raise ValueError(
            f"sharded growth needs parameters sharded as Shard(0) over a 1-D mesh (FSDP2 without HSDP or "
            f"tensor parallelism); got placements {tuple(p.placements)} on a {mesh.ndim}-D mesh"
        )
    return shard_range(p.shape[0], mesh.size(), mesh.get_local_rank())


def regrow(value: Tensor, like: Tensor, grow: Callable[[Tensor], Tensor]) -> Tensor:
    """`grow(value)` for a whole tensor; for a DTensor, the same computed on the gathered
    tensor and cut back to this rank's rows, sharded like `like` (no data on meta)."""
    if not isinstance(value, DTensor):
        return grow(value)
    if local(value).is_meta:
        return torch.empty_like(like, dtype=value.dtype)
    whole = grow(value.full_tensor())
    out = torch.empty_like(like, dtype=whole.dtype)
    start, stop = local_rows(like)
    local(out).copy_(whole[start:stop])
    return out
