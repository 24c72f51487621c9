"""A user's story for the continuous recipe: `python train.py objective.weighting=bound
model.noise_schedule=learned ...` trains, grows and checkpoints; its checkpoints export,
load, evaluate and generate (DDIM and ancestral) as what they are; resuming one with
another recipe is refused in one line."""

from __future__ import annotations

import json

import pytest
import torch

import dimba
from dimba.cli.main import main
from dimba.errors import ConfigError
from dimba.resume import check_resume_before_running
from test_run import compose_config, train

RECIPE = ["objective.weighting=bound", "model.noise_schedule=learned", "model.embedding_norm=8",
          "model.x0_estimate=softmax", "model.self_condition=true", "objective=diffusion"]
GROWN = ["trainer.max_steps=4", "trainer.val_check_interval=4", "progressive_checkpoints=millions",
         "progressive_checkpoints.milestones=[20K,35K]", "growth.schedule=[{step:2,op:width,d_model:48}]"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("recipe")
    train(compose_config(*RECIPE, *GROWN), run_dir)
    return run_dir


def cli(capsys, *argv: str) -> str:
    assert main(list(argv)) == 0
    return capsys.readouterr().out


def test_the_recipe_trains_grows_checkpoints_and_loads_as_what_it_is(run_dir, tmp_path, capsys):
    milestones = sorted((run_dir / "progressive_checkpoints").glob("*.json"))
    assert [json.loads(p.read_text())["target_milestone"] for p in milestones] == [20_000, 35_000]
    source = run_dir / "checkpoints" / "last.ckpt"
    model = dimba.load_model(source)
    assert (model.config.noise_schedule, model.config.embedding_norm, model.config.x0_estimate,
            model.config.self_condition, model.config.d_model) == ("learned", 8.0, "softmax", True, 48)
    assert float(model.schedule.warp.abs().max()) > 0  # the schedule trained, and was saved
    cli(capsys, "checkpoints", "export", str(source), str(tmp_path / "export"))
    exported = dimba.load_model(tmp_path / "export")
    x_t, t = torch.randn(2, 16, model.config.d_embed), torch.tensor([3, 70])
    with torch.no_grad():
        torch.testing.assert_close(exported.x0_hat(exported.estimate(x_t, t)), model.x0_hat(model.estimate(x_t, t)))
    torch.testing.assert_close(exported.schedule.alpha_bar, model.schedule.alpha_bar)


def test_eval_and_both_samplers_work_on_it(run_dir, capsys):
    report = json.loads(cli(capsys, "eval", str(run_dir), "--samples", "4", "--json").splitlines()[-1])
    assert report["bpb"] > 0 and report["bpb_se"] > 0
    for sampler in ("ddim", "ancestral"):
        text = cli(capsys, "generate", str(run_dir), "--prompt", "The", "--length", "12", "--steps", "4",
                   "--sampler", sampler)
        assert text.startswith("The")
    assert main(["generate", str(run_dir), "--prompt", "The", "--sampler", "euler"]) == 2


def test_resuming_with_another_recipe_is_refused_in_one_line(run_dir):
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    check_resume_before_running(compose_config(*RECIPE, *GROWN, f"ckpt_path={ckpt}"))
    with pytest.raises(ConfigError) as info:
        check_resume_before_running(compose_config(*RECIPE[:1], *RECIPE[2:], *GROWN, f"ckpt_path={ckpt}"))
    assert str(info.value) == (f"model.noise_schedule: {ckpt} was trained with model.noise_schedule=learned, not "
                               f"cosine; resume it with model.noise_schedule=learned (a run keeps its recipe)")


def test_loading_it_into_a_model_of_another_recipe_is_refused(run_dir):
    from dimba.errors import CheckpointLoadError
    from dimba.model import DIMBA, DIMBAConfig
    from dimba.utils.checkpointing import ProgressiveCheckpointManager

    manager = ProgressiveCheckpointManager([20_000], run_dir / "progressive_checkpoints")
    path = manager.get_checkpoint_path_for_milestone(20_000)
    with pytest.raises(CheckpointLoadError, match="model.noise_schedule=learned, not cosine"):
        manager.load_checkpoint(filepath=path, model=DIMBA(DIMBAConfig(d_model=32, n_layers=2, d_embed=16)))
