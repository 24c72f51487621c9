"""Growth of a whole (unsharded) model, in place: the rule table applied to whole tensors.

The caller's `DIMBA` object stays the same object: the grown structure is built on the
meta device, every tensor gets its value from its rule (`dimba.growth.rules`), and the
model adopts the result. Tensors that do not change (old blocks under depth growth, the
token embedding under width growth) are moved, not copied. Each operator returns a
`Remap` per old parameter, from which `dimba.growth.optim` carries the optimizer over.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Dict, Optional, Set

import torch
from torch import Tensor, nn

from dimba.growth.remap import Remap
from dimba.growth.rules import (DepthMode, TensorRule, depth_rules, depth_target, grown_value,
                                width_rules, width_target)
from dimba.model import DIMBA, DIMBAConfig


def meta_model(config: DIMBAConfig, dtype: torch.dtype) -> DIMBA:
    """The structure of a model of `config`, with no memory behind it."""
    with torch.device("meta"):
        return DIMBA(config).to(dtype)


def put_tensor(module: nn.Module, name: str, value: Tensor) -> None:
    prefix, leaf = name.rsplit(".", 1)
    setattr(module.get_submodule(prefix), leaf, value)  # a Parameter registers; a buffer keeps its persistence


def _adopt(model: DIMBA, grown: DIMBA) -> None:
    """Give `model` the submodules and config of `grown`, keeping the object itself."""
    for name, _ in list(model.named_children()):
        delattr(model, name)
    for name, child in grown.named_children():  # in grown's order: parameters() and state_dict() follow it
        setattr(model, name, child)
    model.config = grown.config


def grow_in_place(model: DIMBA, config: DIMBAConfig, rules: Dict[str, TensorRule], seed: int) -> Dict[nn.Parameter, Remap]:
    """Reshape `model` to `config`, each tensor made by its rule; a Remap per old parameter."""
    reference = next(model.parameters())
    grown = meta_model(config, reference.dtype)
    old_params = dict(model.named_parameters())
    old_buffers = dict(model.named_buffers())
    remaps: Dict[nn.Parameter, Remap] = {}
    moved: Set[int] = set()
    with torch.no_grad():
        for name, meta in list(grown.named_parameters()):
            rule = rules[name]
            old: Optional[nn.Parameter] = old_params.get(rule.source) if rule.source else None
            if old is not None and rule.unchanged and rule.successor and id(old) not in moved:
                new = old  # moved: the same tensor, the same optimizer state
                moved.add(id(old))
            else:
                value = grown_value(rule, None if old is None else old.detach(), tuple(meta.shape), reference.dtype, seed, name)
                new = nn.Parameter(value.to(reference.device), requires_grad=True if old is None else old.requires_grad)
            put_tensor(grown, name, new)
            if old is not None and rule.successor:
                remaps[old] = Remap(new, rule.index, rule.scale)
        for name, meta in list(grown.named_buffers()):
            rule = rules[name]
            put_tensor(grown, name, grown_value(rule, old_buffers[rule.source], tuple(meta.shape), meta.dtype, seed, name))
    _adopt(model, grown)
    return remaps


def grow_width(model: DIMBA, d_model: int, seed: int = 0) -> Dict[nn.Parameter, Remap]:
    """Widen the residual stream to `d_model` (the blocks' inner width and heads follow
    `expand` and `head_dim`), computing exactly the same function as before."""
    config = width_target(model.config, d_model)
    return grow_in_place(model, config, width_rules(model.config, config), seed)


def grow_depth(model: DIMBA, n_layers: int, mode: DepthMode | str = DepthMode.IDENTITY, seed: int = 0) -> Dict[nn.Parameter, Remap]:
    """Add blocks up to `n_layers`.

    identity: new blocks, spread evenly between the existing ones, whose mixer output
    projection is zero, so each starts as the identity on the residual stream.
    stack: the existing blocks copied in order on top (G_stack); the function changes.
    """
    config = depth_target(model.config, n_layers)
    return grow_in_place(model, config, depth_rules(model.config, config, DepthMode(mode)), seed)


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
        grow_depth(model, target.n_layers, DepthMode.IDENTITY, seed=seed + 1)  # moves every parameter
    return remaps


def adopt_architecture(model: DIMBA, config: DIMBAConfig) -> None:
    """Reshape `model` to `config` with fresh weights, in place (before loading a checkpoint's)."""
    reference = next(model.parameters())
    devices = [reference.device] if reference.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(0)
        with torch.device(reference.device):
            fresh = DIMBA(config)
    _adopt(model, fresh.to(reference.dtype))
