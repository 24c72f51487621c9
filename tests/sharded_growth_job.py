"""Growth of an FSDP2 model on 2 CPU processes (gloo), against the same growth unsharded.

Driven by test_sharded_growth.py, which starts this script twice (RANK=0 and 1, with
MASTER_ADDR/MASTER_PORT). Each rank trains a sharded copy and an unsharded reference of
the same model on the same batches, grows both through a schedule (depth identity, width, depth stack) and
writes what it saw to OUT/rank<k>.json: whether the gathered weights, moments and step
counts equal the reference bit for bit, the change of the logits, how much of each tensor
the rank holds, the peak of new tensor memory during each growth against the bound, and
whether the grown model and optimizer survive a Distributed Checkpoint save and a load
into a model rebuilt at the recorded shape. With --reload (one rank) it loads that
2-rank checkpoint into a 1-rank model and compares it with the unsharded reference.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import json
import os
import sys
from pathlib import Path
from typing import Dict

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.state_dict import (get_model_state_dict, get_optimizer_state_dict,
                                                     set_model_state_dict, set_optimizer_state_dict)
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.tensor import DTensor
from torch.multiprocessing.reductions import StorageWeakRef
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dimba.growth.apply import apply_growth, apply_sharded_growth  # noqa: E402
from dimba.growth.optim import GrowableAdamW, entry_steps  # noqa: E402
from dimba.growth.schedule import GrowthEvent  # noqa: E402
from dimba.growth.sharded import build_sharded, recorded_shard  # noqa: E402
from dimba.model import DIMBA, DIMBAConfig  # noqa: E402
from dimba.training.fsdp_wrapping import shard_dimba  # noqa: E402

# The original recipe: the bounds on the logits' change are absolute, and its logits are of order
# one (the Bayes estimate's reach 1e6 at t = 1).
CONFIG = dict(vocab_size=64, d_model=32, n_layers=3, d_state=8, head_dim=16, d_embed=16, d_time=16,
              chunk_size=8, diffusion_steps=100, embedding_norm=None, x0_estimate="regression")
EVENTS = [GrowthEvent(step=2, op="depth", n_layers=6), GrowthEvent(step=4, op="width", d_model=64),
          GrowthEvent(step=6, op="depth", n_layers=8, mode="stack")]


class NewTensorBytes(TorchDispatchMode):
    """The peak of bytes held by tensors created while it is active (storages, deduplicated)."""

    def __init__(self) -> None:
        super().__init__()
        self.live: Dict[int, tuple] = {}
        self.peak = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        created = {}
        for t in tree_leaves(out):
            if isinstance(t, DTensor):
                t = t._local_tensor
            if isinstance(t, torch.Tensor) and t.device.type != "meta":
                storage = t.untyped_storage()
                known = self.live.get(storage._cdata)
                if known is None or known[0].expired():  # new, or a freed storage's address reused
                    created[storage._cdata] = (StorageWeakRef(storage), storage.nbytes())
        if created:  # the peak follows an allocation: count what is still alive then
            self.live = {k: v for k, v in self.live.items() if not v[0].expired()}
            self.live.update(created)
            self.peak = max(self.peak, sum(n for _, n in self.live.values()))
        return out


def gathered(t: torch.Tensor) -> torch.Tensor:
    return t.full_tensor() if isinstance(t, DTensor) else t


def same_state(sharded_opt, sharded, reference_opt, reference) -> bool:
    """Weights, moments, birth steps and per-entry step counts equal bit for bit."""
    for p, q in zip(sharded.parameters(), reference.parameters()):
        if not torch.equal(gathered(p.detach()), gathered(q.detach())):
            return False
        a, b = sharded_opt.state.get(p, {}), reference_opt.state.get(q, {})
        if sorted(a) != sorted(b) or any(not torch.equal(gathered(a[k]), gathered(b[k])) for k in a):
            return False
        if a and not torch.equal(entry_steps(sharded_opt, p), entry_steps(reference_opt, q)):
            return False
    return True


def train(model, optimizer, steps: int, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        tokens = torch.randint(0, 64, (2, 16), generator=generator)  # the same batch on both ranks
        t = torch.randint(1, 100, (2,), generator=generator)
        noise = torch.randn(2, 16, 16, generator=generator, dtype=next(model.parameters()).dtype)
        optimizer.zero_grad()
        model.loss(tokens, t=t, noise=noise)["loss"].backward()
        optimizer.step()


def logits(model, dtype) -> torch.Tensor:
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(2, 16, 16, generator=generator).to(dtype)
    with torch.no_grad():
        return model(x, torch.tensor([3, 70]))


def load_sharded(config: DIMBAConfig, shard, path: Path):
    """A model built at `config` on the meta device, sharded, then loaded from a Distributed
    Checkpoint with its optimizer (whose template has every state key before the load)."""
    model = build_sharded(config, shard, "cpu")
    optimizer = GrowableAdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    template = {"model": get_model_state_dict(model), "optim": get_optimizer_state_dict(model, optimizer)}
    dcp.load(template, checkpoint_id=str(path))
    set_model_state_dict(model, template["model"])
    set_optimizer_state_dict(model, optimizer, template["optim"])
    return model, optimizer


def dcp_round_trip(model, optimizer, path: Path) -> bool:
    """Save the grown model and optimizer as a Distributed Checkpoint and load them back: the
    same weights, moments and births, the same logits."""
    dcp.save({"model": get_model_state_dict(model), "optim": get_optimizer_state_dict(model, optimizer)},
             checkpoint_id=str(path))
    fresh, fresh_opt = load_sharded(model.config, recorded_shard(model), path)
    return same_state(fresh_opt, fresh, optimizer, model) and torch.equal(logits(fresh, torch.float32), logits(model, torch.float32))


def reload_on_one_rank(out: Path) -> None:
    """The 2-rank checkpoint loaded by 1 rank (DCP reshards): equal to the unsharded reference."""
    reference = torch.load(out / "reference.pt", weights_only=True)
    config = DIMBAConfig(**reference["config"])
    model, optimizer = load_sharded(config, functools.partial(shard_dimba, mesh=init_device_mesh("cpu", (1,))), out / "dcp")
    twin = DIMBA(config)
    twin.load_state_dict(reference["model"])
    twin_opt = GrowableAdamW(twin.parameters(), lr=1e-2, weight_decay=0.1)
    twin_opt.load_state_dict(reference["optim"])
    (out / "reload.json").write_text(json.dumps({"equal": same_state(optimizer, model, twin_opt, twin)}))


def bound_bytes(model, optimizer) -> Dict[str, int]:
    """This rank's new shards (weights, moments, births) and the largest grown tensor with its moments."""
    size = next(model.parameters()).element_size()
    shards = sum(3 * p.to_local().numel() * size + 4 * sum(p.shape) for p in model.parameters())
    largest = max(3 * p.numel() * size for p in model.parameters())
    whole = sum(3 * p.numel() * size for p in model.parameters())
    return {"own_shards": shards, "largest_tensor": largest, "whole_model": whole}


