"""hydra/launcher=slurm and =joblib: composition, the SLURM launcher's requeue preparation
(without submitting anything), and real sweeps: joblib jobs that resume in their own
directories, and DDP inside a sweep that leaves no stray directories."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, List

import pytest
import submitit
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import DictConfig

from dimba.config import register_configs
from dimba.launch import SlurmLauncher, pin_sweep_dir, with_resume_auto
from conftest import HANG_GUARD_S

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


def train(*args: str, cwd: Path, timeout: int = HANG_GUARD_S) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "HYDRA_FULL_ERROR": "0", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, str(ROOT / "train.py"), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def last_step(job_dir: Path) -> int:
    import torch

    return int(torch.load(job_dir / "checkpoints" / "last.ckpt", weights_only=True)["global_step"])


# --- composition ------------------------------------------------------------------------

def test_slurm_launcher_config_composes_onto_the_submitit_schema():
    launcher = compose_with_hydra("hydra/launcher=slurm").hydra.launcher
    assert launcher._target_ == "dimba.launch.SlurmLauncher"
    assert launcher.max_num_timeout > 0  # requeue after a time-out is allowed
    assert launcher.signal_delay_s > 0 and launcher.timeout_min > 0
    assert launcher.tasks_per_node == 1 and launcher.gpus_per_node == 1
    assert launcher.submitit_folder.endswith("/.submitit/%j")  # the plugin's fields are all there
    assert "partition" in launcher and "additional_parameters" in launcher


def test_slurm_launcher_options_override_from_the_command_line():
    launcher = compose_with_hydra("hydra/launcher=slurm", "hydra.launcher.partition=gpu",
                                  "hydra.launcher.tasks_per_node=4").hydra.launcher
    assert launcher.partition == "gpu" and launcher.tasks_per_node == 4


def test_joblib_launcher_config_composes():
    launcher = compose_with_hydra("hydra/launcher=joblib").hydra.launcher
    assert launcher._target_ == "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"
    assert launcher.n_jobs == -1


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


# --- the SLURM launcher, without submitting -----------------------------------------------

class FakeExecutor:
    """Stands in for submitit.AutoExecutor: records what would be submitted."""

    last: "FakeExecutor"

    def __init__(self, cluster: str, folder: str, **kwargs: Any) -> None:
        self.cluster, self.folder, self.init_kwargs = cluster, folder, kwargs
        self.params: dict = {}
        self.jobs: List[tuple] = []
        FakeExecutor.last = self

    def update_parameters(self, **params: Any) -> None:
        self.params = params

    def map_array(self, fn: Any, *iterables: Any) -> list:
        self.fn = fn
        self.jobs = list(zip(*iterables))
        return [FakeJob() for _ in self.jobs]


class FakeJob:
    def results(self) -> list:
        return [None]


@pytest.fixture
def slurm_launcher(tmp_path, monkeypatch):
    """A SlurmLauncher set up for `python train.py -m hydra/launcher=slurm seed=0,1` in tmp_path."""
    folder = tmp_path / "a dir, with=odd:chars"
    folder.mkdir()
    monkeypatch.chdir(folder)
    monkeypatch.setattr(submitit, "AutoExecutor", FakeExecutor)
    config = compose_with_hydra("hydra/launcher=slurm")
    launcher = instantiate(config.hydra.launcher)
    assert type(launcher) is SlurmLauncher
    launcher.setup(hydra_context=None, task_function=lambda cfg: None, config=config)
    return launcher


def test_slurm_launch_pins_the_sweep_dir_and_adds_resume_auto(slurm_launcher):
    configured = str(slurm_launcher.config.hydra.sweep.dir)
    assert configured.startswith("outputs/multirun/")  # relative, with ${now:...} in the config
    slurm_launcher.launch([["seed=0"], ["seed=1"]], initial_job_idx=0)

    executor = FakeExecutor.last
    assert executor.cluster == "slurm" and executor.init_kwargs == {"slurm_max_num_timeout": 20}
    assert executor.params["slurm_signal_delay_s"] == 120
    assert executor.fn is slurm_launcher
    pinned = Path.cwd() / configured
    assert slurm_launcher.config.hydra.sweep.dir == str(pinned) and pinned.is_dir()
    assert [job[0] for job in executor.jobs] == [["seed=0", "resume=auto"], ["seed=1", "resume=auto"]]
    assert [job[1:3] for job in executor.jobs] == [("hydra.sweep.dir", 0), ("hydra.sweep.dir", 1)]


def test_a_requeued_job_composes_the_same_sweep_dir_later_and_elsewhere(slurm_launcher, tmp_path, monkeypatch):
    """A requeued job composes its config again from the stored overrides (what submitit's
    `load_sweep_config` does on the compute node), in another directory, at another time."""
    slurm_launcher.launch([["seed=1"]], initial_job_idx=0)
    pinned = slurm_launcher.config.hydra.sweep.dir
    stored_hydra_overrides = list(slurm_launcher.config.hydra.overrides.hydra)
    job_overrides = FakeExecutor.last.jobs[0][0]

    monkeypatch.chdir(tmp_path)
    job = compose_with_hydra(*stored_hydra_overrides, *job_overrides)
    assert job.hydra.sweep.dir == pinned and Path(pinned).is_absolute()
    assert job.resume == "auto" and job.seed == 1
    assert [o for o in stored_hydra_overrides if o.startswith("hydra.sweep.dir=")] == [
        stored_hydra_overrides[-1]]  # one pin, replacing any the user typed


def test_checkpoint_resubmits_the_same_call(slurm_launcher):
    slurm_launcher.launch([["seed=0"], ["seed=1"]], initial_job_idx=0)
    for args in FakeExecutor.last.jobs:
        delayed = slurm_launcher.checkpoint(*args)
        assert isinstance(delayed, submitit.helpers.DelayedSubmission)
        assert delayed.function is slurm_launcher
        assert delayed.args == args and delayed.kwargs == {}


def test_pin_sweep_dir_replaces_a_typed_sweep_dir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = compose_with_hydra("hydra/launcher=slurm", "hydra.sweep.dir=runs/sweep")
    config.hydra.overrides.hydra = ["hydra.sweep.dir=runs/sweep", "hydra/launcher=slurm"]  # as Hydra records them
    assert pin_sweep_dir(config) == tmp_path / "runs" / "sweep"
    assert list(config.hydra.overrides.hydra) == ["hydra/launcher=slurm", f"hydra.sweep.dir={tmp_path}/runs/sweep"]


@pytest.mark.parametrize("overrides, expected", [
    (["seed=0"], ["seed=0", "resume=auto"]),
    (["seed=0", "resume=null"], ["seed=0", "resume=null"]),
    (["resume=auto"], ["resume=auto"]),
    (["ckpt_path=/ckpts/last.ckpt"], ["ckpt_path=/ckpts/last.ckpt"]),
    (["++ckpt_path=/ckpts/last.ckpt"], ["++ckpt_path=/ckpts/last.ckpt"]),
])
def test_resume_auto_is_added_only_when_the_user_chose_no_resume(overrides, expected):
    assert with_resume_auto(overrides, compose_with_hydra()) == expected


def test_resume_auto_is_not_added_over_a_configured_ckpt_path(tmp_path):
    checkpoint = tmp_path / "last.ckpt"
    config = compose_with_hydra(f"ckpt_path={checkpoint}")
    assert with_resume_auto(["seed=0"], config) == ["seed=0"]


# --- real sweeps (subprocesses) -----------------------------------------------------------

@pytest.mark.slow
def test_joblib_sweep_runs_two_jobs_that_resume_in_their_own_directories(tmp_path):
    sweep = tmp_path / "sweep"
    args = ["-m", "hydra/launcher=joblib", "seed=0,1", "resume=auto", *TINY, f"hydra.sweep.dir={sweep}"]
    first = train(*args, "trainer.max_steps=2", cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    for job in ("0", "1"):
        log = (sweep / job / "train.log").read_text()
        assert "resume=auto: no checkpoint yet, starting fresh" in log
        assert last_step(sweep / job) == 2

    second = train(*args, "trainer.max_steps=4", cwd=tmp_path)
    assert second.returncode == 0, second.stderr[-3000:]
    assert sorted(p.name for p in sweep.iterdir()) == ["0", "1", "multirun.yaml"]
    for job in ("0", "1"):
        log = (sweep / job / "train.log").read_text()
        assert f"resume=auto: continuing from {sweep / job / 'checkpoints' / 'last.ckpt'}" in log
        assert last_step(sweep / job) == 4
        metrics = list(csv.DictReader((sweep / job / "logs" / "metrics.csv").open()))
        assert metrics[-1]["step"] == "4"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sweep"]


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
