"""`dimba.run.train` in process: what train.py hands a composed, validated config to."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from hydra import compose, initialize_config_dir

from dimba.config import register_configs, validate
from dimba.run import train

CONF = Path(__file__).resolve().parents[1] / "conf"
register_configs()
SMALL = ["model.d_model=32", "model.n_layers=1", "model.head_dim=16", "data.seq_len=32", "data.batch_size=4",
         "trainer.limit_val_batches=1", "trainer.enable_progress_bar=false", "growth=none",
         "progressive_checkpoints=disabled", "trainer.enable_model_summary=false"]


def compose_config(*overrides: str):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return validate(compose("config", overrides=[*SMALL, *overrides]))


def test_train_returns_the_validation_loss_of_the_last_step(tmp_path):
    """The last scheduled validation came at step 4; the run validates again at step 5."""
    result = train(compose_config("trainer.max_steps=5", "trainer.val_check_interval=2"), tmp_path)
    assert result.trainer.global_step == 5 and result.trainer.lightning_module.last_validation_step == 5
    with open(tmp_path / "logs" / "metrics.csv", newline="") as handle:
        validations = [row for row in csv.DictReader(handle) if row.get("val/loss")]
    assert len(validations) == 3 and float(validations[-1]["val/loss"]) == result.val_loss


def test_a_run_without_validation_returns_no_loss(tmp_path):
    result = train(compose_config("trainer.max_steps=2", "trainer.limit_val_batches=0"), tmp_path)
    assert result.val_loss is None and result.trainer.global_step == 2


def test_every_logger_hears_the_growth_and_milestone_events(tmp_path):
    """Not a stand-in: the real growth and milestone code send them, at their steps."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    config = compose_config("objective=diffusion", "trainer.max_steps=3", "trainer.val_check_interval=3", "logger=many",
                            "growth.schedule=[{step:2,op:width,d_model:48}]",
                            "progressive_checkpoints=millions", "progressive_checkpoints.milestones=[20K,40K]")
    train(config, tmp_path)
    board = EventAccumulator(str(tmp_path / "tensorboard"))
    board.Reload()
    assert [(e.step, e.value) for e in board.Scalars("growth/d_model")] == [(2, 48.0)]
    assert [(e.step, e.value) for e in board.Scalars("milestone/reached")] == [(1, 20_000.0), (2, 40_000.0)]
    with open(tmp_path / "logs" / "metrics.csv", newline="") as handle:
        reached = [float(r["milestone/reached"]) for r in csv.DictReader(handle) if r.get("milestone/reached")]
    assert reached == [20_000.0, 40_000.0]


def test_a_new_run_from_another_runs_milestone_does_not_save_it_again(tmp_path):
    """`ckpt_path=<milestone>`: the milestones that checkpoint holds count as reached, wherever
    the new run writes (before, it saved 1.0M again under the wrong step)."""
    first = compose_config("trainer.max_steps=2", "trainer.val_check_interval=2", "progressive_checkpoints=millions",
                           "progressive_checkpoints.milestones=[20K,1M]")
    train(first, tmp_path / "a")
    milestone = tmp_path / "a" / "progressive_checkpoints" / "checkpoint_20.0K_step_1.pt"
    assert milestone.exists()
    second = compose_config("trainer.max_steps=4", "trainer.val_check_interval=2", "progressive_checkpoints=millions",
                            "progressive_checkpoints.milestones=[20K,1M]", f"ckpt_path={milestone}")
    result = train(second, tmp_path / "b")
    assert result.trainer.global_step == 4
    assert not list((tmp_path / "b" / "progressive_checkpoints").glob("checkpoint_*"))


