"""How new entries start: the distributions DIMBA's own layers initialise with.

Each grown tensor draws its new entries from its own CPU generator, seeded by the growth
seed and the tensor's name. So every rank of a sharded model draws exactly the numbers the
unsharded model draws, whatever the world size, the device, or the order tensors are
grown in, and the global RNG is never touched.
"""

from __future__ import annotations

import hashlib
import math
from typing import Tuple

import torch
from torch import Tensor

INITS = ("normal", "uniform", "ones", "zeros", "dt_bias", "A_log")


def tensor_seed(seed: int, name: str) -> int:
    digest = hashlib.blake2b(f"{seed}/{name}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & (2**63 - 1)


def initial_value(kind: str, shape: Tuple[int, ...], dtype: torch.dtype, seed: int, name: str, fan_in: int = 1) -> Tensor:
    """A CPU tensor of `shape` as `kind` initialises it (drawn in float32, then cast).

    uniform: U(-1/sqrt(fan_in), 1/sqrt(fan_in)), what nn.Linear and nn.Conv1d use for
    weights and biases; dt_bias and A_log: the Mamba-2 ranges of `Mamba2Mixer`.
    """
    if kind == "zeros":
        return torch.zeros(shape, dtype=dtype)
    if kind == "ones":
        return torch.ones(shape, dtype=dtype)
    generator = torch.Generator().manual_seed(tensor_seed(seed, name))
    draw = torch.empty(shape, dtype=torch.float32)
    if kind == "normal":
        value = draw.normal_(0.0, 1.0, generator=generator)
    elif kind == "uniform":
        bound = 1.0 / math.sqrt(fan_in)
        value = draw.uniform_(-bound, bound, generator=generator)
    elif kind == "dt_bias":  # dt log-uniform in [1e-3, 1e-1], stored as its inverse softplus
        dt = torch.exp(draw.uniform_(0.0, 1.0, generator=generator) * (math.log(0.1) - math.log(1e-3)) + math.log(1e-3))
        value = dt + torch.log(-torch.expm1(-dt))
    elif kind == "A_log":
        value = torch.log(draw.uniform_(1.0, 16.0, generator=generator))
    else:
        raise ValueError(f"unknown initialisation {kind!r}; known: {', '.join(INITS)}")
    return value.to(dtype)
