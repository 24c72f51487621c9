"""Growth operators: make a DIMBA deeper or wider while it trains.

Each operator builds a freshly initialised model of the target shape, then carries every
old parameter into it at its new position. Function preservation rests on one rule: a new
dimension of a stream that other layers read (the residual stream, the timestep
conditioning) starts at zero, and nothing writes into it yet (the rows that would write
are zero). Weights that only *read* such zero dimensions keep their random initialisation,
so gradients reach the new dimensions from the first step and they do not stay dead.

An operator grows the model in place (the caller's `DIMBA` object stays the same object)
and returns a `Remap` per old parameter, from which `dimba.growth.optim` carries the
optimizer state over.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, replace
from enum import Enum
from typing import Dict, List, Optional, Sequence

import torch
from torch import Tensor, nn

from dimba.model import DIMBA, DIMBAConfig


class DepthMode(str, Enum):
    IDENTITY = "identity"  # new blocks output zero: the network computes the same function
    STACK = "stack"  # copies of the existing blocks on top, in order (G_stack); not preserving


@dataclass
class Remap:
    """Where an old parameter's entries sit in its successor.

    `index[d]` lists, for dimension d, the new positions of the old entries (None: same
    positions). The successor's old entries equal the old ones times `scale`.
    """

    new: nn.Parameter
    index: Optional[List[Optional[Tensor]]] = None
    scale: float = 1.0

    def embed(self, old: Tensor, fill: float = 0.0) -> Tensor:
        """`old` placed at the old entries of a tensor of the new shape, `fill` elsewhere."""
        if self.index is None:
            return old.clone()
        out = old
        for dim, positions in enumerate(self.index):
            if positions is None:
                continue
            shape = list(out.shape)
            shape[dim] = self.new.shape[dim]
            grown = out.new_full(shape, fill)
            out = grown.index_copy_(dim, positions.to(out.device), out)
        return out

    def new_entries(self) -> Optional[Tensor]:
        """Boolean mask of entries that did not exist before (None: there are none)."""
        if self.index is None:
            return None
        old_shape = [len(i) if i is not None else n for i, n in zip(self.index, self.new.shape)]
        return ~self.embed(torch.ones(old_shape, dtype=torch.bool, device=self.new.device), fill=False)


# --------------------------------------------------------------------------- helpers
def _fresh_model(config: DIMBAConfig, like: DIMBA, seed: int) -> DIMBA:
    """A randomly initialised model of `config` on `like`'s device and dtype, the same on every rank."""
    reference = next(like.parameters())
    devices = [reference.device] if reference.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        with torch.device(reference.device):
            fresh = DIMBA(config)
    return fresh.to(reference.dtype)


def adopt_architecture(model: DIMBA, config: DIMBAConfig) -> None:
    """Reshape `model` to `config` with fresh weights, in place (before loading a checkpoint's)."""
    _adopt(model, _fresh_model(config, model, seed=0))


def _adopt(model: DIMBA, grown: DIMBA) -> None:
    """Give `model` the submodules and config of `grown`, keeping the object itself."""
    model._modules.clear()
    model._modules.update(grown._modules)
    model.config = grown.config


def _positions(n: int) -> Tensor:
    return torch.arange(n)


def _segments(old: Sequence[int], new: Sequence[int]) -> Tensor:
    """Positions of old entries in a tensor made of consecutive segments that each grow."""
    parts, start = [], 0
    for old_len, new_len in zip(old, new):
        parts.append(torch.arange(start, start + old_len))
        start += new_len
    return torch.cat(parts)