def test_a_milestone_records_the_step_of_its_validation_metrics(tmp_path):
    config = compose_config("objective=diffusion", "trainer.max_steps=5", "trainer.val_check_interval=2",
                            "growth.schedule=[{step:5,op:width,d_model:48}]", "progressive_checkpoints=millions",
                            "progressive_checkpoints.milestones=[40K]")
    train(config, tmp_path)
    sidecar = json.loads(next((tmp_path / "progressive_checkpoints").glob("*.json")).read_text())
    assert sidecar["global_step"] == 5 and sidecar["metadata"]["val_step"] == 4  # val/* are from step 4
    assert "val/loss" in sidecar["metadata"] and "train/loss" in sidecar["metadata"]


def test_a_resumed_run_keeps_its_metrics_without_lightnings_deletion_warning(tmp_path, recwarn):
    config = compose_config("trainer.max_steps=2", "trainer.val_check_interval=2", "last_checkpoint_every_n_steps=2")
    train(config, tmp_path)
    resumed = compose_config("trainer.max_steps=4", "trainer.val_check_interval=2", "last_checkpoint_every_n_steps=2",
                             f"ckpt_path={tmp_path / 'checkpoints' / 'last.ckpt'}")
    train(resumed, tmp_path)
    assert not [w for w in recwarn if "will be deleted" in str(w.message)]
    with open(tmp_path / "logs" / "metrics.csv", newline="") as handle:
        steps = [int(r["step"]) for r in csv.DictReader(handle) if r.get("train/loss")]
    assert steps == [0, 1, 2, 3]  # per step, the first run's rows kept


def test_data_files_take_directories_and_globs(tmp_path):
    corpus = tmp_path / "corpus"
    (corpus / "deeper").mkdir(parents=True)
    for name in ("a.txt", "deeper/b.md", "ignored.bin"):
        (corpus / name).write_text("the text of " + name + ". " * 2000)
    config = compose_config("data=text_files", f"data.files=[{corpus},{tmp_path}/corpus/*.txt]", "trainer.max_steps=1",
                            "trainer.limit_val_batches=0")
    assert config.data.files == [str(corpus / "a.txt"), str(corpus / "deeper" / "b.md"), str(corpus / "a.txt")]
    assert train(config, tmp_path / "run").trainer.global_step == 1


def test_the_plot_steps_at_growth_events_and_shows_the_size_a_run_ends_with(tmp_path):
    """A 3-step run that grows at its last step: the curve ends at the grown size."""
    from dimba.plotting import read_run

    config = compose_config("trainer.max_steps=3", "trainer.val_check_interval=3",
                            "growth.schedule=[{step:3,op:width,d_model:48}]", "progressive_checkpoints=disabled")
    train(config, tmp_path)
    assert (tmp_path / "training.png").is_file()  # every run writes its plot
    record = read_run(tmp_path)
    assert record.params_source == "growth history" and [g.step for g in record.growth] == [3]
    start, grown = record.params[0][1], record.params[-1][1]
    assert record.params[0][0] == 0 and record.params[-1] == (3.0, grown) and grown > start


def test_a_simple_trainer_checkpoint_is_refused_as_ckpt_path_before_training(tmp_path):
    import pytest

    from dimba.errors import CheckpointLoadError

    simple = Path(__file__).resolve().parent / "data" / "v1" / "simple" / "checkpoint_8.0K_step_2.pt"
    with pytest.raises(CheckpointLoadError, match=r"holds no Lightning training state .* SimpleTrainer.resume"):
        train(compose_config("trainer.max_steps=2", f"ckpt_path={simple}"), tmp_path)
    assert not (tmp_path / "checkpoints").exists()  # nothing trained, nothing written


def test_the_loss_panel_keeps_the_curve_after_the_first_steps_visible():
    """The first ten steps fall from about 15 to 2: on a linear axis the rest is a flat line."""
    from matplotlib.figure import Figure

    from dimba.plotting.draw import _draw_losses
    from dimba.plotting.record import RunRecord

    record = RunRecord(metrics_path=None, columns={"train/loss": [(s, 15.0 / (1 + s) + 1.0) for s in range(200)],
                                "val/loss": [(59, 1.2), (119, 1.1)]})
    axis = Figure().subplots()
    _draw_losses(axis, record)
    assert axis.get_yscale() == "log" and axis.get_ylabel() == "loss (log scale)"


