"""One growth event on a model and its optimizer: the operator, then the optimizer state."""

from __future__ import annotations

from typing import Callable, Dict, Optional

import torch
from torch import nn

from dimba.growth.operators import grow_depth, grow_width
from dimba.growth.optim import transfer_optimizer_state
from dimba.growth.schedule import GrowthEvent, GrowthOp
from dimba.model import DIMBA
from dimba.model.params import count_parameters


def apply_growth(model: DIMBA, event: GrowthEvent, seed: int, optimizer: Optional[torch.optim.Optimizer] = None,
                 group_for: Callable[[nn.Parameter], int] = lambda p: 0) -> Dict[str, object]:
    """Grow `model` in place (and point `optimizer` at the grown parameters, moments carried
    over); returns the record a checkpoint's growth history keeps of the event."""
    if GrowthOp(event.op) is GrowthOp.DEPTH:
        remaps = grow_depth(model, event.n_layers, event.mode, seed=seed)
    else:
        remaps = grow_width(model, event.d_model, seed=seed)
    if optimizer is not None:
        transfer_optimizer_state(optimizer, remaps, model, group_for)
    return {**event.to_dict(), "params": count_parameters(model), "architecture": model.config.to_dict()}
