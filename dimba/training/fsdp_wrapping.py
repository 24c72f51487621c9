"""The one FSDP2 wrapping of a DIMBA: a unit per Mamba-2 block, the root for the rest.
(The Lightning strategy that calls it for `trainer=fsdp` is `dimba.training.fsdp`.)

Both the trainer (a fresh or resumed model) and sharded growth (each grown model) wrap
through `shard_dimba`, so a grown model is sharded exactly like a fresh one. Parameters
become DTensors sharded on their first dimension over a 1-D mesh (uneven sizes are
padded by FSDP2, so no dimension needs to divide the world size). Runs on CUDA (nccl) and
on CPU processes (gloo), and on the meta device under a fake process group.
"""

from __future__ import annotations

import functools
from typing import Optional

from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.fsdp import MixedPrecisionPolicy, OffloadPolicy, fully_shard, register_fsdp_forward_method

from dimba.growth.sharded import SHARD_ATTRIBUTE
from dimba.model import DIMBA

FORWARD_METHODS = ("loss", "denoise", "logits", "embed", "rounding_mean", "token_logits", "step_logits")


def shard_dimba(
    model: DIMBA,
    mesh: DeviceMesh,
    *,
    mp_policy: Optional[MixedPrecisionPolicy] = None,
    reshard_after_forward: bool = True,
    offload_policy: Optional[OffloadPolicy] = None,
) -> DIMBA:
    """Apply `fully_shard` to every block, then to the model; returns the model (in place).

    Works on a model with weights (each rank shards what it holds: all ranks must hold the
    same values) or on the meta device (shapes only; `model.to_empty(device=...)` then
    gives each rank memory for its shards alone). The wrapping is recorded on the model,
    so `dimba.growth.apply.apply_sharded_growth` wraps the grown model the same way.
    `loss`, `denoise`, `logits`, `embed` and `rounding_mean` gather the root's parameters as
    `forward` does; a
    submodule called directly from outside (`model.embedding(tokens)`) sees its shard.
    """
    if mesh.ndim != 1:
        raise ValueError(f"shard_dimba needs a 1-D device mesh (plain FSDP); got a {mesh.ndim}-D mesh {mesh}")
    options = {"mesh": mesh, "reshard_after_forward": reshard_after_forward}
    if mp_policy is not None:
        options["mp_policy"] = mp_policy
    if offload_policy is not None:
        options["offload_policy"] = offload_policy
    for block in model.blocks:
        fully_shard(block, **options)
    fully_shard(model, **options)
    for method in FORWARD_METHODS:  # they use the root's parameters, as forward does
        register_fsdp_forward_method(model, method)
    model.__dict__[SHARD_ATTRIBUTE] = functools.partial(shard_dimba, mesh=mesh, mp_policy=mp_policy,
                                                        reshard_after_forward=reshard_after_forward,
                                                        offload_policy=offload_policy)
    return model
