"""The per-tensor rule table of growth: what each tensor of the grown model is made of.

One rule per tensor (parameters and buffers) of the grown model says which old tensor it
grows from, where the old entries go, what they are multiplied by, which new slabs are
zero, and how the remaining new entries start. `grown_value` turns a rule and the old
tensor into the new one. The unsharded operators apply it to whole tensors in place; the
sharded ones to one gathered tensor at a time; both get bit-for-bit the same weights.

Function preservation rests on one rule: a new dimension of a stream that other layers
read (the residual stream, the timestep conditioning) starts at zero, and nothing writes
into it yet (the rows that would write are zero). Weights that only *read* such zero
dimensions start random, so gradients reach the new dimensions from the first step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from enum import Enum
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor

from dimba.growth.init import initial_value
from dimba.growth.remap import Index, place
from dimba.model.shapes import Shape, block_shapes, parameter_shapes
from dimba.model.config import DIMBAConfig


class DepthMode(str, Enum):
    IDENTITY = "identity"  # new blocks output zero: the network computes the same function
    STACK = "stack"  # copies of the existing blocks on top, in order (G_stack); not preserving


@dataclass(frozen=True)
class TensorRule:
    source: Optional[str]  # the old tensor it grows from (None: a new tensor)
    index: Index = None  # per dimension, the new positions of the old entries (None: same shape)
    scale: float = 1.0  # old entries are multiplied by it
    zero_dims: Tuple[int, ...] = ()  # dimensions whose new positions are zero throughout
    init: str = "zeros"  # how the other new entries start (dimba.growth.init)
    fan_in: int = 1
    successor: bool = True  # takes the source's optimizer state (False: a copy, starting fresh)

    @property
    def unchanged(self) -> bool:
        return self.source is not None and self.index is None and self.scale == 1.0


# name (inside a block for block tensors) -> (axis of each dimension, zero dims, gain-scaled, init)
_TOP = {
    "embedding.weight": ((None, None), (), False, "normal"),
    "in_proj.weight": (("residual", None), (0,), False, "uniform"),
    "in_proj.bias": (("residual",), (0,), False, "uniform"),
    "time_mlp.0.weight": (("residual", None), (0,), False, "uniform"),
    "time_mlp.0.bias": (("residual",), (0,), False, "uniform"),
    "time_mlp.2.weight": (("residual", "residual"), (0,), False, "uniform"),
    "time_mlp.2.bias": (("residual",), (0,), False, "uniform"),
    "norm_f.weight": (("residual",), (), True, "ones"),
    "out_proj.weight": ((None, "residual"), (), False, "uniform"),
    "out_proj.bias": ((None,), (), False, "uniform"),
    "schedule.warp": ((None,), (), False, "zeros"),  # the learned schedule's warping: zero is the cosine
}
_BLOCK = {
    "norm.weight": (("residual",), (), True, "ones"),
    "modulation.weight": (("modulation", "residual"), (0,), False, "zeros"),
    "modulation.bias": (("modulation",), (0,), False, "zeros"),
    "mixer.in_proj.weight": (("in_proj", "residual"), (), False, "uniform"),
    "mixer.conv.weight": (("conv", None, None), (), False, "uniform"),
    "mixer.conv.bias": (("conv",), (), False, "uniform"),
    "mixer.dt_bias": ((None, "heads"), (), False, "dt_bias"),
    "mixer.A_log": ((None, "heads"), (), False, "A_log"),
    "mixer.D": ((None, "heads"), (), False, "ones"),
    "mixer.norm.weight": (("inner",), (), False, "ones"),
    "mixer.out_proj.weight": (("residual", "inner"), (0, 1), False, "uniform"),
}
_RESIDUAL_NORMS = ("norm_f.eps", ".norm.eps")  # eps of RMSNorms over the residual stream


def _entry(name: str) -> tuple:
    if not name.startswith("blocks."):
        return _TOP[name]
    inner = name.split(".", 2)[2]
    if inner.startswith("mixer.convs."):
        inner = "mixer.conv." + inner.rsplit(".", 1)[1]
    return _BLOCK[inner]


def _fan_in(name: str, shapes: Dict[str, Shape]) -> int:
    """Inputs per output of the layer a weight or bias belongs to (for uniform inits)."""
    if _entry(name)[3] != "uniform":
        return 1
    weight = shapes[name.rsplit(".", 1)[0] + ".weight"]
    return math.prod(weight[1:])


def _segments(old: Sequence[int], new: Sequence[int]) -> Tensor:
    """Positions of old entries in a tensor made of consecutive segments that each grow."""
    parts, start = [], 0
    for old_len, new_len in zip(old, new):
        parts.append(torch.arange(start, start + old_len))
        start += new_len
    return torch.cat(parts)


def _axes(old: DIMBAConfig, new: DIMBAConfig) -> Dict[str, Tensor]:
    d, d2, di, di2 = old.d_model, new.d_model, old.d_inner, new.d_inner
    h, h2, n = old.n_heads, new.n_heads, old.d_state
    return {
        "residual": torch.arange(d),
        "inner": torch.arange(di),
        "heads": torch.arange(h),
        "modulation": _segments([d, d], [d2, d2]),  # [shift | scale]
        "in_proj": _segments([di, di, n, n, h], [di2, di2, n, n, h2]),  # [z | x | B | C | dt]
        "conv": _segments([di, n, n], [di2, n, n]),  # [x | B | C]
    }


def new_tensor_rule(name: str, shapes: Dict[str, Shape]) -> TensorRule:
    _, _, _, init = _entry(name)
    return TensorRule(None, init=init, fan_in=_fan_in(name, shapes))


def width_rules(old: DIMBAConfig, new: DIMBAConfig) -> Dict[str, TensorRule]:
    """Rules for widening `old` to `new` (d_model grows; inner width and heads follow)."""
    axes, shapes = _axes(old, new), parameter_shapes(new)
    gain = math.sqrt(old.d_model / new.d_model)  # RMS over d2 dims, of which d2 - d are zero
    rules: Dict[str, TensorRule] = {}
    for name in shapes:
        dims, zero_dims, gained, init = _entry(name)
        index = [axes[a] if a is not None else None for a in dims]
        rules[name] = TensorRule(
            name, index if any(i is not None for i in index) else None, gain if gained else 1.0,
            zero_dims, init, _fan_in(name, shapes),
        )
    for name in buffer_names(new):
        residual = name == "norm_f.eps" or (name.endswith(".norm.eps") and ".mixer." not in name)
        rules[name] = TensorRule(name, scale=old.d_model / new.d_model if residual else 1.0)
    return rules


def interleave(n_old: int, n_new: int) -> List[Optional[int]]:
    """Old block indices with None where a new block goes, spread as evenly as possible."""
    order: List[Optional[int]] = []
    for j in range(n_old):
        order.append(j)
        order.extend([None] * ((j + 1) * n_new // n_old - j * n_new // n_old))
    return order


def depth_rules(old: DIMBAConfig, new: DIMBAConfig, mode: DepthMode) -> Dict[str, TensorRule]:
    """Rules for deepening `old` to `new`: old blocks move, new ones are made or copied."""
    n, added = old.n_layers, new.n_layers - old.n_layers
    if mode is DepthMode.STACK:
        order: List[Optional[int]] = list(range(n)) + [None] * added
    else:
        order = interleave(n, added)
    shapes = parameter_shapes(new)
    rules: Dict[str, TensorRule] = {}
    copies = 0
    for j, i in enumerate(order):
        for inner in [*block_shapes(new), "norm.eps", "mixer.norm.eps"]:
            name = f"blocks.{j}.{inner}"
            if i is not None:
                rules[name] = TensorRule(f"blocks.{i}.{inner}")
            elif mode is DepthMode.STACK:
                rules[name] = TensorRule(f"blocks.{copies % n}.{inner}", successor=False)
            elif inner.endswith("eps"):  # the residual eps as grown so far; the mixer's as configured
                rules[name] = TensorRule(f"blocks.0.{inner}", successor=False)
            elif inner == "mixer.out_proj.weight":
                rules[name] = TensorRule(None, init="zeros")  # the new block starts as the identity
            else:
                rules[name] = new_tensor_rule(name, shapes)
        copies += i is None
    for name in [*shapes, *buffer_names(new)]:
        rules.setdefault(name, TensorRule(name))  # outside the blocks: unchanged
    return rules


def buffer_names(cfg: DIMBAConfig) -> List[str]:
    blocks = [f"blocks.{i}.{b}" for i in range(cfg.n_layers) for b in ("norm.eps", "mixer.norm.eps")]
    return [*blocks, "norm_f.eps", "schedule.alpha_bar"]


def grown_value(rule: TensorRule, old: Optional[Tensor], shape: Shape, dtype: torch.dtype,
                seed: int, name: str) -> Tensor:
    """The whole new tensor `name` (on `old`'s device, or the CPU for a new tensor)."""
    if rule.source is not None and rule.index is None:
        return old.clone() if rule.scale == 1.0 else old * rule.scale
    grown_dims = {d for d, positions in enumerate(rule.index or ()) if positions is not None}
    init = "zeros" if old is not None and grown_dims <= set(rule.zero_dims) else rule.init  # every new entry is zeroed
    value = initial_value(init, shape, dtype, seed, name, rule.fan_in)
    if old is None:
        return value
    value = value.to(old.device)
    place(value, old, rule.index, rule.scale)
    for dim in rule.zero_dims:
        kept = rule.index[dim]
        new_positions = torch.ones(shape[dim], dtype=torch.bool)
        new_positions[kept] = False
        value.index_fill_(dim, new_positions.nonzero().flatten().to(value.device), 0)
    return value


def width_target(cfg: DIMBAConfig, d_model: int) -> DIMBAConfig:
    if d_model <= cfg.d_model:
        raise ValueError(f"width growth needs d_model > {cfg.d_model}, got {d_model}")
    return replace(cfg, d_model=d_model)  # validates head_dim against the new inner width


def depth_target(cfg: DIMBAConfig, n_layers: int) -> DIMBAConfig:
    if n_layers <= cfg.n_layers:
        raise ValueError(f"depth growth needs n_layers > {cfg.n_layers}, got {n_layers}")
    return replace(cfg, n_layers=n_layers)
