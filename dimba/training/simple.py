"""SimpleTrainer: the same training as the Lightning path, in a plain PyTorch loop.

For users who want no Lightning: one device, the same loss, optimizer, LR schedule,
growth schedule and milestone checkpoints (written by `ProgressiveCheckpointManager`,
so they load with `dimba.load_model` and `manager.load_checkpoint` like the Lightning
ones). `resume(path)` continues from a milestone checkpoint without saving it again.
`use_consistency_training=True` adds the CDLM consistency term, as in the Lightning module.
"""

from __future__ import annotations

import itertools
import logging
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

import torch
from torch.utils.data import DataLoader

from dimba.checkpointing.manager import ProgressiveCheckpointManager
from dimba.growth.operators import apply_growth
from dimba.growth.schedule import GrowthEvent, as_events, validate_schedule
from dimba.model import DIMBA, DIMBAConfig
from dimba.objective import objective_from_options
from dimba.training.lr_schedule import WarmupCosine
from dimba.training.module import as_model_config, build_optimizer, param_group_for, training_loss

log = logging.getLogger(__name__)


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class SimpleTrainer:
    def __init__(
        self,
        train_loader: Optional[DataLoader] = None,
        vocab_size: Optional[int] = None,
        model_config: Union[DIMBAConfig, Mapping[str, Any], None] = None,
        max_steps: int = 240,
        lr: float = 2e-3,
        weight_decay: float = 0.01,
        betas: Sequence[float] = (0.9, 0.99),
        warmup_steps: int = 20,
        min_lr_ratio: float = 0.1,
        gradient_clip_val: Optional[float] = 1.0,
        growth_schedule: Optional[Sequence[Union[GrowthEvent, Mapping[str, Any]]]] = None,
        enable_progressive_checkpoints: bool = False,
        progressive_milestones: Optional[Sequence[Any]] = None,
        progressive_save_dir: str = "./progressive_checkpoints",
        device: Union[str, torch.device, None] = None,
        seed: int = 0,
        log_every_n_steps: int = 10,
        compile: bool = False,
        use_consistency_training: bool = False,
        consistency_loss_weight: float = 1.0,
        consistency_delta_min: int = 16,
        consistency_delta_max: int = 250,
    ) -> None:
        config = as_model_config(model_config, vocab_size)
        self.objective = objective_from_options(use_consistency_training, consistency_loss_weight,
                                                consistency_delta_min, consistency_delta_max, config.diffusion_steps)
        self.schedule = as_events(growth_schedule)
        validate_schedule(config, self.schedule)
        self.device = torch.device(device) if device is not None else default_device()
        self.seed, self.max_steps = seed, max_steps
        self.gradient_clip_val, self.log_every_n_steps = gradient_clip_val, log_every_n_steps
        torch.manual_seed(seed)
        self.model = DIMBA(config).to(self.device)
        if compile:
            self.model.compile_denoiser()
        self.optimizer = build_optimizer(self.model, lr, betas, weight_decay)
        for group in self.optimizer.param_groups:  # as LambdaLR does: the base rate travels with the state
            group.setdefault("initial_lr", group["lr"])
        self.lr_schedule = WarmupCosine(warmup_steps, max_steps, min_lr_ratio)
        self.train_loader = train_loader if train_loader is not None else self._default_loader()
        self.manager = ProgressiveCheckpointManager(progressive_milestones or [], progressive_save_dir,
                                                    enabled=enable_progressive_checkpoints)
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
        losses: List[float] = []
        while self.global_step < self.max_steps:
            for batch in self._batches_from_current_position():
                losses.append(self.step(batch.to(self.device)))
                if self.global_step >= self.max_steps:
                    break
        return losses

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
        for group in self.optimizer.param_groups:
            group["lr"] = group["initial_lr"] * self.lr_schedule(self.global_step)
        out = training_loss(self.model, batch, self.objective, self.seed, self.global_step)
        loss = out["loss"]
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.gradient_clip_val:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.gradient_clip_val)
        self.optimizer.step()
        self.global_step += 1
        value = float(loss.detach())
        self.losses.append(value)
        consistency = float(out["consistency"].detach()) if "consistency" in out else None
        if consistency is not None:
            self.consistency_losses.append(consistency)
        if self.log_every_n_steps and self.global_step % self.log_every_n_steps == 0:
            extra = "" if consistency is None else f" train/consistency_loss {consistency:.4f}"
            log.info("step %d loss %.4f%s", self.global_step, value, extra)
        self._after_optimizer_step(value, consistency)
        return value

    def _after_optimizer_step(self, loss: float, consistency: Optional[float] = None) -> None:
        """Grow, then check milestones: the order the Lightning callbacks use."""
        done = {entry["step"] for entry in self.growth_history}
        for event in self.schedule:
            if event.step <= self.global_step and event.step not in done:
                record = apply_growth(self.model, event, self.seed * 1_000_003 + event.step, self.optimizer, param_group_for)
                self.growth_history.append({**record, "applied_at_step": self.global_step})
                log.info("Grew the model after step %d: %s", self.global_step, event.describe())
        if self.manager.enabled and self.manager.should_save_checkpoint(self.model)[0]:
            metadata = {"train/loss": loss, "architecture": self.model.config.to_dict(),
                        "growth_history": [dict(e) for e in self.growth_history], "objective": self.objective.to_dict()}
            if consistency is not None:
                metadata["train/consistency_loss"] = consistency
            self.manager.save_checkpoint(self.model, self.optimizer, self.global_step, metadata=metadata)

    # ----------------------------------------------------------------- resume
    def resume(self, path: str) -> Dict[str, Any]:
        """Continue from a milestone checkpoint (either trainer's): shape, weights, optimizer,
        step, growth history and reached milestones."""
        info = self.manager.load_checkpoint(path, self.model, self.optimizer, map_location=self.device)
        self.global_step = int(info["global_step"])
        self.growth_history = [dict(e) for e in info.get("metadata", {}).get("growth_history", [])]
        return info
