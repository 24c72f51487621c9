"""Resume: an interrupted run continues exactly; nothing is saved twice or skipped."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from dimba.training.checkpoint_io import AtomicCheckpointIO
from dimba.data import TextDataModule
from dimba.training import DIMBALightningModule, SimpleTrainer
from dimba.utils.checkpointing import ProgressiveCheckpointManager

SCHEDULE = [{"step": 3, "op": "depth", "n_layers": 2}, {"step": 7, "op": "width", "d_model": 64}]
MILESTONES = [10_000, 20_000, 50_000]  # crossed at steps 1, 3 and 7
# CDLM consistency training on (the tiny model has 100 diffusion steps); its gaps δ are drawn
# from (seed, step, rank) like the noise, so resuming is exact with it too.
CDLM = dict(use_consistency_training=True, consistency_loss_weight=0.5, consistency_delta_min=5, consistency_delta_max=40)
# The continuous recipe's options, all on: the bound as the loss (its timesteps drawn from
# (seed, step, rank)), self-conditioning (its draw too), and the architecture options.
RECIPE = {"weighting": "bound", "model": dict(noise_schedule="cosine_zero_snr", embedding_norm=4.0,
                                             x0_estimate="softmax", self_condition=True)}
OBJECTIVES = pytest.mark.parametrize("objective", [{}, CDLM, RECIPE, {"objective": "masked"}, {"objective": "ar"}],
                                     ids=["diffusion", "cdlm", "recipe", "masked", "ar"])


@pytest.fixture
def corpus(tmp_path):
    path = tmp_path / "corpus.txt"  # about 7 batches an epoch: 12 steps cross an epoch boundary
    path.write_text("".join(f"line {i}: the quick brown fox jumps over the lazy dog.\n" for i in range(22)))
    return path


class RecordLoss(L.Callback):
    def __init__(self):
        self.losses = {}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.losses[trainer.global_step] = float(outputs["loss"])


def with_options(model_config, objective):
    """(model config, objective keyword arguments) of a parametrized case."""
    objective = dict(objective or {})
    return replace(model_config, **objective.pop("model", {})), objective


def fit(tiny_model_config, corpus, run_dir: Path, max_steps: int, ckpt_path=None, objective=None):
    L.seed_everything(0, verbose=False)  # the same initial weights, as train.py's seed does
    tiny_model_config, objective = with_options(tiny_model_config, objective)
    module = DIMBALightningModule(
        model_config=tiny_model_config, warmup_steps=2, total_steps=12, growth_schedule=SCHEDULE,
        enable_progressive_checkpoints=True, progressive_milestones=MILESTONES,
        progressive_save_dir=str(run_dir / "milestones"), **(objective or {}),
    )
    record = RecordLoss()
    trainer = L.Trainer(
        max_steps=max_steps, accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
        limit_val_batches=0, use_distributed_sampler=False, plugins=[AtomicCheckpointIO()],
        callbacks=[record, ModelCheckpoint(dirpath=run_dir / "checkpoints", save_top_k=0, save_last=True, every_n_train_steps=1)],
    )
    data = TextDataModule(files=[str(corpus)], seq_len=32, batch_size=4, seed=0)
    trainer.fit(module, datamodule=data, ckpt_path=ckpt_path)
    return module, trainer, record.losses


def saved(run_dir: Path):
    return [(e["target_milestone"], e["global_step"]) for e in ProgressiveCheckpointManager([1], run_dir / "milestones").list_checkpoints()]


@OBJECTIVES
def test_interrupted_and_resumed_equals_uninterrupted(tmp_path, tiny_model_config, corpus, objective):
    straight, _, straight_losses = fit(tiny_model_config, corpus, tmp_path / "straight", 12, objective=objective)

    interrupted = tmp_path / "interrupted"
    fit(tiny_model_config, corpus, interrupted, 5, objective=objective)  # "killed" after step 5
    resumed, trainer, resumed_losses = fit(tiny_model_config, corpus, interrupted, 12,
                                           ckpt_path=str(interrupted / "checkpoints" / "last.ckpt"), objective=objective)
    assert trainer.global_step == 12 and sorted(resumed_losses) == list(range(6, 13))
    assert ("train/consistency_loss" in trainer.callback_metrics) == (objective is CDLM)
    for step in range(6, 13):  # same data, noise, optimizer state and LR: the same losses
        assert resumed_losses[step] == pytest.approx(straight_losses[step], rel=1e-5, abs=1e-6)
    torch.testing.assert_close(resumed.model.state_dict(), straight.model.state_dict(), rtol=1e-5, atol=1e-6)
    assert saved(interrupted) == saved(tmp_path / "straight")  # each milestone once, at the same step
    assert [milestone for milestone, _ in saved(interrupted)] == [10_000, 20_000, 50_000]


def test_resuming_from_each_milestone_checkpoint_saves_each_milestone_once(tmp_path, tiny_model_config, corpus):
    run = tmp_path / "run"
    fit(tiny_model_config, corpus, run, 5)
    first = json.loads((run / "milestones" / "checkpoint_20.0K_step_3.json").read_text())
    fit(tiny_model_config, corpus, run, 9, ckpt_path=str(run / "milestones" / "checkpoint_20.0K_step_3.pt"))
    assert saved(run) == [(10_000, 1), (20_000, 3), (50_000, 7)]
    assert json.loads((run / "milestones" / "checkpoint_20.0K_step_3.json").read_text()) == first  # not rewritten


def test_a_milestone_whose_file_is_missing_after_a_crash_is_saved_again(tmp_path, tiny_model_config, corpus):
    """The state in last.ckpt says 20K was reached, but the crash came between its sidecar
    and the checkpoint's final name (the files of a group save are published one by one)."""
    run = tmp_path / "run"
    fit(tiny_model_config, corpus, run, 5)
    (run / "milestones" / "checkpoint_20.0K_step_3.pt").unlink()
    fit(tiny_model_config, corpus, run, 9, ckpt_path=str(run / "checkpoints" / "last.ckpt"))
    assert saved(run) == [(10_000, 1), (20_000, 6), (50_000, 7)]  # re-saved at the first check after resuming
    assert not (run / "milestones" / "checkpoint_20.0K_step_3.json").exists()  # the orphan sidecar was cleaned up


