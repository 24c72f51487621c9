"""Real FSDP2, on two CPU processes (gloo): sharded parameters that grow, sharded milestones,
background sharded saves, resume of a grown run, on two ranks or one.

dimba's FSDP strategy runs on CPUs too, so the FSDP path is exercised here as users run it,
not only on GPU machines: each rank holds half of every parameter, both count the full
model, the model grows shard by shard computing the same function, both write their
shards of a milestone, and a run continues from a sharded `last.ckpt/` without repeating
a milestone, also with another number of processes (Distributed Checkpoint reshards).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import dimba
from dimba.model import DIMBAConfig
from dimba.model.params import architecture_parameters
from conftest import HANG_GUARD_S

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def run(*argv: str, env: dict | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    return subprocess.run([sys.executable, *argv], cwd=ROOT, env=env, capture_output=True, text=True, timeout=HANG_GUARD_S)


@pytest.mark.parametrize("async_save", [False, True], ids=["sync", "async"])
def test_fsdp2_grows_shard_by_shard_and_writes_sharded_milestones(tmp_path, async_save):
    from conftest import TINY_MODEL

    result = run(str(ROOT / "tests" / "fsdp_job.py"), str(tmp_path), "4", env={"DIMBA_TEST_ASYNC": str(int(async_save))})
    assert result.returncode == 0, result.stderr[-3000:]
    reports = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert reports[0]["stages"] == reports[1]["stages"] and reports[0]["step"] == 4
    grown = DIMBAConfig(**{**TINY_MODEL, "n_layers": 3, "d_model": 48})
    for stage in reports[0]["stages"].values():
        assert 0.49 * stage["global"] <= stage["local"] <= 0.51 * stage["global"]  # each rank holds half
        assert stage["delta"] < 1e-5  # growth computes the same function (fp32 bound)
    assert reports[0]["stages"]["4"]["global"] == architecture_parameters(grown)
    for name in ("checkpoint_1.0K_step_1.pt", "checkpoint_40.0K_step_3.pt"):
        path = tmp_path / "milestones" / name
        assert sorted(p.name for p in path.iterdir()) == [".metadata", "__0_0.distcp", "__1_0.distcp", "meta.pt"]
        sidecar = json.loads(path.with_suffix(".json").read_text())
        assert sidecar["checkpoint_format"] == "torch_dcp"
    model = dimba.load_model(tmp_path / "milestones" / "checkpoint_40.0K_step_3.pt")  # both ranks' shards, joined
    assert model.config == grown.with_runtime_of(model.config)
    assert torch.isfinite(model(torch.randn(1, 8, model.config.d_embed), torch.tensor([10]))).all()
    assert result.stderr.count("🎯 Progressive checkpoint saved") == 2
    assert not list((tmp_path / "milestones").glob(".*.tmp"))  # nothing left in flight


def test_train_py_with_fsdp_resumes_a_grown_run_on_two_ranks_and_on_one(tmp_path):
    run_dir = tmp_path / "run"
    args = ["train.py", "trainer=fsdp", "trainer.accelerator=cpu", "trainer.precision=32-true", "objective=diffusion",
            "model.d_model=64", "model.n_layers=2", "data.seq_len=64", "data.batch_size=4",
            "growth.schedule=[{step:2,op:depth,n_layers:3},{step:3,op:width,d_model:96}]",
            "trainer.val_check_interval=2", "trainer.limit_val_batches=1", "trainer.enable_progress_bar=false",
            "last_checkpoint_every_n_steps=2", "progressive_checkpoints.milestones=[100K,250K]",
            "optim.total_steps=8", f"hydra.run.dir={run_dir}", "resume=auto"]
    first = run(*args, "trainer.devices=2", "trainer.max_steps=4")
    assert first.returncode == 0, first.stderr[-3000:]
    last = run_dir / "checkpoints" / "last.ckpt"
    assert (last / ".metadata").is_file() and not list(last.parent.glob(".*"))
    second = run(*args, "trainer.devices=2", "trainer.max_steps=6")
    assert second.returncode == 0, second.stderr[-3000:]
    assert f"resume=auto: continuing from {last}" in second.stderr
    assert torch.load(last / "meta.pt", weights_only=True)["global_step"] == 6
    third = run(*args, "trainer.devices=1", "trainer.max_steps=8")  # one rank now: the shards are re-split
    assert third.returncode == 0, third.stderr[-3000:]
    assert torch.load(last / "meta.pt", weights_only=True)["global_step"] == 8
    model = dimba.load_model(last)
    assert (model.config.n_layers, model.config.d_model) == (3, 96)  # the grown shape, resumed twice
    milestones = sorted(p.name for p in (run_dir / "progressive_checkpoints").iterdir() if not p.name.startswith("."))
    assert milestones == ["checkpoint_100.0K_step_1.json", "checkpoint_100.0K_step_1.pt",
                          "checkpoint_250.0K_step_3.json", "checkpoint_250.0K_step_3.pt"]  # each once
    sidecar = json.loads((run_dir / "progressive_checkpoints" / "checkpoint_250.0K_step_3.json").read_text())
    assert sidecar["metadata"]["val_bpb"] > 0  # the bound of a sharded model, every rank computing it


@pytest.mark.parametrize("trainer, objective", [("fsdp", "ar"), ("fsdp", "masked"), ("ddp_cpu", "ar")])
def test_the_discrete_objectives_train_grow_and_checkpoint_on_two_ranks(tmp_path, trainer, objective):
    """Masked diffusion and the autoregressive model take the same distributed paths as
    DIMBA: sharded growth, sharded milestones, a validation bound every rank computes."""
    run_dir = tmp_path / "run"
    result = run("train.py", f"trainer={trainer}", "trainer.accelerator=cpu", "trainer.devices=2",
                 "trainer.precision=32-true", f"objective={objective}", "model.d_model=64", "model.n_layers=2",
                 "data.seq_len=64", "data.batch_size=4", "trainer.max_steps=4",
                 "growth.schedule=[{step:2,op:depth,n_layers:3},{step:3,op:width,d_model:96}]",
                 "trainer.val_check_interval=2", "trainer.limit_val_batches=1", "trainer.enable_progress_bar=false",
                 "progressive_checkpoints.milestones=[100K,200K]", f"hydra.run.dir={run_dir}")
    assert result.returncode == 0, result.stderr[-3000:]
    milestone = run_dir / "progressive_checkpoints" / "checkpoint_200.0K_step_3.pt"
    sidecar = json.loads(milestone.with_suffix(".json").read_text())
    assert 0 < sidecar["metadata"]["val_bpb"] < 9  # near uniform (8 bits) after 4 steps, every rank computing it
    model = dimba.load_model(run_dir / "checkpoints" / "last.ckpt")
    assert (model.config.objective, model.config.n_layers, model.config.d_model) == (objective, 3, 96)
