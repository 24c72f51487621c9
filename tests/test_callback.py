"""The milestone callback inside a real `Trainer.fit`, used as the Python API shows."""

from __future__ import annotations

import json
import logging

import lightning as L
import torch

import dimba.training.module as module_module
from dimba.training import DIMBALightningModule


def make_module(config, save_dir, milestones, **kwargs):
    return DIMBALightningModule(
        vocab_size=256,
        model_config=config.to_dict(),
        enable_progressive_checkpoints=True,
        progressive_milestones=milestones,
        progressive_save_dir=str(save_dir),
        warmup_steps=0,
        **kwargs,
    )


def test_seed_programmatic_usage_with_a_plain_trainer(tmp_path, tiny_model_config, token_loader, quiet_trainer_kwargs, caplog):
    save_dir = tmp_path / "progressive_checkpoints"
    module = make_module(tiny_model_config, save_dir, [1000, 2000, 10**12])
    n = sum(p.numel() for p in module.parameters())
    with caplog.at_level(logging.INFO, logger="dimba"):
        L.Trainer(max_steps=3, **quiet_trainer_kwargs).fit(module, token_loader())

    names = sorted(p.name for p in save_dir.iterdir())
    assert names == [
        "checkpoint_1.0K_step_1.json", "checkpoint_1.0K_step_1.pt",
        "checkpoint_2.0K_step_1.json", "checkpoint_2.0K_step_1.pt",
    ]
    assert f"🎯 Progressive checkpoint saved: 1.0K (current: {n / 1e3:.1f}K) at step 1" in caplog.text
    assert f"   Path: {save_dir / 'checkpoint_1.0K_step_1.pt'}" in caplog.text

    checkpoint = torch.load(save_dir / "checkpoint_2.0K_step_1.pt", weights_only=True)
    assert checkpoint["global_step"] == 1 and checkpoint["current_params"] == n
    assert checkpoint["target_milestone"] == 2000 and checkpoint["reached_milestones"] == [1000, 2000]
    assert checkpoint["milestones"] == [1000, 2000, 10**12]
    # Taken after the optimizer step: real AdamW moments and step count.
    states = checkpoint["optimizer_state_dict"]["state"]
    assert states and all(s["step"] == 1 for s in states.values())
    assert sum(bool(s["exp_avg"].abs().sum() > 0) for s in states.values()) > len(states) // 2
    assert set(checkpoint["model_state_dict"]) == set(module.model.state_dict())
    assert checkpoint["metadata"]["architecture"] == tiny_model_config.to_dict()
    assert "train/loss" in checkpoint["metadata"]

    sidecar = json.loads((save_dir / "checkpoint_1.0K_step_1.json").read_text())
    assert sidecar["target_milestone"] == 1000 and sidecar["milestone_str"] == "1.0K"
    assert sidecar["checkpoint"] == "checkpoint_1.0K_step_1.pt"
    assert module.progressive_checkpoint.manager.get_next_milestone() == 10**12


def test_a_milestone_checkpoint_resumes_without_saving_again(tmp_path, tiny_model_config, token_loader, quiet_trainer_kwargs):
    save_dir = tmp_path / "milestones"
    L.Trainer(max_steps=2, **quiet_trainer_kwargs).fit(make_module(tiny_model_config, save_dir, [1000]), token_loader())
    path = save_dir / "checkpoint_1.0K_step_1.pt"
    before = path.stat().st_mtime_ns

    resumed = make_module(tiny_model_config, save_dir, [1000])
    trainer = L.Trainer(max_steps=5, **quiet_trainer_kwargs)
    trainer.fit(resumed, token_loader(), ckpt_path=str(path))
    assert trainer.global_step == 5
    assert sorted(p.name for p in save_dir.glob("*.pt")) == ["checkpoint_1.0K_step_1.pt"]
    assert path.stat().st_mtime_ns == before
    assert resumed.progressive_checkpoint.manager.reached_milestones == [1000]


def test_a_milestone_crossed_later_is_saved_at_that_step(tmp_path, tiny_model_config, token_loader, quiet_trainer_kwargs):
    """Stands in for growth: parameters become trainable at step 3 and the module says so."""
    probe = make_module(tiny_model_config, tmp_path / "probe", [1])
    full = sum(p.numel() for p in probe.parameters())
    small = full - sum(p.numel() for p in probe.model.blocks.parameters())
    module = make_module(tiny_model_config, tmp_path, [small, full])
    for p in module.model.blocks.parameters():
        p.requires_grad_(False)

    class Unfreeze(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, *args):
            if trainer.global_step == 3:
                for p in pl_module.model.blocks.parameters():
                    p.requires_grad_(True)
                pl_module.structure_version += 1

    L.Trainer(max_steps=5, callbacks=[Unfreeze()], **quiet_trainer_kwargs).fit(module, token_loader())
    listed = module.progressive_checkpoint.manager.list_checkpoints()
    assert [(e["target_milestone"], e["global_step"]) for e in listed] == [(small, 1), (full, 3)]


def test_parameter_count_is_cached_until_the_structure_changes(tmp_path, tiny_model_config, token_loader, quiet_trainer_kwargs, monkeypatch):
    calls = []
    real = module_module.count_parameters
    monkeypatch.setattr(module_module, "count_parameters", lambda m: (calls.append(1), real(m))[1])
    module = make_module(tiny_model_config, tmp_path, [10**12])
    L.Trainer(max_steps=6, **quiet_trainer_kwargs).fit(module, token_loader())
    assert len(calls) == 1
    module.structure_version += 1
    module.progressive_checkpoint.parameter_count(module)
    assert len(calls) == 2


def test_gradient_accumulation_checks_after_real_optimizer_steps(tmp_path, tiny_model_config, token_loader, quiet_trainer_kwargs):
    module = make_module(tiny_model_config, tmp_path, [1000])
    L.Trainer(max_steps=2, accumulate_grad_batches=3, **quiet_trainer_kwargs).fit(module, token_loader())
    checkpoint = torch.load(tmp_path / "checkpoint_1.0K_step_1.pt", weights_only=True)
    assert all(s["step"] == 1 for s in checkpoint["optimizer_state_dict"]["state"].values())
    assert checkpoint["global_step"] == 1
    assert checkpoint["loops"]["fit_loop"]["epoch_loop.batch_progress"]["total"]["ready"] == 3


def test_without_progressive_checkpoints_nothing_is_written(tmp_path, tiny_model_config, token_loader, quiet_trainer_kwargs):
    module = DIMBALightningModule(vocab_size=256, model_config=tiny_model_config, progressive_save_dir=str(tmp_path / "x"))
    assert module.configure_callbacks() == []
    L.Trainer(max_steps=2, **quiet_trainer_kwargs).fit(module, token_loader())
    assert not (tmp_path / "x").exists()
