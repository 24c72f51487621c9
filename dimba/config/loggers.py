"""The `logger` group's schema: which Lightning loggers a run writes to, all of them offline.

One dataclass per logger; a `LoggerConfig` entry with `enabled: true` is one logger of the run
(`logger=many` turns on two). Every path is relative to the run's directory unless absolute,
like `progressive_checkpoints.save_dir`. No torch or Lightning import here: the package
check runs while the config is validated, before anything heavy is imported.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from importlib.util import find_spec
from typing import Any, Dict, List, Optional, Tuple

from dimba.errors import ConfigError

EXTRA_HINT = "pip install -e '.[loggers]'"

# The modules each logger imports (any one of them will do), as Lightning looks for them.
LOGGER_MODULES: Dict[str, Tuple[str, ...]] = {
    "csv": (),
    "tensorboard": ("tensorboard", "tensorboardX"),
    "wandb": ("wandb",),
    "mlflow": ("mlflow",),
}


def _positive_int(key: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(key, value, "a positive integer")


def _non_empty(key: str, value: Any) -> None:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(key, value, "a non-empty string")


@dataclass
class CSVLoggerConfig:
    """`logs/metrics.csv`; rows logged before the checkpoint a run resumes from are kept."""

    enabled: bool = False
    """Whether the run writes to this logger (each `logger=` option turns its own on)."""
    _target_: str = "dimba.training.metrics_log.ContinuingCSVLogger"
    save_dir: str = "."
    """Directory of `<name>/metrics.csv` (relative: inside the run's directory)."""
    name: str = "logs"
    version: str = ""
    """Empty: `metrics.csv` directly in `<save_dir>/<name>/`, so a resumed run appends to it."""
    flush_logs_every_n_steps: int = 100
    prefix: str = ""

    def __post_init__(self) -> None:
        _positive_int("logger.csv.flush_logs_every_n_steps", self.flush_logs_every_n_steps)


@dataclass
class TensorBoardLoggerConfig:
    """TensorBoard event files; a resumed run purges the steps after its checkpoint."""

    enabled: bool = False
    """Whether the run writes to this logger (each `logger=` option turns its own on)."""
    _target_: str = "lightning.pytorch.loggers.TensorBoardLogger"
    save_dir: str = "tensorboard"
    """Event files go here (relative: inside the run's directory): `tensorboard --logdir` it."""
    name: str = ""
    version: str = ""
    log_graph: bool = False
    default_hp_metric: bool = False
    """Lightning's placeholder `hp_metric` scalar (-1); off, it only clutters the board."""
    prefix: str = ""
    flush_secs: int = 120
    """How often the event file is flushed to disk (it is also flushed at the end)."""

    def __post_init__(self) -> None:
        _positive_int("logger.tensorboard.flush_secs", self.flush_secs)


@dataclass
class WandbLoggerConfig:
    """Weights & Biases, offline: the run is written under the run's directory, nothing is
    sent; `wandb sync <save_dir>/wandb/offline-run-*` uploads it later."""

    enabled: bool = False
    """Whether the run writes to this logger (each `logger=` option turns its own on)."""
    _target_: str = "dimba.training.loggers.FinishingWandbLogger"
    save_dir: str = "."
    """wandb writes `wandb/offline-run-<time>-<id>/` here (relative: inside the run's directory)."""
    offline: bool = True
    """true: no network at all. false sends to the W&B server (your choice, not the default)."""
    project: str = "dimba"
    name: Optional[str] = None
    id: Optional[str] = None
    """null: a new id, or on resume the id of the run's previous W&B run, which continues."""
    entity: Optional[str] = None
    group: Optional[str] = None
    tags: List[str] = field(default_factory=list)
    notes: Optional[str] = None
    log_model: bool = False
    """Upload checkpoints as artifacts (needs offline=false)."""
    prefix: str = ""

    def __post_init__(self) -> None:
        _non_empty("logger.wandb.project", self.project)
        if self.enabled and self.log_model and self.offline:
            raise ConfigError("logger.wandb.log_model", self.log_model,
                              "false while logger.wandb.offline=true (an offline run uploads nothing)")


@dataclass
class MLFlowLoggerConfig:
    """MLflow, in a local file store under the run's directory (no server, no telemetry)."""

    enabled: bool = False
    """Whether the run writes to this logger (each `logger=` option turns its own on)."""
    _target_: str = "lightning.pytorch.loggers.MLFlowLogger"
    save_dir: str = "mlruns"
    """The file store (relative: inside the run's directory): `mlflow ui --backend-store-uri <it>`."""
    tracking_uri: Optional[str] = None
    """null: the file store at save_dir. A server's address sends to it (not the default)."""
    experiment_name: str = "dimba"
    run_name: Optional[str] = None
    run_id: Optional[str] = None
    """null: a new run, or on resume the run this run directory logged to before, which continues."""
    tags: Optional[Dict[str, str]] = None
    log_model: bool = False
    prefix: str = ""

    def __post_init__(self) -> None:
        _non_empty("logger.mlflow.experiment_name", self.experiment_name)
        if self.tracking_uri is not None:
            _non_empty("logger.mlflow.tracking_uri", self.tracking_uri)

    def uses_file_store(self) -> bool:
        return self.tracking_uri is None or self.tracking_uri.startswith("file:")


@dataclass
class LoggerConfig:
    """The run's loggers: each entry with `enabled: true` is one Lightning logger.

    Typed entries rather than a free dict, so `logger.wandb.enabled=true` (add W&B to any
    option) and every setting are checked while Hydra composes, without `+`.
    """

    csv: CSVLoggerConfig = field(default_factory=CSVLoggerConfig)
    tensorboard: TensorBoardLoggerConfig = field(default_factory=TensorBoardLoggerConfig)
    wandb: WandbLoggerConfig = field(default_factory=WandbLoggerConfig)
    mlflow: MLFlowLoggerConfig = field(default_factory=MLFlowLoggerConfig)

    def active(self) -> List[Tuple[str, Any]]:
        """(name, config) of every logger the run writes to, in a fixed order."""
        return [(f.name, getattr(self, f.name)) for f in fields(self) if getattr(self, f.name).enabled]


def missing_module(name: str) -> Optional[str]:
    """The module a logger needs where none of its candidates is installed, else None."""
    modules = LOGGER_MODULES.get(name, ())
    if not modules or any(find_spec(module) is not None for module in modules):
        return None
    return modules[0]


def check_logger_packages(config: LoggerConfig) -> None:
    """Refuse, before training, a logger whose package is not installed (one line naming the extra)."""
    for name, _ in config.active():
        module = missing_module(name)
        if module is not None:
            raise ConfigError("logger", name, f"csv, or install the loggers extra for {name} "
                                              f"(the package {module!r} is missing): {EXTRA_HINT}")
