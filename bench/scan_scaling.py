"""The chunked SSD scan is linear in sequence length: time per token stays flat as the
number of chunks grows (a quadratic scan would double its time per token with each
doubling). Times forward + backward of `ssd_scan` at the reference shapes (batch 8,
8 heads of 64 channels, d_state 16, chunk 64) for lengths 256 .. 4096 and prints JSON,
with the size of the largest intermediate, (batch, heads, chunks, Q, Q), which grows with
the number of chunks, not with its square.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from dimba.model.ssd import ssd_scan  # noqa: E402

BATCH, HEADS, HEAD_DIM, D_STATE, CHUNK = 8, 8, 64, 16, 64


def time_scan(length: int, repeats: int) -> float:
    g = torch.Generator().manual_seed(length)
    x = torch.randn(BATCH, length, HEADS, HEAD_DIM, generator=g, requires_grad=True)
    dt = (torch.rand(BATCH, length, HEADS, generator=g) * 0.1 + 1e-3).requires_grad_()
    A = (-torch.rand(HEADS, generator=g) * 4).requires_grad_()
    B = torch.randn(BATCH, length, D_STATE, generator=g, requires_grad=True)
    C = torch.randn(BATCH, length, D_STATE, generator=g, requires_grad=True)
    times = []
    for i in range(repeats + 1):
        start = time.perf_counter()
        ssd_scan(x, dt, A, B, C, CHUNK).square().mean().backward()
        if i:  # the first call warms up
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[256, 512, 1024, 2048, 4096])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for length in args.lengths:
        seconds = time_scan(length, args.repeats)
        chunks = -(-length // CHUNK)
        rows.append({"length": length, "chunks": chunks, "fwd_bwd_s": seconds,
                     "us_per_token": seconds / (BATCH * length) * 1e6,
                     "largest_intermediate_mb": BATCH * HEADS * chunks * CHUNK * CHUNK * 4 / 1e6})
    base = rows[0]["us_per_token"]
    for row in rows:
        row["per_token_vs_shortest"] = row["us_per_token"] / base
    print(json.dumps({"shape": {"batch": BATCH, "heads": HEADS, "head_dim": HEAD_DIM, "d_state": D_STATE,
                                "chunk": CHUNK}, "threads": args.threads, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
