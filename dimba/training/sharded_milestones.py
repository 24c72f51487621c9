"""Milestones under a sharded strategy: every rank writes its shards of one Distributed
Checkpoint directory (nothing is gathered on one rank); rank zero publishes it once every
rank's part is durable, with the same writer as one-file milestones. (What is written: this
module; how a sharded directory reaches the disk whole: `dimba.training.directory_swap`.)

Synchronously (`write`), or in the background (`start`, then `settle` at every step):
`torch.distributed.checkpoint.async_save` stages each rank's shards in host memory, returns,
and writes them in a thread over a process group of its own. Every step while a write is
in flight all ranks agree whether every rank has finished; only then is the milestone
published (or, if a rank failed, every rank stops with the same one-line error).
"""

from __future__ import annotations

import threading
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Tuple

import lightning as L

from dimba.checkpointing import atomic_io
from dimba.checkpointing.pending import PendingSave
from dimba.errors import CheckpointWriteError
from dimba.io import writer


@dataclass
class InFlight:
    pending: PendingSave
    staged: threading.Event  # this rank's shards are copied: the weights may change again
    future: Future
    staging: Path


class ShardedWrites:
    def __init__(self, save_dir: Path) -> None:
        self.save_dir = Path(save_dir)
        self.in_flight: Optional[InFlight] = None

    def _final(self, pending: PendingSave) -> Path:
        return writer.milestone_paths(self.save_dir, pending)[pending.largest]

    def write(self, trainer: L.Trainer, checkpoint: Dict[str, Any], pending: PendingSave,
              milestones: Sequence[int], reached: Sequence[int]) -> Optional[str]:
        """Every rank writes its shards now; rank zero publishes. Returns rank zero's error."""
        staging = writer.staging_path(self.save_dir, pending)
        error: Optional[str] = None
        try:
            save_shards = getattr(trainer.strategy, "save_shards", trainer.strategy.save_checkpoint)
            save_shards(checkpoint, staging)
        except Exception as exc:
            error = writer.milestone_failure(exc, self._final(pending))
        return self._publish_if_all_wrote(trainer, pending, staging, error, milestones, reached)

    def start(self, trainer: L.Trainer, checkpoint: Dict[str, Any], pending: PendingSave) -> Optional[str]:
        """Every rank stages its shards and writes them in the background."""
        staging = writer.staging_path(self.save_dir, pending)
        error: Optional[str] = None
        try:
            staged, future = trainer.strategy.async_save_shards(checkpoint, staging)
            self.in_flight = InFlight(pending, staged, future, staging)
        except Exception as exc:
            error = writer.milestone_failure(exc, self._final(pending))
        failed = trainer.strategy.reduce_boolean_decision(error is not None, all=False)
        if failed and error is None:
            error = f"Cannot write milestone checkpoint {self._final(pending)}: another rank could not stage its shards"
        return error

    def settle(self, trainer: L.Trainer, milestones: Sequence[int], reached: Sequence[int],
               wait: bool) -> Optional[Tuple[PendingSave, Optional[str]]]:
        """Collective. The write in flight once every rank's part is done (`wait`: block until
        it is): published by rank zero, or the error every rank stops with."""
        flight = self.in_flight
        if flight is None:
            return None
        if not wait and not trainer.strategy.reduce_boolean_decision(flight.future.done(), all=True):
            return None
        self.in_flight = None
        error: Optional[str] = None
        try:
            flight.future.result()
        except Exception as exc:
            error = writer.milestone_failure(exc, self._final(flight.pending))
        return flight.pending, self._publish_if_all_wrote(trainer, flight.pending, flight.staging, error,
                                                          milestones, reached)

    def _publish_if_all_wrote(self, trainer: L.Trainer, pending: PendingSave, staging: Path, error: Optional[str],
                              milestones: Sequence[int], reached: Sequence[int]) -> Optional[str]:
        if trainer.strategy.reduce_boolean_decision(error is not None, all=False) and error is None:
            error = f"Cannot write milestone checkpoint {self._final(pending)}: another rank could not write its shards"
        if trainer.is_global_zero:
            if error is None:
                try:
                    writer.publish(staging, pending, self.save_dir, milestones, reached)
                except CheckpointWriteError as exc:
                    error = str(exc)
            atomic_io.discard(staging)
        return trainer.strategy.broadcast(error, src=0)

    def wait_staged(self) -> None:
        if self.in_flight is not None:
            self.in_flight.staged.wait()

    def abandon(self) -> None:
        """After a failure elsewhere: let this rank's write end; never publish it (the other
        ranks may be gone). The milestone is saved again after a resume."""
        flight, self.in_flight = self.in_flight, None
        if flight is not None:
            flight.future.exception()