# --------------------------------------------------------------------------- width
def grow_width(model: DIMBA, d_model: int, seed: int = 0) -> Dict[nn.Parameter, Remap]:
    """Widen the residual stream to `d_model` (the blocks' inner width and heads follow
    `expand` and `head_dim`), computing exactly the same function as before."""
    old_cfg = model.config
    if d_model <= old_cfg.d_model:
        raise ValueError(f"width growth needs d_model > {old_cfg.d_model}, got {d_model}")
    new_cfg = replace(old_cfg, d_model=d_model)  # validates head_dim against the new inner width
    fresh = _fresh_model(new_cfg, model, seed)
    d, d2, di, di2 = old_cfg.d_model, d_model, old_cfg.d_inner, new_cfg.d_inner
    h, h2, n = old_cfg.n_heads, new_cfg.n_heads, old_cfg.d_state
    gain = math.sqrt(d / d2)  # RMS over d2 dims, of which d2 - d are zero

    residual = _positions(d)
    inner = _positions(di)
    heads = _positions(h)
    modulation = _segments([d, d], [d2, d2])  # [shift | scale]
    in_proj_rows = _segments([di, di, n, n, h], [di2, di2, n, n, h2])  # [z | x | B | C | dt]
    conv_channels = _segments([di, n, n], [di2, n, n])  # [x | B | C]

    # (rows, cols, zero_new_rows, zero_new_cols, scale) per parameter name suffix.
    rules: Dict[str, tuple] = {
        "in_proj.weight": (residual, None, True, False, 1.0),
        "in_proj.bias": (residual, None, True, False, 1.0),
        "time_mlp.0.weight": (residual, None, True, False, 1.0),
        "time_mlp.0.bias": (residual, None, True, False, 1.0),
        "time_mlp.2.weight": (residual, residual, True, False, 1.0),
        "time_mlp.2.bias": (residual, None, True, False, 1.0),
        "norm_f.weight": (residual, None, False, False, gain),
        "out_proj.weight": (None, residual, False, False, 1.0),
        "norm.weight": (residual, None, False, False, gain),
        "modulation.weight": (modulation, residual, True, False, 1.0),
        "modulation.bias": (modulation, None, True, False, 1.0),
        "mixer.in_proj.weight": (in_proj_rows, residual, False, False, 1.0),
        "mixer.norm.weight": (inner, None, False, False, 1.0),
        "mixer.out_proj.weight": (residual, inner, True, True, 1.0),
        "weight@conv": (conv_channels, None, False, False, 1.0),
        "bias@conv": (conv_channels, None, False, False, 1.0),
        "mixer.dt_bias": (None, heads, False, False, 1.0),
        "mixer.A_log": (None, heads, False, False, 1.0),
        "mixer.D": (None, heads, False, False, 1.0),
    }

    def rule_for(name: str) -> tuple:
        if ".convs." in name:
            return rules["weight@conv" if name.endswith("weight") else "bias@conv"]
        if name.startswith("blocks.") and name.split(".", 2)[2] in rules:
            return rules[name.split(".", 2)[2]]
        if name in rules:
            return rules[name]
        return (None, None, False, False, 1.0)  # unchanged shape (the token embedding)

    old_params = dict(model.named_parameters())
    remaps: Dict[nn.Parameter, Remap] = {}
    with torch.no_grad():
        for name, target in fresh.named_parameters():
            old = old_params[name]
            rows, cols, zero_rows, zero_cols, scale = rule_for(name)
            index = [rows, cols][: old.dim()] + [None] * max(old.dim() - 2, 0)
            remap = Remap(target, index if any(i is not None for i in index) else None, scale)
            if remap.index is None:
                target.copy_(old)
            else:
                is_new = remap.new_entries()
                value = torch.where(is_new, target, remap.embed(old * scale))
                if zero_rows and rows is not None:
                    value[_complement(rows, target.shape[0])] = 0
                if zero_cols and cols is not None and target.dim() > 1:
                    value[:, _complement(cols, target.shape[1])] = 0
                target.copy_(value)
            remaps[old] = remap
        # RMSNorms over the residual stream: eps scales with the mean over more dims.
        for (name, module), (_, old_module) in zip(fresh.named_modules(), model.named_modules()):
            if name == "norm_f" or name.endswith(".norm") and not name.endswith("mixer.norm"):
                module.eps.copy_(old_module.eps * d / d2)
            elif name.endswith("mixer.norm"):
                module.eps.copy_(old_module.eps)
    _adopt(model, fresh)
    return remaps


def _complement(positions: Tensor, size: int) -> Tensor:
    mask = torch.ones(size, dtype=torch.bool)
    mask[positions] = False
    return mask


# --------------------------------------------------------------------------- depth
def grow_depth(model: DIMBA, n_layers: int, mode: DepthMode | str = DepthMode.IDENTITY, seed: int = 0) -> Dict[nn.Parameter, Remap]:
    """Add blocks up to `n_layers`.

    identity: new blocks, spread evenly between the existing ones, whose mixer output
    projection is zero, so each starts as the identity on the residual stream.
    stack: the existing blocks copied in order on top (G_stack); the function changes.
    """
    mode = DepthMode(mode)
    old_cfg = model.config
    n = old_cfg.n_layers
    if n_layers <= n:
        raise ValueError(f"depth growth needs n_layers > {n}, got {n_layers}")
    new_cfg = replace(old_cfg, n_layers=n_layers)
    kept = {p: Remap(p) for p in model.parameters()}  # every old parameter stays as it is
    old_blocks = list(model.blocks)
    residual_eps = old_blocks[0].norm.eps.clone()
    if mode is DepthMode.STACK:
        order: List[Optional[int]] = list(range(n)) + [None] * (n_layers - n)
        added = [copy.deepcopy(old_blocks[i % n]) for i in range(n_layers - n)]
    else:
        order, added = _interleave(n, n_layers - n), _new_identity_blocks(new_cfg, model, n_layers - n, seed, residual_eps)
    added_iter = iter(added)
    blocks = nn.ModuleList(old_blocks[i] if i is not None else next(added_iter) for i in order)
    model.blocks = blocks
    model.config = new_cfg
    return kept


def _interleave(n_old: int, n_new: int) -> List[Optional[int]]:
    """Old block indices with None where a new block goes, spread as evenly as possible."""
    order: List[Optional[int]] = []
    for j in range(n_old):
        order.append(j)
        order.extend([None] * ((j + 1) * n_new // n_old - j * n_new // n_old))
    return order


def _new_identity_blocks(cfg: DIMBAConfig, like: DIMBA, count: int, seed: int, residual_eps: Tensor) -> List[nn.Module]:
    fresh = _fresh_model(replace(cfg, n_layers=count), like, seed)
    blocks = list(fresh.blocks)
    with torch.no_grad():
        for block in blocks:
            block.mixer.out_proj.weight.zero_()
            block.norm.eps.copy_(residual_eps)
    return blocks


def grow_to(model: DIMBA, target: DIMBAConfig, seed: int = 0) -> Dict[nn.Parameter, Remap]:
    """Grow `model` to `target` (wider, then deeper); only d_model and n_layers may differ."""
    current = model.config
    if replace(current, d_model=target.d_model, n_layers=target.n_layers) != target:
        raise ValueError(f"architectures differ beyond d_model and n_layers: model {current}, checkpoint {target}")
    if target.d_model < current.d_model or target.n_layers < current.n_layers:
        raise ValueError(
            f"the model (d_model={current.d_model}, n_layers={current.n_layers}) is larger than the "
            f"checkpoint's (d_model={target.d_model}, n_layers={target.n_layers})"
        )
    remaps = {p: Remap(p) for p in model.parameters()}
    if target.d_model > current.d_model:
        remaps = grow_width(model, target.d_model, seed=seed)
    if target.n_layers > current.n_layers:
        grow_depth(model, target.n_layers, DepthMode.IDENTITY, seed=seed + 1)  # keeps every parameter
    return remaps
