"""The billions plan (0.8B -> 30B) grown as 64 FSDP2 ranks would grow it, on the meta device.

Torch's fake process group lets this process play one rank of 64: the model is wrapped by
shard_dimba, every growth event of conf/growth/billions.yaml is applied to the sharded
model and its optimizer, and what the rank holds is checked against the memory plan.
Rank 0 holds the largest shards, rank 63 the smallest (some of its shards are empty).
"""

from __future__ import annotations

import functools
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from omegaconf import OmegaConf
from torch.distributed.device_mesh import init_device_mesh
from torch.testing._internal.distributed.fake_pg import FakeStore

from dimba.growth.memory import MemorySetting, stage_memory
from dimba.growth.schedule import GrowthEvent, validate_schedule
from dimba.growth.shapes import local_shape
from dimba.model.shapes import parameter_count, parameter_shapes
from dimba.growth.simulate import simulate_growth
from dimba.model import DIMBAConfig
from dimba.training.fsdp_wrapping import shard_dimba

ROOT = Path(__file__).resolve().parents[1]
WORLD = 64
pytestmark = pytest.mark.slow  # about 10 s of CPU: seven 64-rank wrappings of up to 100 blocks per rank


def billions_plan():
    model = OmegaConf.to_container(OmegaConf.load(ROOT / "conf" / "model" / "billions.yaml"))
    model.pop("defaults")
    schedule = OmegaConf.to_container(OmegaConf.load(ROOT / "conf" / "growth" / "billions.yaml"))["schedule"]
    start, events = DIMBAConfig(**model), [GrowthEvent(**e) for e in schedule]
    return start, events, [start, *validate_schedule(start, events)]


@pytest.fixture(params=[0, WORLD - 1], ids=["rank0", "rank63"])
def rank(request):
    dist.init_process_group("fake", store=FakeStore(), rank=request.param, world_size=WORLD)
    yield request.param
    dist.destroy_process_group()


def test_every_rank_holds_what_the_memory_plan_says_through_the_30b_growth(rank):
    start, events, configs = billions_plan()
    mesh = init_device_mesh("cpu", (WORLD,))
    stages = simulate_growth(start, events, functools.partial(shard_dimba, mesh=mesh))
    assert [s["params"] for s in stages] == [parameter_count(c) for c in configs]
    assert stages[-1]["params"] > 30e9
    for config, held in zip(configs, stages):
        expected = {name: local_shape(shape, WORLD, rank) for name, shape in parameter_shapes(config).items()}
        assert held["local_shapes"] == expected
        assert held["moment_shapes"] == expected
        plan = stage_memory(config, MemorySetting("fsdp", WORLD, "32-true"))
        assert held["param_bytes"] == plan.params  # FSDP2 pads every rank's storage to rank 0's
        assert held["step_count_bytes"] == plan.step_counts
        if rank == 0:
            assert held["optimizer_bytes"] == plan.optimizer  # the plan is rank 0's, the largest
        else:
            assert 0.99 * plan.optimizer <= held["optimizer_bytes"] < plan.optimizer


@pytest.fixture
def fake_world_of_four():
    dist.init_process_group("fake", store=FakeStore(), rank=0, world_size=4)
    yield
    dist.destroy_process_group()


def test_a_sharded_model_is_grown_only_by_the_sharded_path(fake_world_of_four):
    from dimba.growth.apply import apply_growth
    from dimba.growth.sharded import build_sharded
    from dimba.growth.unsharded import meta_model

    config = DIMBAConfig(d_model=32, n_layers=2, d_state=8, head_dim=16, d_embed=16, d_time=16)
    model = build_sharded(config, functools.partial(shard_dimba, mesh=init_device_mesh("cpu", (4,))), "meta")
    with pytest.raises(ValueError, match="apply_sharded_growth"):
        apply_growth(model, GrowthEvent(step=1, op="depth", n_layers=4), seed=0)
    with pytest.raises(ValueError, match="1-D device mesh"):
        shard_dimba(meta_model(config, torch.float32), init_device_mesh("cpu", (2, 2)))
