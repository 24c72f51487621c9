"""The config: one dataclass schema per Hydra group, validated once, free of torch.

A bad value raises `dimba.errors.ConfigError` (key, value, what is accepted) before anything
heavy is imported; `validate` turns a composed DictConfig into these objects, and
`Recipe` is the part of it that says how a DIMBA trains (what both trainers take).
"""

from dimba.config.recipe import Recipe
from dimba.config.schema import BYTE_VOCAB, Config
from dimba.config.store import register_configs, validate
from dimba.config.trainer import TrainerConfig, strategy_name
from dimba.config.training import GrowthConfig, OptimConfig, ProgressiveCheckpointsConfig, ValidationConfig
from dimba.data.config import DataConfig
from dimba.model.config import DIMBAConfig
from dimba.objective import ObjectiveConfig

ModelConfig = DIMBAConfig  # the `model` group's schema is the architecture itself

__all__ = ["BYTE_VOCAB", "Config", "DataConfig", "DIMBAConfig", "GrowthConfig", "ModelConfig", "ObjectiveConfig",
           "OptimConfig", "ProgressiveCheckpointsConfig", "Recipe", "TrainerConfig", "register_configs",
           "strategy_name", "validate", "ValidationConfig"]
