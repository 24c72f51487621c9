"""The Lightning side of progressive checkpointing.

After every optimizer step the callback compares the (cached) trainable-parameter count
with the next milestone. Crossed milestones are written through `trainer.save_checkpoint`,
so every strategy serializes as it should, into a temporary file that the manager then
publishes atomically, with the seed document's keys added to Lightning's own checkpoint.
A milestone checkpoint is therefore also a Lightning checkpoint: `ckpt_path=` resumes it.

Under a sharded strategy (FSDP with `state_dict_type="sharded"`) every rank writes its
shards into one Distributed Checkpoint directory; nothing is gathered on one rank. With
`async_save=True` the copy of the checkpoint, the write and the publishing run in the
background (`async_writer`); only the next optimizer step waits, for the copy alone.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import lightning as L
from lightning.pytorch.callbacks import Callback

from dimba.checkpointing import atomic_io
from dimba.checkpointing.async_writer import BackgroundWriter, snapshot
from dimba.checkpointing.strategies import writes_sharded_checkpoints
from dimba.checkpointing.checkpoint_io import CheckpointWriteError, describe_write_failure
from dimba.checkpointing.manager import (
    ProgressiveCheckpointManager,
    count_trainable_parameters,
    optimizer_param_names,
)


log = logging.getLogger(__name__)


class ProgressiveCheckpointCallback(Callback):
    def __init__(
        self,
        milestones: Sequence[Any],
        save_dir: str | Path = "./progressive_checkpoints",
        enabled: bool = True,
        async_save: bool = False,
    ) -> None:
        self.manager = ProgressiveCheckpointManager(milestones, save_dir, enabled)
        self.async_save = bool(async_save)
        self._writer = BackgroundWriter()
        self._in_flight: set[int] = set()  # milestones whose background write is not yet published
        self._deferred_error: Optional[str] = None
        self._staged: Optional[threading.Event] = None  # set once the in-flight write has its copy
        self._last_checked_step: Optional[int] = None
        self._saving: Optional[Dict[str, Any]] = None

    @property
    def enabled(self) -> bool:
        return self.manager.enabled

    # ----------------------------------------------------------------- counting
    @staticmethod
    def parameter_count(pl_module: L.LightningModule) -> int:
        """Trainable parameters. A module with `parameter_count()` (DIMBALightningModule)
        answers from its cache, recounted only when its structure changes; any other module
        is counted each time (one pass over its parameter tensors: tens of microseconds)."""
        counter = getattr(pl_module, "parameter_count", None)
        return int(counter()) if callable(counter) else count_trainable_parameters(pl_module)

    # ----------------------------------------------------------------- hooks
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage == "fit" and self.enabled and trainer.is_global_zero:
            self.manager.prepare_save_dir()
            if self.async_save:
                self._writer.start()

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._last_checked_step = trainer.global_step
        if self.enabled and trainer.ckpt_path is not None:
            self._reconcile_with_disk(trainer)

    def _reconcile_with_disk(self, trainer: L.Trainer) -> None:
        """After a resume, a milestone counts as reached exactly when its checkpoint is on disk.

        A crash between publishing a checkpoint and writing its sidecar (or between the
        names of milestones saved together, or before a background write was durable)
        leaves a milestone the restored state calls reached but no file holds: it is saved
        again at the next check, never skipped. And a background write that finished after
        the restored state was taken left a file the state does not know: it counts, so the
        milestone is never saved twice.
        """
        reached = None
        if trainer.is_global_zero:
            self.manager.forget_unsaved_milestones()
            reached = sorted(set(self.manager.tracker.reached) | set(self.manager.saved_milestones()) & set(self.manager.milestones))
        self.manager.tracker.reached = list(trainer.strategy.broadcast(reached, src=0))

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        step = trainer.global_step
        if not self.enabled or step == self._last_checked_step:
            return  # no optimizer step in this batch (gradient accumulation)
        self._last_checked_step = step
        if self._in_flight and trainer.is_global_zero:
            self._collect_finished_write(trainer)
        count = self.parameter_count(pl_module)
        crossed = [m for m in self.manager.tracker.crossed(count) if m not in self._in_flight]
        if crossed:
            self.save_milestones(trainer, pl_module, crossed, count)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """The run is over only when every milestone write is durable (or has failed loudly)."""
        self._finish_background_write(trainer)

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        # Training failed, but the snapshot being written is good: let it finish.
        error = self._writer.close() or self._deferred_error
        if error is not None:
            log.error("A milestone write in the background failed as well: %s", error)

    def save_milestones(
        self, trainer: L.Trainer, pl_module: L.LightningModule, milestones: List[int], count: int
    ) -> None:
        """One serialization for all `milestones`, published under each one's name.

        Runs on every rank: the checkpoint is assembled and handed to the strategy on all
        of them (collective for sharded strategies); only global rank zero touches files.
        Rank zero's outcome is broadcast, so a failed write (a full disk) ends every rank
        with the same error instead of leaving the others waiting in a barrier.
        """
        step = trainer.global_step
        final = self.manager.checkpoint_path(max(milestones), step)
        tmp = atomic_io.temporary_path(final, tag=".data")
        metadata = self._metadata(trainer, pl_module)
        sharded = writes_sharded_checkpoints(trainer.strategy)
        self._saving = {"milestones": milestones, "count": count, "metadata": metadata, "sharded": sharded}
        background = self.async_save and not sharded
        error: Optional[str] = None
        try:
            # What trainer.save_checkpoint does, minus its barrier (which would hang the
            # other ranks if rank zero's write fails).
            checkpoint = trainer._checkpoint_connector.dump_checkpoint(weights_only=False)
            if background:
                error = self._start_background_write(trainer, checkpoint, tmp, milestones, step, count, metadata)
            else:
                trainer.strategy.save_checkpoint(checkpoint, tmp)
        except Exception as exc:  # any failure must still reach the collectives below
            error = self._describe(exc, final)
        finally:
            self._saving = None
        if sharded:  # every rank, failed or not: were all shards written?
            if trainer.strategy.reduce_boolean_decision(error is not None, all=False) and error is None:
                error = f"Cannot write milestone checkpoint {final}: another rank could not write its shards"
        if error is None and not background and trainer.is_global_zero:
            try:
                self.manager.commit_milestones(tmp, milestones, step, count, metadata)
            except Exception as exc:
                error = self._describe(exc, final)
        if error is not None and not background and trainer.is_global_zero:
            atomic_io.discard(tmp)
        error = trainer.strategy.broadcast(error, src=0)
        if error is not None:
            raise CheckpointWriteError(error)
        if background:
            self._in_flight.update(milestones)  # every rank: not due again while it is written
        elif not trainer.is_global_zero:
            self.manager.tracker.mark_reached(milestones)

    # ----------------------------------------------------------------- async saves
    def _start_background_write(self, trainer: L.Trainer, checkpoint: Dict[str, Any], tmp: Path,
                                milestones: List[int], step: int, count: int, metadata: Dict[str, Any]) -> Optional[str]:
        """Queue the copy and the write of the checkpoint; return at once.

        The copy runs in the background too, overlapping the next forward and backward
        pass (which only read the weights); the next optimizer step, the first thing that
        changes them, waits for it (`on_before_optimizer_step`). Returns the error of the
        previous background write, which must stop the run: the caller broadcasts it, so
        every rank stops together.
        """
        if not trainer.is_global_zero:
            return None
        if self._deferred_error is not None:  # an earlier background write failed: stop here
            error, self._deferred_error = self._deferred_error, None
            return error
        io = trainer.strategy.checkpoint_io
        final = self.manager.checkpoint_path(max(milestones), step)
        staged = self._staged = threading.Event()
        copy: Dict[str, Any] = {}

        def write() -> None:
            try:
                try:
                    copy.update(snapshot(checkpoint))
                finally:
                    staged.set()
                io.save_checkpoint(copy, tmp)
                self.manager.commit_milestones(tmp, milestones, step, count, metadata)
            except BaseException as exc:
                atomic_io.discard(tmp)
                raise CheckpointWriteError(self._describe(exc, final)) from exc
            finally:
                copy.clear()  # drop the snapshot's memory as soon as it is on disk

        previous = self._writer.submit(write)
        self._in_flight -= set(self.manager.tracker.reached)
        return None if previous is None else str(previous)

    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: Any) -> None:
        """The optimizer is about to change the weights: the snapshot must be complete."""
        self.wait_for_snapshot()

    def wait_for_snapshot(self) -> None:
        staged, self._staged = self._staged, None
        if staged is not None:
            staged.wait()

    def _collect_finished_write(self, trainer: L.Trainer) -> None:
        """Rank zero, every step: forget published milestones; a failed write stops a
        single-process run at once (with several processes, at the next collective point:
        the next milestone or the end of training)."""
        error = self._writer.poll()
        self._in_flight -= set(self.manager.tracker.reached)
        if error is not None:
            if trainer.world_size == 1:
                raise error
            self._deferred_error = str(error)

    def _finish_background_write(self, trainer: L.Trainer) -> None:
        error, self._deferred_error = self._deferred_error, None
        if trainer.is_global_zero:
            finished = self._writer.close()
            error = error or (None if finished is None else str(finished))
            self._in_flight -= set(self.manager.tracker.reached)
        error = trainer.strategy.broadcast(error, src=0)
        if error is not None:
            raise CheckpointWriteError(error)
        if not trainer.is_global_zero:  # rank zero published them; keep every rank's view equal
            self.manager.tracker.mark_reached(sorted(self._in_flight))
        self._in_flight.clear()

    @staticmethod
    def _describe(exc: BaseException, final: Path) -> str:
        if isinstance(exc, CheckpointWriteError) and str(exc).startswith("Cannot write milestone"):
            return str(exc)
        cause = exc.__cause__ if isinstance(exc, CheckpointWriteError) and exc.__cause__ else exc
        return f"Cannot write milestone checkpoint {final}: {describe_write_failure(cause, final.parent)}"

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: Dict[str, Any]) -> None:
        if self._saving is None:
            return
        if self._saving["sharded"]:  # shards go to the DCP files; only plain data to meta.pt
            checkpoint.update(self.manager.milestone_entries(
                trainer.global_step, self._saving["milestones"], self._saving["count"], self._saving["metadata"]))
            return
        # The seed's keys alias Lightning's tensors: torch.save stores each storage once.
        state = checkpoint["state_dict"]
        prefix = "model."
        if any(k.startswith(prefix) for k in state):
            checkpoint["model_state_dict"] = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        else:
            checkpoint["model_state_dict"] = dict(state)
        if checkpoint.get("optimizer_states"):
            checkpoint["optimizer_state_dict"] = checkpoint["optimizer_states"][0]
            network = getattr(pl_module, "model", pl_module)
            checkpoint["optimizer_param_names"] = optimizer_param_names(trainer.optimizers[0], network)
        checkpoint.update(
            self.manager.milestone_entries(
                trainer.global_step, self._saving["milestones"], self._saving["count"], self._saving["metadata"]
            )
        )

    def state_dict(self) -> Dict[str, Any]:
        state = self.manager.state_dict()
        if self._saving is not None:  # the checkpoint being written counts its own milestones
            state["reached_milestones"] = sorted(set(state["reached_milestones"]) | set(self._saving["milestones"]))
        return state

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        self.manager.load_state_dict(state_dict)

    # ----------------------------------------------------------------- helpers
    @staticmethod
    def _metadata(trainer: L.Trainer, pl_module: L.LightningModule) -> Dict[str, Any]:
        metadata: Dict[str, Any] = {"epoch": trainer.current_epoch}
        for key, value in trainer.callback_metrics.items():
            if key.startswith("train/") or key.startswith("val/"):
                metadata[key] = float(value)
        if trainer.optimizers:
            metadata["lr"] = float(trainer.optimizers[0].param_groups[0]["lr"])
        describe = getattr(pl_module, "checkpoint_metadata", None)
        if callable(describe):
            metadata.update(describe())
        return metadata

