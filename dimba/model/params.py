"""The one parameter counter: what milestones, the plan, growth records and exports count.

Milestones count trainable parameters. Every parameter of a DIMBA is trainable, so
the count of a model and the count of its architecture agree; `architecture_parameters`
gets it from a model built on the meta device (exact, and free of memory even at 30B).
Under FSDP2 a parameter is a DTensor whose `numel()` is the whole tensor's, so a sharded
model counts its full size on every rank.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Dict, Tuple

import torch
from torch import nn

from dimba.model.config import DIMBAConfig


def count_parameters(model: nn.Module) -> int:
    """Trainable parameters of a module (a DIMBA, or a LightningModule holding one)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


_COUNTS: Dict[Tuple, int] = {}


def architecture_parameters(config: DIMBAConfig) -> int:
    """Trainable parameters of a DIMBA of this architecture, without allocating it."""
    from dimba.model.dimba import DIMBA

    key = tuple(getattr(config, f.name) for f in fields(config) if f.compare)
    if key not in _COUNTS:
        with torch.device("meta"):
            _COUNTS[key] = count_parameters(DIMBA(config))
    return _COUNTS[key]