def test_seed_manual_resume_then_next_milestone(tmp_path, tiny_model_config, corpus):
    run = tmp_path / "run"
    fit(tiny_model_config, corpus, run, 5)
    manager = ProgressiveCheckpointManager(milestones=MILESTONES, save_dir=str(run / "milestones"))
    path = manager.get_checkpoint_path_for_milestone(20_000)
    from dimba.model import DIMBA

    info = manager.load_checkpoint(filepath=path, model=DIMBA(tiny_model_config))
    assert info["global_step"] == 3 and manager.get_next_milestone() == 50_000


@OBJECTIVES
def test_simple_trainer_resumes_exactly_without_saving_again(tmp_path, tiny_model_config, corpus, objective):
    tiny_model_config, objective = with_options(tiny_model_config, objective)

    def trainer(save_dir, max_steps=10):
        torch.manual_seed(0)
        data = TextDataModule(files=[str(corpus)], seq_len=32, batch_size=4, seed=0)
        data.setup()
        return SimpleTrainer(train_loader=data.train_dataloader(), model_config=tiny_model_config, max_steps=max_steps,
                             warmup_steps=2, growth_schedule=SCHEDULE, enable_progressive_checkpoints=True,
                             progressive_milestones=MILESTONES, progressive_save_dir=str(save_dir), device="cpu",
                             **objective)

    straight = trainer(tmp_path / "straight")
    straight_losses = straight.train()
    step = dict(saved_simple(tmp_path / "straight"))[20_000]  # 3 (the smaller ar model: later)
    first = trainer(tmp_path / "run")
    first.max_steps = step + 1
    first.train()
    resumed = trainer(tmp_path / "run")
    info = resumed.resume(ProgressiveCheckpointManager([1], tmp_path / "run").get_checkpoint_path_for_milestone(20_000))
    assert info["global_step"] == step and resumed.model.config.n_layers == 2
    losses = resumed.train()
    assert losses == pytest.approx(straight_losses[step:], rel=1e-5, abs=1e-6)
    assert resumed.consistency_losses == pytest.approx(straight.consistency_losses[step:], rel=1e-5, abs=1e-6)
    assert saved_simple(tmp_path / "run") == saved_simple(tmp_path / "straight")
    assert [milestone for milestone, _ in saved_simple(tmp_path / "run")] == [10_000, 20_000, 50_000]


def saved_simple(save_dir):
    return [(e["target_milestone"], e["global_step"]) for e in ProgressiveCheckpointManager([1], save_dir).list_checkpoints()]


def test_simple_trainer_continues_from_a_lightning_milestone_checkpoint(tmp_path, tiny_model_config, corpus):
    run = tmp_path / "run"
    fit(tiny_model_config, corpus, run, 5)
    data = TextDataModule(files=[str(corpus)], seq_len=32, batch_size=4, seed=0)
    data.setup()
    simple = SimpleTrainer(train_loader=data.train_dataloader(), model_config=tiny_model_config, max_steps=9,
                           warmup_steps=2, growth_schedule=SCHEDULE, enable_progressive_checkpoints=True,
                           progressive_milestones=MILESTONES, progressive_save_dir=str(run / "milestones"), device="cpu")
    info = simple.resume(str(run / "milestones" / "checkpoint_20.0K_step_3.pt"))  # written by the Lightning path
    assert info["global_step"] == 3 and simple.model.config.n_layers == 2
    assert [h["applied_at_step"] for h in simple.growth_history] == [3]
    losses = simple.train()
    assert len(losses) == 6 and all(l == l for l in losses)  # trained on, no NaN
    assert simple.model.config.d_model == 64  # the step-7 growth happened in the plain loop
    assert saved(run) == [(10_000, 1), (20_000, 3), (50_000, 7)]  # 50K once: the Lightning run stopped at 5


def test_growth_at_fractions_of_the_run_and_a_longer_resumed_run_does_not_grow_twice(tmp_path, tiny_model_config,
                                                                                      corpus):
    """`at: 0.3` is 30% of the run's steps; resuming a grown run with more steps moves the
    fractions' steps, but the model is not grown again through events it has been through."""
    schedule = [{"at": 0.3, "op": "depth", "n_layers": 2}, {"at": 0.7, "op": "width", "d_model": 64}]

    def trainer(max_steps):
        torch.manual_seed(0)
        data = TextDataModule(files=[str(corpus)], seq_len=32, batch_size=4, seed=0)
        data.setup()
        return SimpleTrainer(train_loader=data.train_dataloader(), model_config=tiny_model_config, max_steps=max_steps,
                             warmup_steps=2, growth_schedule=schedule, enable_progressive_checkpoints=True,
                             progressive_milestones=MILESTONES, progressive_save_dir=str(tmp_path / "run"), device="cpu")

    first = trainer(10)
    assert [event.step for event in first.schedule] == [3, 7]
    first.train()
    longer = trainer(20)
    assert [event.step for event in longer.schedule] == [6, 14]
    longer.resume(ProgressiveCheckpointManager([1], tmp_path / "run").get_checkpoint_path_for_milestone(50_000))
    longer.train()
    assert (longer.model.config.n_layers, longer.model.config.d_model) == (2, 64) and len(longer.growth_history) == 2
