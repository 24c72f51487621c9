"""The memory plan: bytes per rank per stage, from the architecture alone."""

from __future__ import annotations

import os

import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from dimba.errors import ConfigError
from dimba.growth.memory import (MemorySetting, activation_elements, format_memory_table, growth_extra,
                                 memory_table, smallest_world_size, stage_memory)
from dimba.growth.plan import count_parameters
from dimba.growth.shapes import local_shape, shard_range
from dimba.model.shapes import parameter_count, parameter_shapes
from dimba.model import DIMBA, DIMBAConfig

ROOT = Path(__file__).resolve().parents[1]
SMALL = dict(vocab_size=256, d_model=64, n_layers=2, d_state=16, head_dim=16, d_embed=16, d_time=16, chunk_size=16)
BILLIONS_START = DIMBAConfig(d_model=2048, n_layers=24, d_state=64, head_dim=64, d_embed=256)
BILLIONS_END = replace(BILLIONS_START, d_model=6144, n_layers=100)
H200 = 141 * 10**9


@pytest.mark.parametrize("config", [
    DIMBAConfig(**SMALL), DIMBAConfig(**SMALL, bidirectional=False), DIMBAConfig(**{**SMALL, "expand": 1}),
    BILLIONS_START, BILLIONS_END, DIMBAConfig(**SMALL, objective="masked"),
    DIMBAConfig(**SMALL, objective="ar", bidirectional=False),
], ids=["small", "unidirectional", "expand1", "billions_start", "billions_30B", "masked", "ar"])
def test_shapes_from_the_architecture_match_a_model_built_on_the_meta_device(config):
    with torch.device("meta"):
        model = DIMBA(config)
    assert parameter_shapes(config) == {name: tuple(p.shape) for name, p in model.named_parameters()}
    assert parameter_count(config) == count_parameters(config)


def test_shard_ranges_split_rows_as_torch_chunk_does():
    for n, world in [(2, 64), (7, 3), (192, 64), (130, 64), (1, 2)]:
        chunks = torch.arange(n).chunk(world)
        for rank in range(world):
            start, stop = shard_range(n, world, rank)
            expected = chunks[rank].tolist() if rank < len(chunks) else []
            assert list(range(start, stop)) == expected
    assert local_shape((2, 192), 64, 63) == (0, 192)


