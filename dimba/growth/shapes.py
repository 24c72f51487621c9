"""The tensors of a DIMBA, computed from its architecture alone (no torch): names, shapes, shards.

The memory plan works from these, so a 30B plan costs nothing to compute; a test checks
them against a model built on the meta device. `shard_range` is FSDP2's split of a
tensor's first dimension (torch.chunk: ceil(n / world) rows per rank, the last ranks take
what is left, possibly nothing), which the sharded growth uses to cut its local rows.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Dict, List, Tuple

if TYPE_CHECKING:
    from dimba.model.config import DIMBAConfig

Shape = Tuple[int, ...]
ROOT = "root"  # the FSDP unit of every parameter outside the blocks


def block_shapes(cfg: "DIMBAConfig") -> Dict[str, Shape]:
    """The parameters of one Mamba-2 block, by name inside the block, in module order."""
    d, di, n, h = cfg.d_model, cfg.expand * cfg.d_model, cfg.d_state, cfg.expand * cfg.d_model // cfg.head_dim
    directions = 2 if cfg.bidirectional else 1
    conv = di + 2 * n
    shapes: Dict[str, Shape] = {"norm.weight": (d,)}
    if cfg.time_conditioned:
        shapes.update({"modulation.weight": (2 * d, d), "modulation.bias": (2 * d,)})
    shapes["mixer.in_proj.weight"] = (di + conv + h, d)
    for k in range(directions):
        shapes[f"mixer.convs.{k}.weight"] = (conv, 1, cfg.d_conv)
        shapes[f"mixer.convs.{k}.bias"] = (conv,)
    shapes.update({
        "mixer.dt_bias": (directions, h),
        "mixer.A_log": (directions, h),
        "mixer.D": (directions, h),
        "mixer.norm.weight": (di,),
        "mixer.out_proj.weight": (d, di),
    })
    return shapes


def parameter_shapes(cfg: "DIMBAConfig") -> Dict[str, Shape]:
    """Every parameter of the model, by its name in `DIMBA.named_parameters()` order."""
    d, e, t = cfg.d_model, cfg.d_embed, cfg.d_time
    shapes: Dict[str, Shape] = {
        "embedding.weight": (cfg.embedding_rows, e),
        "in_proj.weight": (d, e),
        "in_proj.bias": (d,),
    }
    if cfg.time_conditioned:
        shapes.update({"time_mlp.0.weight": (d, t), "time_mlp.0.bias": (d,), "time_mlp.2.weight": (d, d),
                       "time_mlp.2.bias": (d,)})
    for i in range(cfg.n_layers):
        shapes.update({f"blocks.{i}.{name}": shape for name, shape in block_shapes(cfg).items()})
    shapes.update({"norm_f.weight": (d,), "out_proj.weight": (e, d), "out_proj.bias": (e,)})
    return shapes


def unit_of(name: str) -> str:
    """The FSDP unit a parameter belongs to: `blocks.<i>`, or the root."""
    parts = name.split(".")
    return ".".join(parts[:2]) if parts[0] == "blocks" else ROOT


def units(cfg: "DIMBAConfig") -> Dict[str, List[str]]:
    grouped: Dict[str, List[str]] = {}
    for name in parameter_shapes(cfg):
        grouped.setdefault(unit_of(name), []).append(name)
    return grouped


def numel(shape: Shape) -> int:
    return math.prod(shape)


def parameter_count(cfg: "DIMBAConfig") -> int:
    return sum(numel(s) for s in parameter_shapes(cfg).values())


def shard_range(n: int, world: int, rank: int) -> Tuple[int, int]:
    """Rows [start, stop) of an n-row dimension held by `rank` of `world` (torch.chunk's split)."""
    size = -(-n // world)
    start = min(rank * size, n)
    return start, min(start + size, n)


def local_shape(shape: Shape, world: int, rank: int) -> Shape:
    """The shape of a rank's shard of a tensor sharded on its first dimension."""
    start, stop = shard_range(shape[0], world, rank)
    return (stop - start, *shape[1:])


def padded_shard_numel(shape: Shape, world: int) -> int:
    """Elements FSDP2 allocates per rank for a tensor: every rank's storage is padded to rank 0's."""
    return -(-shape[0] // world) * numel(shape[1:])
