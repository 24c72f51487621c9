"""Registering the schemas with Hydra, and turning a composed config into checked objects."""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

from omegaconf import DictConfig, OmegaConf, read_write
from omegaconf.errors import OmegaConfBaseException

from dimba.config.loggers import LoggerConfig
from dimba.config.schema import Config
from dimba.config.trainer import TrainerConfig
from dimba.config.training import GrowthConfig, OptimConfig, ProgressiveCheckpointsConfig
from dimba.data.config import DataConfig, ShardsDataConfig, TokenizerConfig
from dimba.errors import ConfigError
from dimba.model.config import DIMBAConfig
from dimba.objective import ObjectiveConfig

# (group, schema): YAML options extend `base_<group>` through their defaults list.
GROUPS = (
    ("model", DIMBAConfig),
    ("data", DataConfig),
    ("trainer", TrainerConfig),
    ("optim", OptimConfig),
    ("growth", GrowthConfig),
    ("progressive_checkpoints", ProgressiveCheckpointsConfig),
    ("objective", ObjectiveConfig),
    ("logger", LoggerConfig),
    ("tokenizer", TokenizerConfig),
)


def register_configs() -> None:
    """Register every group's schema, and the `dimba_run_dir` resolver of `hydra.run.dir`."""
    from hydra.core.config_store import ConfigStore

    from dimba.checkpointing.discovery import resolve_run_dir

    if not OmegaConf.has_resolver("dimba_run_dir"):
        OmegaConf.register_new_resolver("dimba_run_dir", resolve_run_dir)
    store = ConfigStore.instance()
    store.store(name="base_config", node=Config)
    for group, schema in GROUPS:
        store.store(group=group, name=f"base_{group}", node=schema)
    store.store(group="data", name="base_shards_data", node=ShardsDataConfig)


def with_prepared_tokenizer(cfg: DictConfig) -> DictConfig:
    """Prepared data knows its tokenizer (a copy of `cfg` is returned where it fills one in):

    - `tokenizer=auto`, the default, is bytes, or with `data=shards` the tokenizer
      `data.path` was prepared with (bytes, bpe of its vocabulary, or its tokenizer.json);
      naming a tokenizer insists on it (the checks refuse one that is not the data's);
    - `data=shards tokenizer=bpe` with `tokenizer.vocab_size` unset trains the vocabulary
      the data was prepared with (unreadable data is left to the checks).
    """
    data, tokenizer = cfg.get("data"), cfg.get("tokenizer")
    if data is None or tokenizer is None:
        return cfg
    shards = OmegaConf.get_type(data) is ShardsDataConfig
    name = tokenizer.get("name")
    if name == "auto" and shards:  # (elsewhere auto is bytes: TokenizerConfig says so)
        from dimba.data.config import PREPARED
        from dimba.data.format import TOKENIZER_FILE, read_manifest

        if not data.get("path"):
            raise ConfigError("data.path", "", PREPARED)
        directory = Path(str(data.path)).expanduser()
        manifest = read_manifest(directory, key="data.path")
        prepared, settings = manifest["tokenizer"], manifest.get("settings", {})
        cfg = copy.deepcopy(cfg)
        with read_write(cfg.tokenizer):
            cfg.tokenizer.name = prepared["name"]
            if prepared["name"] == "bpe":
                cfg.tokenizer.vocab_size = settings.get("vocab_size")
            elif prepared["name"] == "pretrained":
                cfg.tokenizer.path = str(directory / (prepared.get("file") or TOKENIZER_FILE))
        return cfg
    if name != "bpe" or tokenizer.get("vocab_size") is not None or not shards or not data.get("path"):
        return cfg
    from dimba.data.format import read_manifest

    try:
        vocabulary = read_manifest(Path(str(data.path)).expanduser(), key="data.path").get("settings", {}).get("vocab_size")
    except ConfigError:
        return cfg
    if not isinstance(vocabulary, int):
        return cfg
    cfg = copy.deepcopy(cfg)
    with read_write(cfg.tokenizer):
        cfg.tokenizer.vocab_size = vocabulary
    return cfg


def validate(cfg: DictConfig) -> Config:
    """The composed config as typed, validated objects, or a ConfigError."""
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:  # `files: ???` in data=text_files: the option needs the value set
        raise ConfigError(missing[0], "???", f"a value: this option needs it set ({missing[0]}=...)")
    cfg = with_prepared_tokenizer(cfg)
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
    refuse_unknown_keys(config)
    return config


def refuse_unknown_keys(config: Config) -> None:
    """`+trainer.foo=1` adds a key no schema has (OmegaConf keeps it as an attribute): refused
    here in one line, not as Lightning's or Hydra's traceback when the run builds its Trainer."""
    for group in dataclasses.fields(config):
        node = getattr(config, group.name)
        if not dataclasses.is_dataclass(node):
            continue
        known = {f.name for f in dataclasses.fields(node)}
        for key, value in vars(node).items():
            if key not in known and not key.startswith("_"):
                raise ConfigError(f"{group.name}.{key}", value, f"a key of {group.name} (python train.py --cfg job "
                                                                f"lists them all)")
