"""Growth under FSDP2 on 2 CPU processes (gloo): its time, and one rank's memory, against DDP.

A model of a few hundred million parameters (after growth) is built sharded (no rank ever
holds it whole), trained a few steps, then widened. Measured on each rank:

- the growth event's wall time against one training step of the grown model under FSDP2;
- the rank's peak extra memory during growth (peak bytes allocated minus those just before), against
  the size of the whole grown model with its AdamW moments;
- the same for DDP-style growth, where each rank grows the whole model (measured on one
  process after the FSDP phase: DDP growth is local and identical on every rank).

Memory is read from glibc's allocator counters (mallinfo2: bytes in use in every arena
plus mmapped chunks, which is where torch's CPU tensors live) by a thread every 0.5 ms;
torch ops release the GIL, so it samples during them too. The counters are exact at each
sample: a buffer counts from its allocation to its free, whether or not its pages were
touched or returned to the OS, so unlike RSS they neither lag nor keep freed memory. The
blind spot is an allocation living under 0.5 ms; the figures here move by hundreds of MB,
buffers that take far longer than that to fill. Peak RSS is reported beside them. The
memory plan's prediction (`dimba.growth.memory.growth_extra`) is printed too. The machine
is shared: times come with the load average they were measured under.

Run from the repo root: `python bench/sharded_growth.py` (one JSON object on stdout).
"""

from __future__ import annotations

import ctypes
import functools
import gc
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable, Dict

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

BEFORE = dict(vocab_size=256, d_model=1024, n_layers=16, d_state=64, head_dim=64, d_embed=256, chunk_size=64)
EVENT = dict(step=3, op="width", d_model=1536)
BATCH, SEQ_LEN, STEPS = 1, 128, 3


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]


class PeakMemory:
    """Peak allocator bytes in use (and peak RSS) of this process while active."""

    def __init__(self) -> None:
        self._libc = ctypes.CDLL("libc.so.6")
        self._libc.mallinfo2.restype = _MallInfo2
        self._page = os.sysconf("SC_PAGE_SIZE")
        self._done = threading.Event()

    def in_use(self) -> int:
        info = self._libc.mallinfo2()
        return info.uordblks + info.hblkhd

    def rss(self) -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * self._page

    def _sample(self) -> None:
        while not self._done.wait(0.0005):
            self.peak, self.peak_rss = max(self.peak, self.in_use()), max(self.peak_rss, self.rss())

    def __enter__(self) -> "PeakMemory":
        self.start, self.start_rss = self.in_use(), self.rss()
        self.peak, self.peak_rss = self.start, self.start_rss
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._done.set()
        self._thread.join()

    @property
    def extra(self) -> Dict[str, int]:
        return {"extra_allocated_bytes": self.peak - self.start, "extra_rss_bytes": self.peak_rss - self.start_rss}


def train_step(model, optimizer, generator) -> float:
    import torch

    tokens = torch.randint(0, 256, (BATCH, SEQ_LEN), generator=generator)
    start = time.perf_counter()
    optimizer.zero_grad(set_to_none=False)  # gradients stay allocated, as between Lightning steps
    model.loss(tokens)["loss"].backward()
    optimizer.step()
    return time.perf_counter() - start


def timed(fn: Callable[[], object]):
    gc.collect()
    with PeakMemory() as memory:
        start = time.perf_counter()
        result = fn()
        seconds = time.perf_counter() - start
    return result, seconds, memory.extra


