"""Config composition through Hydra's compose API, as a user's overrides would compose it."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from dimba.config import Config, register_configs, validate
from dimba.errors import ConfigError

CONF = Path(__file__).resolve().parents[1] / "conf"
register_configs()


def compose_config(*overrides: str):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("config", overrides=list(overrides))


def test_default_composition_is_valid_and_typed():
    cfg = compose_config()
    assert OmegaConf.select(cfg, "trainer._target_") == "lightning.Trainer"
    config = validate(cfg)
    assert isinstance(config, Config)
    assert config.progressive_checkpoints.enabled
    assert config.progressive_checkpoints.milestones == [1_000_000, 2_000_000, 4_000_000]
    assert config.model.vocab_size == 256 and config.data.files == []
    assert [e.step for e in config.growth.schedule] == [240, 240]  # d128x4 -> d256x10 after the last of 240 steps
    assert [e.step for e in validate(compose_config("growth=early")).growth.schedule] == [120, 168, 204]


@pytest.mark.parametrize("group", ["model", "data", "trainer", "optim", "growth", "progressive_checkpoints", "objective"])
def test_every_group_has_a_registered_schema(group):
    cfg = compose_config()
    assert OmegaConf.get_type(cfg, group) is not dict  # a structured (dataclass) node


def test_billions_preset_is_the_seed_list():
    config = validate(compose_config("progressive_checkpoints=billions"))
    assert config.progressive_checkpoints.milestones == [10**9, 5 * 10**9, 10 * 10**9, 30 * 10**9]


def test_disabled_preset():
    config = validate(compose_config("progressive_checkpoints=disabled"))
    assert not config.progressive_checkpoints.enabled


@pytest.mark.parametrize(
    "override, expected",
    [
        ("progressive_checkpoints.milestones=[1e9,5e9]", [10**9, 5 * 10**9]),
        ("progressive_checkpoints.milestones=[1000000000,5000000000]", [10**9, 5 * 10**9]),
        ("progressive_checkpoints.milestones=[100M,1B]", [10**8, 10**9]),
        ("progressive_checkpoints.milestones=[5e9,1e9,1B]", [10**9, 5 * 10**9]),
        ("progressive_checkpoints.milestones=2.5M", [2_500_000]),
        ("progressive_checkpoints.milestones='1B,5B'", [10**9, 5 * 10**9]),
    ],
)
def test_milestone_forms_on_the_command_line(override, expected):
    milestones = validate(compose_config(override)).progressive_checkpoints.milestones
    assert milestones == expected and all(type(m) is int for m in milestones)


def test_milestone_forms_in_yaml(tmp_path):
    conf = tmp_path / "conf"
    shutil.copytree(CONF, conf)
    (conf / "progressive_checkpoints" / "mine.yaml").write_text(
        "defaults:\n  - base_progressive_checkpoints\n  - _self_\nmilestones: [1e6, 2_000_000, 4M, '8e6']\n"
    )
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        config = validate(compose("config", overrides=["progressive_checkpoints=mine"]))
    assert config.progressive_checkpoints.milestones == [1_000_000, 2_000_000, 4_000_000, 8_000_000]


def test_own_text_files(tmp_path):
    text = tmp_path / "corpus.txt"
    text.write_text("hello world. " * 1000)
    config = validate(compose_config("data=text_files", f"data.files=[{text}]"))
    assert config.data.files == [str(text)]
    tiny = tmp_path / "tiny.txt"
    tiny.write_text("too short")
    with pytest.raises(ConfigError, match="data.files"):
        validate(compose_config("data=text_files", f"data.files=[{tiny}]"))


def test_trainer_arguments_are_overridable():
    cfg = compose_config("trainer.max_steps=7", "trainer.fast_dev_run=false")
    assert cfg.trainer.max_steps == 7 and cfg.trainer.fast_dev_run is False


def test_the_objective_is_plain_diffusion_unless_cdlm_is_chosen(tmp_path):
    assert validate(compose_config()).objective.use_consistency_training is False
    config = validate(compose_config("objective=cdlm", "objective.consistency_loss_weight=0.5"))
    objective = config.objective
    assert objective.use_consistency_training is True and objective.consistency_loss_weight == 0.5
    assert 1 <= objective.consistency_delta_min <= objective.consistency_delta_max < config.model.diffusion_steps

    from dimba.run import build_module

    module = build_module(config, tmp_path)  # what train.py builds: the options reach the module
    assert module.objective == objective
    assert module.hparams.consistency_loss_weight == 0.5 and module.hparams.use_consistency_training is True


def test_growth_presets_compose():
    assert validate(compose_config("growth=none")).growth.schedule == []
    config = validate(compose_config("experiment=billions"))
    assert config.model.d_model == 2048 and len(config.growth.schedule) == 6
    assert config.progressive_checkpoints.milestones == [10**9, 5 * 10**9, 10 * 10**9, 30 * 10**9]


def test_the_plan_of_the_default_run_and_of_the_billions_experiment():
    from dimba.growth.plan import build_plan

    config = validate(compose_config())
    plan = build_plan(config.model, config.growth.schedule, config.progressive_checkpoints.milestones, config.trainer.max_steps)
    assert config.objective.name == "ar"  # the lowest held-out bits per byte (docs/results/quality.md)
    assert [s.params for s in plan.stages] == [452_144, 1_080_632, 4_119_472]
    assert plan.milestone_steps == {1_000_000: 240, 2_000_000: 240, 4_000_000: 240}  # one step crosses all three
    # Both events of step 240 happen before its milestone check: every save holds the 4.1M model.
    assert plan.table().splitlines()[-1].split()[-3:] == ["1.0M,", "2.0M,", "4.0M"]

    early = validate(compose_config("objective=diffusion", "growth=early"))
    plan = build_plan(early.model, early.growth.schedule, early.progressive_checkpoints.milestones, early.trainer.max_steps)
    assert [s.params for s in plan.stages] == [623_008, 1_179_904, 2_562_144, 4_478_912]
    assert plan.milestone_steps == {1_000_000: 120, 2_000_000: 168, 4_000_000: 204}

    billions = validate(compose_config("experiment=billions"))
    plan = build_plan(billions.model, billions.growth.schedule, billions.progressive_checkpoints.milestones, billions.trainer.max_steps)
    assert plan.unreached == [] and plan.final.params > 30 * 10**9
    assert list(plan.milestone_steps.values()) == [1000, 3000, 4000, 6000]

    mismatch = validate(compose_config("progressive_checkpoints=billions"))
    plan = build_plan(mismatch.model, mismatch.growth.schedule, mismatch.progressive_checkpoints.milestones, mismatch.trainer.max_steps)
    assert plan.unreached == [10**9, 5 * 10**9, 10 * 10**9, 30 * 10**9]


def test_growth_after_max_steps_is_shown_as_never_happening():
    from dimba.growth.plan import build_plan

    steps = "growth.schedule=[{step:120,op:depth,n_layers:8},{step:168,op:width,d_model:192},{step:204,op:width,d_model:256}]"
    config = validate(compose_config("objective=diffusion", "trainer.max_steps=150", steps))  # the depth growth at 120 only
    plan = build_plan(config.model, config.growth.schedule, config.progressive_checkpoints.milestones, 150)
    assert plan.unreached == [2_000_000, 4_000_000]
    assert plan.table().count("never happens") == 2


def test_the_trainer_schema_is_every_lightning_trainer_argument():
    """A Lightning upgrade that adds, drops or re-defaults an argument fails here."""
    import dataclasses
    import inspect

    import lightning

    from dimba.config import TrainerConfig

    signature = {n: p.default for n, p in inspect.signature(lightning.Trainer.__init__).parameters.items() if n != "self"}
    fields = {f.name: f.default for f in dataclasses.fields(TrainerConfig) if f.name != "_target_"}
    assert set(fields) == set(signature)
    ours = {"accelerator", "devices", "strategy", "precision", "max_steps", "val_check_interval", "check_val_every_n_epoch",
            "limit_val_batches", "num_sanity_val_steps", "log_every_n_steps", "gradient_clip_val", "enable_progress_bar",
            "enable_model_summary", "deterministic", "use_distributed_sampler"}
    assert {n: fields[n] for n in fields if n not in ours} == {n: signature[n] for n in signature if n not in ours}


def test_any_trainer_argument_without_a_plus():
    config = validate(compose_config("trainer.fast_dev_run=true", "trainer.detect_anomaly=true", "trainer.max_time=00:01:00:00"))
    assert config.trainer.fast_dev_run is True and config.trainer.detect_anomaly is True
    assert config.trainer.arguments()["max_time"] == "00:01:00:00" and "logger" not in config.trainer.arguments()
    with pytest.raises(ConfigError, match=r"trainer.logger: .* is invalid; accepted: null: choose loggers with the logger group"):
        validate(compose_config("trainer.logger=false"))
