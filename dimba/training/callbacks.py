"""The callbacks a recipe trains with, in the order that matters: grow, then check milestones.

`dimba.run` calls this for `python train.py` (and adds Lightning's checkpointing and the
progress bar); `DIMBALightningModule.configure_callbacks` calls it for the Python API's plain
`Trainer` usage. Nothing else constructs these callbacks.
"""

from __future__ import annotations

from typing import List

import lightning as L

from dimba.config.recipe import Recipe
from dimba.training.growth_callback import GrowthCallback
from dimba.training.milestone_callback import ProgressiveCheckpointCallback


def training_callbacks(recipe: Recipe) -> List[L.Callback]:
    callbacks: List[L.Callback] = []
    if recipe.schedule:
        callbacks.append(GrowthCallback(list(recipe.schedule)))
    progressive = recipe.progressive_checkpoints
    if progressive.enabled:
        callbacks.append(ProgressiveCheckpointCallback(progressive.milestones, progressive.save_dir,
                                                       async_save=progressive.async_save))
    return callbacks


def milestone_callback(trainer: L.Trainer) -> "ProgressiveCheckpointCallback | None":
    """The trainer's milestone callback, wherever it came from."""
    return next((cb for cb in trainer.callbacks if isinstance(cb, ProgressiveCheckpointCallback)), None)
