"""DIMBA under FSDP: one unit per Mamba-2 block, and sharded checkpoints swapped in whole."""

from __future__ import annotations

from typing import Set, Type

from lightning.pytorch.strategies import FSDPStrategy as LightningFSDPStrategy
from torch import nn

from dimba.checkpointing.sharded_io import AtomicShardedSaves
from dimba.model.layers import DIMBABlock


def block_wrap_policy() -> Set[Type[nn.Module]]:
    """Lightning's FSDPStrategy takes a set of module classes as `auto_wrap_policy`."""
    return {DIMBABlock}


class FSDPStrategy(AtomicShardedSaves, LightningFSDPStrategy):
    """Lightning's FSDPStrategy whose sharded checkpoints (`last.ckpt/`) are crash-safe."""
