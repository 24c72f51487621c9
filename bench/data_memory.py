"""Resident memory of a training process: on prepared 2 GB shards against the built-in corpus.

Each run is a fresh process that trains a reference DIMBA (d_model 256, 4 layers, seq 256,
batch 8) for a few steps through the data module; this script samples its resident memory
(VmRSS, and its anonymous and file-backed parts) from /proc every 50 ms and keeps the peak.
Goal: the two peaks within 200 MB. File-backed pages of memory-mapped shards are the
kernel's page cache (shared by every process, dropped under pressure), so RssAnon is the
figure that shows whether memory grows with the corpus.

    python bench/data_memory.py --path /tmp/dimba-bench-data/prepared-bytes [--steps 20]
    python bench/data_memory.py --path DIR --train-py [-- extra train.py overrides]

`--train-py` runs `python train.py data=shards data.path=DIR` against `python train.py`
(data=builtin) instead, summing the process tree (DDP ranks, loader workers). Prints one
JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
MB = 1 << 20
FIELDS = ("VmRSS", "RssAnon", "RssFile")


def status(pid: int) -> Dict[str, int]:
    values = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            name, _, rest = line.partition(":")
            if name in FIELDS:
                values[name] = int(rest.split()[0]) * 1024
    except (FileNotFoundError, ProcessLookupError):
        pass
    return values


def tree(pid: int) -> List[int]:
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        for task in Path(f"/proc/{current}/task").glob("*"):
            try:
                todo += [int(c) for c in (task / "children").read_text().split()]
            except (FileNotFoundError, ProcessLookupError, ValueError):
                pass
    return found


def sample(command: List[str], whole_tree: bool, env: Dict[str, str]) -> Dict[str, float]:
    """Run `command`, sampling its memory; the peak of each field, in MB."""
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    peaks = dict.fromkeys(FIELDS, 0)
    started = time.perf_counter()
    while process.poll() is None:
        pids = tree(process.pid) if whole_tree else [process.pid]
        totals = dict.fromkeys(FIELDS, 0)
        for pid in pids:
            for name, value in status(pid).items():
                totals[name] += value
        peaks = {name: max(peaks[name], totals[name]) for name in FIELDS}
        time.sleep(0.05)
    output = process.stdout.read()
    if process.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{output[-3000:]}")
    return {**{f"peak_{k}_mb": round(v / MB, 1) for k, v in peaks.items()},
            "seconds": round(time.perf_counter() - started, 1)}


def child(path: str, steps: int) -> None:
    """One training process: a few reference steps through the data module."""
    import lightning as L
    import torch

    from dimba.data import ShardsDataModule, TextDataModule
    from dimba.model import DIMBAConfig
    from dimba.training import DIMBALightningModule

    torch.set_num_threads(2)
    data = (TextDataModule(seq_len=256, batch_size=8) if path == "builtin"
            else ShardsDataModule(path, seq_len=256, batch_size=8))
    config = DIMBAConfig(vocab_size=data.vocab_size, d_model=256, n_layers=4, d_state=16, expand=2, head_dim=64,
                         d_conv=4, bidirectional=True)
    module = DIMBALightningModule(model_config=config, total_steps=steps, enable_progressive_checkpoints=False)
    trainer = L.Trainer(max_steps=steps, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=2,
                        val_check_interval=steps, use_distributed_sampler=False)
    trainer.fit(module, datamodule=data)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--path", default="/tmp/dimba-bench-data/prepared-bytes")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--train-py", action="store_true")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("overrides", nargs="*", help="extra train.py overrides (with --train-py)")
    args = parser.parse_args()
    if args.child:
        return child(args.child, args.steps)
    env = {**os.environ, "OMP_NUM_THREADS": "2", "DIMBA_CACHE_DIR": os.environ.get("DIMBA_CACHE_DIR", "/tmp/dimba-bench-cache")}
    runs = {}
    for name in ("builtin", "shards"):
        if args.train_py:
            data = ([] if name == "builtin" else ["data=shards", f"data.path={args.path}"]) + [
                "data.seq_len=256", "data.batch_size=8"]
            command = [sys.executable, "train.py", "model=reference", "objective=diffusion", f"trainer.max_steps={args.steps}",
                       "progressive_checkpoints=disabled", "growth=none", "hydra.run.dir=/tmp/dimba-bench-memory/" + name,
                       *data, *args.overrides]
        else:
            command = [sys.executable, __file__, "--child", "builtin" if name == "builtin" else args.path,
                       "--steps", str(args.steps)]
        runs[name] = sample(command, whole_tree=args.train_py, env=env)
        print(json.dumps({name: runs[name]}), file=sys.stderr)
    difference = runs["shards"]["peak_VmRSS_mb"] - runs["builtin"]["peak_VmRSS_mb"]
    print(json.dumps({"path": args.path, "mode": "train.py" if args.train_py else "data module", "steps": args.steps,
                      **runs, "difference_VmRSS_mb": round(difference, 1), "goal_met": abs(difference) <= 200}))


if __name__ == "__main__":
    main()
