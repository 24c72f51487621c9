"""Config schemas (one dataclass per Hydra group), their validation, and registration.

Validation lives in the dataclasses' `__post_init__`, which OmegaConf runs when the
composed config is turned into objects (`validate`). Every user mistake becomes a
`ConfigError` naming the key, the value and what is accepted, before anything trains.
No torch or Lightning import here: a bad config fails in well under a second.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, List, Mapping, Optional

from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from dimba.checkpointing.atomic_io import is_sharded_checkpoint
from dimba.checkpointing.milestones import ACCEPTED_FORMS, MilestoneError, parse_milestones
from dimba.checkpointing.strategies import strategy_name
from dimba.errors import ConfigError
from dimba.growth.schedule import GrowthEvent, validate_schedule
from dimba.model.config import DIMBAConfig
from dimba.model.kernels import fused_chunk_scan
from dimba.objective import ObjectiveConfig

ModelConfig = DIMBAConfig  # the `model` group's schema is the architecture itself

BYTE_VOCAB = 256
PRECISIONS = ("32-true", "32", "64-true", "64", "16-mixed", "16", "bf16-mixed", "bf16", "16-true", "bf16-true")
SUPPORTED_STRATEGIES = ("auto", "ddp", "ddp_spawn", "ddp_find_unused_parameters_true", "single_device", "fsdp")
GROWABLE_STRATEGIES = ("auto", "ddp", "ddp_spawn", "ddp_find_unused_parameters_true", "single_device")
ACCELERATORS = ("cpu", "gpu", "cuda", "mps", "tpu", "auto")


def _positive_int(key: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(key, value, "a positive integer")


@dataclass
class DataConfig:
    """Byte-level text: the built-in corpus, or the user's own files."""

    _target_: str = "dimba.data.TextDataModule"
    files: List[str] = field(default_factory=list)
    """Text files to train on, in order; empty means the built-in offline corpus."""
    seq_len: int = 128
    """Tokens (bytes) per training sequence."""
    batch_size: int = 16
    """Sequences per batch and device."""
    val_fraction: float = 0.05
    """Share of the token stream, taken from its end, held out for validation."""
    num_workers: int = 0
    """DataLoader worker processes."""

    def __post_init__(self) -> None:
        _positive_int("data.seq_len", self.seq_len)
        _positive_int("data.batch_size", self.batch_size)
        if isinstance(self.num_workers, bool) or not isinstance(self.num_workers, int) or self.num_workers < 0:
            raise ConfigError("data.num_workers", self.num_workers, "an integer >= 0")
        if not isinstance(self.val_fraction, (int, float)) or not 0 < self.val_fraction < 0.5:
            raise ConfigError("data.val_fraction", self.val_fraction, "a number between 0 and 0.5")
        total = 0 if self.files else builtin_corpus_size()
        for i, name in enumerate(self.files):
            path = Path(name)
            if not path.is_file():
                raise ConfigError(f"data.files[{i}]", name, "an existing, readable text file")
            if not os.access(path, os.R_OK):
                raise ConfigError(f"data.files[{i}]", name, "a file this user can read")
            size = path.stat().st_size
            if size == 0:
                raise ConfigError(f"data.files[{i}]", name, "a non-empty text file")
            total += size
        train_tokens = total - max(self.seq_len, int(total * self.val_fraction))
        if train_tokens < self.seq_len * self.batch_size:
            key, value = ("data.files", list(self.files)) if self.files else ("data.seq_len", self.seq_len)
            raise ConfigError(
                key, value,
                f"text for at least one training batch: seq_len*batch_size = {self.seq_len * self.batch_size} bytes "
                f"beyond the validation share, but the text holds {total}",
            )


