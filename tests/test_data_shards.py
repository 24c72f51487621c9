"""`data=shards`: training reads prepared shards memory-mapped, in the same order for any
number of loader workers, resumes mid-epoch exactly, and refuses a bad `data.*` in one line."""

from __future__ import annotations

import json
import pickle
from collections import Counter

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from dimba.data import ShardsDataModule
from dimba.data.config import ShardsDataConfig, TokenizerConfig
from dimba.data.prepare import prepare
from dimba.errors import ConfigError

TEXT = "".join(f"record {i:04d}: shards are memory-mapped and streamed, never loaded whole.\n" for i in range(3000))


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """About 220 KB of bytes in ~55 shards of ~4 KB: many windows cross a shard boundary."""
    root = tmp_path_factory.mktemp("shards")
    (root / "corpus.txt").write_text(TEXT)
    prepare([str(root / "corpus.txt")], root / "prepared", val_fraction=0.05, workers=0, piece_bytes=4096)
    return root / "prepared"


def epoch(loader, epoch_index: int = 0):
    loader.sampler.set_epoch(epoch_index)
    return [batch.clone() for batch in loader]


def test_sequences_are_the_stream_cut_into_windows_across_shard_boundaries(prepared):
    data = ShardsDataModule(str(prepared), seq_len=100, batch_size=4)
    data.setup()
    manifest = data.manifest
    assert len(manifest["shards"]) > 40
    n_val = int(len(TEXT) * 0.05)
    assert manifest["tokens"] == {"train": len(TEXT) - n_val, "val": n_val}
    assert len(data.train_set) == (len(TEXT) - n_val) // 100 and len(data.val_set) == n_val // 100
    text = TEXT.encode()
    for i in range(len(data.train_set)):
        assert bytes(data.train_set[i].tolist()) == text[i * 100:(i + 1) * 100]
    assert bytes(data.val_set[0].tolist()) == text[len(text) - n_val:len(text) - n_val + 100]
    assert data.train_set[0].dtype == torch.int64 and data.vocab_size == 256


def test_loader_workers_split_the_epoch_disjointly_and_keep_the_order(prepared):
    data = ShardsDataModule(str(prepared), seq_len=64, batch_size=8, seed=5)
    data.setup()
    in_process = epoch(data.train_dataloader())
    workers = ShardsDataModule(str(prepared), seq_len=64, batch_size=8, seed=5, num_workers=2)
    workers.setup()
    with_workers = epoch(workers.train_dataloader())
    assert len(with_workers) == len(in_process) == len(data.train_set) // 8
    for a, b in zip(in_process, with_workers):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    seen = Counter(bytes(row.tolist()) for batch in with_workers for row in batch)
    every = Counter(bytes(data.train_set[i].tolist()) for i in range(len(data.train_set)))
    assert sum(seen.values()) == len(with_workers) * 8 and not seen - every  # no sequence twice in an epoch
    assert not torch.equal(torch.cat(in_process), torch.cat(epoch(data.train_dataloader(), 1)))  # reshuffled


def test_the_dataset_reaches_workers_without_its_data(prepared):
    data = ShardsDataModule(str(prepared), seq_len=64, batch_size=8)
    data.setup()
    data.train_set[3]  # maps the files in this process
    payload = pickle.dumps(data.train_set)
    assert len(payload) < 20_000 < len(TEXT)  # paths and offsets, not tokens
    copy = pickle.loads(payload)
    assert copy.stream._maps is None and torch.equal(copy[3], data.train_set[3])


def test_a_loader_resumed_mid_epoch_continues_with_the_next_batch(prepared):
    data = ShardsDataModule(str(prepared), seq_len=64, batch_size=8, seed=1, num_workers=2)
    data.setup()
    straight = epoch(data.train_dataloader(), 2)
    resumed = data.train_dataloader()
    resumed.load_state_dict({"epoch": 2, "trained_batches": 7})
    rest = [b.clone() for b in resumed]
    assert len(rest) == len(straight) - 7
    for a, b in zip(rest, straight[7:]):
        assert torch.equal(a, b)


class RecordLoss(L.Callback):
    def __init__(self):
        self.losses = {}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.losses[trainer.global_step] = float(outputs["loss"])


def fit(model_config, path, run_dir, max_steps, ckpt_path=None):
    from dimba.training import DIMBALightningModule

    L.seed_everything(0, verbose=False)
    module = DIMBALightningModule(model_config=model_config, warmup_steps=2, total_steps=12,
                                  growth_schedule=[{"step": 4, "op": "depth", "n_layers": 2}],
                                  enable_progressive_checkpoints=False)
    record = RecordLoss()
    trainer = L.Trainer(max_steps=max_steps, accelerator="cpu", logger=False, enable_progress_bar=False,
                        enable_model_summary=False, limit_val_batches=0, use_distributed_sampler=False,
                        callbacks=[record, ModelCheckpoint(dirpath=run_dir, save_top_k=0, save_last=True,
                                                           every_n_train_steps=1)])
    trainer.fit(module, datamodule=ShardsDataModule(str(path), seq_len=32, batch_size=4, num_workers=2),
                ckpt_path=ckpt_path)
    return module, record.losses


