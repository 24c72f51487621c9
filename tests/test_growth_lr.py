"""The growth-aware learning rate as a user meets it: chosen in the config, shown by the
dry-run plan, run by Lightning, and continued exactly by a resume inside a re-warm or
right after a restart."""

from __future__ import annotations

from pathlib import Path
from typing import Dict, Tuple

import lightning as L
import pytest
from hydra import compose, initialize_config_dir

from dimba.config import register_configs, validate
from dimba.planning import plan_text
from dimba.training import DIMBALightningModule
from dimba.training.lr_schedule import build_lr_multiplier

CONF = Path(__file__).resolve().parents[1] / "conf"
register_configs()
GROWTH = [{"step": 3, "op": "depth", "n_layers": 2}, {"step": 6, "op": "width", "d_model": 64}]
TOTAL = 12


def compose_config(*overrides: str):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("config", overrides=list(overrides))


def test_the_options_compose_and_reach_the_recipe():
    config = validate(compose_config("optim.schedule=wsd", "optim.decay_fraction=0.1", "growth.rewarm_steps=8"))
    assert (config.optim.schedule, config.optim.decay_fraction, config.growth.rewarm_steps) == ("wsd", 0.1, 8)
    assert config.growth.lr_restart is False


def test_the_dry_run_plan_shows_the_learning_rate_at_each_growth_event():
    text = plan_text(validate(compose_config("growth=early", "optim.schedule=wsd", "growth.rewarm_steps=10")))
    table = text[text.index("Learning rate at growth"):].split("\n\n")[0].splitlines()
    assert "optim.schedule=wsd" in table[0] and "growth.rewarm_steps=10" in table[0]
    assert "growth.lr_width_exponent=1" in table[0]
    rows = [line.split() for line in table[2:]]
    assert [row[0] for row in rows] == ["120", "168", "204"]  # growth=early's events
    lrs = [tuple(float(v) for v in row[-3:]) for row in rows]

    def decay(step: int) -> float:  # wsd: linear from 1 to min_lr_ratio 0.1 over steps 192..240
        return 1 - 0.9 * max(0, step - 192) / 48

    # wsd's stable phase, at (256 / width) x optim.lr: width 128 until step 168, 192 until 204;
    # the last growth falls in the decay ("before" is the rate of the step that grew, step 204's)
    before, after, rejoined = lrs[0]
    assert before == pytest.approx(4e-3) and rejoined == pytest.approx(4e-3)  # depth growth: same width
    assert after == pytest.approx(4e-3 / 11, rel=1e-2)  # the re-warm's first step: 1/(R+1) of it
    assert lrs[1][0] == pytest.approx(4e-3) and lrs[1][2] == pytest.approx(2e-3 * 256 / 192, rel=1e-2)
    assert lrs[2][0] == pytest.approx(2e-3 * 256 / 192 * decay(203), rel=1e-2)
    assert lrs[2][2] == pytest.approx(2e-3 * decay(214), rel=1e-2)


def test_events_of_one_step_share_one_row_of_the_rate_table():
    text = plan_text(validate(compose_config()))
    table = text[text.index("Learning rate at growth"):].split("\n\n")[0].splitlines()
    assert len(table) == 3 and table[2].split()[0] == "240"
    assert "depth -> 10 layers (identity) + width -> d_model 256" in table[2]
    assert table[2].split()[-2:] == ["–", "–"]  # after the last step no step runs at the grown size


def test_the_width_exponent_composes_and_zero_keeps_one_rate():
    """growth=default sets it to 0 (its narrow stage is nearly the whole run); growth=early keeps muP's 1."""
    assert validate(compose_config()).growth.lr_width_exponent == 0
    assert validate(compose_config("growth=early")).growth.lr_width_exponent == 1
    text = plan_text(validate(compose_config("growth=early", "optim.schedule=constant", "growth.lr_width_exponent=0")))
    table = text[text.index("Learning rate at growth"):].split("\n\n")[0].splitlines()
    assert all(float(v) == pytest.approx(2e-3) for line in table[2:] for v in line.split()[-3:])


class LearningRates(L.Callback):
    """The rate each optimizer step runs at, by global step."""

    def __init__(self) -> None:
        self.rates: Dict[int, float] = {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.rates[trainer.global_step] = trainer.optimizers[0].param_groups[0]["lr"]


def module(config, **lr_options) -> DIMBALightningModule:
    return DIMBALightningModule(model_config=config, warmup_steps=2, growth_schedule=GROWTH, total_steps=TOTAL,
                                **lr_options)


def fit(lightning_module, loader, kwargs, max_steps: int, ckpt_path: str | None = None) -> Tuple[L.Trainer, Dict[int, float]]:
    recorder = LearningRates()
    trainer = L.Trainer(max_steps=max_steps, callbacks=[recorder], **kwargs)
    trainer.fit(lightning_module, loader, ckpt_path=ckpt_path)
    return trainer, recorder.rates


@pytest.mark.parametrize("lr_options, stop", [
    (dict(lr_schedule="cosine", rewarm_steps=4), 5),  # inside the re-warm after the growth at step 3
    (dict(lr_schedule="wsd", decay_fraction=0.6, lr_restart=True), 7),  # right after the restart at step 6
    (dict(lr_schedule="cosine", lr_restart=True, rewarm_steps=3), 7),  # inside a restart's warmup
    (dict(lr_schedule="constant"), 7),  # right after the width growth: only the width scale changed
], ids=["rewarm", "restart", "restart+rewarm", "width-scale"])
def test_a_lightning_run_resumed_mid_schedule_runs_the_uninterrupted_rates(
        tmp_path, tiny_model_config, token_loader, quiet_trainer_kwargs, lr_options, stop):
    _, uninterrupted = fit(module(tiny_model_config, **lr_options), token_loader(), quiet_trainer_kwargs, TOTAL)

    trainer, first = fit(module(tiny_model_config, **lr_options), token_loader(), quiet_trainer_kwargs, stop)
    path = tmp_path / "interrupted.ckpt"
    trainer.save_checkpoint(path)
    resumed_module = module(tiny_model_config, **lr_options)
    _, second = fit(resumed_module, token_loader(), quiet_trainer_kwargs, TOTAL, ckpt_path=str(path))

    assert sorted(first) == list(range(stop)) and sorted(second) == list(range(stop, TOTAL))
    assert [*first.values(), *second.values()] == pytest.approx(list(uninterrupted.values()), rel=1e-12)
    assert (resumed_module.model.config.n_layers, resumed_module.model.config.d_model) == (2, 64)
    optim = resumed_module.recipe.optim
    without_growth = build_lr_multiplier(optim.schedule, optim.warmup_steps, TOTAL, optim.min_lr_ratio,
                                         decay_fraction=optim.decay_fraction)
    plain = [optim.lr * without_growth(step) for step in range(TOTAL)]
    narrow = tiny_model_config.d_model
    # growth.lr_width_exponent=1 (the default): the first width runs at 64 / narrow times the schedule
    assert list(uninterrupted.values())[:3] == pytest.approx([lr * 64 / narrow for lr in plain[:3]])
    assert list(uninterrupted.values())[6:] != pytest.approx([lr * 64 / narrow for lr in plain[6:]])  # growth moved it