@dataclass
class TrainerConfig:
    """Arguments of `lightning.Trainer`; any other Trainer argument can be added with `+trainer.x=...`."""

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
    log_every_n_steps: int = 10
    gradient_clip_val: Optional[float] = 1.0
    accumulate_grad_batches: int = 1
    enable_progress_bar: bool = True
    enable_model_summary: bool = True
    deterministic: Any = False
    use_distributed_sampler: bool = False
    """dimba's sampler shards the data across ranks itself (and can resume mid-epoch)."""

    def __post_init__(self) -> None:
        _positive_int("trainer.max_steps", self.max_steps)
        if not (self.devices == "auto" or _int_at_least(self.devices, 1) or (
                isinstance(self.devices, (list, tuple)) and self.devices and all(_int_at_least(d, 0) for d in self.devices))):
            raise ConfigError("trainer.devices", self.devices, "a positive number of devices, a list of device indices, or auto")
        if str(self.precision) not in PRECISIONS:
            raise ConfigError("trainer.precision", self.precision, " | ".join(PRECISIONS))
        if not (_int_at_least(self.limit_val_batches, 0) or (
                isinstance(self.limit_val_batches, float) and 0.0 <= self.limit_val_batches <= 1.0)):
            raise ConfigError("trainer.limit_val_batches", self.limit_val_batches, "a number of batches >= 0 or a fraction in [0, 1]")
        if isinstance(self.val_check_interval, float) and self.check_val_every_n_epoch is None:
            raise ConfigError("trainer.val_check_interval", self.val_check_interval,
                              "a whole number of steps (a fraction of an epoch also needs trainer.check_val_every_n_epoch)")
        if self.use_distributed_sampler:
            raise ConfigError("trainer.use_distributed_sampler", True,
                              "false: dimba's sampler shards the data across ranks itself and resumes mid-epoch")
        _positive_int("trainer.num_nodes", self.num_nodes)
        _positive_int("trainer.accumulate_grad_batches", self.accumulate_grad_batches)
        _positive_int("trainer.log_every_n_steps", self.log_every_n_steps)
        if self.accelerator not in ACCELERATORS:
            raise ConfigError("trainer.accelerator", self.accelerator, " | ".join(ACCELERATORS))
        if self.gradient_clip_val is not None and (
            isinstance(self.gradient_clip_val, bool) or self.gradient_clip_val <= 0
        ):
            raise ConfigError("trainer.gradient_clip_val", self.gradient_clip_val, "a positive number or null")
        if isinstance(self.val_check_interval, bool) or not isinstance(self.val_check_interval, (int, float)) or self.val_check_interval <= 0:
            raise ConfigError("trainer.val_check_interval", self.val_check_interval, "a positive number of steps (int) or fraction of an epoch (float)")


@dataclass
class OptimConfig:
    """AdamW with linear warmup and cosine decay to `min_lr_ratio * lr` at `trainer.max_steps`."""

    lr: float = 2e-3
    weight_decay: float = 0.01
    betas: List[float] = field(default_factory=lambda: [0.9, 0.99])
    warmup_steps: int = 20
    min_lr_ratio: float = 0.1

    def __post_init__(self) -> None:
        if not _finite(self.lr) or self.lr <= 0:
            raise ConfigError("optim.lr", self.lr, "a positive number")
        if not _finite(self.weight_decay) or self.weight_decay < 0:
            raise ConfigError("optim.weight_decay", self.weight_decay, "a number >= 0")
        if len(self.betas) != 2 or not all(_finite(b) and 0 <= b < 1 for b in self.betas):
            raise ConfigError("optim.betas", list(self.betas), "two numbers in [0, 1), e.g. [0.9,0.99]")
        if isinstance(self.warmup_steps, bool) or not isinstance(self.warmup_steps, int) or self.warmup_steps < 0:
            raise ConfigError("optim.warmup_steps", self.warmup_steps, "an integer >= 0")
        if not _finite(self.min_lr_ratio) or not 0 <= self.min_lr_ratio <= 1:
            raise ConfigError("optim.min_lr_ratio", self.min_lr_ratio, "a number in [0, 1]")


