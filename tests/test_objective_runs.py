"""A user's story for each discrete objective: `python train.py objective=masked` (or `ar`)
trains, grows and checkpoints; the checkpoints load, export, evaluate, generate and show
their objective; resuming one with another objective is refused in one line."""

from __future__ import annotations

import json

import pytest
import torch

import dimba
from dimba.cli.main import main
from dimba.errors import ConfigError
from dimba.resume import check_resume_before_running
from test_run import compose_config, train

GROWN = ["trainer.max_steps=4", "trainer.val_check_interval=4", "progressive_checkpoints=millions",
         "progressive_checkpoints.milestones=[20K,35K]", "growth.schedule=[{step:2,op:width,d_model:48}]"]


@pytest.fixture(scope="module", params=["masked", "ar"])
def run(request, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp(request.param)
    train(compose_config(f"objective={request.param}", *GROWN), run_dir)
    return request.param, run_dir


def cli(capsys, *argv: str) -> str:
    assert main(list(argv)) == 0
    return capsys.readouterr().out


def test_it_trains_grows_and_saves_its_milestones(run):
    objective, run_dir = run
    milestones = sorted((run_dir / "progressive_checkpoints").glob("*.json"))
    assert [json.loads(p.read_text())["target_milestone"] for p in milestones] == [20_000, 35_000]
    model = dimba.load_model(run_dir / "checkpoints" / "last.ckpt")
    assert (model.config.objective, model.config.d_model) == (objective, 48)
    assert model.config.bidirectional == (objective != "ar")


def test_its_checkpoints_export_and_load_as_what_they_are(run, tmp_path, capsys):
    objective, run_dir = run
    source = run_dir / "checkpoints" / "last.ckpt"
    cli(capsys, "checkpoints", "export", str(source), str(tmp_path / "export"))
    exported, original = dimba.load_model(tmp_path / "export"), dimba.load_model(source)
    ids = torch.randint(0, 256, (2, 16))
    torch.testing.assert_close(exported.token_logits(ids), original.token_logits(ids))
    assert exported.config.objective == objective
    assert f"objective    {objective}" in cli(capsys, "checkpoints", "show", str(source))
    milestone = sorted((run_dir / "progressive_checkpoints").glob("*.pt"))[-1]
    shown = cli(capsys, "checkpoints", "show", str(milestone))
    assert ("the exact likelihood on the validation subset" in shown) == (objective == "ar")
    assert ("the likelihood bound on the validation subset" in shown) == (objective != "ar")


def test_eval_reports_its_likelihood_and_generate_samples_from_it(run, capsys):
    objective, run_dir = run
    report = json.loads(cli(capsys, "eval", str(run_dir), "--samples", "4", "--json").splitlines()[-1])
    assert report["objective"] == objective and 0 < report["bpb"] < 8.5  # about uniform after 4 steps
    assert (report["bpb_se"] == 0) == (objective == "ar")  # exact, or a Monte Carlo estimate
    text = cli(capsys, "generate", str(run_dir), "--prompt", "The", "--length", "12", "--steps", "4",
               "--num-samples", "2", "--temperature", "0.8", "--top-p", "0.9")
    assert text.count("=== seed") == 2 and text.count("\nThe") + text.startswith("=== seed 0 ===\nThe") >= 1
    unconditional = cli(capsys, "generate", str(run_dir), "--length", "12", "--steps", "4")
    assert unconditional.endswith("\n") and len(unconditional[:-1].encode("utf-8", "replace")) >= 8


def test_resuming_with_another_objective_is_refused_in_one_line(run):
    objective, run_dir = run
    other = "diffusion" if objective == "ar" else "ar"
    config = compose_config(f"objective={other}", f"ckpt_path={run_dir / 'checkpoints' / 'last.ckpt'}")
    with pytest.raises(ConfigError) as caught:
        check_resume_before_running(config)
    message = str(caught.value)
    assert f"was trained with objective={objective}" in message and "\n" not in message


def test_loading_a_checkpoint_into_a_model_of_another_objective_is_refused(run):
    from dimba.errors import CheckpointLoadError
    from dimba.model import DIMBA
    from dimba.utils.checkpointing import ProgressiveCheckpointManager

    objective, run_dir = run
    milestone = sorted((run_dir / "progressive_checkpoints").glob("*.pt"))[0]
    other = DIMBA(compose_config("objective=diffusion").model)
    with pytest.raises(CheckpointLoadError, match=f"trained with objective={objective}, not diffusion"):
        ProgressiveCheckpointManager([1], run_dir / "elsewhere").load_checkpoint(milestone, model=other)


def test_resuming_a_byte_checkpoint_with_a_bpe_trained_on_text_is_refused_before_anything_runs(run, tmp_path):
    objective, run_dir = run
    text = tmp_path / "text.txt"
    text.write_text("some text to train a vocabulary on\n" * 50)
    config = compose_config(f"objective={objective}", "data=text_files", f"data.files=[{text}]", "tokenizer=bpe",
                            f"ckpt_path={run_dir / 'checkpoints' / 'last.ckpt'}")
    with pytest.raises(ConfigError) as caught:
        check_resume_before_running(config)
    assert "was trained with tokenizer=bytes, not bpe" in str(caught.value) and "\n" not in str(caught.value)
