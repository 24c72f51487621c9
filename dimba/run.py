"""Build the run's objects from a validated config, train, and report the milestones."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Optional

import lightning as L
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from omegaconf import DictConfig

from dimba.checkpointing.manager import ProgressiveCheckpointManager
from dimba.checkpointing.milestones import format_param_count, milestone_label
from dimba.config import Config
from dimba.growth.plan import GrowthPlan, build_plan
from dimba.training import DIMBALightningModule

log = logging.getLogger(__name__)


def route_lightning_logs_to_root() -> None:
    """Lightning gives its loggers their own console handler when it is imported before
    logging is configured (always, under Hydra); drop it so its lines reach Hydra's
    console and log file once each."""
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True


def resolve_save_dir(save_dir: str, output_dir: Path) -> Path:
    """A relative save_dir lives inside the run's own output directory."""
    path = Path(save_dir).expanduser()
    return path if path.is_absolute() else output_dir / path


def build_module(config: Config, save_dir: Path) -> DIMBALightningModule:
    optim, progressive = config.optim, config.progressive_checkpoints
    return DIMBALightningModule(
        model_config=config.model,
        lr=optim.lr,
        weight_decay=optim.weight_decay,
        betas=optim.betas,
        warmup_steps=optim.warmup_steps,
        min_lr_ratio=optim.min_lr_ratio,
        total_steps=config.trainer.max_steps,
        growth_schedule=config.growth.schedule,
        growth_seed=config.seed,
        enable_progressive_checkpoints=progressive.enabled,
        progressive_milestones=progressive.milestones,
        progressive_save_dir=str(save_dir),
    )


def plan(config: Config) -> GrowthPlan:
    """Log the growth plan, and warn about milestones this run can never reach."""
    progressive = config.progressive_checkpoints
    milestones = progressive.milestones if progressive.enabled else []
    growth_plan = build_plan(config.model, config.growth.schedule, milestones, config.trainer.max_steps)
    log.info("Growth plan (trainer.max_steps=%d):\n%s", config.trainer.max_steps, growth_plan.table())
    if growth_plan.unreached:
        log.warning(
            "Milestones this configuration never reaches: %s (the model ends at %s parameters). "
            "Grow further (growth.schedule), start larger (model.*), train longer (trainer.max_steps) "
            "or lower progressive_checkpoints.milestones.",
            ", ".join(milestone_label(m) for m in growth_plan.unreached),
            format_param_count(growth_plan.final.params),
        )
    return growth_plan


def train(cfg: DictConfig, config: Config, output_dir: Path) -> L.Trainer:
    """Fit a DIMBA model as configured; everything the run writes goes under `output_dir`."""
    route_lightning_logs_to_root()
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)", category=Warning)
    save_dir = resolve_save_dir(config.progressive_checkpoints.save_dir, output_dir)
    L.seed_everything(config.seed, workers=True, verbose=False)
    datamodule = instantiate(cfg.data)
    module = build_module(config, save_dir)
    trainer: L.Trainer = instantiate(
        cfg.trainer,
        default_root_dir=str(output_dir),
        logger=CSVLogger(save_dir=str(output_dir), name="logs", version=""),
        callbacks=[ModelCheckpoint(dirpath=str(output_dir / "checkpoints"), save_last=True)],
    )
    progressive = config.progressive_checkpoints
    log.info("Output directory: %s", output_dir)
    if progressive.enabled:
        log.info("Milestones: %s -> %s", ", ".join(milestone_label(m) for m in progressive.milestones), save_dir)
    trainer.fit(module, datamodule=datamodule, ckpt_path=config.ckpt_path)
    if trainer.is_global_zero and config.progressive_checkpoints.enabled:
        log_summary(save_dir)
    return trainer


def log_summary(save_dir: Path) -> None:
    manager = ProgressiveCheckpointManager([], save_dir, enabled=False)
    entries = manager.list_checkpoints()
    if not entries:
        log.info("No milestone was reached in this run.")
        return
    log.info("Milestone checkpoints:")
    for entry in entries:
        log.info("  %-8s step %-7d params %-8s %s", entry["milestone_str"], entry["global_step"],
                 entry["current_params_str"], entry["path"])
