"""Loader throughput (tokens/s) on prepared shards against what training consumes.

Reads batches of the reference shape (seq 256, batch 8) from `ShardsDataModule`'s training
loader (shuffled windows over memory-mapped shards, exactly what training iterates) with 0
and 2 worker processes, and compares with training's consumption at the reference config:
5,950 tokens/s on this 2-core CPU at 2 threads (bench/throughput.py, 2026-12-06), or measured here with
`--measure-training`. The goal: the loader at least 20x faster. Prints one JSON object:

    python bench/data_loader.py [--path /tmp/dimba-bench-data/prepared-bytes] [--batches 3000]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from dimba.data import ShardsDataModule  # noqa: E402

TRAINING_TOKENS_PER_S = 5950  # reference config, 2 threads, this CPU kind (see the module docstring)
GOAL = 20


def loader_rate(path: str, seq_len: int, batch_size: int, workers: int, batches: int) -> dict:
    data = ShardsDataModule(path, seq_len=seq_len, batch_size=batch_size, num_workers=workers, seed=0)
    data.setup()
    started = time.perf_counter()
    iterator = iter(data.train_dataloader())
    next(iterator)
    first = time.perf_counter() - started
    started, count = time.perf_counter(), 0
    for _, batch in zip(range(batches), iterator):
        count += batch.numel()
    seconds = time.perf_counter() - started
    return {"workers": workers, "first_batch_s": round(first, 3), "tokens_per_s": round(count / seconds),
            "batches": batches, "sequences_in_epoch": len(data.train_set)}


def training_rate(seq_len: int, batch_size: int, vocab_size: int, steps: int = 6) -> float:
    from dimba.model import DIMBA, DIMBAConfig

    torch.set_num_threads(2)
    config = DIMBAConfig(vocab_size=vocab_size, d_model=256, n_layers=4, d_state=16, expand=2, head_dim=64,
                         d_conv=4, bidirectional=True)
    model = DIMBA(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    batch = torch.randint(0, vocab_size, (batch_size, seq_len))
    for step in range(steps + 2):
        if step == 2:
            started = time.perf_counter()
        optimizer.zero_grad()
        model.loss(batch)["loss"].backward()
        optimizer.step()
    return steps * batch.numel() / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--path", default="/tmp/dimba-bench-data/prepared-bytes")
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--batches", type=int, default=3000)
    parser.add_argument("--workers", default="0,2")
    parser.add_argument("--measure-training", action="store_true", help="measure training's tokens/s here too")
    args = parser.parse_args()
    torch.set_num_threads(1)
    data = ShardsDataModule(args.path, seq_len=args.seq_len, batch_size=args.batch_size)
    result = {"path": args.path, "tokens_in_corpus": sum(data.manifest["tokens"].values()),
              "tokenizer": data.manifest["tokenizer"]["name"], "seq_len": args.seq_len, "batch_size": args.batch_size,
              "load_average": os.getloadavg()[0], "loaders": []}
    for workers in (int(w) for w in args.workers.split(",")):
        result["loaders"].append(loader_rate(args.path, args.seq_len, args.batch_size, workers, args.batches))
    training = TRAINING_TOKENS_PER_S
    if args.measure_training:
        training = training_rate(args.seq_len, args.batch_size, data.vocab_size)
        result["training_tokens_per_s_measured"] = round(training)
    result["training_tokens_per_s"] = round(training)
    best = max(loader["tokens_per_s"] for loader in result["loaders"])
    result["loader_over_training"] = round(best / training, 1)
    result["goal_met"] = best / training >= GOAL
    print(json.dumps(result))


if __name__ == "__main__":
    main()
