"""CDLM consistency training: the loss, its stop-gradient, its options, and both trainers."""

from __future__ import annotations

import csv
import logging

import lightning as L
import pytest
import torch
from lightning.pytorch.loggers import CSVLogger

from dimba.diffusion.consistency import consistency_loss, consistency_target, objective_loss, sample_deltas
from dimba.errors import ConfigError
from dimba.model import DIMBA
from dimba.objective import ObjectiveConfig
from dimba.training import DIMBALightningModule, SimpleTrainer
from dimba.training.steps import step_deltas, step_noise
from dimba.utils.checkpointing import ProgressiveCheckpointManager

# The tiny model has 100 diffusion steps: δ must stay below that.
CDLM = dict(use_consistency_training=True, consistency_loss_weight=0.5, consistency_delta_min=5, consistency_delta_max=40)


@pytest.fixture
def model(tiny_model_config):
    torch.manual_seed(0)
    return DIMBA(tiny_model_config)


@pytest.fixture
def batch(tiny_model_config):
    generator = torch.Generator().manual_seed(1)
    tokens = torch.randint(0, 256, (3, 24), generator=generator)
    t = torch.tensor([90, 30, 7])
    noise = torch.randn(3, 24, tiny_model_config.d_embed, generator=generator)
    delta = torch.tensor([40, 5, 7])  # the last one lands exactly on t - δ = 0
    return tokens, t, noise, delta


def test_the_loss_matches_a_hand_computation(model, batch):
    tokens, t, noise, delta = batch
    alpha_bar = model.schedule.alpha_bar.float()

    def noised(level):
        ab = alpha_bar[level].view(-1, 1, 1)
        return ab.sqrt() * model.embed(tokens) + (1 - ab).sqrt() * noise

    with torch.no_grad():  # the x0 estimates (the model's default: the Bayes estimate of normalised rows)
        student = model.x0_hat(model.denoise(noised(t), t))
        teacher = model.x0_hat(model.denoise(noised(t - delta), t - delta))
        teacher[2] = model.embed(tokens[2])  # t - δ = 0: the clean embedding is the target
        by_hand = ((student - teacher) ** 2).mean()
        plain = model.loss(tokens, t=t, noise=noise, mse_weight=1.0, ce_weight=1.0)["loss"]
        out = objective_loss(model, tokens, t, noise, ObjectiveConfig(consistency_loss_weight=0.5), delta=delta)
    assert by_hand > 0
    torch.testing.assert_close(out["consistency"], by_hand)
    torch.testing.assert_close(out["loss"], plain + 0.5 * by_hand)
    assert set(out) == {"loss", "mse", "ce", "consistency"}


def test_the_target_is_a_stop_gradient(model, batch):
    tokens, t, noise, delta = batch
    assert not consistency_target(model, tokens, t, noise, delta).requires_grad
    # With the student's prediction detached, nothing in the loss can reach a parameter:
    # the target branch contributes zero gradient.
    x0_hat = model.loss(tokens, t=t, noise=noise, return_prediction=True)["x0_hat"]
    assert not consistency_loss(model, tokens, x0_hat.detach(), t, noise, delta).requires_grad

    # The gradient equals that of the MSE to a constant target computed separately.
    consistency_loss(model, tokens, x0_hat, t, noise, delta).backward()
    ours = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    with torch.no_grad():
        constant = model.x0_hat(model.denoise(model.schedule.add_noise(model.embed(tokens), t - delta, noise), t - delta))
        constant[2] = model.embed(tokens[2])  # t - δ = 0
    x0_hat = model.loss(tokens, t=t, noise=noise, return_prediction=True)["x0_hat"]
    torch.nn.functional.mse_loss(x0_hat, constant).backward()
    reference = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    assert ours.keys() == reference.keys()
    torch.testing.assert_close(ours, reference)


