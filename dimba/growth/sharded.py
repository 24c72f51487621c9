"""Growth of an FSDP2-sharded model, tensor by tensor: no rank ever holds the whole model.
(The DTensor facts it reads, which rows a rank holds, are `dimba.growth.dtensor_rows`.)

The grown model is built on the meta device, wrapped by the same function that wrapped
the old one (so it is sharded exactly like a fresh model), and given memory for this
rank's shards only. Then each tensor gets its value from its rule (`dimba.growth.rules`,
the table the unsharded operators use):

- unchanged (old blocks under depth growth, the token embedding under width growth):
  this rank's shard is copied from the old one, no communication;
- new and constant (zero or one): this rank's shard is filled;
- grown or new and random: the old tensor is gathered, the whole new tensor computed,
  this rank's rows kept and the rest freed before the next tensor.

So a rank's extra memory during growth is its new shards plus one whole grown tensor
(with the gathered old one) at a time. On the meta device (a plan simulated under a fake
process group) only shapes are made.
"""

from __future__ import annotations

from typing import Callable, Dict, Optional, Tuple

import torch
from torch import nn
from torch.distributed.tensor import DTensor

from dimba.diffusion.schedule import CosineSchedule
from dimba.growth.remap import Remap
from dimba.growth.rules import TensorRule, grown_value, new_tensor_rule
from dimba.model.shapes import parameter_shapes
from dimba.growth.dtensor_rows import local, local_rows
from dimba.growth.unsharded import meta_model, put_tensor
from dimba.model import DIMBA, DIMBAConfig

Shard = Callable[[DIMBA], object]  # applies FSDP2 to a model in place (dimba.training.fsdp_wrapping.shard_dimba)
SHARD_ATTRIBUTE = "dimba_shard"  # where shard_dimba leaves the wrapping it applied, for growth to repeat


def recorded_shard(model: DIMBA) -> Shard:
    shard = model.__dict__.get(SHARD_ATTRIBUTE)
    if shard is None:
        raise ValueError("the model was not wrapped by dimba.training.fsdp_wrapping.shard_dimba; pass shard=")
    return shard


def _fill(new: DTensor, rule: TensorRule, old: Optional[DTensor], seed: int, name: str) -> None:
    target = local(new)
    if old is not None and rule.unchanged:
        target.copy_(local(old))  # the same shape, the same sharding: this rank's shard as it was
    elif old is None and rule.init in ("zeros", "ones"):
        target.fill_(0.0 if rule.init == "zeros" else 1.0)
    else:
        whole = grown_value(rule, None if old is None else old.full_tensor(), tuple(new.shape), new.dtype, seed, name)
        start, stop = local_rows(new)
        target.copy_(whole[start:stop])
        del whole


def grow_sharded(model: DIMBA, config: DIMBAConfig, rules: Dict[str, TensorRule], seed: int,
                 shard: Optional[Shard] = None) -> Tuple[DIMBA, Dict[nn.Parameter, Remap]]:
    """A new sharded model of `config`, each tensor made by its rule; a Remap per old parameter.

    Collective: every rank calls it with the same arguments. The old model keeps its
    weights but loses its gradients (growth runs after the optimizer step, and they would
    only add to the peak); the caller drops it. The new one is wrapped by `shard`
    (default: the wrapping recorded on `model` by shard_dimba).
    """
    shard = shard or recorded_shard(model)
    for p in model.parameters():  # the step that used them is done; growth replaces every tensor
        p.grad = None
    reference = next(model.parameters())
    device = local(reference).device
    grown = meta_model(config, reference.dtype)
    shard(grown)
    if device.type != "meta":
        grown.to_empty(device=device)
    old_params = dict(model.named_parameters())
    old_buffers = dict(model.named_buffers())
    remaps: Dict[nn.Parameter, Remap] = {}
    with torch.no_grad():
        for name, new in grown.named_parameters():
            rule = rules[name]
            old = old_params.get(rule.source) if rule.source else None
            if device.type != "meta":
                _fill(new, rule, old, seed, name)
            if old is not None:
                new.requires_grad_(old.requires_grad)
                if rule.successor:
                    remaps[old] = Remap(new, rule.index, rule.scale)
        if device.type != "meta":
            for name, buffer in list(grown.named_buffers()):  # buffers are whole on every rank
                rule = rules[name]
                put_tensor(grown, name, grown_value(rule, old_buffers[rule.source], tuple(buffer.shape), buffer.dtype, seed, name))
    return grown, remaps


def build_sharded(config: DIMBAConfig, shard: Shard, device: torch.device | str,
                  dtype: torch.dtype = torch.float32, seed: Optional[int] = None) -> DIMBA:
    """A sharded model of `config` that never exists whole on any rank.

    With `seed`, every tensor starts as growth starts new tensors (the same on every rank,
    whatever the world size); without, the parameters are left for a checkpoint to load
    (what resuming a grown run needs: the recorded shape, then the shards). Buffers are
    always set: RMSNorm eps to the configured value (a checkpoint brings the grown one),
    the noise schedule computed.
    """
    model = meta_model(config, dtype)
    shard(model)
    device = torch.device(device)
    if device.type == "meta":
        return model
    model.to_empty(device=device)
    shapes = parameter_shapes(config)
    with torch.no_grad():
        if seed is not None:
            for name, param in model.named_parameters():
                _fill(param, new_tensor_rule(name, shapes), None, seed, name)
        for module in model.modules():
            if isinstance(module, CosineSchedule):  # (a learned schedule's warp is a parameter: filled above)
                module.alpha_bar = module.exact().to(module.alpha_bar.device)
            elif hasattr(module, "eps") and isinstance(module.eps, torch.Tensor):
                module.eps.fill_(config.norm_eps)
    return model
