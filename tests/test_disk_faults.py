"""A full disk during a milestone save: a clear error naming the file, earlier checkpoints
intact, nothing half-written left behind; and under DDP every rank stops with the error."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch

from dimba.errors import CheckpointWriteError
from dimba.training.checkpoint_io import AtomicCheckpointIO
from dimba.training import DIMBALightningModule
from dimba.utils.checkpointing import ProgressiveCheckpointManager
from conftest import HANG_GUARD_S

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small tmpfs needs root")


@pytest.fixture
def small_disk(tmp_path):
    """A 400 KiB filesystem: room for the first milestone checkpoint, not for the grown one."""
    mount = tmp_path / "disk"
    mount.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=400k", "tmpfs", str(mount)], capture_output=True, text=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


SCHEDULE = [{"step": 3, "op": "width", "d_model": 64}]


@pytest.mark.parametrize("io", ["lightning", "atomic"], ids=["lightning-default-io", "train.py-atomic-io"])
def test_disk_full_during_a_milestone_save(small_disk, tiny_model_config, token_loader, quiet_trainer_kwargs, io):
    module = DIMBALightningModule(model_config=tiny_model_config, growth_schedule=SCHEDULE, enable_progressive_checkpoints=True,
                                  progressive_milestones=[1_000, 40_000], progressive_save_dir=str(small_disk))
    plugins = [AtomicCheckpointIO()] if io == "atomic" else []
    with pytest.raises(CheckpointWriteError) as info:
        L.Trainer(max_steps=6, plugins=plugins, **quiet_trainer_kwargs).fit(module, token_loader())
    message = str(info.value)
    assert f"Cannot write milestone checkpoint {small_disk / 'checkpoint_40.0K_step_3.pt'}" in message
    assert "No space left on device" in message
    assert sorted(p.name for p in small_disk.iterdir()) == ["checkpoint_1.0K_step_1.json", "checkpoint_1.0K_step_1.pt"]
    assert torch.load(small_disk / "checkpoint_1.0K_step_1.pt", weights_only=True)["global_step"] == 1
    assert [e["status"] for e in ProgressiveCheckpointManager([1], small_disk).list_checkpoints()] == ["ok"]


@pytest.mark.slow
def test_ddp_rank_zero_save_failure_stops_every_rank(small_disk, tmp_path):
    job = Path(__file__).with_name("ddp_growth_job.py")
    result = subprocess.run([sys.executable, str(job), str(tmp_path / "out"), str(small_disk)],
                            capture_output=True, text=True, timeout=HANG_GUARD_S)
    assert result.returncode != 0
    assert "Cannot write milestone checkpoint" in result.stderr and "No space left on device" in result.stderr
    assert not (tmp_path / "out" / "rank0.txt").exists() and not (tmp_path / "out" / "rank1.txt").exists()
    assert not [p for p in small_disk.iterdir() if p.name.endswith(".tmp")]
