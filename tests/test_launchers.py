"""Sweeps: DDP inside a sweep job leaves no stray directories."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from dimba.config import register_configs

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
register_configs()

TINY = [
    "model.d_model=32", "model.n_layers=1", "model.head_dim=16", "model.d_state=8", "model.d_embed=16",
    "model.d_time=16", "model.chunk_size=16", "data.seq_len=32", "data.batch_size=2",
    "trainer.val_check_interval=2", "trainer.limit_val_batches=1", "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false", "growth=none", "progressive_checkpoints=disabled",
]


def compose_with_hydra(*overrides: str) -> DictConfig:
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("config", overrides=list(overrides), return_hydra_config=True)


def train(*args: str, cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "HYDRA_FULL_ERROR": "0", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, str(ROOT / "train.py"), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def last_step(job_dir: Path) -> int:
    import torch

    return int(torch.load(job_dir / "checkpoints" / "last.ckpt", weights_only=True)["global_step"])


# --- DDP inside a sweep job, in process -------------------------------------------------

@pytest.fixture
def as_sweep_job(tmp_path, monkeypatch):
    """HydraConfig as in job 1 of `python train.py -m seed=0,1 data.batch_size=2`."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    from omegaconf import read_write

    config = compose_with_hydra("seed=1", "data.batch_size=2")
    with read_write(config.hydra):
        config.hydra.mode = RunMode.MULTIRUN
        config.hydra.runtime.output_dir = str(tmp_path / "sweep" / "1")
        config.hydra.runtime.cwd = str(ROOT)
    monkeypatch.setattr(sys, "argv", ["train.py", "-m", "seed=0,1", "data.batch_size=2"])
    previous = HydraConfig.instance().cfg
    HydraConfig.instance().set_config(config)
    yield tmp_path / "sweep" / "1"
    HydraConfig.instance().cfg = previous


def test_a_sweep_job_relaunches_ddp_children_as_this_job_alone(as_sweep_job, monkeypatch):
    from hydra.core.hydra_config import HydraConfig

    from dimba.launch import multirun_job

    monkeypatch.delenv("LOCAL_RANK", raising=False)
    monkeypatch.setenv("MASTER_ADDR", "set-by-the-user")
    main = sys.modules["__main__"]
    with multirun_job():
        # What Lightning's _hydra_subprocess_cmd reads to build a child's command line.
        assert sys.argv == ["train.py", "seed=1", "data.batch_size=2"]
        assert HydraConfig.get().run.dir == str(as_sweep_job)
        assert sys.modules["__main__"].__spec__ is None  # pytest's __main__ is not train.py
        assert sys.modules["__main__"].__file__ == str(ROOT / "train.py")
        os.environ["LOCAL_RANK"] = "0"  # as Lightning's launcher leaves them
        os.environ["MASTER_ADDR"] = "127.0.0.1"
    assert sys.argv == ["train.py", "-m", "seed=0,1", "data.batch_size=2"]
    assert "LOCAL_RANK" not in os.environ and os.environ["MASTER_ADDR"] == "set-by-the-user"
    assert sys.modules["__main__"] is main


def test_outside_a_sweep_nothing_changes(monkeypatch):
    from dimba.launch import multirun_job

    monkeypatch.setattr(sys, "argv", ["train.py", "seed=1"])
    with multirun_job():
        assert sys.argv == ["train.py", "seed=1"]


# --- real sweeps (subprocesses) -----------------------------------------------------------

@pytest.mark.slow
def test_multirun_with_ddp_writes_only_the_sweeps_job_directories(tmp_path):
    """Before dimba.launch.multirun_job each DDP child ran the whole sweep again, into a
    second `outputs/multirun/<date>/<time>/` (the sweep directory is left at its default,
    a new timestamp per process, so that directory shows)."""
    result = train("-m", "trainer=ddp_cpu", "seed=0,1", *TINY, "trainer.max_steps=2", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["outputs"]
    assert sorted(p.name for p in (tmp_path / "outputs").iterdir()) == ["multirun"]
    sweeps = list((tmp_path / "outputs" / "multirun").glob("*/*"))
    assert len(sweeps) == 1, sweeps
    sweep = sweeps[0]
    assert sorted(p.name for p in sweep.iterdir()) == ["0", "1", "multirun.yaml"]
    for job in ("0", "1"):
        assert last_step(sweep / job) == 2
        assert (sweep / job / "logs" / "metrics.csv").is_file() and (sweep / job / "train.log").is_file()
        assert (sweep / job / "train_ddp_process_1.log").is_file()  # the child wrote into the job's directory
    assert (result.stdout + result.stderr).count("Launching 2 jobs") == 1  # no child started a sweep of its own
    # Each job ran with two processes (the second job too: no process group left from the first).
    assert result.stderr.count("All distributed processes registered. Starting with 2 processes") == 2