def test_gaps_are_integers_in_range_and_never_go_below_timestep_zero():
    t = torch.arange(1, 101).repeat(20)
    delta = sample_deltas(t, 5, 40, torch.Generator().manual_seed(0))
    assert delta.dtype == torch.long
    assert int(delta.min()) >= 1 and int(delta.max()) <= 40
    assert bool(((t - delta) >= 0).all())
    assert bool((delta[t >= 40] >= 5).all())
    assert set(delta[t >= 40].tolist()) == set(range(5, 41))  # the whole range is drawn


def test_gaps_come_from_seed_step_and_rank_and_leave_the_diffusion_noise_alone(model):
    objective = ObjectiveConfig(**CDLM)
    tokens = torch.zeros(64, 8, dtype=torch.long)
    t, noise = step_noise(model, tokens, seed=3, step=7)
    first = step_deltas(t, objective, seed=3, step=7)
    assert torch.equal(first, step_deltas(t, objective, seed=3, step=7))  # a resumed run draws the same
    assert not torch.equal(first, step_deltas(t, objective, seed=3, step=8))
    assert not torch.equal(first, step_deltas(t, objective, seed=3, step=7, rank=1))
    t_again, noise_again = step_noise(model, tokens, seed=3, step=7)  # unchanged by drawing δ
    assert torch.equal(t, t_again) and torch.equal(noise, noise_again)


BAD_OPTIONS = [
    (dict(consistency_loss_weight=-0.1), "objective.consistency_loss_weight"),
    (dict(consistency_loss_weight=float("nan")), "objective.consistency_loss_weight"),
    (dict(consistency_loss_weight=float("inf")), "objective.consistency_loss_weight"),
    (dict(consistency_delta_min=0), "objective.consistency_delta_min"),
    (dict(consistency_delta_min=2.5), "objective.consistency_delta_min"),
    (dict(consistency_delta_min=30, consistency_delta_max=20), "objective.consistency_delta_max"),
    (dict(consistency_delta_max=100), "objective.consistency_delta_max"),  # the tiny model's diffusion_steps
    (dict(use_consistency_training="yes"), "objective.use_consistency_training"),
]


@pytest.mark.parametrize("bad, key", BAD_OPTIONS, ids=[next(iter(b)) + "=" + str(next(iter(b.values()))) for b, _ in BAD_OPTIONS])
def test_both_trainers_refuse_bad_options_with_a_clear_error(tiny_model_config, bad, key):
    for build in (lambda **kw: DIMBALightningModule(model_config=tiny_model_config, **kw),
                  lambda **kw: SimpleTrainer(train_loader=[], model_config=tiny_model_config, device="cpu", **kw)):
        with pytest.raises(ConfigError) as info:
            build(**{**CDLM, **bad})
        assert str(info.value).startswith(f"{key}: ") and "accepted: " in str(info.value)


def test_with_consistency_off_an_unused_gap_range_is_not_checked_against_the_model(tiny_model_config):
    module = DIMBALightningModule(model_config=tiny_model_config)  # default δ_max 250 > 100 steps: fine, unused
    assert module.hparams.use_consistency_training is False


def test_a_short_fit_logs_the_consistency_loss_and_saves_the_options(tmp_path, tiny_model_config, token_loader):
    module = DIMBALightningModule(model_config=tiny_model_config, warmup_steps=0, **CDLM)
    trainer = L.Trainer(max_steps=4, accelerator="cpu", log_every_n_steps=1, enable_progress_bar=False,
                        enable_model_summary=False, logger=CSVLogger(str(tmp_path), name="logs", version=""),
                        default_root_dir=str(tmp_path))
    trainer.fit(module, token_loader(n_batches=4))
    assert "train/consistency_loss" in trainer.callback_metrics
    with open(tmp_path / "logs" / "metrics.csv") as f:
        rows = [row for row in csv.DictReader(f) if row.get("train/consistency_loss")]
    assert [int(r["step"]) for r in rows] == [0, 1, 2, 3]
    assert all(float(r["train/consistency_loss"]) > 0 for r in rows)
    # The loss logged is the diffusion loss plus the weighted consistency term.
    for r in rows:
        expected = float(r["train/mse"]) + float(r["train/ce"]) + 0.5 * float(r["train/consistency_loss"])
        assert float(r["train/loss"]) == pytest.approx(expected, rel=1e-5)

    path = tmp_path / "final.ckpt"
    trainer.save_checkpoint(path)
    hparams = torch.load(path, weights_only=True)["hyper_parameters"]
    assert {k: hparams[k] for k in CDLM} == CDLM
    reloaded = DIMBALightningModule.load_from_checkpoint(path, weights_only=True)
    assert reloaded.objective == ObjectiveConfig(**CDLM)


