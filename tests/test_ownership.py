"""One writer per save directory: a second run finds the claim before it trains and says who
holds it; a claim left by a dead run is taken over; nothing of one run is replaced by another."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from dimba.checkpointing.ownership import OWNER_FILE, SaveDirClaim, check_free, read_owner
from dimba.errors import ConfigError
from conftest import HANG_GUARD_S

ROOT = Path(__file__).resolve().parents[1]


def write_claim(directory: Path, **fields) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    owner = {"pid": os.getpid(), "host": socket.gethostname(), "run_dir": "/runs/other", "started_at": "2026-12-01T10:00:00+00:00",
             "process_start": None, "slurm_job": None, **fields}
    (directory / OWNER_FILE).write_text(json.dumps(owner))


def a_dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_a_claim_is_held_until_released_and_a_second_claimant_is_refused(tmp_path):
    claim = SaveDirClaim(tmp_path / "save", run_dir="/runs/a")
    owner = read_owner(tmp_path / "save")
    assert owner.pid == os.getpid() and owner.run_dir == "/runs/a"
    child = subprocess.run([sys.executable, "-c", (
        "import sys; sys.path.insert(0, %r)\n"
        "from dimba.checkpointing.ownership import SaveDirClaim\n"
        "SaveDirClaim(%r, run_dir='/runs/b')\n") % (str(ROOT), str(tmp_path / "save"))],
        capture_output=True, text=True)
    assert child.returncode != 0
    last = child.stderr.strip().splitlines()[-1]
    assert f"progressive_checkpoints.save_dir: {tmp_path / 'save'} is being written by another run (pid {os.getpid()}" in last
    assert "run /runs/a" in last and "progressive_checkpoints.save_dir=<dir>" in last
    claim.release()
    assert not (tmp_path / "save" / OWNER_FILE).exists()


def test_the_claim_of_a_dead_process_is_taken_over(tmp_path, caplog):
    write_claim(tmp_path, pid=a_dead_pid())
    with SaveDirClaim(tmp_path, run_dir="/runs/new"):
        assert read_owner(tmp_path).run_dir == "/runs/new"
    assert "took over the claim of a run that is gone" in caplog.text


def test_a_claim_from_another_host_is_refused_with_how_to_release_it(tmp_path):
    write_claim(tmp_path, pid=1, host="node-17")
    with pytest.raises(ConfigError, match=rf"pid 1 on node-17.*if that run has ended, delete {tmp_path / OWNER_FILE}"):
        check_free(tmp_path)


def test_a_requeued_slurm_job_takes_over_its_own_earlier_claim(tmp_path, monkeypatch):
    write_claim(tmp_path, pid=1, host="node-17", slurm_job="4242")
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    with SaveDirClaim(tmp_path, run_dir="/runs/requeued"):
        assert read_owner(tmp_path).host == socket.gethostname()


def test_a_torn_claim_file_is_nobodys(tmp_path):
    (tmp_path / OWNER_FILE).write_text('{"pid": 12')
    with SaveDirClaim(tmp_path, run_dir="/runs/new"):
        assert read_owner(tmp_path).pid == os.getpid()


def test_a_run_claiming_while_another_writes_its_claim_is_refused(tmp_path, monkeypatch):
    """Two runs started together: the second looks while the first is writing its claim. It
    must find a whole claim or none; a half-written one looked like a crashed run's, was taken
    over, and both runs then wrote into one directory."""
    from dimba.checkpointing import ownership

    original = ownership.this_process
    second: list = []

    def racing(run_dir: str):
        if run_dir == "first" and not second:  # the first run is part-way through its claim
            try:
                second.append(SaveDirClaim(tmp_path, "second"))
            except ConfigError as exc:
                second.append(exc)
        return original(run_dir)

    monkeypatch.setattr(ownership, "this_process", racing)
    try:
        first = SaveDirClaim(tmp_path, "first")
    except ConfigError as exc:
        first = exc
    claims = [c for c in (first, *second) if isinstance(c, SaveDirClaim)]
    assert len(claims) == 1, (first, second)  # one holder, the other refused in one line
    refused = first if isinstance(first, ConfigError) else second[0]
    assert "is being written by another run" in str(refused)
    assert read_owner(tmp_path).run_dir == claims[0].run_dir
    assert sorted(p.name for p in tmp_path.iterdir()) == [OWNER_FILE]  # no draft left behind
    claims[0].release()


def test_a_process_claims_twice_and_releases_on_the_last(tmp_path):
    outer = SaveDirClaim(tmp_path, run_dir="/runs/a")
    inner = SaveDirClaim(tmp_path, run_dir="/runs/a")  # train.py claims, then the callback
    inner.release()
    assert (tmp_path / OWNER_FILE).exists()
    outer.release()
    assert not (tmp_path / OWNER_FILE).exists()


@pytest.mark.slow
def test_two_runs_started_together_on_one_save_dir_lose_nothing(tmp_path):
    """The issue's case: same absolute save_dir, seeds 1 and 2. One trains; the other stops
    before training with one line naming the directory and the run that holds it."""
    save_dir = tmp_path / "shared"
    common = [sys.executable, str(ROOT / "train.py"), "trainer.max_steps=3", "progressive_checkpoints.milestones=[1e3,2e3,1e9]",
              f"progressive_checkpoints.save_dir={save_dir}", "growth=none", "model.d_model=64", "model.n_layers=1",
              "data.seq_len=32", "data.batch_size=4", "trainer.val_check_interval=3", "trainer.limit_val_batches=1",
              "trainer.enable_progress_bar=false"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    runs = [subprocess.Popen([*common, f"seed={seed}", f"hydra.run.dir={tmp_path / f'run{seed}'}"], cwd=tmp_path, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for seed in (1, 2)]
    results = [(run.wait(timeout=HANG_GUARD_S), *run.communicate()) for run in runs]
    codes = sorted(code for code, _, _ in results)
    assert codes == [0, 2], [err[-2000:] for _, _, err in results]
    refused = next(err for code, _, err in results if code == 2)
    line = [l for l in refused.splitlines() if l.strip()][-1]
    # Started together, the second finds the first's claim; on a loaded machine the first may
    # have finished before the second looks, which then finds the first's milestones: refused too.
    assert line.startswith((f"Invalid config: progressive_checkpoints.save_dir: {save_dir} is being written by another run",
                            f"Invalid config: progressive_checkpoints.save_dir: {save_dir} already holds another run's"))
    assert sorted(p.name for p in save_dir.iterdir()) == [
        "checkpoint_1.0K_step_1.json", "checkpoint_1.0K_step_1.pt", "checkpoint_2.0K_step_1.json", "checkpoint_2.0K_step_1.pt"]
    winner = next(i for i, (code, _, _) in enumerate(results) if code == 0) + 1
    sidecar = json.loads((save_dir / "checkpoint_2.0K_step_1.json").read_text())
    assert sidecar["size_bytes"] == (save_dir / "checkpoint_2.0K_step_1.pt").stat().st_size
    assert (tmp_path / f"run{winner}" / "train.log").is_file()
