"""A growth schedule run on the meta device over a sharded model: per-rank shapes and bytes.

Under torch's fake process group (`dist.init_process_group("fake", ...)`, one process
playing one rank of any world size) a 30B plan is wrapped, grown through every event
and measured in seconds and no memory: what each rank would hold, to set against the
memory plan (`dimba.growth.memory`). The caller initialises the process group and passes
the wrapping (`functools.partial(dimba.training.fsdp_wrapping.shard_dimba, mesh=mesh)`).
"""

from __future__ import annotations

from typing import Dict, List, Sequence

from torch import nn

from dimba.growth.apply import apply_sharded_growth
from dimba.growth.optim import GrowableAdamW, births
from dimba.growth.schedule import GrowthEvent
from dimba.growth.sharded import Shard, build_sharded
from dimba.growth.dtensor_rows import local
from dimba.model import DIMBAConfig
from dimba.model.params import count_parameters


def rank_bytes(model: nn.Module, optimizer: GrowableAdamW) -> Dict[str, object]:
    """What this rank holds: parameter storage (FSDP2 pads every rank's to rank 0's size),
    AdamW moments and birth-step vectors, and the local shape of every parameter."""
    params = list(model.named_parameters())
    moments = sum(local(optimizer.state[p][k]).numel() * p.element_size()
                  for _, p in params for k in ("exp_avg", "exp_avg_sq"))
    return {
        "params": count_parameters(model),
        "param_bytes": sum(local(p).untyped_storage().nbytes() for _, p in params),
        "optimizer_bytes": moments,
        "step_count_bytes": sum(b.numel() * b.element_size() for _, p in params for b in births(optimizer.state[p])),
        "local_shapes": {name: tuple(local(p).shape) for name, p in params},
        "moment_shapes": {name: tuple(local(optimizer.state[p]["exp_avg"]).shape) for name, p in params},
    }


def simulate_growth(config: DIMBAConfig, events: Sequence[GrowthEvent], shard: Shard, seed: int = 0) -> List[Dict[str, object]]:
    """Per stage (the start, then after each event), what this rank holds."""
    model = build_sharded(config, shard, "meta")
    optimizer = GrowableAdamW(model.parameters())
    stages = []
    for k in range(len(events) + 1):
        for group in optimizer.param_groups:  # state as after a step: every parameter has moments
            for p in group["params"]:
                optimizer.state[p] = optimizer.state.get(p) or GrowableAdamW.fresh_state(p)
        stages.append(rank_bytes(model, optimizer))
        if k < len(events):
            model, _ = apply_sharded_growth(model, events[k], seed + k, optimizer, shard=shard)
    return stages
