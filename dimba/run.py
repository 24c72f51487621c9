"""Build the run's objects from the validated config, train, and report.

Everything comes from the typed `Config` (one source of truth): the recipe and module, the
data module and the Trainer (both through Hydra's `instantiate`), and every callback.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Dict, List, Optional

import lightning as L
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ModelCheckpoint, ModelSummary

from dimba.checkpointing.atomic_io import remove_stale_temporaries
from dimba.checkpointing.layout import lightning_dir
from dimba.checkpointing.milestones import milestone_label
from dimba.config import Config, Recipe
from dimba.launch import end_process_group, in_multirun, multirun_job
from dimba.model.denormals import flush_denormals
from dimba.preflight import resolve_save_dir
from dimba.resume import checkpoint_step, newest_valid_checkpoint, resumable_step
from dimba.summary import print_summary
from dimba.training.callbacks import training_callbacks
from dimba.training.checkpoint_io import AtomicCheckpointIO
from dimba.training.last_checkpoint import LastCheckpoint
from dimba.training.loggers import build_loggers
from dimba.training.module import DIMBALightningModule
from dimba.training.progress import DIMBAProgressBar

log = logging.getLogger(__name__)


@dataclass
class RunResult:
    trainer: L.Trainer
    val_loss: Optional[float]
    """The validation loss after the last step (what `train.py` returns to a Hydra sweeper)."""


def route_lightning_logs_to_root() -> None:
    """Lightning gives its loggers their own console handler when it is imported before
    logging is configured (always, under Hydra); drop it so its lines reach Hydra's
    console and log file once each."""
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True


def build_module(config: Config, save_dir: Path) -> DIMBALightningModule:
    return DIMBALightningModule.from_recipe(Recipe.from_config(config, save_dir=str(save_dir)))


def build_trainer(config: Config, recipe: Recipe, output_dir: Path, resume_step: Optional[int]) -> L.Trainer:
    checkpoints = lightning_dir(output_dir)
    callbacks: List[L.Callback] = [
        *training_callbacks(recipe),  # grow, then check milestones
        ModelCheckpoint(dirpath=str(checkpoints), save_top_k=0, save_last=True, enable_version_counter=False,
                        every_n_train_steps=config.last_checkpoint_every_n_steps),
        LastCheckpoint(checkpoints / "last.ckpt"),
        *([DIMBAProgressBar()] if config.trainer.enable_progress_bar else []),
        # The plain summary logs (stderr, train.log); Lightning's default where rich is
        # installed prints a table on stdout, which holds only the plan and the milestones.
        *([ModelSummary()] if config.trainer.enable_model_summary else []),
    ]
    trainer: L.Trainer = instantiate(config.trainer.arguments(), default_root_dir=str(output_dir),
                                     logger=build_loggers(config.logger, output_dir, resume_step),
                                     plugins=[AtomicCheckpointIO()], callbacks=callbacks, _convert_="all")
    if trainer.is_global_zero and checkpoints.is_dir():
        remove_stale_temporaries(checkpoints)  # a last.ckpt write cut short by a crash
    return trainer


@multirun_job()  # in a sweep: DDP children run this job only, in its directory
def train(config: Config, output_dir: Path) -> RunResult:
    """Fit a DIMBA model as configured; everything the run writes goes under `output_dir`."""
    flush_denormals()  # before torch starts its threads: they inherit it
    route_lightning_logs_to_root()
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)", category=Warning)
    save_dir = resolve_save_dir(config.progressive_checkpoints.save_dir, output_dir)
    L.seed_everything(config.seed, workers=True, verbose=False)
    datamodule = build_data(config)
    recipe = Recipe.from_config(config, save_dir=str(save_dir))
    recipe.model = replace(recipe.model, vocab_size=datamodule.vocab_size)  # the tokenizer's, as trained
    module = DIMBALightningModule.from_recipe(recipe, tokenizer_record=datamodule.tokenizer_record,
                                              data_record=data_record(config))
    if config.resume == "auto":
        ckpt_path = newest_valid_checkpoint(output_dir, save_dir)
        resume_step = checkpoint_step(ckpt_path) if ckpt_path else None
    else:
        ckpt_path = config.ckpt_path
        resume_step = resumable_step(Path(ckpt_path)) if ckpt_path else None  # a bad file: one line, before training
    if ckpt_path:
        check_same_tokenizer(Path(ckpt_path), datamodule, config)
    trainer = build_trainer(config, recipe, output_dir, resume_step)
    if config.resume == "auto":
        log.info("resume=auto: %s", f"continuing from {ckpt_path}" if ckpt_path else "no checkpoint yet, starting fresh")
    log.info("Output directory: %s", output_dir)
    if config.progressive_checkpoints.enabled:
        log.info("Milestones: %s -> %s", ", ".join(milestone_label(m) for m in config.progressive_checkpoints.milestones),
                 save_dir)
    trainer.fit(module, datamodule=datamodule, ckpt_path=str(ckpt_path) if ckpt_path else None)
    val_loss = final_validation_loss(trainer, module, datamodule)
    if trainer.is_global_zero:
        finish(config, output_dir, save_dir)
    if not in_multirun():  # a sweep job ends its group in multirun_job
        end_process_group()
    return RunResult(trainer, val_loss)


def build_data(config: Config) -> Any:
    """The data module, prepared (a text too short once tokenized is refused here, before
    the Trainer starts)."""
    datamodule = instantiate(dict(vars(config.data)), seed=config.seed, tokenizer=vars(config.tokenizer),
                             _convert_="all")
    datamodule.prepare_data()
    datamodule.setup("fit")
    return datamodule


def data_record(config: Config) -> Dict[str, Any]:
    """The data and tokenizer configs as plain data, recorded in checkpoints: `dimba eval`
    rebuilds the validation split from them."""
    def plain(group: Any) -> Dict[str, Any]:
        return {key: (list(value) if isinstance(value, (list, tuple)) else value) for key, value in vars(group).items()}

    return {"data": plain(config.data), "tokenizer": plain(config.tokenizer)}


def check_same_tokenizer(ckpt_path: Path, datamodule: Any, config: Config) -> None:
    """A checkpoint continues only on data of the tokenizer it was trained with."""
    from dimba.data.records import check_resume_tokenizer
    from dimba.resume import recorded_tokenizer

    where = getattr(config.data, "path", None) or ", ".join(getattr(config.data, "files", [])) or "the built-in corpus"
    check_resume_tokenizer(recorded_tokenizer(ckpt_path), datamodule.tokenizer_record, where,
                           key="data.path" if getattr(config.data, "path", None) else "tokenizer")


def final_validation_loss(trainer: L.Trainer, module: DIMBALightningModule, datamodule: Any) -> Optional[float]:
    """The validation loss at the last step: the last validation's, or a validation now if the
    last one came before the final step (a sweeper must compare runs at their end)."""
    if not trainer.limit_val_batches:
        return None
    if module.last_validation_step != trainer.global_step:
        trainer.validate(module, datamodule=datamodule, verbose=False)
    value = trainer.callback_metrics.get("val/loss")
    return None if value is None else float(value)


def finish(config: Config, output_dir: Path, save_dir: Path) -> None:
    """Rank zero, after training: the milestone table and the plot (which must never fail a run)."""
    if config.progressive_checkpoints.enabled:
        print_summary(save_dir)
    try:
        from dimba.plotting import plot_run

        log.info("Training plot: %s", plot_run(output_dir))
    except Exception as exc:
        log.warning("No training plot: %s", exc)
