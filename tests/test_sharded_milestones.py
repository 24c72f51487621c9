"""Sharded milestones: a Distributed Checkpoint directory, listed, loaded and resumed like a file.

Lightning's FSDP needs a GPU, so the Trainer here runs a CPU stand-in whose
`save_checkpoint` is exactly FSDPStrategy's sharded branch (state dict and optimizer states
into `torch.distributed.checkpoint` shards, the rest into `meta.pt`). The callback's
sharded path, the sidecar's format, listing, `dimba.load_model`, `resume=auto`'s step
reading and the counting rule under parameter sharding are all real.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import lightning as L
import pytest
import torch
from lightning.fabric.strategies.fsdp import _distributed_checkpoint_save
from lightning.pytorch.strategies import FSDPStrategy, SingleDeviceStrategy

import dimba
from dimba.io.manager import ProgressiveCheckpointManager
from dimba.io.read import open_checkpoint
from dimba.training.directory_swap import WholeDirectorySaves
from dimba.model.params import architecture_parameters as count_parameters
from dimba.resume import checkpoint_step, newest_valid_checkpoint
from dimba.training import DIMBALightningModule


class ShardedSaveStrategy(SingleDeviceStrategy):
    """One CPU device that saves the way FSDPStrategy(state_dict_type="sharded") does."""

    _state_dict_type = "sharded"

    def save_checkpoint(self, checkpoint, filepath, storage_options=None) -> None:
        path = Path(filepath)
        path.mkdir(parents=True, exist_ok=True)
        converted = {"model": checkpoint.pop("state_dict")}
        converted.update({f"optimizer_{i}": s for i, s in enumerate(checkpoint.pop("optimizer_states", []))})
        _distributed_checkpoint_save(converted, path)
        torch.save(checkpoint, path / "meta.pt")


class AtomicShardedSaveStrategy(WholeDirectorySaves, ShardedSaveStrategy):
    """The stand-in with dimba's whole-directory swap, as dimba.training.fsdp.FSDPStrategy has it."""


def fit_sharded(tmp_path, tiny_model_config, token_loader, quiet_trainer_kwargs):
    save_dir = tmp_path / "milestones"
    torch.manual_seed(0)
    module = DIMBALightningModule(vocab_size=256, model_config=tiny_model_config.to_dict(), warmup_steps=0,
                                  enable_progressive_checkpoints=True, progressive_milestones=[1000, 10**12],
                                  progressive_save_dir=str(save_dir))
    kwargs = {k: v for k, v in quiet_trainer_kwargs.items() if k not in ("accelerator", "devices")}
    L.Trainer(max_steps=2, strategy=AtomicShardedSaveStrategy(torch.device("cpu")), **kwargs).fit(module, token_loader())
    return module, save_dir


def test_a_sharded_milestone_is_a_directory_that_lists_and_loads(tmp_path, tiny_model_config, token_loader,
                                                                quiet_trainer_kwargs):
    module, save_dir = fit_sharded(tmp_path, tiny_model_config, token_loader, quiet_trainer_kwargs)
    path = save_dir / "checkpoint_1.0K_step_1.pt"
    assert path.is_dir() and (path / ".metadata").is_file() and (path / "meta.pt").is_file()
    assert not list(save_dir.glob(".*"))  # the temporary directory was renamed, nothing left over

    sidecar = json.loads(path.with_suffix(".json").read_text())
    assert sidecar["checkpoint_format"] == "torch_dcp" and sidecar["target_milestone"] == 1000
    assert sidecar["size_bytes"] == sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    [entry] = ProgressiveCheckpointManager([1000], save_dir).list_checkpoints()
    assert entry["status"] == "ok" and entry["path"] == str(path)

    checkpoint = open_checkpoint(path).data
    assert checkpoint["global_step"] == 1 and checkpoint["target_milestone"] == 1000
    assert set(checkpoint["model_state_dict"]) == set(module.model.state_dict())
    assert checkpoint["optimizer_states"]  # the moments travel in the shards
    model = dimba.load_model(path)  # the step-1 weights, gathered from the shards in one process
    torch.manual_seed(0)  # the same run, saved as one file
    plain = DIMBALightningModule(vocab_size=256, model_config=tiny_model_config.to_dict(), warmup_steps=0,
                                 enable_progressive_checkpoints=True, progressive_milestones=[1000],
                                 progressive_save_dir=str(tmp_path / "plain"))
    L.Trainer(max_steps=1, **quiet_trainer_kwargs).fit(plain, token_loader())
    reference = torch.load(tmp_path / "plain" / "checkpoint_1.0K_step_1.pt", weights_only=True)["model_state_dict"]
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, reference[name]), name
    assert checkpoint_step(path) == 1
    assert newest_valid_checkpoint(tmp_path, save_dir) == path


def test_a_damaged_sharded_milestone_is_reported_not_listed_as_ok(tmp_path, tiny_model_config, token_loader,
                                                                  quiet_trainer_kwargs):
    _, save_dir = fit_sharded(tmp_path, tiny_model_config, token_loader, quiet_trainer_kwargs)
    path = save_dir / "checkpoint_1.0K_step_1.pt"
    next(p for p in path.iterdir() if p.suffix == ".distcp").unlink()
    [entry] = ProgressiveCheckpointManager([1000], save_dir).list_checkpoints()
    assert entry["status"] == "unreadable" and "bytes on disk" in entry["error"]
    assert newest_valid_checkpoint(tmp_path, save_dir) is None


