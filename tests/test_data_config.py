"""The `tokenizer` group and `data=shards` compose from conf/ against their schemas, and a
bad value is refused when the config becomes objects (before anything trains)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf

from dimba.data.config import ShardsDataConfig, TokenizerConfig
from dimba.data.prepare import prepare
from dimba.errors import ConfigError

CONF = Path(__file__).resolve().parents[1] / "conf"


@pytest.fixture(scope="module", autouse=True)
def schemas():
    """What `dimba.config.register_configs` registers for these groups."""
    store = ConfigStore.instance()
    store.store(group="tokenizer", name="base_tokenizer", node=TokenizerConfig)
    store.store(group="data", name="base_shards_data", node=ShardsDataConfig)


def compose_group(*overrides: str):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(overrides=list(overrides))


@pytest.mark.parametrize("option, name, vocab", [("bytes", "bytes", 256), ("bpe", "bpe", 32000)])
def test_tokenizer_options_compose(option, name, vocab):
    tokenizer = OmegaConf.to_object(compose_group(f"+tokenizer={option}").tokenizer)
    assert isinstance(tokenizer, TokenizerConfig) and (tokenizer.name, tokenizer.vocab_size) == (name, vocab)


def test_pretrained_needs_a_local_path(tmp_path):
    with pytest.raises(ConfigError, match=r"^tokenizer.path: None is invalid; accepted: a local tokenizer.json"):
        OmegaConf.to_object(compose_group("+tokenizer=pretrained").tokenizer)
    with pytest.raises(ConfigError, match="tokenizer.vocab_size: 12 is invalid"):
        OmegaConf.to_object(compose_group("+tokenizer=bpe", "tokenizer.vocab_size=12").tokenizer)


def test_data_shards_composes_and_checks_its_directory(tmp_path):
    with pytest.raises(ConfigError, match=r"^data.path: '' is invalid; accepted: a directory written by"):
        OmegaConf.to_object(compose_group("+data=shards").data)
    (tmp_path / "text.txt").write_text("words and more words\n" * 500)
    prepare([str(tmp_path / "text.txt")], tmp_path / "prepared", workers=0)
    cfg = compose_group("+data=shards", f"data.path={tmp_path / 'prepared'}", "data.seq_len=64", "data.batch_size=4")
    data = OmegaConf.to_object(cfg.data)
    assert isinstance(data, ShardsDataConfig) and data._target_ == "dimba.data.ShardsDataModule"
    with pytest.raises(ConfigError, match=r"^data.seq_len: 4096 is invalid; accepted: at most 525"):
        OmegaConf.to_object(compose_group("+data=shards", f"data.path={tmp_path / 'prepared'}", "data.seq_len=4096").data)
