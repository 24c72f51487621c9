"""One growth event applied to a training model and its optimizer: the call a trainer makes.

`apply_growth` grows a whole model in place (one device, DDP); `apply_sharded_growth`
grows an FSDP2 model into a new sharded model (FSDP2 cannot re-wrap a module, so the grown
model is a new object that the caller puts in place of the old one). Both keep the
optimizer object, so an LR scheduler holding it continues, and both return the record a
checkpoint keeps of the event.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Dict, Optional, Tuple

import torch
from torch import nn

from dimba.growth.optim import transfer_optimizer_state
from dimba.growth.rules import DepthMode, TensorRule, depth_rules, depth_target, width_rules, width_target
from dimba.growth.schedule import GrowthOp
from dimba.growth.sharded import Shard, grow_sharded
from dimba.growth.dtensor_rows import is_sharded
from dimba.growth.unsharded import grow_in_place
from dimba.model import DIMBA, DIMBAConfig
from dimba.model.params import count_parameters

if TYPE_CHECKING:
    from dimba.growth.schedule import GrowthEvent

GroupFor = Callable[[nn.Parameter], int]


def event_rules(config: DIMBAConfig, event: "GrowthEvent") -> Tuple[DIMBAConfig, Dict[str, TensorRule]]:
    """The architecture after `event` and the rule of every tensor of it."""
    if GrowthOp(event.op) is GrowthOp.DEPTH:
        target = depth_target(config, event.n_layers)
        return target, depth_rules(config, target, DepthMode(event.mode))
    target = width_target(config, event.d_model)
    return target, width_rules(config, target)


def growth_record(model: DIMBA, event: "GrowthEvent") -> Dict[str, object]:
    return {**event.to_dict(), "params": count_parameters(model), "architecture": model.config.to_dict()}


def apply_growth(
    model: DIMBA,
    event: "GrowthEvent",
    seed: int,
    optimizer: Optional[torch.optim.Optimizer] = None,
    group_for: GroupFor = lambda p: 0,
) -> Dict[str, object]:
    """One growth event on a whole `model` (in place) and its optimizer."""
    if is_sharded(model):
        raise ValueError("the model is sharded (FSDP2): grow it with dimba.growth.apply.apply_sharded_growth, "
                         "which returns the grown model")
    config, rules = event_rules(model.config, event)
    remaps = grow_in_place(model, config, rules, seed)
    if optimizer is not None:
        transfer_optimizer_state(optimizer, remaps, model, group_for)
    return growth_record(model, event)


def apply_sharded_growth(
    model: DIMBA,
    event: "GrowthEvent",
    seed: int,
    optimizer: Optional[torch.optim.Optimizer] = None,
    group_for: GroupFor = lambda p: 0,
    shard: Optional[Shard] = None,
) -> Tuple[DIMBA, Dict[str, object]]:
    """One growth event on an FSDP2 `model`: the grown sharded model and the record.

    Collective (every rank, same arguments). For the same seed the grown model, gathered,
    equals what `apply_growth` makes of the unsharded model, bit for bit. `shard` defaults
    to the wrapping shard_dimba recorded on `model`.
    """
    config, rules = event_rules(model.config, event)
    grown, remaps = grow_sharded(model, config, rules, seed, shard)
    if optimizer is not None:
        transfer_optimizer_state(optimizer, remaps, grown, group_for)
    return grown, growth_record(grown, event)
