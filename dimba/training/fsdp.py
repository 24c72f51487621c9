"""DIMBA under FSDP: one unit per Mamba-2 block, and sharded checkpoints swapped in whole."""

from __future__ import annotations

from typing import Set, Type

import torch
from lightning.fabric.strategies.fsdp import _setup_activation_checkpointing
from lightning.pytorch.strategies import FSDPStrategy as LightningFSDPStrategy
from torch import nn

from dimba.checkpointing.sharded_io import AtomicShardedSaves
from dimba.model.layers import DIMBABlock


def block_wrap_policy() -> Set[Type[nn.Module]]:
    """Lightning's FSDPStrategy takes a set of module classes as `auto_wrap_policy`."""
    return {DIMBABlock}


class FSDPStrategy(AtomicShardedSaves, LightningFSDPStrategy):
    """Lightning's FSDPStrategy whose sharded checkpoints (`last.ckpt/`) are crash-safe,
    and which also runs on CPU processes (gloo): `trainer=fsdp trainer.accelerator=cpu`.

    Lightning passes FSDP `device_id=root_device.index`, which is None on a CPU, and torch's
    FSDP then looks for an accelerator; naming the CPU device explicitly is all it needs.
    """

    def _setup_model(self, model: nn.Module) -> nn.Module:
        if self.root_device.type != "cpu":
            return super()._setup_model(model)
        from torch.distributed.fsdp import FullyShardedDataParallel

        if not any(isinstance(module, FullyShardedDataParallel) for module in model.modules()):
            model = FullyShardedDataParallel(module=model, cpu_offload=self.cpu_offload,
                                             mixed_precision=self.mixed_precision_config,
                                             sharding_strategy=self.sharding_strategy,
                                             device_id=torch.device("cpu"), **self.kwargs)
        if self._activation_checkpointing_kwargs:
            _setup_activation_checkpointing(model, self._activation_checkpointing_kwargs)
        return model
