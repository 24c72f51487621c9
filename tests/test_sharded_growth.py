"""Growth under FSDP2 on two CPU processes (gloo): as exact as unsharded growth, half per rank.

One job (tests/sharded_growth_job.py, both dtypes) trains a sharded model and an unsharded
reference side by side and grows both through depth (identity), width and depth (stack).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import HANG_GUARD_S

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow
BOUNDS = {"fp64": 1e-10, "fp32": 1e-5}  # as tests/test_growth_operators.py


def launch(script: Path, out: Path, world: int = 2, *args: str) -> None:
    """Run `script out` as `world` gloo ranks on this machine; raise with the logs if one fails."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "WORLD_SIZE": str(world),
           "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    ranks = [subprocess.Popen([sys.executable, str(script), str(out), *args], cwd=ROOT, env={**env, "RANK": str(r)},
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for r in range(world)]
    logs = [p.communicate(timeout=HANG_GUARD_S)[0] for p in ranks]
    failed = [r for r, p in enumerate(ranks) if p.returncode]
    assert not failed, "\n".join(logs[r][-3000:] for r in failed)


@pytest.fixture(scope="module")
def reports(tmp_path_factory):
    out = tmp_path_factory.mktemp("sharded_growth")
    launch(ROOT / "tests" / "sharded_growth_job.py", out)
    launch(ROOT / "tests" / "sharded_growth_job.py", out, 1, "--reload")
    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]
    return {"ranks": ranks, "reload": json.loads((out / "reload.json").read_text())}


@pytest.mark.parametrize("dtype", sorted(BOUNDS))
def test_sharded_growth_equals_unsharded_growth_bit_for_bit(reports, dtype):
    for report in reports["ranks"]:
        run = report[dtype]
        assert run["trained_equal"]  # two sharded AdamW steps == two unsharded ones, before any growth
        for event in run["events"]:
            assert event["grown_equal"], event  # weights, moments, birth steps, per-entry counts
            assert event["trained_equal"], event  # and two more steps after growth stay identical
        assert run["optimizer_params_are_the_model"]
    assert [e["params"] for e in reports["ranks"][0][dtype]["events"]] == [62624, 225136, 297360]


@pytest.mark.parametrize("dtype", sorted(BOUNDS))
def test_sharded_growth_preserves_the_function_within_the_unsharded_bounds(reports, dtype):
    for report in reports["ranks"]:
        depth, width, stack = report[dtype]["events"]
        assert depth["logit_change"] == 0.0
        assert width["logit_change"] <= BOUNDS[dtype]
        assert stack["logit_change"] > 1e-3  # G_stack copies change the function, sharded or not
        for event in (depth, width, stack):
            assert event["logits_vs_reference"] == 0.0  # the sharded forward computes what the unsharded one does


def test_each_rank_holds_half_of_every_tensor(reports):
    for report in reports["ranks"]:
        for event in report["fp32"]["events"]:
            assert all(fraction == 0.5 for fraction in event["held_fraction"])


def test_a_ranks_extra_memory_during_growth_stays_within_the_bound(reports):
    """New tensor memory while growing <= own new shards + the largest grown tensor with its
    moments, well below what growing the whole model (weights and moments) would take."""
    for report in reports["ranks"]:
        for event in report["fp32"]["events"]:
            assert event["peak_new_bytes"] <= event["own_shards"] + event["largest_tensor"], event
            assert event["peak_new_bytes"] < 0.6 * event["whole_model"], event


def test_a_grown_sharded_model_and_optimizer_survive_a_distributed_checkpoint(reports):
    """dcp.save, then a model built at the recorded shape on the meta device, dcp.load: the same
    weights, moments and birth steps (the optimizer's template has them before the load)."""
    assert all(report["fp32"]["dcp_round_trip_equal"] for report in reports["ranks"])


def test_a_two_rank_checkpoint_of_a_grown_run_loads_on_one_rank(reports):
    """DCP reshards moments to a new world size; birth steps are whole on every rank anyway."""
    assert reports["reload"]["equal"]