def test_training_interrupted_and_resumed_on_shards_equals_uninterrupted(tmp_path, prepared, tiny_model_config):
    straight, straight_losses = fit(tiny_model_config, prepared, tmp_path / "straight", 12)
    fit(tiny_model_config, prepared, tmp_path / "cut", 6)  # "killed" after step 6, past a growth event
    resumed, resumed_losses = fit(tiny_model_config, prepared, tmp_path / "cut", 12,
                                  ckpt_path=str(tmp_path / "cut" / "last.ckpt"))
    assert sorted(resumed_losses) == list(range(7, 13))
    for step in range(7, 13):
        assert resumed_losses[step] == pytest.approx(straight_losses[step], rel=1e-5, abs=1e-6)
    torch.testing.assert_close(resumed.model.state_dict(), straight.model.state_dict(), rtol=1e-5, atol=1e-6)


def config_error(**fields) -> ConfigError:
    with pytest.raises(ConfigError) as err:
        ShardsDataConfig(**fields)
    assert "\n" not in str(err.value)
    return err.value


def test_bad_data_settings_are_refused_in_one_line(tmp_path, prepared):
    accepted = "a directory written by `dimba data prepare` (it holds manifest.json)"
    assert str(config_error(path="")) == f"data.path: '' is invalid; accepted: {accepted}"
    assert str(config_error(path=str(tmp_path / "nowhere"))) == f"data.path: '{tmp_path / 'nowhere'}' is invalid; accepted: {accepted}"
    (tmp_path / "texts").mkdir()
    (tmp_path / "texts" / "a.txt").write_text("not prepared")
    assert config_error(path=str(tmp_path / "texts")).accepted == accepted
    assert "mount object storage" in config_error(path="s3://bucket/prepared").accepted
    error = config_error(path=str(prepared), seq_len=20_000)
    assert str(error).startswith(f"data.seq_len: 20000 is invalid; accepted: at most {int(len(TEXT) * 0.05)}: "
                                 f"the validation split of {prepared} holds")
    assert config_error(path=str(prepared), seq_len=1000, batch_size=1000).accepted.startswith("seq_len*batch_size at most")
    assert config_error(path=str(prepared), num_workers=-1).key == "data.num_workers"
    ShardsDataConfig(path=str(prepared), seq_len=512, batch_size=8)  # a good one passes


def test_damaged_prepared_data_is_refused_before_training(tmp_path, prepared):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(prepared, copy)
    (copy / "shards" / "000001.bin").write_bytes(b"short")
    with pytest.raises(ConfigError, match=r"^data.path: '.*000001.bin' is invalid; accepted: a shard of \d+ tokens"):
        ShardsDataModule(str(copy), seq_len=32, batch_size=4).setup()
    (copy / "shards" / "000001.bin").unlink()
    with pytest.raises(ConfigError, match="every shard the manifest lists"):
        ShardsDataConfig(path=str(copy))
    (copy / "manifest.json").write_text("{ not json")
    with pytest.raises(ConfigError, match="a readable manifest.json"):
        ShardsDataConfig(path=str(copy))
    manifest = json.loads((prepared / "manifest.json").read_text())
    (copy / "manifest.json").write_text(json.dumps({**manifest, "version": 99}))
    with pytest.raises(ConfigError, match="format version 1"):
        ShardsDataConfig(path=str(copy))


def test_the_tokenizer_group_must_name_the_tokenizer_the_data_was_prepared_with(tmp_path, prepared):
    ShardsDataModule(str(prepared), seq_len=32, batch_size=4, tokenizer=TokenizerConfig())
    with pytest.raises(ConfigError) as err:
        ShardsDataModule(str(prepared), seq_len=32, batch_size=4, tokenizer={"name": "bpe"})
    assert str(err.value) == f"tokenizer.name: 'bpe' is invalid; accepted: bytes (the tokenizer {prepared} was prepared with)"

    (tmp_path / "t.txt").write_text(TEXT[:40_000])
    prepare([str(tmp_path / "t.txt")], tmp_path / "bpe", TokenizerConfig(name="bpe", vocab_size=600), workers=0)
    data = ShardsDataModule(str(tmp_path / "bpe"), seq_len=32, batch_size=4, tokenizer={"name": "bpe", "vocab_size": 600})
    assert data.manifest["dtype"] == "uint16" and 256 < data.vocab_size <= 600
    assert data.tokenizer_record["sha256"] == data.manifest["tokenizer"]["sha256"]
    data.setup()
    assert data.tokenizer.decode(data.train_set[0].tolist()) == data.tokenizer.decode(
        data.train_set.stream.read(0, 32).tolist())
    with pytest.raises(ConfigError, match=r"^tokenizer.vocab_size: 32000 is invalid; accepted: 600 \(the vocabulary"):
        ShardsDataModule(str(tmp_path / "bpe"), seq_len=32, batch_size=4, tokenizer={"name": "bpe"})
