"""The run's Lightning loggers, built from the `logger` group, and the one way to send them
an event (a growth, a milestone) at the step it happened.

Every logger writes under the run's directory and stays offline: W&B in offline mode,
MLflow in a local file store with its telemetry off. A resumed run continues where the
checkpoint left off: metrics.csv keeps the rows before it, TensorBoard purges the steps
after it, W&B and MLflow continue the run they logged to before (the steps between the
checkpoint and the interruption appear twice there: they were trained twice).
"""

from __future__ import annotations

import os
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Union

import lightning as L
from hydra.utils import instantiate
from lightning.pytorch.loggers import Logger, WandbLogger
from omegaconf import DictConfig, OmegaConf

from dimba import internals
from dimba.config.loggers import LoggerConfig, MLFlowLoggerConfig, check_logger_packages

GROWTH_PARAMS = "growth/params"
GROWTH_N_LAYERS = "growth/n_layers"
GROWTH_D_MODEL = "growth/d_model"
MILESTONE_REACHED = "milestone/reached"
MILESTONE_PARAMS = "milestone/params"


class FinishingWandbLogger(WandbLogger):
    """Lightning's WandbLogger, which leaves its W&B run open after `fit`: the next run in
    the same process (a sweep job) would silently log into it. This one finishes it."""

    def finalize(self, status: str) -> None:
        super().finalize(status)
        internals.finish_wandb_run(self, exit_code=0 if status == "success" else 1)


def growth_metrics(params: int, n_layers: int, d_model: int) -> Dict[str, float]:
    """What a growth event logs: the size the model has from this step on."""
    return {GROWTH_PARAMS: float(params), GROWTH_N_LAYERS: float(n_layers), GROWTH_D_MODEL: float(d_model)}


def milestone_metrics(milestone: int, params: int) -> Dict[str, float]:
    """What a saved milestone logs: the milestone and the parameter count that crossed it."""
    return {MILESTONE_REACHED: float(milestone), MILESTONE_PARAMS: float(params)}


def log_event(trainer: L.Trainer, metrics: Mapping[str, float], step: int) -> None:
    """Send one event to every logger of the run, at `step`, and flush it.

    Call it on every rank (only global rank 0 writes). Lightning's own logging goes through
    `self.log` at its `log_every_n_steps` cadence; an event must land at its exact step.
    """
    if not trainer.is_global_zero:
        return
    values = {key: float(value) for key, value in metrics.items()}
    for logger in trainer.loggers:
        logger.log_metrics(values, step=int(step))
        logger.save()


def build_loggers(logger_config: Union[LoggerConfig, DictConfig, Mapping[str, Any]], output_dir: Path,
                  resume_step: Optional[int]) -> List[Logger]:
    """One Lightning logger per enabled entry, each built with `hydra.utils.instantiate`.

    `resume_step`: the step of the checkpoint the run continues from (None for a fresh run).
    A missing package is refused here too, as a ConfigError naming the extra.
    """
    config = as_logger_config(logger_config)
    check_logger_packages(config)
    keep_offline(config)
    output_dir = Path(output_dir)
    loggers: List[Logger] = []
    for name, entry in config.active():
        spec = {key: value for key, value in asdict(entry).items() if key != "enabled"}
        spec["save_dir"] = str(inside(output_dir, entry.save_dir))
        spec.update(_RESUME[name](spec, resume_step))
        loggers.append(instantiate(spec, _convert_="all"))
    return loggers


def as_logger_config(value: Union[LoggerConfig, DictConfig, Mapping[str, Any]]) -> LoggerConfig:
    if isinstance(value, LoggerConfig):
        return value
    return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(LoggerConfig), value))


def inside(output_dir: Path, path: str) -> Path:
    """A relative path is inside the run's directory, as for progressive_checkpoints.save_dir."""
    candidate = Path(path).expanduser()
    return candidate if candidate.is_absolute() else output_dir / candidate


def keep_offline(config: LoggerConfig) -> None:
    """Environment that keeps MLflow local and silent (a user's explicit setting wins).

    MLflow starts its telemetry client when `mlflow` is imported, so this runs before the
    import, and drops a client that an earlier import already started.
    """
    if not config.mlflow.enabled:
        return
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    if config.mlflow.uses_file_store():
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 refuses it otherwise
    telemetry = sys.modules.get("mlflow.telemetry")
    if telemetry is not None and hasattr(telemetry, "set_telemetry_client"):
        telemetry.set_telemetry_client()


def _csv_resume(spec: Dict[str, Any], resume_step: Optional[int]) -> Dict[str, Any]:
    return {"resume_step": resume_step}


def _tensorboard_resume(spec: Dict[str, Any], resume_step: Optional[int]) -> Dict[str, Any]:
    # TensorBoard hides events at or after purge_step in the older event files.
    return {} if resume_step is None else {"purge_step": resume_step}


def _wandb_resume(spec: Dict[str, Any], resume_step: Optional[int]) -> Dict[str, Any]:
    if resume_step is None or spec.get("id"):
        return {}
    # wandb links `latest-run` to the run it started last; its `run-<id>.wandb` names the id
    # (the directory's name may carry a `-1` suffix when two runs started in the same second).
    latest = Path(spec["save_dir"], "wandb", "latest-run")
    run_files = sorted(latest.glob("run-*.wandb")) if latest.is_dir() else []
    return {"id": run_files[0].name[len("run-"):-len(".wandb")]} if run_files else {}


def _mlflow_resume(spec: Dict[str, Any], resume_step: Optional[int]) -> Dict[str, Any]:
    if resume_step is None or spec.get("run_id"):
        return {}
    entry = MLFlowLoggerConfig(**{k: v for k, v in spec.items() if k != "_target_"})
    if not entry.uses_file_store() or not Path(spec["save_dir"]).is_dir():
        return {}  # a server's runs are not this run directory's to pick from
    from mlflow.tracking import MlflowClient

    client = MlflowClient(entry.tracking_uri or f"file:{spec['save_dir']}")
    experiment = client.get_experiment_by_name(entry.experiment_name)
    if experiment is None:
        return {}
    runs = client.search_runs([experiment.experiment_id], order_by=["attributes.start_time DESC"], max_results=1)
    return {"run_id": runs[0].info.run_id} if runs else {}


_RESUME = {"csv": _csv_resume, "tensorboard": _tensorboard_resume, "wandb": _wandb_resume, "mlflow": _mlflow_resume}