@dataclass
class ProgressiveCheckpointsConfig:
    """The seed document's keys. Milestones may be written 1000000000, 1e9 or 1B."""

    enabled: bool = True
    milestones: Any = field(default_factory=list)
    """Parameter counts; after validation a sorted list of unique ints."""
    save_dir: str = "progressive_checkpoints"
    """Where milestone checkpoints go; a relative path is inside the run's output directory."""
    async_save: bool = False
    """Write milestone checkpoints in a background thread: training waits only for a copy of
    the state in memory. A milestone counts as saved once its write is durable."""

    def __post_init__(self) -> None:
        key = "progressive_checkpoints.milestones"
        try:
            self.milestones = parse_milestones(self.milestones)
        except MilestoneError as exc:
            raise ConfigError(key, exc.value, ACCEPTED_FORMS) from None
        if self.enabled and not self.milestones:
            raise ConfigError(key, [], f"at least one milestone while enabled=true ({ACCEPTED_FORMS}), or progressive_checkpoints=disabled")
        if not isinstance(self.save_dir, str) or not self.save_dir.strip():
            raise ConfigError("progressive_checkpoints.save_dir", self.save_dir, "a non-empty directory path")


@dataclass
class GrowthConfig:
    """When and how the model grows: `growth.schedule=[{step:100,op:depth,n_layers:8}]`."""

    schedule: List[GrowthEvent] = field(default_factory=list)
    """Events in increasing step order; each grows depth (n_layers, mode) or width (d_model)."""


@dataclass
class Config:
    model: DIMBAConfig = MISSING
    data: DataConfig = MISSING
    trainer: TrainerConfig = MISSING
    optim: OptimConfig = MISSING
    growth: GrowthConfig = MISSING
    progressive_checkpoints: ProgressiveCheckpointsConfig = MISSING
    objective: ObjectiveConfig = MISSING
    seed: int = 0
    """Seed for weights, data order, noise and the initialisation of grown weights."""
    ckpt_path: Optional[str] = None
    """A Lightning checkpoint (a milestone checkpoint works too) to resume training from."""
    dry_run: bool = False
    """Print the growth plan (parameters per stage, step of each milestone) and exit."""
    resume: Optional[str] = None
    """`auto`: continue the latest run with the same overrides, in its own directory, from its
    newest valid checkpoint (a fresh run if there is none). null: start fresh."""
    compile: bool = False
    """torch.compile the denoiser (a one-off compilation, and one more after each growth event)."""
    last_checkpoint_every_n_steps: int = 50
    """How often Lightning's `checkpoints/last.ckpt` is refreshed (it is also written at the
    end of training and when the process receives SIGTERM)."""

    def __post_init__(self) -> None:
        if not _int_at_least(self.seed, 0) or self.seed >= 2**32:
            raise ConfigError("seed", self.seed, "an integer in [0, 2**32)")
        validate_schedule(self.model, self.growth.schedule)
        self.objective.check_diffusion_steps(self.model.diffusion_steps)
        self._validate_strategy()
        if self.resume not in (None, "auto"):
            raise ConfigError("resume", self.resume, "auto or null")
        if self.resume is not None and self.ckpt_path is not None:
            raise ConfigError("ckpt_path", self.ckpt_path, "null when resume=auto (use one or the other)")
        _positive_int("last_checkpoint_every_n_steps", self.last_checkpoint_every_n_steps)
        if self.model.scan == "mamba_ssm" and fused_chunk_scan() is None:
            raise ConfigError("model.scan", self.model.scan, "auto | torch (mamba-ssm is not installed here)")
        if self.compile and strategy_name(self.trainer.strategy) == "ddp_spawn":
            raise ConfigError("compile", True, "false with trainer.strategy=ddp_spawn (a compiled model cannot be "
                                               "pickled to the spawned processes; use trainer.strategy=ddp)")
        if self.model.vocab_size < BYTE_VOCAB:
            raise ConfigError("model.vocab_size", self.model.vocab_size, f"at least {BYTE_VOCAB} for the byte-level tokenizer")
        if self.ckpt_path is not None and not (Path(self.ckpt_path).is_file() or is_sharded_checkpoint(self.ckpt_path)):
            raise ConfigError("ckpt_path", self.ckpt_path,
                              "an existing checkpoint file (or a sharded checkpoint directory written under FSDP), or null")


    def _validate_strategy(self) -> None:
        """Growth rebuilds parameters in place: DDP and single devices only. FSDP (sharded
        milestones, written by every rank) takes milestones without growth."""
        strategy = strategy_name(self.trainer.strategy)
        progressive = self.progressive_checkpoints
        if strategy not in SUPPORTED_STRATEGIES and (self.growth.schedule or progressive.enabled):
            raise ConfigError("trainer.strategy", strategy,
                              f"{' | '.join(SUPPORTED_STRATEGIES)} with growth or milestone checkpoints "
                              "(or growth=none progressive_checkpoints=disabled)")
        if strategy not in GROWABLE_STRATEGIES and self.growth.schedule:
            raise ConfigError("trainer.strategy", strategy,
                              "trainer=ddp (or a single device) while the model grows: growth rebuilds parameters that "
                              f"{strategy} has sharded and flattened; or train without growth: growth=none")
        raw = self.trainer.strategy
        if strategy == "fsdp" and progressive.enabled and not (isinstance(raw, Mapping) and raw.get("state_dict_type") == "sharded"):
            raise ConfigError("trainer.strategy", raw if isinstance(raw, str) else dict(raw),
                              "trainer=fsdp (FSDPStrategy with state_dict_type: sharded) for milestone checkpoints: "
                              "each rank writes its shards, nothing is gathered on one rank")
        if strategy == "fsdp" and progressive.enabled and progressive.async_save:
            raise ConfigError("progressive_checkpoints.async_save", True,
                              "false with trainer=fsdp (every rank writes its shards of a milestone synchronously)")


