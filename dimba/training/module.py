"""DIMBALightningModule: the DIMBA model, its loss and optimizer, for a Lightning Trainer."""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

import lightning as L
import torch

from dimba.checkpointing.callback import ProgressiveCheckpointCallback
from dimba.model import DIMBA, DIMBAConfig
from dimba.training.lr_schedule import WarmupCosine


def as_model_config(model_config: Union[DIMBAConfig, Mapping[str, Any], None], vocab_size: Optional[int]) -> DIMBAConfig:
    config = model_config if isinstance(model_config, DIMBAConfig) else DIMBAConfig.from_dict(dict(model_config or {}))
    return replace(config, vocab_size=vocab_size) if vocab_size is not None else config


class DIMBALightningModule(L.LightningModule):
    """As in the seed document; with `enable_progressive_checkpoints=True` the module
    brings its own milestone callback (`configure_callbacks`), so a plain Trainer works."""

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
    ) -> None:
        super().__init__()
        config = as_model_config(model_config, vocab_size)
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
            }
        )
        self.model = DIMBA(config)
        self.structure_version = 0  # bumped whenever the parameter set changes (growth)
        self._progressive = (
            ProgressiveCheckpointCallback(progressive_milestones or [], progressive_save_dir)
            if enable_progressive_checkpoints
            else None
        )

    @property
    def progressive_checkpoint(self) -> Optional[ProgressiveCheckpointCallback]:
        return self._progressive

    def configure_callbacks(self) -> List[L.Callback]:
        return [self._progressive] if self._progressive is not None else []

    # ----------------------------------------------------------------- steps
    def training_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
        out = self.model.loss(batch, mse_weight=self.hparams.mse_weight, ce_weight=self.hparams.ce_weight)
        self.log("train/loss", out["loss"], prog_bar=True)
        self.log_dict({"train/mse": out["mse"], "train/ce": out["ce"]})
        return out["loss"]

    def validation_step(self, batch: torch.Tensor, batch_idx: int) -> None:
        # Fixed timesteps and noise per batch: validation losses are comparable across steps.
        generator = torch.Generator().manual_seed(batch_idx)
        t = self.model.schedule.sample_timesteps(batch.shape[0], torch.device("cpu"), generator).to(batch.device)
        noise = torch.randn(*batch.shape, self.model.config.d_embed, generator=generator).to(self.device, self.dtype)
        out = self.model.loss(batch, t=t, noise=noise, mse_weight=self.hparams.mse_weight, ce_weight=self.hparams.ce_weight)
        self.log_dict({"val/loss": out["loss"], "val/mse": out["mse"], "val/ce": out["ce"]}, prog_bar=False, sync_dist=True)

    # ----------------------------------------------------------------- optimizer
    def configure_optimizers(self) -> Dict[str, Any]:
        decay = [p for p in self.model.parameters() if p.requires_grad and p.dim() >= 2]
        no_decay = [p for p in self.model.parameters() if p.requires_grad and p.dim() < 2]
        optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": self.hparams.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=self.hparams.lr,
            betas=tuple(self.hparams.betas),
        )
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
        """What a milestone checkpoint records about the model itself."""
        return {"architecture": self.model.config.to_dict()}

    def on_save_checkpoint(self, checkpoint: Dict[str, Any]) -> None:
        checkpoint["dimba"] = {"architecture": self.model.config.to_dict()}
