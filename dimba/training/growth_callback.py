"""Grow the model inside `Trainer.fit`, at the steps the schedule names.

Runs after the optimizer step and before the milestone check (`training_callbacks` lists
it first), so a milestone crossed by growth is saved at the step of the growth, with the
grown weights and the carried-over optimizer state.
"""

from __future__ import annotations

from typing import Any, List

import lightning as L
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.strategies import DDPStrategy, SingleDeviceStrategy

from dimba.growth.schedule import GrowthEvent
from dimba.training.fsdp import FSDPStrategy
from dimba.training.steps import due_growth


class GrowthCallback(Callback):
    def __init__(self, schedule: List[GrowthEvent]) -> None:
        self.schedule = list(schedule)

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        growable = (SingleDeviceStrategy, DDPStrategy, FSDPStrategy)
        if stage == "fit" and self.schedule and not isinstance(trainer.strategy, growable):
            raise ValueError(
                f"growth.schedule: growing the model is supported with a single device, DDP "
                f"(trainer=ddp) or dimba's FSDP2 (trainer=fsdp), not with {type(trainer.strategy).__name__}; "
                f"use growth=none with this strategy"
            )

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        for event in due_growth(self.schedule, trainer.global_step, pl_module.growth_history):
            pl_module.grow(event, global_step=trainer.global_step)
