"""`python train.py ...` as a user runs it: real subprocesses, files checked on disk."""

from __future__ import annotations

import json
import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import dimba
from conftest import HANG_GUARD_S

ROOT = Path(__file__).resolve().parents[1]
# Small enough for seconds per run; everything else is the shipped default config, but for the
# objective: the milestones below are sized for the continuous model's network.
SHORT = [
    "objective=diffusion", "data.seq_len=64", "data.batch_size=4",
    "trainer.max_steps=4", "trainer.val_check_interval=2", "trainer.limit_val_batches=1",
    "trainer.enable_progress_bar=false",
]
FAST = [*SHORT, "model.d_model=64", "model.n_layers=1", "growth=none"]
# The default model, growth and milestones, with the growth steps brought forward.
QUICK_GROWTH = "growth.schedule=[{step:2,op:depth,n_layers:8},{step:3,op:width,d_model:192},{step:4,op:width,d_model:256}]"

pytestmark = pytest.mark.slow


def train(*args: str, cwd: Path = ROOT, timeout: int = HANG_GUARD_S) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "HYDRA_FULL_ERROR": "0"}
    return subprocess.run([sys.executable, str(ROOT / "train.py"), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def milestone_files(run_dir: Path) -> list[str]:
    return sorted(p.name for p in (run_dir / "progressive_checkpoints").glob("checkpoint_*"))


def test_default_run_writes_everything_into_its_run_directory(tmp_path):
    result = train(*SHORT, QUICK_GROWTH, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    runs = list((tmp_path / "outputs").glob("*/*"))
    assert len(runs) == 1  # outputs/<date>/<time>/ under the working directory
    run = runs[0]
    assert (run / ".hydra" / "config.yaml").is_file() and (run / "train.log").is_file()
    assert "val/loss" in (run / "logs" / "metrics.csv").read_text().splitlines()[0]
    assert milestone_files(run) == [
        "checkpoint_1.0M_step_2.json", "checkpoint_1.0M_step_2.pt",
        "checkpoint_2.0M_step_3.json", "checkpoint_2.0M_step_3.pt",
        "checkpoint_4.0M_step_4.json", "checkpoint_4.0M_step_4.pt",
    ]
    assert "🎯 Progressive checkpoint saved: 1.0M" in result.stderr
    assert "🎯 Progressive checkpoint saved: 1.0M" in (run / "train.log").read_text()
    assert "Traceback" not in result.stderr
    # Written at the end of training, though its cadence (every 50 steps) never came due.
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 4
    checkpoint = torch.load(run / "progressive_checkpoints" / "checkpoint_2.0M_step_3.pt", weights_only=True)
    assert checkpoint["global_step"] == 3 and checkpoint["target_milestone"] == 2_000_000
    assert checkpoint["metadata"]["architecture"]["d_model"] == 192


def test_the_default_run_as_shipped(tmp_path):
    """`python train.py` exactly as the README's quickstart runs it (about two minutes of training here)."""
    result = train(cwd=tmp_path, timeout=HANG_GUARD_S)
    assert result.returncode == 0, result.stderr[-3000:]
    run = next((tmp_path / "outputs").glob("*/*"))
    saved = [(e["target_milestone"], e["global_step"], e["current_params"])
             for e in map(json.loads, map(Path.read_text, sorted((run / "progressive_checkpoints").glob("*.json"))))]
    # The growth after step 240 crosses all three milestones: each gets its own checkpoint.
    assert sorted(saved) == [(1_000_000, 240, 4_119_472), (2_000_000, 240, 4_119_472), (4_000_000, 240, 4_119_472)]
    for milestone, step, params in saved:
        model = dimba.load_model(run / "progressive_checkpoints" / f"checkpoint_{milestone // 10**6}.0M_step_{step}.pt")
        assert sum(p.numel() for p in model.parameters()) == params
        assert (model.config.objective, model.config.n_layers, model.config.d_model) == ("ar", 10, 256)
    from dimba.plotting import read_run

    record = read_run(run)  # its training.png: the count starts at ar's network, the bound is exact
    assert record.objective == "ar" and record.params[0] == (0, 452_144) and record.params[-1] == (240, 4_119_472)


def test_milestones_in_scientific_notation_and_an_explicit_run_dir(tmp_path):
    run = tmp_path / "run"
    # The model starts at 74.1K: 5e4 and 6e4 are saved at its first step; 1e12 keeps the list
    # from being one the model has entirely passed at step 0 (refused, see test_invalid_configs).
    result = train(*FAST, "progressive_checkpoints.milestones=[5e4,6e4,1e12]", f"hydra.run.dir={run}")
    assert result.returncode == 0, result.stderr
    assert milestone_files(run) == [
        "checkpoint_50.0K_step_1.json", "checkpoint_50.0K_step_1.pt",
        "checkpoint_60.0K_step_1.json", "checkpoint_60.0K_step_1.pt",
    ]
    sidecar = json.loads((run / "progressive_checkpoints" / "checkpoint_60.0K_step_1.json").read_text())
    assert sidecar["milestones"] == [50000, 60000, 10**12] and sidecar["target_milestone"] == 60000


def test_objective_cdlm_trains_and_logs_the_consistency_loss(tmp_path):
    run = tmp_path / "run"
    result = train(*FAST, "objective=cdlm", "objective.consistency_loss_weight=0.5", "trainer.log_every_n_steps=1",
                   "progressive_checkpoints=disabled", f"hydra.run.dir={run}")
    assert result.returncode == 0, result.stderr
    header, *rows = (run / "logs" / "metrics.csv").read_text().splitlines()
    column = header.split(",").index("train/consistency_loss")
    assert [float(r.split(",")[column]) > 0 for r in rows if r.split(",")[column]] == [True] * 4
    hparams = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["hyper_parameters"]
    assert hparams["use_consistency_training"] is True and hparams["consistency_loss_weight"] == 0.5


def test_billions_preset_warns_about_unreachable_milestones_and_saves_nothing(tmp_path):
    run = tmp_path / "run"
    result = train(*FAST, "progressive_checkpoints=billions", f"hydra.run.dir={run}")
    assert result.returncode == 0, result.stderr
    assert milestone_files(run) == []
    assert "Milestones this configuration never reaches: 1.0B, 5.0B, 10.0B, 30.0B" in result.stderr
    assert "No milestone was reached" in result.stdout  # asked-for output: stdout
    assert "No milestone was reached" in (run / "train.log").read_text()  # and the run's record


def test_dry_run_plans_a_30b_growth_without_training(tmp_path):
    run = tmp_path / "run"
    result = train("experiment=billions", "dry_run=true", f"hydra.run.dir={run}", timeout=HANG_GUARD_S)
    assert result.returncode == 0, result.stderr
    assert "30,452,971,264" in result.stdout and "never reaches" not in result.stdout
    for label in ("1.0B", "5.0B", "10.0B", "30.0B"):
        assert label in result.stdout
    assert not run.exists()  # a dry run writes nothing, no run directory either


@pytest.mark.parametrize("bad", ["[abc]", "[1e6,-5]", "[1.5X]"])
def test_a_bad_milestone_stops_before_training_with_one_line(tmp_path, bad):
    result = train(f"progressive_checkpoints.milestones={bad}", f"hydra.run.dir={tmp_path / 'run'}")
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Invalid config: progressive_checkpoints.milestones:")
    assert "K/M/B" in lines[0] and "Traceback" not in result.stderr
    assert not (tmp_path / "run").exists()  # a rejected config writes nothing


def test_a_two_job_sweep_gives_each_job_its_own_directory(tmp_path):
    sweep = tmp_path / "sweep"
    result = train("-m", *FAST, "progressive_checkpoints.milestones=[5e4,1e12],[6e4,1e12]", f"hydra.sweep.dir={sweep}")
    assert result.returncode == 0, result.stderr
    assert milestone_files(sweep / "0") == ["checkpoint_50.0K_step_1.json", "checkpoint_50.0K_step_1.pt"]
    assert milestone_files(sweep / "1") == ["checkpoint_60.0K_step_1.json", "checkpoint_60.0K_step_1.pt"]
    for job in ("0", "1"):
        assert (sweep / job / "train.log").is_file() and (sweep / job / "logs" / "metrics.csv").is_file()


def test_ddp_with_two_processes_writes_one_set_of_files(tmp_path):
    run = tmp_path / "run"
    result = train(*FAST, "trainer=ddp_cpu", "progressive_checkpoints.milestones=[5e4,1e12]", f"hydra.run.dir={run}")
    assert result.returncode == 0, result.stderr
    assert milestone_files(run) == ["checkpoint_50.0K_step_1.json", "checkpoint_50.0K_step_1.pt"]
    assert result.stderr.count("🎯 Progressive checkpoint saved") == 1
    assert not list((run / "progressive_checkpoints").glob(".*"))  # no temporaries left
    checkpoint = torch.load(run / "progressive_checkpoints" / "checkpoint_50.0K_step_1.pt", weights_only=True)
    assert checkpoint["global_step"] == 1


def test_resume_auto_continues_the_latest_matching_run_in_its_own_directory(tmp_path):
    first = train(*FAST, "trainer.max_steps=4", "last_checkpoint_every_n_steps=2", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    other = train(*FAST, "trainer.max_steps=2", "optim.lr=1e-3", cwd=tmp_path)  # a different experiment
    assert other.returncode == 0, other.stderr
    runs = sorted((tmp_path / "outputs").glob("*/*"))
    assert len(runs) == 2

    resumed = train(*FAST, "trainer.max_steps=6", "last_checkpoint_every_n_steps=2", "resume=auto", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert sorted((tmp_path / "outputs").glob("*/*")) == runs  # no new run directory
    assert f"resume=auto: continuing from {runs[0] / 'checkpoints' / 'last.ckpt'}" in resumed.stderr
    assert torch.load(runs[0] / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 6
    # metrics.csv keeps the first attempt's rows and continues (Lightning's logger would delete them).
    with open(runs[0] / "logs" / "metrics.csv") as handle:
        steps = [int(row["step"]) for row in csv.DictReader(handle) if row.get("val/loss")]
    assert steps[:2] == [1, 3] and len(steps) == 3 and steps[2] >= 5, steps  # first run's two, the resumed one


def test_sigterm_writes_last_checkpoint_before_exiting(tmp_path):
    import signal
    import time

    run = tmp_path / "run"
    args = [sys.executable, str(ROOT / "train.py"), *FAST, "trainer.max_steps=100000", "last_checkpoint_every_n_steps=100000",
            "progressive_checkpoints.milestones=[1K,1T]", f"hydra.run.dir={run}"]
    process = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not list((run / "progressive_checkpoints").glob("checkpoint_*.json")):  # the step-1 milestone: training runs
            assert time.monotonic() < deadline and process.poll() is None, "training never started"
            time.sleep(0.2)
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=HANG_GUARD_S)
    finally:
        process.kill()
    last = run / "checkpoints" / "last.ckpt"
    assert last.is_file(), stderr[-2000:]
    step = torch.load(last, weights_only=True)["global_step"]
    assert 0 < step < 100000
    assert f"SIGTERM: saved {last} at step {step}" in stderr


def test_an_optuna_sweep_minimizes_the_final_validation_loss(tmp_path):
    """`main` returns the final val/loss, so Hydra's optimizing sweepers have something to minimize."""
    import yaml

    sweep = tmp_path / "sweep"
    result = train("-m", "hydra/sweeper=optuna", "hydra.sweeper.n_trials=2", "hydra.sweeper.sampler.seed=1",
                   "optim.lr=interval(1e-4,1e-2)", *FAST, "progressive_checkpoints=disabled", f"hydra.sweep.dir={sweep}",
                   cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    finals = []
    for job in ("0", "1"):
        with open(sweep / job / "logs" / "metrics.csv", newline="") as handle:
            rows = list(csv.DictReader(handle))
        validations = [r for r in rows if r.get("val/loss")]
        assert validations[-1]["step"] == rows[-1]["step"]  # the last thing logged: validated at the end
        finals.append(float(validations[-1]["val/loss"]))
    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert best["best_value"] == pytest.approx(min(finals), rel=1e-6)
    assert 1e-4 <= best["best_params"]["optim.lr"] <= 1e-2


def test_a_sweep_with_an_invalid_job_starts_no_job_and_names_it(tmp_path):
    result = train("-m", *FAST, "model.d_model=-3,128", f"hydra.sweep.dir={tmp_path / 'sweep'}", cwd=tmp_path)
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines[0] == "Invalid sweep: 1 of 2 jobs are invalid; no job was started:"
    assert lines[1].startswith("  job 0 (") and "model.d_model=-3" in lines[1]
    assert "model.d_model: -3 is invalid; accepted: a positive integer" in lines[1] and len(lines) == 2
    assert not (tmp_path / "sweep").exists() and not (tmp_path / "outputs").exists()


def test_a_typo_is_one_line_and_writes_nothing(tmp_path):
    result = train("trainer=gpuu", cwd=tmp_path)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.strip() == ("Invalid config: unknown group option 'gpuu' for trainer; available: cpu, ddp, "
                                     "ddp_cpu, fsdp, gpu (did you mean gpu?)")
    assert not (tmp_path / "outputs").exists()


def test_ckpt_path_to_a_file_that_is_not_a_checkpoint_is_one_line(tmp_path):
    truncated = tmp_path / "last.ckpt"
    truncated.write_bytes(b"PK\x03\x04" + b"\0" * 100)  # a zip's first bytes, cut off
    for target, reason in ((truncated, "is truncated or corrupt"), (Path("/etc/passwd"), "is not a checkpoint")):
        result = train(*FAST, f"ckpt_path={target}", cwd=tmp_path)
        assert result.returncode == 2
        assert result.stderr.strip().count("\n") == 0 and reason in result.stderr and str(target) in result.stderr
    assert not (tmp_path / "outputs").exists()