def run(dtype: torch.dtype, mesh, out: Path) -> Dict[str, object]:
    torch.manual_seed(0)
    reference = DIMBA(DIMBAConfig(**CONFIG)).to(dtype)
    sharded = shard_dimba(copy.deepcopy(reference), mesh)
    ref_opt = GrowableAdamW(reference.parameters(), lr=1e-2, weight_decay=0.1)
    opt = GrowableAdamW(sharded.parameters(), lr=1e-2, weight_decay=0.1)
    train(reference, ref_opt, 2, seed=0)
    train(sharded, opt, 2, seed=0)
    report = {"trained_equal": same_state(opt, sharded, ref_opt, reference), "events": []}
    for k, event in enumerate(EVENTS):
        before = logits(sharded, dtype)
        apply_growth(reference, event, seed=100 + k, optimizer=ref_opt)
        tracker = NewTensorBytes() if dtype is torch.float32 else contextlib.nullcontext()  # slow: one dtype
        with tracker:
            sharded, record = apply_sharded_growth(sharded, event, seed=100 + k, optimizer=opt)
        after, reference_after = logits(sharded, dtype), logits(reference, dtype)
        grown_equal = same_state(opt, sharded, ref_opt, reference)
        train(reference, ref_opt, 2, seed=10 + k)
        train(sharded, opt, 2, seed=10 + k)
        report["events"].append({
            "op": event.op, "mode": event.mode, "grown_equal": grown_equal,
            "logit_change": (after - before).abs().max().item(),
            "logits_vs_reference": (after - reference_after).abs().max().item(),
            "held_fraction": [p.to_local().numel() / p.numel() for p in sharded.parameters()],
            "params": record["params"], "peak_new_bytes": getattr(tracker, "peak", None), **bound_bytes(sharded, opt),
            "trained_equal": same_state(opt, sharded, ref_opt, reference),
            "max_trained_difference": max((gathered(p.detach()) - q.detach()).abs().max().item()
                                          for p, q in zip(sharded.parameters(), reference.parameters())),
        })
    if dtype is torch.float32:
        report["dcp_round_trip_equal"] = dcp_round_trip(sharded, opt, out / "dcp")
        if dist.get_rank() == 0:
            torch.save({"config": reference.config.to_dict(), "model": reference.state_dict(),
                        "optim": ref_opt.state_dict()}, out / "reference.pt")
    report["optimizer_params_are_the_model"] = [id(p) for g in opt.param_groups for p in g["params"]] == [
        id(p) for p in sharded.parameters()]
    return report


def rank_main(rank: int, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=int(os.environ["WORLD_SIZE"]))
    mesh = init_device_mesh("cpu", (dist.get_world_size(),))
    report = {name: run(dtype, mesh, Path(out)) for name, dtype in (("fp64", torch.float64), ("fp32", torch.float32))}
    Path(out, f"rank{rank}.json").write_text(json.dumps(report))
    dist.destroy_process_group()


if __name__ == "__main__":
    if "--reload" in sys.argv:
        dist.init_process_group("gloo", rank=0, world_size=1)
        reload_on_one_rank(Path(sys.argv[1]))
        dist.destroy_process_group()
    else:
        rank_main(int(os.environ["RANK"]), sys.argv[1])
