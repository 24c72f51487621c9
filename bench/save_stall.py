"""How long a milestone save blocks training, synchronous against asynchronous, and how
close a synchronous save comes to the disk's own fsync'd write bandwidth.

For a ~4M and a ~100M parameter DIMBA, a real two-step `Trainer.fit` crosses one
milestone at its first step (batch 4 x 128 tokens); the stall is the time the training
thread spends in the milestone callback's save, plus, for asynchronous saves, the second
optimizer step's wait for the copy of the state (reported on its own as
`async_background_copy_s`: the stall stays small while the next forward and backward pass
take longer than that copy). Synchronous: dump + torch.save + fsync + publish.
Asynchronous (`async_save=True`): dump; the copy overlaps the next forward/backward, the
write and the publishing run in the background. `dd if=/dev/zero bs=1M conv=fsync` of the same size into the
same directory, in the same run, gives the disk bandwidth. Prints one JSON object.
Goals: async stall <= 5% of the sync save; sync throughput >= 70% of dd.

`--sharded`: the same on 2 CPU processes under `trainer=fsdp` (FSDP2): every rank writes its
shards of a Distributed Checkpoint directory; asynchronous, `torch.distributed.checkpoint.
async_save` stages them in host memory and writes them in a thread (goal: training
blocked <= 5% of the synchronous sharded save). Rank 0 prints the JSON.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import lightning as L  # noqa: E402
import torch  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402

import dimba.training.async_writer as async_module  # noqa: E402
from dimba.training.async_writer import snapshot  # noqa: E402
from dimba.training.milestone_callback import ProgressiveCheckpointCallback  # noqa: E402
from dimba.checkpointing.atomic_io import size_on_disk  # noqa: E402
from dimba.training.checkpoint_io import AtomicCheckpointIO  # noqa: E402
from dimba.model import DIMBAConfig  # noqa: E402
from dimba.training import DIMBALightningModule  # noqa: E402

log = logging.getLogger("bench.save_stall")

BATCH, SEQ_LEN = 4, 128  # a real (small) training step: the background copy runs during it
MODELS = {
    "4M": DIMBAConfig(d_model=256, n_layers=8),
    "100M": DIMBAConfig(d_model=1024, n_layers=12),
}


class TimedSaves(ProgressiveCheckpointCallback):
    """The real callback, with the training thread's time inside each save recorded, plus
    (asynchronous saves) the next optimizer step's wait for the copy."""

    stalls: List[float] = []

    def save(self, *args: Any, **kwargs: Any) -> None:
        start = time.perf_counter()
        super().save(*args, **kwargs)
        self.stalls.append(time.perf_counter() - start)

    def on_before_optimizer_step(self, *args: Any, **kwargs: Any) -> None:
        start = time.perf_counter()
        super().on_before_optimizer_step(*args, **kwargs)
        if self.stalls:
            self.stalls[-1] += time.perf_counter() - start


SHARDED = False  # --sharded: FSDP2 on 2 CPU processes


def is_rank_zero() -> bool:
    return os.environ.get("LOCAL_RANK", "0") == "0"


def timed_save(config: DIMBAConfig, save_dir: Path, async_save: bool, accelerator: str = "cpu") -> Dict[str, Any]:
    torch.manual_seed(0)
    module = DIMBALightningModule(model_config=config, enable_progressive_checkpoints=False, warmup_steps=0)
    callback = TimedSaves([1], save_dir, async_save=async_save)
    callback.stalls = []
    if SHARDED:
        from dimba.training.fsdp import FSDPStrategy

        parallel = dict(devices=2, strategy=FSDPStrategy())
    else:
        parallel = dict(devices=1, plugins=[AtomicCheckpointIO()])
    trainer = L.Trainer(max_steps=2, accelerator=accelerator, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=[callback],
                        default_root_dir=str(save_dir), **parallel)
    tokens = torch.randint(0, 256, (2 * BATCH, SEQ_LEN))
    copies.clear()
    start = time.perf_counter()
    trainer.fit(module, DataLoader(tokens, batch_size=BATCH))  # on_train_end waits for a background write
    files = list(save_dir.glob("checkpoint_*.pt"))
    assert len(files) == 1 and callback.manager.reached_milestones == [1], "the milestone was not saved"
    return {"stall_s": callback.stalls[0], "fit_s": time.perf_counter() - start, "bytes": size_on_disk(files[0]),
            "copy_s": copies[0] if copies else None}


copies: List[float] = []