def test_training_writes_nothing_on_stdout_the_progress_bar_and_summary_go_elsewhere(tmp_path, capfd, caplog):
    """stdout holds a run's plan and its milestone table (printed by train.py), so it can be
    piped: Lightning's progress bar and its (rich) model summary would draw there. The bar
    goes to stderr, the summary to the log (stderr and train.log under train.py)."""
    config = compose_config("trainer.max_steps=2", "trainer.val_check_interval=2", "trainer.enable_progress_bar=true",
                            "trainer.enable_model_summary=true")
    with caplog.at_level("INFO"):
        train(config, tmp_path)
    out, err = capfd.readouterr()
    assert out == ""
    assert "Epoch 0" in err and "Trainable params" in caplog.text


def test_resume_auto_finds_a_run_whose_milestones_went_to_another_save_dir(tmp_path):
    """A run killed before its first last.ckpt has only milestones; with
    `progressive_checkpoints.save_dir` overridden they are not in the default folder, and
    `resume=auto` must still see that the run holds a checkpoint (and which is newest)."""
    from dimba.checkpointing.discovery import latest_matching_run
    from dimba.checkpointing.layout import lightning_dir
    from dimba.resume import newest_valid_checkpoint

    overrides = ["trainer.max_steps=2", "trainer.val_check_interval=2", "progressive_checkpoints=millions",
                 "progressive_checkpoints.milestones=[20K]", "progressive_checkpoints.save_dir=kept"]
    run_dir = tmp_path / "outputs" / "2026-01-01" / "10-00-00.000001"
    train(compose_config(*overrides), run_dir)
    (run_dir / ".hydra").mkdir(parents=True)
    (run_dir / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    (run_dir / ".hydra" / "config.yaml").write_text("progressive_checkpoints:\n  save_dir: kept\n")
    for leftover in lightning_dir(run_dir).iterdir():  # killed before the first last.ckpt
        leftover.unlink()
    assert latest_matching_run(tmp_path / "outputs", overrides) == run_dir
    assert newest_valid_checkpoint(run_dir).parent == run_dir / "kept"


def test_resume_auto_continues_only_a_run_of_the_same_objective(tmp_path):
    """A run started before the default objective became `ar` trained `diffusion` with no
    `objective=` typed: `resume=auto` alone must not continue it as `ar` (it would fail
    after rewriting the run's config), and `objective=diffusion resume=auto` must."""
    from dimba.checkpointing.discovery import latest_matching_run, resolve_run_dir

    overrides = ["trainer.max_steps=2", "trainer.val_check_interval=2"]
    old = tmp_path / "outputs" / "2026-01-01" / "10-00-00.000001"
    train(compose_config("objective=diffusion", *overrides), old)
    (old / ".hydra").mkdir(parents=True)
    (old / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))  # nothing typed
    (old / ".hydra" / "hydra.yaml").write_text("hydra:\n  runtime:\n    choices:\n      objective: diffusion\n")
    fresh = str(tmp_path / "outputs" / "2026-01-02" / "09-00-00.000001")

    assert resolve_run_dir("auto", overrides, "ar", fresh) == fresh  # `resume=auto`: the default, ar
    assert resolve_run_dir("auto", [*overrides, "objective=diffusion"], "diffusion", fresh) == str(old)
    assert resolve_run_dir("auto", [*overrides, "objective=cdlm"], "cdlm", fresh) == fresh
    assert resolve_run_dir(None, [*overrides, "objective=diffusion"], "diffusion", fresh) == fresh
    # A record from before the objective group existed: the run trained diffusion.
    (old / ".hydra" / "hydra.yaml").write_text("hydra:\n  runtime:\n    choices:\n      model: small\n")
    assert latest_matching_run(tmp_path / "outputs", [*overrides, "objective=diffusion"], "diffusion") == old
    assert latest_matching_run(tmp_path / "outputs", overrides, "ar") is None
