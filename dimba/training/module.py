"""DIMBALightningModule: the DIMBA model, its loss and optimizer, for a Lightning Trainer."""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

import lightning as L
import torch

from dimba.checkpointing.callback import ProgressiveCheckpointCallback
from dimba.checkpointing.manager import count_trainable_parameters
from dimba.checkpointing.strategies import shards_parameters
from dimba.checkpointing.milestones import format_param_count
from dimba.diffusion.consistency import objective_loss, sample_deltas
from dimba.growth.callback import GrowthCallback
from dimba.growth.operators import adopt_architecture, apply_growth
from dimba.growth.optim import GrowableAdamW
from dimba.growth.plan import count_parameters
from dimba.growth.schedule import GrowthEvent, as_events, validate_schedule
from dimba.model import DIMBA, DIMBAConfig
from dimba.objective import ObjectiveConfig, objective_from_options
from dimba.training.lr_schedule import WarmupCosine

log = logging.getLogger(__name__)


def as_model_config(model_config: Union[DIMBAConfig, Mapping[str, Any], None], vocab_size: Optional[int]) -> DIMBAConfig:
    config = model_config if isinstance(model_config, DIMBAConfig) else DIMBAConfig.from_dict(dict(model_config or {}))
    return replace(config, vocab_size=vocab_size) if vocab_size is not None else config


