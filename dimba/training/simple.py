"""SimpleTrainer: the same training as the Lightning path, in a plain PyTorch loop.

For users who want no Lightning: one device, the same recipe (`dimba.config.Recipe`, from
the same keyword arguments as `DIMBALightningModule`), the same step arithmetic
(`dimba.training.steps`) and the same milestone checkpoints (written by the one writer, so
they load with `dimba.load_model` and `manager.load_checkpoint` like the Lightning ones).
`resume(path)` continues from a milestone checkpoint without saving it again.
`callbacks` (`TrainerCallback`) let an experiment evaluate, record or stop the run at the
loop's points without a loop of its own: dimba's benchmarks train through this one.
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import replace
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

import torch
from torch.utils.data import DataLoader

from dimba.checkpointing.record import CheckpointRecord
from dimba.config.recipe import Recipe
from dimba.config.trainer import TrainerConfig
from dimba.growth.apply import apply_growth
from dimba.growth.schedule import GrowthEvent
from dimba.io.manager import ProgressiveCheckpointManager
from dimba.io.writer import model_record
from dimba.model import DIMBA, DIMBAConfig
from dimba.model.denormals import flush_denormals
from dimba.model.params import count_parameters
from dimba.training import steps

log = logging.getLogger(__name__)


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class TrainerCallback:
    """Hooks into `SimpleTrainer`'s loop, named as Lightning names them. A step runs: `should_stop`
    (asked before it; any True ends `train`), forward, backward, clipping, the optimizer step,
    `on_train_batch_end` (the model still at the size it trained this step), then each due
    growth event between `on_before_growth` and `on_after_growth`, the milestone check, and
    `on_step_end`."""

    def on_train_start(self, trainer: "SimpleTrainer") -> None:
        pass

    def should_stop(self, trainer: "SimpleTrainer") -> bool:
        return False

    def on_train_batch_end(self, trainer: "SimpleTrainer", outputs: Dict[str, torch.Tensor], lr: float) -> None:
        """`outputs`: the step's loss dict (detached); `lr`: the rate of parameter group 0 this step."""

    def on_before_growth(self, trainer: "SimpleTrainer", event: GrowthEvent) -> None:
        pass

    def on_after_growth(self, trainer: "SimpleTrainer", event: GrowthEvent) -> None:
        pass

    def on_step_end(self, trainer: "SimpleTrainer") -> None:
        pass


