"""The `trainer` group: arguments of `lightning.Trainer`, validated before any import of it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Mapping, Optional

from dimba.config.checks import int_at_least, positive_int
from dimba.errors import ConfigError

PRECISIONS = ("32-true", "32", "64-true", "64", "16-mixed", "16", "bf16-mixed", "bf16", "16-true", "bf16-true")
ACCELERATORS = ("cpu", "gpu", "cuda", "mps", "tpu", "auto")
SUPPORTED_STRATEGIES = ("auto", "ddp", "ddp_spawn", "ddp_find_unused_parameters_true", "single_device", "fsdp")
DIMBA_FSDP = "dimba.training.fsdp.FSDPStrategy"  # FSDP2, the one sharded strategy milestones and growth take
# How a `trainer.strategy` value (a name, or a `_target_` mapping) is called in messages.
TARGET_NAMES = {"FSDPStrategy": "fsdp", "DDPStrategy": "ddp", "SingleDeviceStrategy": "single_device",
                "DeepSpeedStrategy": "deepspeed", "ModelParallelStrategy": "model_parallel"}


def strategy_name(value: Any) -> str:
    """`fsdp` for "fsdp", "fsdp_cpu_offload" or {_target_: ...FSDPStrategy, ...}; else the name."""
    if isinstance(value, Mapping):
        target = str(value.get("_target_", ""))
        return TARGET_NAMES.get(target.rsplit(".", 1)[-1], target)
    name = str(value)
    return "fsdp" if name.startswith("fsdp") else name


# Trainer arguments dimba sets itself (the run's directory, loggers, callbacks, checkpoint IO).
SET_BY_DIMBA = {
    "logger": "choose loggers with the logger group: logger=csv | tensorboard | wandb | mlflow | many",
    "callbacks": "dimba builds the callbacks (growth, milestones, last.ckpt, progress bar)",
    "plugins": "dimba sets its crash-safe checkpoint IO",
    "default_root_dir": "the run's directory: hydra.run.dir=... (hydra.sweep.dir=... for sweeps)",
}


@dataclass
class TrainerConfig:
    """Every argument of `lightning.Trainer` (tests/test_config.py checks the list against
    Lightning's signature). The first block has dimba's defaults; the rest are Lightning's."""

    _target_: str = "lightning.Trainer"
    accelerator: str = "cpu"
    devices: Any = 1
    num_nodes: int = 1
    strategy: Any = "auto"
    precision: Any = "32-true"
    max_steps: int = 240
    max_epochs: Optional[int] = None
    val_check_interval: Any = 60
    check_val_every_n_epoch: Optional[int] = None
    limit_val_batches: Any = 10
    num_sanity_val_steps: int = 0
    log_every_n_steps: int = 1
    """Per-step metrics: cheap here, and what metrics.csv and the plot show."""
    gradient_clip_val: Optional[float] = 1.0
    accumulate_grad_batches: int = 1
    enable_progress_bar: bool = True
    enable_model_summary: bool = True
    deterministic: Any = False
    use_distributed_sampler: bool = False
    """dimba's sampler shards the data across ranks itself (and can resume mid-epoch)."""
    # Lightning's own defaults from here on.
    fast_dev_run: Any = False
    min_epochs: Optional[int] = None
    min_steps: Optional[int] = None
    max_time: Any = None
    limit_train_batches: Any = None
    limit_test_batches: Any = None
    limit_predict_batches: Any = None
    overfit_batches: Any = 0.0
    enable_checkpointing: Optional[bool] = None
    gradient_clip_algorithm: Optional[str] = None
    benchmark: Optional[bool] = None
    inference_mode: bool = True
    profiler: Any = None
    detect_anomaly: bool = False
    barebones: bool = False
    sync_batchnorm: bool = False
    reload_dataloaders_every_n_epochs: int = 0
    enable_autolog_hparams: bool = True
    model_registry: Optional[str] = None
    # Set by dimba: present so that a value is refused with the reason, not as an unknown key.
    logger: Any = None
    callbacks: Any = None
    plugins: Any = None
    default_root_dir: Any = None

    def __post_init__(self) -> None:
        for name, why in SET_BY_DIMBA.items():
            if getattr(self, name) is not None:
                raise ConfigError(f"trainer.{name}", getattr(self, name), f"null: {why}")
        if self.enable_checkpointing is False:
            raise ConfigError("trainer.enable_checkpointing", False,
                              "null or true: dimba writes checkpoints/last.ckpt (last_checkpoint_every_n_steps)")
        positive_int("trainer.max_steps", self.max_steps)
        if not (self.devices == "auto" or int_at_least(self.devices, 1) or (
                isinstance(self.devices, (list, tuple)) and self.devices and all(int_at_least(d, 0) for d in self.devices))):
            raise ConfigError("trainer.devices", self.devices, "a positive number of devices, a list of device indices, or auto")
        if str(self.precision) not in PRECISIONS:
            raise ConfigError("trainer.precision", self.precision, " | ".join(PRECISIONS))
        if not (int_at_least(self.limit_val_batches, 0) or (
                isinstance(self.limit_val_batches, float) and 0.0 <= self.limit_val_batches <= 1.0)):
            raise ConfigError("trainer.limit_val_batches", self.limit_val_batches, "a number of batches >= 0 or a fraction in [0, 1]")
        if isinstance(self.val_check_interval, float) and self.check_val_every_n_epoch is None:
            raise ConfigError("trainer.val_check_interval", self.val_check_interval,
                              "a whole number of steps (a fraction of an epoch also needs trainer.check_val_every_n_epoch)")
        if self.use_distributed_sampler:
            raise ConfigError("trainer.use_distributed_sampler", True,
                              "false: dimba's sampler shards the data across ranks itself and resumes mid-epoch")
        positive_int("trainer.num_nodes", self.num_nodes)
        positive_int("trainer.accumulate_grad_batches", self.accumulate_grad_batches)
        positive_int("trainer.log_every_n_steps", self.log_every_n_steps)
        if self.accelerator not in ACCELERATORS:
            raise ConfigError("trainer.accelerator", self.accelerator, " | ".join(ACCELERATORS))
        if self.gradient_clip_val is not None and (
            isinstance(self.gradient_clip_val, bool) or self.gradient_clip_val <= 0
        ):
            raise ConfigError("trainer.gradient_clip_val", self.gradient_clip_val, "a positive number or null")
        if isinstance(self.val_check_interval, bool) or not isinstance(self.val_check_interval, (int, float)) or self.val_check_interval <= 0:
            raise ConfigError("trainer.val_check_interval", self.val_check_interval, "a positive number of steps (int) or fraction of an epoch (float)")

    @property
    def strategy_name(self) -> str:
        return strategy_name(self.strategy)

    def arguments(self) -> Dict[str, Any]:
        """What `hydra.utils.instantiate` builds the Trainer from (dimba adds the arguments it sets)."""
        return {k: v for k, v in vars(self).items() if k not in SET_BY_DIMBA}
