"""How FSDP2 splits a DIMBA's tensors (no torch): its units (one per block, and the root) and
each rank's rows of a tensor. The tensors themselves come from `dimba.model.shapes`.

`shard_range` is FSDP2's split of a tensor's first dimension (torch.chunk: ceil(n / world)
rows per rank, the last ranks take what is left, possibly nothing), which the sharded
growth uses to cut its local rows.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Dict, List, Tuple

from dimba.model.shapes import Shape, numel, parameter_shapes

if TYPE_CHECKING:
    from dimba.model.config import DIMBAConfig

ROOT = "root"  # the FSDP unit of every parameter outside the blocks


def unit_of(name: str) -> str:
    """The FSDP unit a parameter belongs to: `blocks.<i>`, or the root."""
    parts = name.split(".")
    return ".".join(parts[:2]) if parts[0] == "blocks" else ROOT


def units(cfg: "DIMBAConfig") -> Dict[str, List[str]]:
    grouped: Dict[str, List[str]] = {}
    for name in parameter_shapes(cfg):
        grouped.setdefault(unit_of(name), []).append(name)
    return grouped


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