def test_under_fsdp_the_count_is_the_full_model_on_every_rank(tiny_model_config):
    """A rank's FSDP shards are a fraction of each tensor; milestones compare the full size."""
    module = DIMBALightningModule(model_config=tiny_model_config)
    full = count_parameters(tiny_model_config)
    assert module.parameter_count() == full
    with torch.no_grad():  # what one of two ranks holds of each parameter
        for param in module.parameters():
            param.data = param.data.flatten()[: max(1, param.numel() // 2)].clone()
    module.structure_version += 1
    module._trainer = SimpleNamespace(strategy=FSDPStrategy())
    assert module.parameter_count() == full
    module._trainer = SimpleNamespace(strategy=SingleDeviceStrategy(torch.device("cpu")))
    module.structure_version += 1
    assert module.parameter_count() < full  # not sharded: the tensors are the truth


def test_trainer_fsdp_grows_and_saves_asynchronously_but_lightnings_fsdp1_is_refused():
    from hydra import compose, initialize_config_dir

    from dimba.config import register_configs, validate
    from dimba.errors import ConfigError

    register_configs()
    with initialize_config_dir(config_dir=str(Path(__file__).resolve().parents[1] / "conf"), version_base="1.3"):
        config = validate(compose("config", overrides=["trainer=fsdp", "progressive_checkpoints.async_save=true"]))
        assert config.growth.schedule and config.progressive_checkpoints.async_save
        with pytest.raises(ConfigError, match=r"trainer.strategy: 'fsdp' is invalid; accepted: trainer=fsdp \(dimba's FSDP2"):
            validate(compose("config", overrides=["trainer.strategy=fsdp"]))


def test_the_checkpoints_cli_lists_shows_and_exports_a_sharded_milestone(tmp_path, tiny_model_config, token_loader,
                                                                         quiet_trainer_kwargs, capsys):
    from dimba.cli.main import main

    _, save_dir = fit_sharded(tmp_path, tiny_model_config, token_loader, quiet_trainer_kwargs)
    path = save_dir / "checkpoint_1.0K_step_1.pt"
    capsys.readouterr()
    assert main(["checkpoints", "list", str(save_dir)]) == 0
    listed = capsys.readouterr().out
    assert "1.0K" in listed and "unreadable" not in listed
    assert main(["checkpoints", "show", str(path)]) == 0
    shown = capsys.readouterr().out
    assert "torch_dcp" in shown and "status" in shown and "ok" in shown
    export = tmp_path / "export"
    assert main(["checkpoints", "export", str(path), str(export)]) == 0
    exported = dimba.load_model(export)
    for name, tensor in dimba.load_model(path).state_dict().items():
        assert torch.equal(exported.state_dict()[name], tensor), name


def test_a_sharded_last_checkpoint_is_replaced_whole_and_survives_a_crash_mid_write(
        tmp_path, tiny_model_config, token_loader, quiet_trainer_kwargs, monkeypatch):
    from lightning.pytorch.callbacks import ModelCheckpoint

    last = tmp_path / "checkpoints" / "last.ckpt"
    kwargs = {k: v for k, v in quiet_trainer_kwargs.items() if k not in ("accelerator", "devices", "enable_checkpointing")}

    def fit(max_steps: int, ckpt_path=None) -> None:
        torch.manual_seed(0)
        module = DIMBALightningModule(vocab_size=256, model_config=tiny_model_config.to_dict(), warmup_steps=0)
        every_step = ModelCheckpoint(dirpath=str(last.parent), save_top_k=0, save_last=True, every_n_train_steps=1)
        L.Trainer(max_steps=max_steps, strategy=AtomicShardedSaveStrategy(torch.device("cpu")), callbacks=[every_step],
                  **kwargs).fit(module, token_loader(), ckpt_path=ckpt_path)

    fit(3)
    assert last.is_dir() and checkpoint_step(last) == 3 and not list(last.parent.glob(".*"))

    original = ShardedSaveStrategy.save_checkpoint

    def dies_after_the_shards(self, checkpoint, filepath, storage_options=None):
        checkpoint = dict(checkpoint)
        path = Path(filepath)
        path.mkdir(parents=True, exist_ok=True)
        _distributed_checkpoint_save({"model": checkpoint.pop("state_dict")}, path)
        raise RuntimeError("killed while writing meta.pt")

    monkeypatch.setattr(ShardedSaveStrategy, "save_checkpoint", dies_after_the_shards)
    with pytest.raises(RuntimeError, match="killed while writing"):
        fit(5)  # a new attempt; its first save of last.ckpt dies half-way
    monkeypatch.setattr(ShardedSaveStrategy, "save_checkpoint", original)
    assert checkpoint_step(last) == 3  # the old directory, whole: the torn write went to a temporary
    state = open_checkpoint(last).data
    assert state["global_step"] == 3 and state["optimizer_states"]