def fsdp_phase(torch, dist, before, event) -> Dict[str, float]:
    from torch.distributed.device_mesh import init_device_mesh

    from dimba.growth.apply import apply_sharded_growth
    from dimba.growth.optim import GrowableAdamW
    from dimba.growth.sharded import build_sharded
    from dimba.training.fsdp_wrapping import shard_dimba

    mesh = init_device_mesh("cpu", (dist.get_world_size(),))
    model = build_sharded(before, functools.partial(shard_dimba, mesh=mesh), "cpu", seed=0)
    optimizer = GrowableAdamW(model.parameters(), lr=1e-4)
    generator = torch.Generator().manual_seed(dist.get_rank())
    steps_before = [train_step(model, optimizer, generator) for _ in range(STEPS)]
    dist.barrier()
    (grown, record), seconds, extra = timed(lambda: apply_sharded_growth(model, event, 1, optimizer))
    model = None  # the grown model replaces it: free the old one
    steps_after = [train_step(grown, optimizer, generator) for _ in range(2)]
    return {"growth_s": seconds, **extra, "params_after": record["params"],
            "step_s_before": min(steps_before[1:]), "step_s_after": min(steps_after)}


def ddp_phase(torch, before, event) -> Dict[str, float]:
    from dimba.growth.apply import apply_growth
    from dimba.growth.optim import GrowableAdamW
    from dimba.model import DIMBA

    torch.manual_seed(0)
    model = DIMBA(before)
    optimizer = GrowableAdamW(model.parameters(), lr=1e-4)
    for p in model.parameters():  # the state a DDP rank has after a step: moments and gradients
        optimizer.state[p] = GrowableAdamW.fresh_state(p)
        p.grad = torch.zeros_like(p)
    _, seconds, extra = timed(lambda: apply_growth(model, event, 1, optimizer))
    return {"growth_s": seconds, **extra}


def rank_main(out: Path) -> None:
    import torch
    import torch.distributed as dist

    from dimba.growth.memory import MemorySetting, growth_extra
    from dimba.growth.schedule import GrowthEvent
    from dimba.model.shapes import parameter_count
    from dimba.model import DIMBAConfig

    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    before, event = DIMBAConfig(**BEFORE), GrowthEvent(**EVENT)
    after = event.apply(before)
    result = {"fsdp": fsdp_phase(torch, dist, before, event)}
    gc.collect()
    dist.barrier()
    if dist.get_rank() == 0:
        result["ddp"] = ddp_phase(torch, before, event)
        whole = 12 * parameter_count(after)  # fp32 weights and two moments
        world = dist.get_world_size()
        result["plan"] = {s: growth_extra(before, after, MemorySetting(s, world)) for s in ("fsdp", "ddp")}
        result.update(params_before=parameter_count(before), params_after=parameter_count(after),
                      whole_grown_model_with_moments_bytes=whole)
    dist.barrier()
    (out / f"rank{dist.get_rank()}.json").write_text(json.dumps(result))
    dist.destroy_process_group()


def launch(out: Path, world: int = 2) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "WORLD_SIZE": str(world),
           "OMP_NUM_THREADS": "1"}
    ranks = [subprocess.Popen([sys.executable, __file__, "--rank-of", str(out)], env={**env, "RANK": str(r)})
             for r in range(world)]
    if any(p.wait() for p in ranks):
        raise SystemExit("a rank failed")


def main() -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        load_before = os.getloadavg()[0]
        launch(out)
        ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]
    report = ranks[0]
    whole = report["whole_grown_model_with_moments_bytes"]
    fsdp_extra = max(r["fsdp"]["extra_allocated_bytes"] for r in ranks)
    report["fsdp_ranks"] = [r["fsdp"] for r in ranks]
    report["load_average_1min"] = {"before": load_before, "after": os.getloadavg()[0], "cores": os.cpu_count()}
    del report["fsdp"]
    report["headline"] = {
        "fsdp_peak_extra_per_rank_over_whole_model": fsdp_extra / whole,
        "ddp_peak_extra_per_rank_over_whole_model": report["ddp"]["extra_allocated_bytes"] / whole,
        "ddp_over_fsdp_peak_extra": report["ddp"]["extra_allocated_bytes"] / fsdp_extra,
        "fsdp_growth_over_one_step": max(r["growth_s"] / r["step_s_after"] for r in report["fsdp_ranks"]),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--rank-of":
        rank_main(Path(sys.argv[2]))
    else:
        main()
