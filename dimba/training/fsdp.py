"""DIMBA under FSDP: one unit per Mamba-2 block, and sharded checkpoints swapped in whole."""

from __future__ import annotations

from typing import Set, Type

from lightning.pytorch.strategies import FSDPStrategy as LightningFSDPStrategy
from torch import nn

from dimba import internals
from dimba.model.layers import DIMBABlock
from dimba.training.sharded_saves import WholeDirectorySaves


def block_wrap_policy() -> Set[Type[nn.Module]]:
    """Lightning's FSDPStrategy takes a set of module classes as `auto_wrap_policy`."""
    return {DIMBABlock}


class FSDPStrategy(WholeDirectorySaves, LightningFSDPStrategy):
    """Lightning's FSDPStrategy whose sharded checkpoints (`last.ckpt/`) are crash-safe,
    and which also runs on CPU processes (gloo): `trainer=fsdp trainer.accelerator=cpu`."""

    def _setup_model(self, model: nn.Module) -> nn.Module:
        if self.root_device.type != "cpu":
            return super()._setup_model(model)
        return internals.fsdp1_wrap_on_cpu(self, model)
