"""Build the run's objects from a validated config, train, and report the milestones."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import lightning as L
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ModelCheckpoint
from omegaconf import DictConfig

from dimba.checkpointing.atomic_io import remove_stale_temporaries
from dimba.checkpointing.checkpoint_io import AtomicCheckpointIO
from dimba.checkpointing.manager import ProgressiveCheckpointManager
from dimba.checkpointing.last_checkpoint import LastCheckpoint
from dimba.preflight import resolve_save_dir
from dimba.resume import checkpoint_step, newest_valid_checkpoint
from dimba.checkpointing.milestones import format_param_count, milestone_label
from dimba.config import Config
from dimba.growth.plan import GrowthPlan, build_plan
from dimba.launch import end_process_group, in_multirun, multirun_job
from dimba.training import DIMBALightningModule
from dimba.training.metrics_log import ContinuingCSVLogger
from dimba.training.progress import DIMBAProgressBar

log = logging.getLogger(__name__)


def route_lightning_logs_to_root() -> None:
    """Lightning gives its loggers their own console handler when it is imported before
    logging is configured (always, under Hydra); drop it so its lines reach Hydra's
    console and log file once each."""
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True


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
        seed=config.seed,
        compile=config.compile,
        enable_progressive_checkpoints=progressive.enabled,
        progressive_milestones=progressive.milestones,
        progressive_save_dir=str(save_dir),
        progressive_async_save=progressive.async_save,
        **config.objective.to_dict(),
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


@multirun_job()  # in a sweep: DDP children run this job only, in its directory
def train(cfg: DictConfig, config: Config, output_dir: Path) -> L.Trainer:
    """Fit a DIMBA model as configured; everything the run writes goes under `output_dir`."""
    route_lightning_logs_to_root()
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)", category=Warning)
    save_dir = resolve_save_dir(config.progressive_checkpoints.save_dir, output_dir)
    L.seed_everything(config.seed, workers=True, verbose=False)
    datamodule = instantiate(cfg.data, seed=config.seed)
    module = build_module(config, save_dir)
    checkpoints = output_dir / "checkpoints"
    ckpt_path = config.ckpt_path
    if config.resume == "auto":
        ckpt_path = newest_valid_checkpoint(output_dir, save_dir)
    resume_step = checkpoint_step(Path(ckpt_path)) if ckpt_path else None
    trainer: L.Trainer = instantiate(
        cfg.trainer,
        default_root_dir=str(output_dir),
        logger=ContinuingCSVLogger(save_dir=str(output_dir), name="logs", version="", resume_step=resume_step),
        plugins=[AtomicCheckpointIO()],
        callbacks=[
            ModelCheckpoint(dirpath=str(checkpoints), save_top_k=0, save_last=True, enable_version_counter=False,
                            every_n_train_steps=config.last_checkpoint_every_n_steps),
            LastCheckpoint(checkpoints / "last.ckpt"),
            *([DIMBAProgressBar()] if config.trainer.enable_progress_bar else []),
        ],
    )
    if trainer.is_global_zero and checkpoints.is_dir():
        remove_stale_temporaries(checkpoints)  # a last.ckpt write cut short by a crash
    if config.resume == "auto":
        log.info("resume=auto: %s", f"continuing from {ckpt_path}" if ckpt_path else "no checkpoint yet, starting fresh")
    progressive = config.progressive_checkpoints
    log.info("Output directory: %s", output_dir)
    if progressive.enabled:
        log.info("Milestones: %s -> %s", ", ".join(milestone_label(m) for m in progressive.milestones), save_dir)
    trainer.fit(module, datamodule=datamodule, ckpt_path=str(ckpt_path) if ckpt_path else None)
    if trainer.is_global_zero:
        if config.progressive_checkpoints.enabled:
            log_summary(save_dir)
        try:
            from dimba.plotting import plot_run

            log.info("Training plot: %s", plot_run(output_dir))
        except Exception as exc:  # a plot must never fail a finished run
            log.warning("No training plot: %s", exc)
    if not in_multirun():  # a sweep job ends its group in multirun_job
        end_process_group()
    return trainer


def log_summary(save_dir: Path) -> None:
    manager = ProgressiveCheckpointManager([], save_dir, enabled=False)
    entries = manager.valid_checkpoints()
    if not entries:
        log.info("No milestone was reached in this run.")
        return
    rows = [f"  {'milestone':<10} {'step':>7} {'params':>12}  path"]
    rows += [f"  {e['milestone_str']:<10} {e['global_step']:>7} {e['current_params']:>12,}  {e['path']}" for e in entries]
    log.info("Milestones reached:\n%s", "\n".join(rows))
