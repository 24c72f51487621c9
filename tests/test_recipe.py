"""One training recipe: the Python API's keyword arguments, `python train.py` and SimpleTrainer train
the same thing, because every default lives in the config dataclasses."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch
from hydra import compose, initialize_config_dir

from dimba.config import DataConfig, Recipe, register_configs, validate
from dimba.errors import ConfigError
from dimba.training import DIMBALightningModule, SimpleTrainer

CONF = Path(__file__).resolve().parents[1] / "conf"
register_configs()


def train_py_defaults():
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return validate(compose("config"))


def test_the_lightning_module_trains_the_recipe_train_py_trains():
    """Given train.py's objective (its defaults list picks `ar`; in Python the model config
    decides, and `DIMBAConfig()` is DIMBA's continuous model), every other default is the same."""
    config = train_py_defaults()
    assert config.objective.name == "ar"
    module = DIMBALightningModule(objective="ar")
    assert module.recipe.optim == config.optim
    assert module.recipe.objective == config.objective
    simple = SimpleTrainer(train_loader=[torch.zeros(1, 8, dtype=torch.long)], device="cpu", objective="ar")
    assert simple.recipe.optim == config.optim and simple.recipe.objective == config.objective
    assert DIMBALightningModule().recipe.objective.name == "diffusion"


def test_objective_diffusion_is_the_python_apis_default_objective():
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        diffusion = validate(compose("config", overrides=["objective=diffusion"]))
    assert DIMBALightningModule().recipe.objective == diffusion.objective


def test_the_data_module_defaults_are_the_data_config():
    from dimba.data import TextDataModule

    data, defaults = TextDataModule(), DataConfig()
    assert (data.seq_len, data.batch_size, data.val_fraction, data.num_workers) == (
        defaults.seq_len, defaults.batch_size, defaults.val_fraction, defaults.num_workers)


def test_each_keyword_lands_in_its_group_and_round_trips_through_the_hyperparameters(tmp_path):
    recipe = Recipe.from_options(
        vocab_size=300, model_config={"d_model": 32, "n_layers": 1, "head_dim": 16}, lr=1e-3, betas=[0.8, 0.9],
        warmup_steps=3, mse_weight=0.5, ce_weight=2.0, use_consistency_training=True, consistency_delta_max=40,
        growth_schedule=[{"step": 5, "op": "depth", "n_layers": 2}], enable_progressive_checkpoints=True,
        progressive_milestones=["1M", 2e6], progressive_save_dir=str(tmp_path), seed=7, total_steps=50)
    assert recipe.model.vocab_size == 300 and recipe.optim.lr == 1e-3 and recipe.optim.betas == [0.8, 0.9]
    assert (recipe.objective.mse_weight, recipe.objective.ce_weight) == (0.5, 2.0)
    assert recipe.growth.schedule[0].n_layers == 2 and recipe.progressive_checkpoints.milestones == [10**6, 2 * 10**6]
    assert recipe.seed == 7 and recipe.total_steps == 50
    assert Recipe.from_options(**recipe.as_options()) == recipe
    module = DIMBALightningModule(**recipe.as_options())
    assert DIMBALightningModule(**dict(module.hparams)).recipe == recipe  # what load_from_checkpoint does


def test_milestones_stay_off_unless_asked_for_and_bad_values_name_the_key():
    assert not Recipe.from_options(progressive_milestones=["1M"]).progressive_checkpoints.enabled
    with pytest.raises(TypeError, match="unexpected keyword argument.*learning_rate"):
        DIMBALightningModule(learning_rate=1e-3)
    with pytest.raises(ConfigError, match=r"optim.lr: -1 is invalid"):
        DIMBALightningModule(lr=-1)
    with pytest.raises(ConfigError, match=r"objective.ce_weight: -2 is invalid"):
        SimpleTrainer(ce_weight=-2, train_loader=[], device="cpu")
    with pytest.raises(ConfigError, match=r"progressive_checkpoints.milestones: 'abc' is invalid"):
        DIMBALightningModule(enable_progressive_checkpoints=True, progressive_milestones=["abc"])


def test_both_loops_take_the_same_steps_grow_and_save_at_the_same_steps(tmp_path, tiny_model_config, quiet_trainer_kwargs):
    """Noise, loss, optimizer, LR schedule, growth and milestones: one recipe, two loops."""
    data = torch.randint(0, 256, (40, 32), generator=torch.Generator().manual_seed(0))
    options = dict(model_config=tiny_model_config, warmup_steps=2, total_steps=6, mse_weight=0.7,
                   growth_schedule=[{"step": 3, "op": "width", "d_model": 48}], enable_progressive_checkpoints=True,
                   progressive_milestones=[10_000, 20_000])

    class Losses(L.Callback):
        values: list = []

        def on_train_batch_end(self, trainer, pl_module, outputs, *args):
            self.values.append(float(outputs["loss"]))

    torch.manual_seed(0)
    module = DIMBALightningModule(progressive_save_dir=str(tmp_path / "lightning"), **options)
    losses = Losses()
    L.Trainer(max_steps=6, gradient_clip_val=1.0, callbacks=[losses], **quiet_trainer_kwargs).fit(
        module, torch.utils.data.DataLoader(data, batch_size=4))
    torch.manual_seed(0)
    simple = SimpleTrainer(torch.utils.data.DataLoader(data, batch_size=4), max_steps=6, device="cpu",
                           progressive_save_dir=str(tmp_path / "simple"), **options)
    assert simple.train() == pytest.approx(losses.values, rel=1e-5)
    names = [sorted(p.name for p in (tmp_path / d).glob("*.pt")) for d in ("lightning", "simple")]
    assert names[0] == names[1] == ["checkpoint_10.0K_step_1.pt", "checkpoint_20.0K_step_3.pt"]