def test_the_plain_objective_logs_no_consistency_loss(tiny_model_config, token_loader, quiet_trainer_kwargs):
    module = DIMBALightningModule(model_config=tiny_model_config, warmup_steps=0)
    trainer = L.Trainer(max_steps=2, **quiet_trainer_kwargs)
    trainer.fit(module, token_loader(n_batches=2))
    assert "train/loss" in trainer.callback_metrics and "train/consistency_loss" not in trainer.callback_metrics


def test_simple_trainer_trains_with_cdlm_and_logs_the_term(tmp_path, tiny_model_config, token_loader, caplog):
    trainer = SimpleTrainer(train_loader=token_loader(n_batches=8), model_config=tiny_model_config, max_steps=8,
                            warmup_steps=0, device="cpu", log_every_n_steps=4, **CDLM)
    with caplog.at_level(logging.INFO, logger="dimba.training.simple"):
        losses = trainer.train()
    assert len(losses) == len(trainer.consistency_losses) == 8
    assert all(value > 0 and value == value for value in trainer.consistency_losses)
    assert "step 8 loss" in caplog.text and "train/consistency_loss" in caplog.text


def test_simple_trainer_and_lightning_optimize_the_same_loss(tiny_model_config, token_loader, quiet_trainer_kwargs):
    """Same seed, data, noise and δ: the first step's loss is the same number in both."""
    loader = token_loader(n_batches=1)
    simple = SimpleTrainer(train_loader=loader, model_config=tiny_model_config, max_steps=1, device="cpu", **CDLM)
    seen = {}

    class Record(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            seen["loss"] = float(outputs["loss"])

    torch.manual_seed(0)  # SimpleTrainer seeds its weights the same way
    module = DIMBALightningModule(model_config=tiny_model_config, **CDLM)
    L.Trainer(max_steps=1, callbacks=[Record()], **quiet_trainer_kwargs).fit(module, loader)
    assert simple.train() == [pytest.approx(seen["loss"], rel=1e-6)]


def test_growth_and_milestones_fire_unchanged_with_cdlm(tmp_path, tiny_model_config, token_loader, quiet_trainer_kwargs):
    schedule = [{"step": 2, "op": "depth", "n_layers": 2}, {"step": 4, "op": "width", "d_model": 64}]
    saves = []
    for objective in ({}, CDLM):
        save_dir = tmp_path / ("cdlm" if objective else "plain")
        module = DIMBALightningModule(model_config=tiny_model_config, warmup_steps=0, growth_schedule=schedule,
                                      enable_progressive_checkpoints=True, progressive_milestones=[10_000, 20_000, 50_000],
                                      progressive_save_dir=str(save_dir), **objective)
        trainer = L.Trainer(max_steps=5, **quiet_trainer_kwargs)
        trainer.fit(module, token_loader(n_batches=5))
        saved = [(e["target_milestone"], e["global_step"]) for e in ProgressiveCheckpointManager([1], save_dir).list_checkpoints()]
        assert (module.model.config.n_layers, module.model.config.d_model) == (2, 64)
        assert [h["applied_at_step"] for h in module.growth_history] == [2, 4]
        assert saved == [(10_000, 1), (20_000, 2), (50_000, 4)]  # one milestone per stage
        saves.append(saved)
        if objective:
            last = ProgressiveCheckpointManager([1], save_dir).list_checkpoints()[-1]
            assert last["metadata"]["train/consistency_loss"] > 0
    assert saves[0] == saves[1]
