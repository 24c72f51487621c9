"""Where an old tensor's entries sit in its grown successor, and how to put them there.

Shared by the growth operators (weights) and the optimizer-state transfer (moments, step
counts), sharded or not. Old entries occupy a few contiguous runs per dimension (the
segments of a fused projection), so they are copied slice by slice: no index tensor the
size of the weight is ever built.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

Index = Optional[List[Optional[Tensor]]]
Run = Tuple[int, int, int]  # (start in the old tensor, start in the new one, length)


def runs(positions: Tensor) -> List[Run]:
    """Contiguous runs of increasing new positions of consecutive old entries."""
    if positions.numel() == 0:
        return []
    breaks = (positions[1:] != positions[:-1] + 1).nonzero().flatten().add_(1)
    starts = torch.cat([breaks.new_zeros(1), breaks])
    lengths = torch.diff(starts, append=breaks.new_tensor([positions.numel()]))
    return list(zip(starts.tolist(), positions[starts].tolist(), lengths.tolist()))


def place(dst: Tensor, src: Tensor, index: Sequence[Optional[Tensor]], scale: float = 1.0) -> Tensor:
    """Write `src * scale` into `dst` at the old entries' positions; returns `dst`."""
    per_dim = [
        [(slice(0, n), slice(0, n))] if positions is None
        else [(slice(a, a + k), slice(b, b + k)) for a, b, k in runs(positions)]
        for positions, n in zip(index, src.shape)
    ]
    for combo in itertools.product(*per_dim):
        target = dst[tuple(new for _, new in combo)]
        target.copy_(src[tuple(old for old, _ in combo)])
        if scale != 1.0:
            target.mul_(scale)
    return dst


@dataclass
class Remap:
    """Where an old parameter's entries sit in its successor.

    `index[d]` lists, for dimension d, the new positions of the old entries (None: same
    positions). The successor's old entries equal the old ones times `scale`.
    """

    new: nn.Parameter
    index: Index = None
    scale: float = 1.0

    @property
    def old_shape(self) -> torch.Size:
        if self.index is None:
            return self.new.shape
        return torch.Size(len(i) if i is not None else n for i, n in zip(self.index, self.new.shape))

    def embed(self, old: Tensor, fill: float = 0.0) -> Tensor:
        """`old` placed at the old entries of a tensor of the new shape, `fill` elsewhere."""
        if self.index is None:
            return old.clone()
        return place(old.new_full(self.new.shape, fill), old, self.index)

    def new_entries(self) -> Optional[Tensor]:
        """Boolean mask of entries that did not exist before (None: there are none)."""
        if self.index is None:
            return None
        return ~self.embed(torch.ones(self.old_shape, dtype=torch.bool, device=self.new.device), fill=False)
