"""Training on prepared data as a user does: `dimba data prepare`, then train.py's run on
`data=shards tokenizer=bpe`; the model's vocabulary is the tokenizer's, checkpoints carry it,
and every tool decodes with it."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

import dimba
from dimba.cli.main import main as dimba_cli
from dimba.config import register_configs, validate
from dimba.data.config import TokenizerConfig
from dimba.data.prepare import prepare
from dimba.errors import ConfigError
from dimba.run import train
from conftest import HANG_GUARD_S

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
register_configs()
TEXT = "".join(f"Line {i}: the growing model reads its shards, one window at a time, and learns.\n" for i in range(900))
SMALL = ["model.d_model=32", "model.n_layers=1", "model.head_dim=16", "data.seq_len=32", "data.batch_size=4",
         "trainer.limit_val_batches=1", "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false",
         "growth=none", "progressive_checkpoints.milestones=[10K]"]


@pytest.fixture(scope="module")
def bpe_data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("bpe")
    (root / "corpus.txt").write_text(TEXT)
    prepare([str(root / "corpus.txt")], root / "prepared", tokenizer=TokenizerConfig(name="bpe", vocab_size=300),
            workers=0)
    return root / "prepared"


def compose_config(*overrides: str):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return validate(compose("config", overrides=[*SMALL, *overrides]))


def test_tokenizer_bpe_on_prepared_data_takes_its_vocabulary_unless_one_is_set(bpe_data):
    config = compose_config("data=shards", f"data.path={bpe_data}", "tokenizer=bpe")
    assert config.tokenizer.vocab_size == 300 and config.model.vocab_size == 300
    with pytest.raises(ConfigError, match=r"^tokenizer.vocab_size: 32000 is invalid; accepted: 300 \(the vocabulary"):
        compose_config("data=shards", f"data.path={bpe_data}", "tokenizer=bpe", "tokenizer.vocab_size=32000")


def test_prepared_data_brings_its_own_tokenizer(bpe_data):
    """`data=shards` without a tokenizer takes the one the data was prepared with, vocabulary
    and all; naming another is insisting on it (and refused when it is not the data's)."""
    config = compose_config("data=shards", f"data.path={bpe_data}")
    assert (config.tokenizer.name, config.tokenizer.vocab_size, config.model.vocab_size) == ("bpe", 300, 300)
    with pytest.raises(ConfigError, match=r"^tokenizer.name: 'bytes' is invalid; accepted: bpe \(the tokenizer"):
        compose_config("data=shards", f"data.path={bpe_data}", "tokenizer=bytes")
    assert compose_config().tokenizer.name == "bytes"  # the built-in corpus keeps the byte default


def test_a_bpe_run_records_its_tokenizer_and_every_tool_decodes_with_it(bpe_data, tmp_path, capsys):
    config = compose_config("data=shards", f"data.path={bpe_data}", "tokenizer=bpe", "tokenizer.vocab_size=300",
                            "trainer.max_steps=2", "trainer.val_check_interval=2")
    result = train(config, tmp_path)
    model = result.trainer.lightning_module.model
    assert model.config.vocab_size == 300 and model.embedding.weight.shape[0] == model.config.embedding_rows
    milestone = next((tmp_path / "progressive_checkpoints").glob("*.pt"))
    loaded = dimba.load_model(milestone)
    assert loaded.tokenizer.name == "bpe" and loaded.tokenizer.vocab_size == 300
    assert loaded.tokenizer.decode(loaded.tokenizer.encode_ids("the growing model")) == "the growing model"

    out = tmp_path / "export"
    assert dimba_cli(["checkpoints", "export", str(milestone), str(out)]) == 0
    assert json.loads((out / "config.json").read_text())["tokenizer"]["name"] == "bpe"
    assert (out / "tokenizer.json").is_file()  # shipped beside the weights
    assert dimba.load_model(out).tokenizer.sha256 == loaded.tokenizer.sha256
    capsys.readouterr()
    assert dimba_cli(["generate", str(out), "--prompt", "Line 7:", "--length", "12", "--steps", "2"]) == 0
    sample = capsys.readouterr().out
    assert sample.startswith("Line 7:")  # decoded with the BPE, not as bytes


def test_a_checkpoint_continues_only_on_data_of_its_tokenizer(bpe_data, tmp_path):
    result = train(compose_config("trainer.max_steps=2", "trainer.val_check_interval=2"), tmp_path / "bytes")
    assert result.trainer.lightning_module.model.config.vocab_size == 256
    last = tmp_path / "bytes" / "checkpoints" / "last.ckpt"
    config = compose_config("data=shards", f"data.path={bpe_data}", "tokenizer=bpe", "tokenizer.vocab_size=300",
                            "trainer.max_steps=4", f"ckpt_path={last}")
    with pytest.raises(ConfigError, match=r"data.path: .* is invalid; accepted: data prepared with the "
                                          r"checkpoint's tokenizer \(bytes\)"):
        train(config, tmp_path / "bpe")


@pytest.mark.parametrize("overrides, message", [
    (["data=shards"], r"data.path: '' is invalid; accepted: a directory written by `dimba data prepare`"),
    (["data=shards", "data.path={tmp}"], r"data.path: .* is invalid; accepted: a directory written by `dimba data prepare`"),
    (["data=shards", "data.path={data}", "tokenizer=bytes"], r"tokenizer.name: 'bytes' is invalid; accepted: bpe \(the tokenizer"),
    (["data=shards", "data.path={data}", "tokenizer=bpe", "tokenizer.vocab_size=500"],
     r"tokenizer.vocab_size: 500 is invalid; accepted: 300 \(the vocabulary"),
    (["data=shards", "data.path={data}", "tokenizer=bpe", "tokenizer.vocab_size=300", "data.seq_len=100000"],
     r"data.seq_len: 100000 is invalid"),
    (["tokenizer=bpe", "tokenizer.vocab_size=100"], r"tokenizer.vocab_size: 100 is invalid; accepted: an integer from 256"),
    (["tokenizer=bpe", "model.vocab_size=300"], r"model.vocab_size: 300 is invalid; accepted: 32000, the vocabulary of tokenizer=bpe"),
])
def test_bad_data_and_tokenizer_settings_are_one_line(bpe_data, tmp_path, overrides, message):
    with pytest.raises(ConfigError, match=message):
        compose_config(*[o.format(tmp=tmp_path, data=bpe_data) for o in overrides])


@pytest.mark.slow
def test_two_ddp_ranks_resume_shards_exactly(bpe_data, tmp_path):
    """Interrupted at step 3 and resumed equals uninterrupted: the same per-step losses, the
    same final weights, with each rank reading its own half of the epoch."""
    common = [*SMALL, "trainer=ddp_cpu", "data=shards", f"data.path={bpe_data}", "tokenizer=bpe",
              "tokenizer.vocab_size=300", "progressive_checkpoints=disabled", "trainer.val_check_interval=100",
              "trainer.limit_val_batches=0", "last_checkpoint_every_n_steps=3", "trainer.max_steps=6",
              "optim.total_steps=6"]  # stopping at step 3 must not change the LR schedule
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}

    def run(*args: str) -> None:
        result = subprocess.run([sys.executable, str(ROOT / "train.py"), *common, *args], cwd=tmp_path, env=env,
                                capture_output=True, text=True, timeout=HANG_GUARD_S)
        assert result.returncode == 0, result.stderr[-3000:]

    run(f"hydra.run.dir={tmp_path / 'straight'}")
    run(f"hydra.run.dir={tmp_path / 'resumed'}", "trainer.max_steps=3")
    run(f"hydra.run.dir={tmp_path / 'resumed'}", "resume=auto")

    def losses(run_dir: Path) -> dict:
        with open(run_dir / "logs" / "metrics.csv", newline="") as handle:
            return {int(r["step"]): float(r["train/loss"]) for r in csv.DictReader(handle) if r.get("train/loss")}

    straight, resumed = losses(tmp_path / "straight"), losses(tmp_path / "resumed")
    assert sorted(resumed) == sorted(straight) and len(straight) == 6
    assert [resumed[s] for s in sorted(resumed)] == pytest.approx([straight[s] for s in sorted(straight)], rel=1e-5)
    weights = [torch.load(tmp_path / d / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
               for d in ("straight", "resumed")]
    torch.testing.assert_close(weights[0], weights[1], rtol=1e-5, atol=1e-6)