class DIMBALightningModule(L.LightningModule):
    """As in the seed document; with `enable_progressive_checkpoints=True` the module
    brings its own milestone callback (`configure_callbacks`), so a plain Trainer works.
    `use_consistency_training=True` adds the CDLM consistency term (`dimba.objective`)."""

    def __init__(
        self,
        vocab_size: Optional[int] = None,
        model_config: Union[DIMBAConfig, Mapping[str, Any], None] = None,
        lr: float = 1e-3,
        weight_decay: float = 0.01,
        betas: Sequence[float] = (0.9, 0.999),
        warmup_steps: int = 50,
        min_lr_ratio: float = 0.1,
        total_steps: Optional[int] = None,
        mse_weight: float = 1.0,
        ce_weight: float = 1.0,
        enable_progressive_checkpoints: bool = False,
        progressive_milestones: Optional[Sequence[Any]] = None,
        progressive_save_dir: str = "./progressive_checkpoints",
        progressive_async_save: bool = False,
        growth_schedule: Optional[Sequence[Union[GrowthEvent, Mapping[str, Any]]]] = None,
        seed: int = 0,
        compile: bool = False,
        use_consistency_training: bool = False,
        consistency_loss_weight: float = 1.0,
        consistency_delta_min: int = 16,
        consistency_delta_max: int = 250,
    ) -> None:
        super().__init__()
        config = as_model_config(model_config, vocab_size)
        schedule = as_events(growth_schedule)
        validate_schedule(config, schedule)
        self.objective = objective_from_options(use_consistency_training, consistency_loss_weight,
                                                consistency_delta_min, consistency_delta_max, config.diffusion_steps)
        # Plain data only: the checkpoint must load with torch.load(weights_only=True).
        self.save_hyperparameters(
            {
                "vocab_size": config.vocab_size,
                "model_config": config.to_dict(),
                "lr": float(lr),
                "weight_decay": float(weight_decay),
                "betas": [float(b) for b in betas],
                "warmup_steps": int(warmup_steps),
                "min_lr_ratio": float(min_lr_ratio),
                "total_steps": None if total_steps is None else int(total_steps),
                "mse_weight": float(mse_weight),
                "ce_weight": float(ce_weight),
                "enable_progressive_checkpoints": bool(enable_progressive_checkpoints),
                "progressive_milestones": [str(m) for m in (progressive_milestones or [])],
                "progressive_save_dir": str(progressive_save_dir),
                "progressive_async_save": bool(progressive_async_save),
                "growth_schedule": [e.to_dict() for e in schedule],
                "seed": int(seed),
                "compile": bool(compile),
                **self.objective.to_dict(),
            }
        )
        self.model = DIMBA(config)
        if compile:
            self.model.compile_denoiser()
        self.structure_version = 0  # bumped whenever the parameter set changes (growth)
        self._count_cache: tuple[int, int] = (-1, 0)
        self.growth_history: List[Dict[str, Any]] = []
        self._growth = GrowthCallback(schedule) if schedule else None
        self._progressive = (
            ProgressiveCheckpointCallback(progressive_milestones or [], progressive_save_dir,
                                          async_save=progressive_async_save)
            if enable_progressive_checkpoints
            else None
        )

    @property
    def progressive_checkpoint(self) -> Optional[ProgressiveCheckpointCallback]:
        return self._progressive

    def configure_callbacks(self) -> List[L.Callback]:
        # Order matters: grow first, then check milestones against the grown model.
        return [cb for cb in (self._growth, self._progressive) if cb is not None]

    def parameter_count(self) -> int:
        """Trainable parameters, counted again only after `structure_version` changed.

        Under a parameter-sharding strategy (FSDP) a rank holds only its shards, so the
        count comes from the architecture: full size, and the same number on every rank.
        """
        if self._count_cache[0] != self.structure_version:
            trainer = self._trainer
            sharded = trainer is not None and shards_parameters(trainer.strategy)
            count = count_parameters(self.model.config) if sharded else count_trainable_parameters(self)
            self._count_cache = (self.structure_version, count)
        return self._count_cache[1]

    # ----------------------------------------------------------------- growth
    def grow(self, event: GrowthEvent, global_step: int) -> None:
        """Apply one growth event now, carrying the optimizer state into the grown model."""
        before = self.parameter_count()
        trainer = self._trainer
        optimizer = trainer.optimizers[0] if trainer is not None and trainer.optimizers else None
        record = apply_growth(self.model, event, self.hparams.seed * 1_000_003 + event.step, optimizer, param_group_for)
        self.growth_history.append({**record, "applied_at_step": int(global_step)})
        self.structure_version += 1
        if trainer is not None:
            rewrap_for_strategy(trainer, self)
        log.info("Grew the model after step %d: %s (%s -> %s parameters)", global_step, event.describe(),
                 format_param_count(before), format_param_count(record["params"]))

    # ----------------------------------------------------------------- steps
    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        loader = self.trainer.train_dataloader
        if hasattr(loader, "mark_trained"):
            loader.mark_trained(batch_idx)

    def training_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
        out = training_loss(self.model, batch, self.objective, self.hparams.seed, self.global_step, self.global_rank,
                            mse_weight=self.hparams.mse_weight, ce_weight=self.hparams.ce_weight)
        self.log("train/loss", out["loss"], prog_bar=True)
        self.log_dict({"train/mse": out["mse"], "train/ce": out["ce"]})
        if "consistency" in out:
            self.log("train/consistency_loss", out["consistency"])
        self.log("model/params", float(self.parameter_count()))
        return out["loss"]

    def validation_step(self, batch: torch.Tensor, batch_idx: int) -> None:
        # Fixed timesteps and noise per batch: validation losses are comparable across steps.
        generator = torch.Generator().manual_seed(batch_idx)
        t = self.model.schedule.sample_timesteps(batch.shape[0], torch.device("cpu"), generator).to(batch.device)
        noise = torch.randn(*batch.shape, self.model.config.d_embed, generator=generator).to(self.device, self.dtype)
        out = self.model.loss(batch, t=t, noise=noise, mse_weight=self.hparams.mse_weight, ce_weight=self.hparams.ce_weight)
        self.log_dict({"val/loss": out["loss"], "val/mse": out["mse"], "val/ce": out["ce"]}, prog_bar=False, sync_dist=True)

    # ----------------------------------------------------------------- optimizer
    def configure_gradient_clipping(self, optimizer: Any, gradient_clip_val: Optional[Union[int, float]] = None,
                                    gradient_clip_algorithm: Optional[str] = None) -> None:
        """Under FSDP each rank holds shards of the gradients: the norm must be the global one,
        which only the FSDP module can compute (Lightning's default refuses FSDP)."""
        from torch.distributed.fsdp import FullyShardedDataParallel

        wrapped = self._trainer.strategy.model if self._trainer is not None else None
        if gradient_clip_val and isinstance(wrapped, FullyShardedDataParallel) and gradient_clip_algorithm in (None, "norm"):
            wrapped.clip_grad_norm_(gradient_clip_val)
            return
        super().configure_gradient_clipping(optimizer, gradient_clip_val, gradient_clip_algorithm)

    def configure_optimizers(self) -> Dict[str, Any]:
        optimizer = build_optimizer(self.model, self.hparams.lr, self.hparams.betas, self.hparams.weight_decay)
        total = self.hparams.total_steps or self._trainer_total_steps()
        schedule = WarmupCosine(self.hparams.warmup_steps, total, self.hparams.min_lr_ratio)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def _trainer_total_steps(self) -> int:
        trainer = self._trainer
        if trainer is None:
            return 1
        if trainer.max_steps and trainer.max_steps > 0:
            return trainer.max_steps
        return int(trainer.estimated_stepping_batches)

    # ----------------------------------------------------------------- checkpoints
    def checkpoint_metadata(self) -> Dict[str, Any]:
        """What every checkpoint records about the model: enough to rebuild it alone."""
        return {"architecture": self.model.config.to_dict(), "growth_history": [dict(e) for e in self.growth_history]}

    def on_save_checkpoint(self, checkpoint: Dict[str, Any]) -> None:
        checkpoint["dimba"] = self.checkpoint_metadata()

    def on_load_checkpoint(self, checkpoint: Dict[str, Any]) -> None:
        """Take the checkpoint's (grown) shape before Lightning loads its weights."""
        record = checkpoint.get("dimba") or {}
        if "architecture" in record:
            # The checkpoint decides the shape; this run decides the compute dtype.
            recorded = DIMBAConfig.from_dict(record["architecture"]).with_runtime_of(self.model.config)
            if recorded != self.model.config:
                adopt_architecture(self.model, recorded)
                self.structure_version += 1
        self.growth_history = [dict(e) for e in record.get("growth_history", [])]


