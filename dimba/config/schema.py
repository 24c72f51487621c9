"""The whole run's config: one field per group, plus the run's own options and the checks
that need more than one group."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping, Optional

from omegaconf import MISSING

from dimba.checkpointing.discovery import check_resumable
from dimba.config.checks import finite, int_at_least, positive_int
from dimba.config.loggers import LoggerConfig, check_logger_packages
from dimba.config.trainer import DIMBA_FSDP, SUPPORTED_STRATEGIES, TrainerConfig
from dimba.config.training import (GrowthConfig, OptimConfig, ProgressiveCheckpointsConfig, ValidationConfig,
                                   check_lr_options)
from dimba.data.config import ShardsDataConfig, TokenizerConfig
from dimba.errors import CheckpointLoadError, ConfigError
from dimba.growth.schedule import resolve_steps, validate_schedule
from dimba.model.config import DIMBAConfig, mamba_ssm_installed
from dimba.objective import ObjectiveConfig

BYTE_VOCAB = 256


@dataclass
class Config:
    model: DIMBAConfig = MISSING
    data: Any = MISSING
    """`dimba.data.config.DataConfig` (builtin, text_files) or `ShardsDataConfig` (shards)."""
    tokenizer: TokenizerConfig = MISSING
    trainer: TrainerConfig = MISSING
    optim: OptimConfig = MISSING
    growth: GrowthConfig = MISSING
    progressive_checkpoints: ProgressiveCheckpointsConfig = MISSING
    objective: ObjectiveConfig = MISSING
    logger: LoggerConfig = MISSING
    validation: ValidationConfig = field(default_factory=ValidationConfig)
    """The likelihood bound at each validation: `validation.bpb_sequences=64 validation.bpb_samples=8`."""
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
    trainer_memory_gb: Optional[float] = None
    """Memory of one device (GB, 1e9 bytes) to plan against: `dry_run` shows what each stage
    needs per rank, and a run whose stage cannot fit stops before training. null: detected
    (the GPU's; on CPUs the host's memory shared by its processes)."""
    last_checkpoint_every_n_steps: int = 50
    """How often Lightning's `checkpoints/last.ckpt` is refreshed (it is also written at the
    end of training and when the process receives SIGTERM)."""

    def __post_init__(self) -> None:
        if not int_at_least(self.seed, 0) or self.seed >= 2**32:
            raise ConfigError("seed", self.seed, "an integer in [0, 2**32)")
        self.model = self.objective.network(self.model)  # the objective decides the network's variant
        self.growth.schedule = resolve_steps(self.growth.schedule, self.trainer.max_steps)
        validate_schedule(self.model, self.growth.schedule)
        check_lr_options(self.optim, self.growth)
        self.objective.check_diffusion_steps(self.model.diffusion_steps)
        self._check_strategy()
        check_logger_packages(self.logger)
        if self.resume not in (None, "auto"):
            raise ConfigError("resume", self.resume, "auto or null")
        if self.resume is not None and self.ckpt_path is not None:
            raise ConfigError("ckpt_path", self.ckpt_path, "null when resume=auto (use one or the other)")
        positive_int("last_checkpoint_every_n_steps", self.last_checkpoint_every_n_steps)
        if self.trainer_memory_gb is not None and not (finite(self.trainer_memory_gb) and self.trainer_memory_gb > 0):
            raise ConfigError("trainer_memory_gb", self.trainer_memory_gb, "a positive number of GB, or null to detect it")
        if self.model.scan == "mamba_ssm" and not mamba_ssm_installed():
            raise ConfigError("model.scan", self.model.scan, "auto | torch (mamba-ssm is not installed here)")
        if self.compile and self.trainer.strategy_name == "ddp_spawn":
            raise ConfigError("compile", True, "false with trainer.strategy=ddp_spawn (a compiled model cannot be "
                                               "pickled to the spawned processes; use trainer.strategy=ddp)")
        self._check_vocabulary()
        if self.ckpt_path is not None:
            try:
                check_resumable(Path(self.ckpt_path))
            except CheckpointLoadError as exc:
                raise ConfigError("ckpt_path", self.ckpt_path, "", line=f"ckpt_path: {exc}; accepted: a Lightning "
                                  "checkpoint (last.ckpt, a milestone .pt, or a sharded directory) or null") from None

    def _check_vocabulary(self) -> None:
        """The model's vocabulary follows the tokenizer (prepared data must be the tokenizer's)."""
        if isinstance(self.data, ShardsDataConfig):
            from dimba.data.format import read_manifest
            from dimba.data.records import check_tokenizer_config

            check_tokenizer_config(self.tokenizer, read_manifest(Path(self.data.path).expanduser(), key="data.path"),
                                   self.data.path)
        vocabulary = self.tokenizer.vocab_size
        if vocabulary is None:  # pretrained: the file says
            from dimba.data.tokenizer import load_tokenizer

            vocabulary = load_tokenizer(self.tokenizer).vocab_size
        if self.model.vocab_size not in (BYTE_VOCAB, vocabulary):
            raise ConfigError("model.vocab_size", self.model.vocab_size,
                              f"{vocabulary}, the vocabulary of tokenizer={self.tokenizer.name} (leave model.vocab_size unset)")
        self.model = replace(self.model, vocab_size=int(vocabulary))

    def _check_strategy(self) -> None:
        """Growth and milestones work on one device, DDP, and dimba's FSDP2 strategy
        (`trainer=fsdp`: sharded milestones, growth shard by shard); any other sharding
        strategy (Lightning's FSDP1 `trainer.strategy=fsdp`, DeepSpeed) would gather the model
        on one rank or cannot be grown."""
        strategy = self.trainer.strategy_name
        progressive = self.progressive_checkpoints
        if strategy not in SUPPORTED_STRATEGIES and (self.growth.schedule or progressive.enabled):
            raise ConfigError("trainer.strategy", strategy,
                              f"{' | '.join(SUPPORTED_STRATEGIES)} with growth or milestone checkpoints "
                              "(or growth=none progressive_checkpoints=disabled)")
        if strategy == "fsdp" and self.model.noise_schedule == "learned":  # its warp is read outside the forward
            raise ConfigError("model.noise_schedule", "learned", "cosine | cosine_zero_snr under FSDP (a learned "
                              "schedule trains on one device or under DDP)")
        raw = self.trainer.strategy
        ours = isinstance(raw, Mapping) and raw.get("_target_") == DIMBA_FSDP
        if strategy == "fsdp" and not ours and (self.growth.schedule or progressive.enabled):
            raise ConfigError("trainer.strategy", raw if isinstance(raw, str) else dict(raw),
                              f"trainer=fsdp (dimba's FSDP2 strategy, {DIMBA_FSDP}) with growth or milestone "
                              "checkpoints: it grows shard by shard and each rank writes its own shards")
