"""`last.ckpt` at the moments ModelCheckpoint's step cadence misses: the end of training,
and preemption.

Lightning turns SIGTERM into a `SIGTERMException` on every rank at the next batch
boundary; this callback saves there, through the trainer (so every strategy works), and
lets the exception end the run.
"""

from __future__ import annotations

import logging
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities.exceptions import SIGTERMException

log = logging.getLogger(__name__)


class LastCheckpoint(Callback):
    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.global_step > 0:
            trainer.save_checkpoint(self.path, weights_only=False)

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        if isinstance(exception, SIGTERMException) and trainer.global_step > 0:
            trainer.save_checkpoint(self.path, weights_only=False)
            log.info("SIGTERM: saved %s at step %d", self.path, trainer.global_step)