class SimpleTrainer:
    def __init__(self, train_loader: Optional[DataLoader] = None, vocab_size: Optional[int] = None,
                 model_config: Union[DIMBAConfig, Mapping[str, Any], None] = None,
                 max_steps: int = TrainerConfig.max_steps,
                 gradient_clip_val: Optional[float] = TrainerConfig.gradient_clip_val, device: Union[str, torch.device, None] = None,
                 log_every_n_steps: int = 10, recipe: Optional[Recipe] = None,
                 callbacks: Sequence[TrainerCallback] = (), **options: Any) -> None:
        """`options`: the recipe's keyword arguments (lr, growth_schedule, seed, ...), as for
        DIMBALightningModule; the LR schedule spans `max_steps` unless `total_steps` is given."""
        flush_denormals()
        options.setdefault("total_steps", max_steps)
        self.recipe = recipe if recipe is not None else Recipe.from_options(vocab_size, model_config, **options)
        self.objective = self.recipe.objective
        self.schedule = list(self.recipe.schedule)
        self.device = torch.device(device) if device is not None else default_device()
        self.seed, self.max_steps = self.recipe.seed, max_steps
        self.gradient_clip_val, self.log_every_n_steps = gradient_clip_val, log_every_n_steps
        self.callbacks: List[TrainerCallback] = list(callbacks)
        torch.manual_seed(self.seed)
        self.model = DIMBA(self.recipe.model).to(self.device)
        if self.recipe.compile:
            self.model.compile_denoiser()
        self.optimizer = steps.build_optimizer(self.model, self.recipe.optim)
        for group in self.optimizer.param_groups:  # as LambdaLR does: the base rate travels with the state
            group.setdefault("initial_lr", group["lr"])
        self.lr_schedule = steps.lr_multiplier(self.recipe.optim, self.recipe.growth, self.recipe.total_steps or max_steps,
                                               self.recipe.model.d_model)
        self.train_loader = train_loader if train_loader is not None else self._default_loader()
        progressive = self.recipe.progressive_checkpoints
        self.manager = ProgressiveCheckpointManager(progressive.milestones, progressive.save_dir,
                                                    enabled=progressive.enabled)
        self.global_step = 0
        self.growth_history: List[Dict[str, Any]] = []
        self.losses: List[float] = []
        self.consistency_losses: List[float] = []  # train/consistency_loss per step, with CDLM on

    def _default_loader(self) -> DataLoader:
        from dimba.data import TextDataModule

        data = TextDataModule(seed=self.seed)
        data.setup()
        return data.train_dataloader()

    # ----------------------------------------------------------------- loop
    def train(self) -> List[float]:
        """Train until `max_steps`; returns the loss of every step taken in this call."""
        if self.manager.enabled:
            self.manager.prepare_save_dir()
        self.model.train()
        for callback in self.callbacks:
            callback.on_train_start(self)
        losses: List[float] = []
        while self.global_step < self.max_steps and not self._stop():
            for batch in self._batches_from_current_position():
                losses.append(self.step(batch.to(self.device)))
                if self.global_step >= self.max_steps or self._stop():
                    break
        return losses

    def _stop(self) -> bool:
        return any([callback.should_stop(self) for callback in self.callbacks])  # every callback asked

    def _batches_from_current_position(self):
        """The rest of the current epoch, so a resumed run sees the batches it would have."""
        loader = self.train_loader
        epoch, offset = divmod(self.global_step, len(loader))
        sampler = getattr(loader, "sampler", None)
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)
        if hasattr(sampler, "start"):
            sampler.start = offset * loader.batch_size
            return iter(loader)
        return itertools.islice(iter(loader), offset, None)

    def step(self, batch: torch.Tensor) -> float:
        """One training step on `batch` (callbacks included); returns its loss."""
        for group in self.optimizer.param_groups:
            group["lr"] = group["initial_lr"] * self.lr_schedule(self.global_step)
        out = steps.training_loss(self.model, batch, self.objective, self.seed, self.global_step)
        loss = out["loss"]
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.gradient_clip_val:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.gradient_clip_val)
        self.optimizer.step()
        self.global_step += 1
        if self.callbacks:
            outputs = {name: value.detach() for name, value in out.items() if isinstance(value, torch.Tensor)}
            for callback in self.callbacks:
                callback.on_train_batch_end(self, outputs, self.optimizer.param_groups[0]["lr"])
        value = float(loss.detach())
        self.losses.append(value)
        consistency = float(out["consistency"].detach()) if "consistency" in out else None
        if consistency is not None:
            self.consistency_losses.append(consistency)
        if self.log_every_n_steps and self.global_step % self.log_every_n_steps == 0:
            extra = "" if consistency is None else f" train/consistency_loss {consistency:.4f}"
            log.info("step %d loss %.4f%s", self.global_step, value, extra)
        steps.after_optimizer_step(self.global_step, self.schedule, self.growth_history, self._grow,
                                   lambda: self._check_milestones(value, consistency))
        for callback in self.callbacks:
            callback.on_step_end(self)
        return value

    def _grow(self, event: GrowthEvent) -> None:
        for callback in self.callbacks:
            callback.on_before_growth(self, event)
        record = apply_growth(self.model, event, steps.growth_seed(self.seed, event), self.optimizer,
                              steps.param_group_for)
        self.growth_history.append({**record, "applied_at_step": self.global_step})
        log.info("Grew the model after step %d: %s", self.global_step, event.describe())
        for callback in self.callbacks:
            callback.on_after_growth(self, event)

    def _check_milestones(self, loss: float, consistency: Optional[float]) -> None:
        pending = self.manager.checkpointer.due(self.global_step, count_parameters(self.model))
        if pending is None:
            return
        metadata = {"train/loss": loss, **model_record(self.model, self.growth_history),
                    "objective": self.objective.to_dict()}
        if consistency is not None:
            metadata["train/consistency_loss"] = consistency
        self.manager.save_pending(self.model, self.optimizer, replace(pending, metadata=metadata))

    # ----------------------------------------------------------------- resume
    def resume(self, path: str) -> Dict[str, Any]:
        """Continue from a milestone checkpoint (either trainer's): shape, weights, optimizer,
        step, growth history and reached milestones."""
        info = self.manager.load_checkpoint(path, self.model, self.optimizer, map_location=self.device)
        self.global_step = int(info["global_step"])
        self.growth_history = CheckpointRecord(info).growth_history
        return info