def _int_at_least(value: Any, low: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= low


def builtin_corpus_size() -> int:
    from dimba.data.corpus import builtin_corpus

    return len(builtin_corpus().encode("utf-8"))


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def register_configs() -> None:
    """Register every group's schema; YAML files extend them through their defaults list."""
    from hydra.core.config_store import ConfigStore

    from dimba.resume import resolve_run_dir

    if not OmegaConf.has_resolver("dimba_run_dir"):
        OmegaConf.register_new_resolver("dimba_run_dir", resolve_run_dir)
    store = ConfigStore.instance()
    store.store(name="base_config", node=Config)
    store.store(group="model", name="base_model", node=DIMBAConfig)
    store.store(group="data", name="base_data", node=DataConfig)
    store.store(group="trainer", name="base_trainer", node=TrainerConfig)
    store.store(group="optim", name="base_optim", node=OptimConfig)
    store.store(group="growth", name="base_growth", node=GrowthConfig)
    store.store(group="progressive_checkpoints", name="base_progressive_checkpoints", node=ProgressiveCheckpointsConfig)
    store.store(group="objective", name="base_objective", node=ObjectiveConfig)


def validate(cfg: DictConfig) -> Config:
    """The composed config as typed, validated objects, or a ConfigError."""
    try:
        config = OmegaConf.to_object(cfg)
    except ConfigError:
        raise
    except OmegaConfBaseException as exc:
        cause = exc.__cause__ if isinstance(exc.__cause__, ConfigError) else None
        if cause is not None:
            raise cause from None
        key = getattr(exc, "full_key", None) or "config"
        raise ConfigError(str(key), getattr(exc, "value", None), str(exc).splitlines()[0]) from None
    if not isinstance(config, Config):
        raise ConfigError("config", type(config).__name__, "a config composed from conf/config.yaml")
    return config