def timed_snapshot(checkpoint: Any) -> Any:
    """The background copy, timed: how much the next forward/backward has to hide."""
    start = time.perf_counter()
    copy = snapshot(checkpoint)
    copies.append(time.perf_counter() - start)
    return copy


async_module.snapshot = timed_snapshot


def dd_bandwidth(directory: Path, size_bytes: int) -> float:
    """Bytes/s of `dd if=/dev/zero bs=1M count=N conv=fsync` into `directory`."""
    target = directory / "dd.bin"
    count = max(1, size_bytes // (1 << 20))
    result = subprocess.run(["dd", "if=/dev/zero", f"of={target}", "bs=1M", f"count={count}", "conv=fsync"],
                            capture_output=True, text=True, check=True)
    target.unlink()
    match = re.search(r"(\d+) bytes .* copied, ([\d.]+) s", result.stderr)
    assert match, result.stderr
    return int(match.group(1)) / float(match.group(2))


def measure(name: str, config: DIMBAConfig, workdir: Path, repeats: int, accelerator: str) -> Dict[str, Any]:
    rows: Dict[str, List[Dict[str, Any]]] = {"sync": [], "async": []}
    dd: List[float] = []
    for i in range(repeats):
        for mode in ("sync", "async"):
            save_dir = workdir / f"{name}-{mode}-{i}"
            rows[mode].append(timed_save(config, save_dir, async_save=mode == "async", accelerator=accelerator))
            log.info("%s %s: stall %.3f s", name, mode, rows[mode][-1]["stall_s"])
            if is_rank_zero():
                shutil.rmtree(save_dir)
        dd.append(dd_bandwidth(workdir, rows["sync"][-1]["bytes"]) if is_rank_zero() else 1.0)
    median = lambda values: sorted(values)[len(values) // 2]  # noqa: E731
    size = rows["sync"][0]["bytes"]
    sync_s = median([r["stall_s"] for r in rows["sync"]])
    async_s = median([r["stall_s"] for r in rows["async"]])
    dd_bps = median(dd)
    return {
        "params": sum(p.numel() for p in DIMBALightningModule(model_config=config).parameters()),
        "checkpoint_bytes": size,
        "sync_stall_s": sync_s, "async_stall_s": async_s,
        "async_background_copy_s": median([r["copy_s"] for r in rows["async"]]) if not SHARDED else None,
        "fit_two_steps_s": median([r["fit_s"] for r in rows["sync"]]),
        "async_stall_fraction_of_sync": async_s / sync_s,
        "sync_stalls_s": [r["stall_s"] for r in rows["sync"]], "async_stalls_s": [r["stall_s"] for r in rows["async"]],
        "sync_save_bytes_per_s": size / sync_s, "dd_fsync_bytes_per_s": dd_bps, "dd_runs_bytes_per_s": dd,
        "sync_fraction_of_dd": size / sync_s / dd_bps,
        "goals": {"async_stall_le_5pct_of_sync": async_s <= 0.05 * sync_s, "sync_ge_70pct_of_dd": size / sync_s >= 0.7 * dd_bps},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", choices=sorted(MODELS), default=["4M", "100M"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--accelerator", default="cpu", help="cpu or gpu (the state is copied to host memory)")
    parser.add_argument("--dir", type=Path, default=None, help="where to write (default: a temporary directory)")
    parser.add_argument("--sharded", action="store_true", help="trainer=fsdp on 2 CPU processes (sharded saves)")
    args = parser.parse_args()
    global SHARDED
    SHARDED = args.sharded
    if args.sharded and args.dir is None:
        args.dir = Path(tempfile.gettempdir())  # both processes must see the same directory
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(message)s")
    for name in ("lightning", "lightning.pytorch", "dimba"):
        logging.getLogger(name).setLevel(logging.WARNING)
    torch.set_num_threads(2)
    workdir = Path(args.dir or tempfile.mkdtemp()) / ("dimba-save-stall-sharded" if args.sharded else f"dimba-save-stall-{os.getpid()}")
    workdir.mkdir(parents=True, exist_ok=True)
    timed_save(DIMBAConfig(d_model=64, n_layers=1), workdir / "warmup", True, args.accelerator)  # imports
    results = {name: measure(name, MODELS[name], workdir, args.repeats, args.accelerator) for name in args.models}
    if is_rank_zero():
        shutil.rmtree(workdir, ignore_errors=True)
        print(json.dumps({"torch_version": torch.__version__, "accelerator": args.accelerator, "sharded": args.sharded,
                          "results": results}, indent=2))


if __name__ == "__main__":
    main()
