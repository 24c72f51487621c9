"""`last.ckpt` at the moments ModelCheckpoint's step cadence misses: the last step, and
preemption.

The last step's checkpoint is taken at the end of that step's batch, while the epoch is
still in progress, so a run continued from it (`resume=auto` with a larger
`trainer.max_steps`) reads exactly the batches an uninterrupted run would have; a checkpoint
taken after `fit` ended would start a new epoch. Lightning turns SIGTERM into a
`SIGTERMException` on every rank at the next batch boundary; this callback saves there,
through the trainer (so every strategy works), and lets the exception end the run.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Optional

import lightning as L
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities.exceptions import SIGTERMException

log = logging.getLogger(__name__)


class LastCheckpoint(Callback):
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._saved_step: Optional[int] = None

    def _save(self, trainer: L.Trainer) -> None:
        trainer.save_checkpoint(self.path, weights_only=False)
        self._saved_step = trainer.global_step

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if 0 < trainer.max_steps <= trainer.global_step and self._saved_step != trainer.global_step:
            self._save(trainer)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.global_step > 0 and self._saved_step != trainer.global_step:  # ended by max_epochs, say
            self._save(trainer)

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        if isinstance(exception, SIGTERMException) and trainer.global_step > 0:
            self._save(trainer)
            log.info("SIGTERM: saved %s at step %d", self.path, trainer.global_step)
