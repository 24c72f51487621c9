"""The one parameter counter: what milestones, the plan, growth records and exports count.

Milestones count trainable parameters. Every parameter of a DIMBA is trainable, so
the count of a model and the count of its architecture agree; `architecture_parameters`
gets it from the architecture's tensors (`dimba.model.shapes`: free of memory even at 30B).
Under FSDP2 a parameter is a DTensor whose `numel()` is the whole tensor's, so a sharded
model counts its full size on every rank.
"""

from __future__ import annotations

from torch import nn

from dimba.model.config import DIMBAConfig


def count_parameters(model: nn.Module) -> int:
    """Trainable parameters of a module (a DIMBA, or a LightningModule holding one)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def architecture_parameters(config: DIMBAConfig) -> int:
    """Trainable parameters of a DIMBA of this architecture, without building it."""
    from dimba.model.shapes import parameter_count

    return parameter_count(config)