def step_noise(model: DIMBA, batch: torch.Tensor, seed: int, step: int, rank: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Timesteps and noise for one training step, drawn from (seed, step, rank) alone.

    A resumed run draws exactly what the uninterrupted one would have, with no RNG state
    to carry, and the Lightning path and SimpleTrainer draw the same numbers.
    """
    generator = step_generator(batch.device, seed, step, rank)
    t = model.schedule.sample_timesteps(batch.shape[0], batch.device, generator)
    noise = torch.randn(*batch.shape, model.config.d_embed, generator=generator, device=batch.device,
                        dtype=model.embedding.weight.dtype)
    return t, noise


def step_generator(device: torch.device, seed: int, step: int, rank: int = 0, stream: int = 0) -> torch.Generator:
    """A generator seeded from (seed, step, rank); `stream` 1 is the consistency gaps δ, apart
    from stream 0 (t and noise), so turning CDLM on leaves the diffusion noise unchanged."""
    generator = torch.Generator(device=device)
    generator.manual_seed((seed * 1_000_003 + step) * 1009 + rank + stream * 2**62)
    return generator


def step_deltas(t: torch.Tensor, objective: ObjectiveConfig, seed: int, step: int, rank: int = 0) -> torch.Tensor:
    """The consistency gaps δ of one training step, drawn from (seed, step, rank) alone."""
    generator = step_generator(t.device, seed, step, rank, stream=1)
    return sample_deltas(t, objective.consistency_delta_min, objective.consistency_delta_max, generator)


def training_loss(model: DIMBA, batch: torch.Tensor, objective: ObjectiveConfig, seed: int, step: int, rank: int = 0,
                  mse_weight: float = 1.0, ce_weight: float = 1.0) -> Dict[str, torch.Tensor]:
    """One training step's loss dict under `objective`: what both trainers optimize and log."""
    t, noise = step_noise(model, batch, seed, step, rank)
    delta = step_deltas(t, objective, seed, step, rank) if objective.use_consistency_training else None
    return objective_loss(model, batch, t, noise, mse_weight, ce_weight, delta, objective.consistency_loss_weight)


def param_group_for(param: torch.nn.Parameter) -> int:
    """Group 0 (weight decay) for matrices, group 1 (none) for gains, biases and SSM scalars."""
    return 0 if param.dim() >= 2 else 1


def build_optimizer(model: torch.nn.Module, lr: float, betas: Sequence[float], weight_decay: float) -> GrowableAdamW:
    params = [p for p in model.parameters() if p.requires_grad]
    return GrowableAdamW(
        [{"params": [p for p in params if param_group_for(p) == 0], "weight_decay": weight_decay},
         {"params": [p for p in params if param_group_for(p) == 1], "weight_decay": 0.0}],
        lr=lr, betas=tuple(betas),
    )


def rewrap_for_strategy(trainer: L.Trainer, module: L.LightningModule) -> None:
    """DDP holds the old parameters in its reducer: wrap the grown module anew.

    Wrapping broadcasts rank 0's parameters, so every rank continues from the same weights.
    """
    from lightning.pytorch.strategies import DDPStrategy
    from torch.nn.parallel import DistributedDataParallel

    strategy = trainer.strategy
    if isinstance(strategy, DDPStrategy) and isinstance(strategy.model, DistributedDataParallel):
        strategy.model = module
        strategy.configure_ddp()
