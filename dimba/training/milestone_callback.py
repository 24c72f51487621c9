"""The Lightning side of progressive checkpointing.

An adapter over the milestone checkpointer (`dimba.io.checkpointer`), which owns the state
and every decision: after each optimizer step the callback asks it what is due, given the
(cached) parameter count. A due save is a `PendingSave`: Lightning dumps the checkpoint (so
every strategy serializes its state as it should), the checkpointer adds the milestone
format's keys and writes it. A milestone checkpoint is therefore a Lightning checkpoint too: `ckpt_path=`
resumes it.

Under a sharded strategy every rank writes its shards into one Distributed Checkpoint
directory, and rank zero publishes it. With `async_save=True` rank zero's copy, write and
publish run in the background; the next optimizer step waits for the copy alone, and the
result of the write is applied to the milestone state here, on the training thread.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Tuple

import lightning as L
from lightning.pytorch.callbacks import Callback

from dimba import internals
from dimba.checkpointing.record import model_view
from dimba.checkpointing.pending import PendingSave
from dimba.checkpointing.ownership import SaveDirClaim
from dimba.errors import CheckpointWriteError, ConfigError
from dimba.io.load import optimizer_param_names
from dimba.io.manager import ProgressiveCheckpointManager
from dimba.model.params import count_parameters
from dimba.training.async_writer import BackgroundSave, BackgroundWriter
from dimba.training.loggers import log_event, milestone_metrics
from dimba.training.milestone_facts import held_elsewhere, milestone_metadata
from dimba.training.sharded_milestones import ShardedWrites

log = logging.getLogger(__name__)


class ProgressiveCheckpointCallback(Callback):
    def __init__(self, milestones: Sequence[Any], save_dir: str | Path = "./progressive_checkpoints",
                 enabled: bool = True, async_save: bool = False) -> None:
        self.manager = ProgressiveCheckpointManager(milestones, save_dir, enabled)
        self.checkpointer = self.manager.checkpointer  # the state and every decision
        self.writer: Optional[BackgroundWriter] = BackgroundWriter() if async_save else None
        self._background: Optional[BackgroundSave] = None  # rank zero's write in flight
        self._failed: Optional[str] = None  # a failed background write, reported at the next collective
        self._restored_save_dir: Optional[str] = None  # where the resumed checkpoint's run saved milestones
        self._claim: Optional[SaveDirClaim] = None  # rank zero's: this run alone writes into save_dir
        self._shards = ShardedWrites(self.checkpointer.save_dir)  # under a sharded strategy

    @property
    def enabled(self) -> bool:
        return self.checkpointer.enabled

    @property
    def async_save(self) -> bool:
        return self.writer is not None

    @staticmethod
    def parameter_count(pl_module: L.LightningModule) -> int:
        """A module with `parameter_count()` (DIMBALightningModule) answers from its cache,
        recounted only when its structure changes; any other module is counted each time."""
        counter = getattr(pl_module, "parameter_count", None)
        return int(counter()) if callable(counter) else count_parameters(pl_module)

    # ----------------------------------------------------------------- hooks
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        """Claim the save directory (one writer per directory) and clean what a crash left."""
        if stage != "fit" or not self.enabled:
            return
        error = None
        if trainer.is_global_zero:
            try:
                self._claim = SaveDirClaim(self.checkpointer.save_dir, str(trainer.default_root_dir))
            except ConfigError as exc:
                error = str(exc)
            else:
                self.checkpointer.prepare_save_dir()
                if self.writer is not None:
                    self.writer.start()
        error = trainer.strategy.broadcast(error, src=0)
        if error is not None:
            raise ConfigError("progressive_checkpoints.save_dir", str(self.checkpointer.save_dir), "", line=error)

    def _refuse_another_runs_milestones(self, trainer: L.Trainer) -> Optional[str]:
        """A fresh run (nothing resumed) must not write into a directory holding another run's
        milestones: its saves would sit beside, or on the names of, checkpoints it did not make."""
        saved = self.checkpointer.valid_checkpoints()
        if not saved:
            return None
        names = ", ".join(Path(e["path"]).name for e in saved[:3]) + (", ..." if len(saved) > 3 else "")
        return (f"progressive_checkpoints.save_dir: {self.checkpointer.save_dir} already holds another run's milestone "
                f"checkpoints ({names}); accepted: an empty directory, or the run's own to continue it "
                "(resume=auto or ckpt_path=...)")

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._release()

    def _release(self) -> None:
        claim, self._claim = self._claim, None
        if claim is not None:
            claim.release()

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.checkpointer.start_at(trainer.global_step)
        if self.enabled and trainer.ckpt_path is not None:
            self._reconcile_with_disk(trainer)
        elif self.enabled:
            error = self._refuse_another_runs_milestones(trainer) if trainer.is_global_zero else None
            error = trainer.strategy.broadcast(error, src=0)
            if error is not None:
                raise ConfigError("progressive_checkpoints.save_dir", str(self.checkpointer.save_dir), "", line=error)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if not self.enabled:
            return
        if self._background is not None and trainer.is_global_zero:
            self._collect(trainer)
        if self._shards.in_flight is not None:  # every rank: have all finished their shards?
            self._apply(trainer, self._shards.settle(trainer, self.checkpointer.milestones, self.checkpointer.reached,
                                                     wait=False))
        pending = self.checkpointer.due(trainer.global_step, self.parameter_count(pl_module))
        if pending is not None:
            self.save(trainer, pl_module, replace(pending, metadata=milestone_metadata(trainer, pl_module)))

    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: Any) -> None:
        """The optimizer is about to change the weights: the background copy must be complete."""
        if self._background is not None:
            self._background.wait_copied()
        self._shards.wait_staged()

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """The run is over only when every milestone write is durable (or has failed loudly)."""
        if self._shards.in_flight is not None:
            self._apply(trainer, self._shards.settle(trainer, self.checkpointer.milestones, self.checkpointer.reached,
                                                     wait=True))
        error, self._failed = self._failed, None
        if trainer.is_global_zero:
            error = error or self._settle(trainer, wait=True)
            if self.writer is not None:
                self.writer.close()
        error = trainer.strategy.broadcast(error, src=0)
        if error is not None:
            raise CheckpointWriteError(error)
        self.checkpointer.published(self.checkpointer.in_flight)  # rank zero published them: every rank's view equal

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        # Training failed, but the snapshot being written is good: let it finish.
        self._shards.abandon()
        error = self._settle(trainer, wait=True) or self._failed
        if self.writer is not None:
            self.writer.close()
        if error is not None:
            log.error("A milestone write in the background failed as well: %s", error)
        self._release()

    def state_dict(self) -> Dict[str, Any]:
        """The milestone state, and where its checkpoints are (a run started from this
        checkpoint elsewhere counts the milestones found there as reached)."""
        return {**self.checkpointer.state_dict(), "save_dir": str(self.checkpointer.save_dir.resolve())}

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        self.checkpointer.load_state_dict(state_dict)
        self._restored_save_dir = state_dict.get("save_dir")

    # ----------------------------------------------------------------- saving
    def save(self, trainer: L.Trainer, pl_module: L.LightningModule, pending: PendingSave) -> None:
        """One serialization for all of `pending`'s milestones, published under each one's name.

        Runs on every rank: the checkpoint is assembled on all of them (collective for
        sharded strategies); only rank zero touches shared files. Rank zero's outcome is
        broadcast, so a failed write (a full disk) ends every rank with the same error
        instead of leaving the others waiting in a barrier.
        """
        sharded = internals.writes_sharded_checkpoints(trainer.strategy)
        background = self.writer is not None
        error: Optional[str] = None
        try:
            if sharded and self._shards.in_flight is not None:  # one write in flight at a time
                self._apply(trainer, self._shards.settle(trainer, self.checkpointer.milestones,
                                                         self.checkpointer.reached, wait=True))
            checkpoint = self._assemble(trainer, pl_module, pending, sharded)
            if sharded and background:
                error = self._shards.start(trainer, checkpoint, pending)
            elif sharded:
                error = self._shards.write(trainer, checkpoint, pending, self.checkpointer.milestones,
                                           self.checkpointer.reached)
            elif background and trainer.is_global_zero:
                error = self._start_background(trainer, checkpoint, pending)
            elif trainer.is_global_zero:
                self.checkpointer.write(checkpoint, pending)
        except Exception as exc:  # any failure must still reach the broadcast below
            error = self.checkpointer.failure(exc, pending)
        error = trainer.strategy.broadcast(error, src=0)
        if error is not None:
            raise CheckpointWriteError(error)
        if background:
            self.checkpointer.started(pending, background=True)  # every rank: not due again while written
        else:
            self._published(trainer, pending)

    def _assemble(self, trainer: L.Trainer, pl_module: L.LightningModule, pending: PendingSave,
                  sharded: bool) -> Dict[str, Any]:
        """Lightning's checkpoint of this moment, whose milestone state counts this save's
        milestones, plus the milestone format's keys (only plain data for sharded `meta.pt`)."""
        checkpoint = internals.dump_checkpoint(trainer)
        state = checkpoint.get("callbacks", {}).get(self.state_key)
        if state is not None:
            state["reached_milestones"] = sorted(set(state["reached_milestones"]) | set(pending.milestones))
        if sharded:  # tensors are in the shards; the format's aliases would gather them
            checkpoint.update(self.checkpointer.describe(pending))
            return checkpoint
        optimizers = checkpoint.get("optimizer_states") or []
        names = optimizer_param_names(trainer.optimizers[0], getattr(pl_module, "model", pl_module)) if optimizers else None
        return self.checkpointer.assemble(checkpoint, model_view(checkpoint["state_dict"]),
                                          optimizers[0] if optimizers else None, names, pending)

    # ----------------------------------------------------------------- background writes
    def _start_background(self, trainer: L.Trainer, checkpoint: Dict[str, Any], pending: PendingSave) -> Optional[str]:
        """Queue the copy and the write; return at once. A previous background write that
        failed stops the run here instead (the caller broadcasts it to every rank)."""
        error = self._failed or self._settle(trainer, wait=True)  # one write in flight at a time
        self._failed = None
        if error is not None:
            return error
        assert self.writer is not None
        self._background = self.writer.submit(pending, checkpoint, self.checkpointer.writer_for(pending))
        return None

    def _apply(self, trainer: L.Trainer, outcome: Optional[Tuple[PendingSave, Optional[str]]]) -> None:
        """A sharded write's outcome, the same on every rank: published, or every rank stops."""
        if outcome is None:
            return
        pending, error = outcome
        if error is not None:
            self.checkpointer.abandoned(pending.milestones)
            raise CheckpointWriteError(error)
        self._published(trainer, pending)

    def _published(self, trainer: L.Trainer, pending: PendingSave) -> None:
        """A save is durable: its milestones are reached, and every logger hears of it."""
        self.checkpointer.published(pending.milestones)
        for milestone in pending.milestones:
            log_event(trainer, milestone_metrics(milestone, pending.current_params), pending.global_step)

    def _settle(self, trainer: L.Trainer, wait: bool) -> Optional[str]:
        """Apply a finished background write to the milestone state (rank zero): published,
        or abandoned with its error. Waits for it if `wait`."""
        save = self._background
        if save is None or (not wait and not save.done()):
            return None
        self._background = None
        failure = save.error()
        if failure is None:
            self._published(trainer, save.pending)
            return None
        self.checkpointer.abandoned(save.pending.milestones)
        return self.checkpointer.failure(failure, save.pending)

    def _collect(self, trainer: L.Trainer) -> None:
        """Every step, on rank zero: a failed write stops a single-process run at once (with
        several processes, at the next collective point: the next milestone or the end)."""
        error = self._settle(trainer, wait=False)
        if error is not None:
            if trainer.world_size == 1:
                raise CheckpointWriteError(error)
            self._failed = error

    # ----------------------------------------------------------------- resume
    def _reconcile_with_disk(self, trainer: L.Trainer) -> None:
        """After a resume, a milestone counts as reached when its checkpoint is on disk: in
        this save directory, or in the one the resumed checkpoint's run saved into (a new run
        started from another run's checkpoint does not save that run's milestones again)."""
        reached = None
        if trainer.is_global_zero:
            self.checkpointer.reconcile_with_disk(held_elsewhere(self._restored_save_dir, trainer.ckpt_path,
                                                                 self.checkpointer.save_dir))
            reached = self.checkpointer.reached
        self.checkpointer.adopt_reached(trainer.strategy.broadcast(reached, src=0))
