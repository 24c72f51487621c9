"""Real FSDP, on two CPU processes (gloo): sharded parameters, sharded milestones, resume.

dimba's FSDPStrategy runs on CPUs too, so the FSDP path is exercised here as users run it,
not only on GPU machines: each rank holds half of every parameter, both count the full
model, both write their shards of a milestone, and a run continues from a sharded
`last.ckpt/` without repeating a milestone.
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
from dimba.model.params import architecture_parameters as count_parameters
from dimba.model import DIMBAConfig

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def run(*argv: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, *argv], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def test_fsdp_shards_parameters_counts_the_full_model_and_writes_sharded_milestones(tmp_path):
    from conftest import TINY_MODEL

    result = run(str(ROOT / "tests" / "fsdp_job.py"), str(tmp_path))
    assert result.returncode == 0, result.stderr[-3000:]
    full = count_parameters(DIMBAConfig(**{**TINY_MODEL, "n_layers": 2}))
    ranks = [(tmp_path / f"rank{r}.txt").read_text().split() for r in (0, 1)]
    assert ranks[0] == ranks[1] == [str(full), str(full // 2), "3"]  # each rank holds half, both count all
    for name in ("checkpoint_1.0K_step_1.pt", "checkpoint_20.0K_step_1.pt"):
        path = tmp_path / "milestones" / name
        assert sorted(p.name for p in path.iterdir()) == [".metadata", "__0_0.distcp", "__1_0.distcp", "meta.pt"]
        sidecar = json.loads(path.with_suffix(".json").read_text())
        assert sidecar["checkpoint_format"] == "torch_dcp" and sidecar["current_params"] == full
    model = dimba.load_model(tmp_path / "milestones" / "checkpoint_20.0K_step_1.pt")  # both ranks' shards, joined
    assert sum(p.numel() for p in model.parameters()) == full
    assert torch.isfinite(model(torch.randn(1, 8, model.config.d_embed), torch.tensor([10]))).all()
    assert result.stderr.count("🎯 Progressive checkpoint saved") == 2


def test_train_py_with_fsdp_on_cpu_resumes_from_its_sharded_last_checkpoint(tmp_path):
    run_dir = tmp_path / "run"
    args = ["train.py", "trainer=fsdp", "trainer.accelerator=cpu", "trainer.devices=2", "trainer.precision=32-true",
            "growth=none", "model.d_model=64", "model.n_layers=2", "data.seq_len=64", "data.batch_size=4",
            "trainer.val_check_interval=2", "trainer.limit_val_batches=1", "trainer.enable_progress_bar=false",
            "last_checkpoint_every_n_steps=2", "progressive_checkpoints.milestones=[100K,300K]",
            f"hydra.run.dir={run_dir}", "resume=auto"]
    first = run(*args, "trainer.max_steps=4")
    assert first.returncode == 0, first.stderr[-3000:]
    last = run_dir / "checkpoints" / "last.ckpt"
    assert (last / ".metadata").is_file() and not list(last.parent.glob(".*"))
    second = run(*args, "trainer.max_steps=6")
    assert second.returncode == 0, second.stderr[-3000:]
    assert f"resume=auto: continuing from {last}" in second.stderr
    assert torch.load(last / "meta.pt", weights_only=True)["global_step"] == 6
    milestones = sorted(p.name for p in (run_dir / "progressive_checkpoints").iterdir())
    assert milestones == ["checkpoint_100.0K_step_1.json", "checkpoint_100.0K_step_1.pt"]  # saved once, not again