def saved_activation_bytes(config: DIMBAConfig, batch: int, length: int) -> int:
    """Bytes of the tensors autograd keeps for backward in one training loss (storages, once each)."""
    torch.manual_seed(0)
    model = DIMBA(config)
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    kept = {}

    def pack(t):
        storage = t.untyped_storage()
        kept[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model.loss(torch.randint(0, config.vocab_size, (batch, length)))
    return sum(n for ptr, n in kept.items() if ptr not in params)


@pytest.mark.parametrize("shape", [SMALL, {**SMALL, "d_state": 32, "chunk_size": 32, "head_dim": 32},
                                   {**SMALL, "bidirectional": False, "expand": 1},
                                   {**SMALL, "x0_estimate": "softmax", "embedding_norm": None},
                                   {**SMALL, "x0_estimate": "regression"},
                                   {**SMALL, "x0_estimate": "regression", "embedding_norm": None},
                                   {**SMALL, "self_condition": True}],
                         ids=["small", "wide_state", "unidirectional", "softmax", "norm", "original", "self_cond"])
def test_the_activation_estimate_is_at_most_ten_percent_above_what_autograd_keeps(shape):
    config = DIMBAConfig(**shape)
    measured = saved_activation_bytes(config, batch=2, length=64)
    estimate = activation_elements(config) * 2 * 64 * 4
    assert measured <= estimate <= 1.10 * measured


def test_fsdp_shards_states_but_not_activations():
    ddp = stage_memory(BILLIONS_END, MemorySetting("ddp", 8, "bf16-mixed", 16, 128))
    fsdp = stage_memory(BILLIONS_END, MemorySetting("fsdp", 64, "bf16-mixed", 16, 128))
    n = parameter_count(BILLIONS_END)
    assert ddp.params == 4 * n and ddp.optimizer == 8 * n  # fp32 weights, two fp32 moments, on every rank
    assert n * 4 / 64 <= fsdp.params <= n * 4 / 64 * 1.01  # a 64th, plus FSDP2's padding of uneven rows
    assert fsdp.activations == ddp.activations  # data parallel either way: each rank its own micro-batch
    assert fsdp.step_counts < n * 4 / 1000  # birth-step vectors: per row and column, not per entry


def test_a_stage_that_does_not_fit_names_the_smallest_world_size_that_would():
    setting = MemorySetting("fsdp", 4, "bf16-mixed", 4, 128, device_bytes=H200)
    world = smallest_world_size(BILLIONS_END, setting)
    assert world is not None and world > 4
    fits = lambda w: stage_memory(BILLIONS_END, setting.with_world_size(w)).total <= H200  # noqa: E731
    assert fits(world) and not fits(world - 1)
    rows = memory_table([("start", BILLIONS_START), ("30B", BILLIONS_END)], setting)
    assert rows[0].fits and rows[1].fits is False and rows[1].smallest_world_size >= world
    assert f"NO: needs {rows[1].smallest_world_size} ranks" in format_memory_table(rows, setting)


def test_activations_no_world_size_can_shard_are_reported_as_unfittable():
    setting = MemorySetting("fsdp", 64, "bf16-mixed", 64, 128, device_bytes=H200)
    assert stage_memory(BILLIONS_END, setting).activations > H200
    assert smallest_world_size(BILLIONS_END, setting) is None
    assert smallest_world_size(BILLIONS_END, replace(setting, activation_checkpointing=True)) is not None
    assert smallest_world_size(BILLIONS_END, MemorySetting("ddp", 8, device_bytes=H200)) is None


def test_the_growth_event_costs_the_new_shards_and_one_whole_tensor():
    setting = MemorySetting("fsdp", 64)
    wider = replace(BILLIONS_START, d_model=4096)
    extra = growth_extra(BILLIONS_START, wider, setting)
    grown = stage_memory(wider, setting)
    largest = max(torch.Size(s).numel() for s in parameter_shapes(wider).values())
    assert grown.params + grown.optimizer < extra <= grown.params + grown.optimizer + grown.step_counts + 8 * largest
    assert extra < 0.1 * 12 * parameter_count(wider)  # far from the whole grown model with its moments


@pytest.mark.parametrize("field, value, key", [
    ("strategy", "deepspeed", "trainer.strategy"), ("world_size", 0, "trainer.devices x trainer.num_nodes"),
    ("precision", "8-true", "trainer.precision"), ("micro_batch", 0, "data.batch_size"),
    ("device_bytes", -1, "trainer_memory_gb"),
])
def test_bad_settings_name_the_key(field, value, key):
    with pytest.raises(ConfigError, match=f"^{key}: "):
        MemorySetting(**{"strategy": "fsdp", field: value})


def test_the_memory_plan_imports_no_torch():
    code = "import sys, dimba.growth.memory; assert 'torch' not in sys.modules, sorted(sys.modules)"
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)


def test_a_preset_memory_above_what_the_ranks_here_have_is_refused_and_a_dry_run_says_it_did_not_check():
    """`experiment=billions` plans 141 GB per rank (an H200). Eight CPU processes on this host
    share its memory: a real run is refused in one line before anything starts; a dry run
    still plans for the preset's hardware and says it was not checked here."""
    from dimba.command_line import check_job
    from dimba.config import register_configs
    from dimba.planning import GB, detected_memory, plan_text

    register_configs()
    overrides = ["experiment=billions", "trainer.accelerator=cpu", "trainer.devices=8"]
    job = check_job(overrides, ROOT / "conf", "config")
    per_rank = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 8
    assert str(job.error) == (f"trainer_memory_gb: 141.0 is invalid; accepted: at most {per_rank / GB:.1f}, the GB per "
                              f"rank of this host's {per_rank * 8 / GB:.1f} GB shared by its 8 rank(s) (null: detect it; "
                              "dry_run=true plans for other hardware)")
    dry = check_job([*overrides, "dry_run=true"], ROOT / "conf", "config")
    assert dry.error is None
    assert plan_text(dry.config).splitlines()[-1] == (
        "Note: planned for trainer_memory_gb=141 GB per rank as configured, not checked against this machine "
        f"({per_rank / GB:.1f} GB per rank, this host's {per_rank * 8 / GB:.1f} GB shared by its 8 rank(s))")
    assert detected_memory(dry.config)[0] == per_rank


def test_a_memory_setting_within_the_hardware_plans_with_it():
    from dimba.command_line import check_job
    from dimba.config import register_configs
    from dimba.planning import memory_setting, unchecked_memory_note

    register_configs()
    job = check_job(["trainer_memory_gb=2"], ROOT / "conf", "config")
    assert job.error is None and memory_setting(job.config).device_bytes == 2 * 10**9
    assert unchecked_memory_note(job.config) is None
