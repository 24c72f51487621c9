"""Throughput of `dimba data prepare` (MB of text per second) on a generated corpus.

The corpus (default 2 GB, under /tmp, never in the repo) is the built-in text's paragraphs
drawn in a seeded random order, file after file, so it is not one block repeated. Each
tokenizer runs `dimba data prepare CORPUS --out DIR --workers N` as a user would (a fresh
process, BPE training included for bpe) and is timed from start to exit. Prints one JSON
object on stdout (wall-clock MB/s, and MB per CPU-second, which a shared machine disturbs less):

    python bench/data_prepare.py [--size-gb 2] [--workers 2] [--tokenizers bytes,bpe]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dimba.data.corpus import builtin_corpus  # noqa: E402

GB = 1_000_000_000


def generate(directory: Path, size_bytes: int, files: int, seed: int = 0) -> int:
    """Shuffled paragraphs of the built-in text until `size_bytes`; kept if already there."""
    marker = directory / f".generated-{size_bytes}-{files}-{seed}"
    if marker.is_file():
        return sum(p.stat().st_size for p in directory.glob("*.txt"))
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    paragraphs = [p.encode("utf-8") + b"\n\n" for p in builtin_corpus().split("\n\n") if p.strip()]
    rng = np.random.default_rng(seed)
    per_file, written = size_bytes // files, 0
    for index in range(files):
        with open(directory / f"part-{index:03d}.txt", "wb") as handle:
            size = 0
            while size < per_file:
                block = b"".join(paragraphs[i] for i in rng.permutation(len(paragraphs)))
                handle.write(block)
                size += len(block)
        written += size
    marker.touch()
    return written


def _children_cpu() -> float:
    """CPU seconds of finished child processes (the CLI and its workers): on a shared
    machine wall time says how busy it was, CPU time what the work cost."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_prepare(corpus: Path, out: Path, tokenizer: str, workers: int, extra: list) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    command = [sys.executable, "-m", "dimba.cli.main", "data", "prepare", str(corpus), "--out", str(out),
               "--tokenizer", tokenizer, "--workers", str(workers), "--quiet", *extra]
    started, cpu_before = time.perf_counter(), _children_cpu()
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    seconds, cpu = time.perf_counter() - started, _children_cpu() - cpu_before
    if done.returncode != 0:
        raise SystemExit(f"prepare failed: {done.stderr.strip()}")
    manifest = json.loads((out / "manifest.json").read_text())
    text_bytes = sum(s["bytes"] for s in manifest["sources"])
    tokens = manifest["tokens"]["train"] + manifest["tokens"]["val"]
    return {"tokenizer": tokenizer, "workers": workers, "seconds": round(seconds, 1),
            "text_mb": round(text_bytes / 1e6, 1), "mb_per_s": round(text_bytes / 1e6 / seconds, 2),
            "cpu_s": round(cpu, 1), "mb_per_cpu_s": round(text_bytes / 1e6 / cpu, 2),
            "load_average_after": round(os.getloadavg()[0], 2),
            "tokens": tokens, "vocab_size": manifest["tokenizer"]["vocab_size"], "shards": len(manifest["shards"]),
            "summary": done.stdout.strip(), "out": str(out)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-gb", type=float, default=2.0)
    parser.add_argument("--files", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--tokenizers", default="bytes,bpe")
    parser.add_argument("--vocab-size", type=int, default=32000)
    parser.add_argument("--dir", default="/tmp/dimba-bench-data", help="corpus and outputs (never the repo)")
    parser.add_argument("--keep", action="store_true", help="keep the prepared outputs (bench/data_loader.py reads them)")
    args = parser.parse_args()
    base = Path(args.dir)
    started = time.perf_counter()
    corpus_bytes = generate(base / "corpus", int(args.size_gb * GB), args.files)
    result = {"corpus_gb": round(corpus_bytes / GB, 3), "generate_s": round(time.perf_counter() - started, 1),
              "cpu_count": os.cpu_count(), "runs": []}
    for tokenizer in args.tokenizers.split(","):
        extra = ["--vocab-size", str(args.vocab_size)] if tokenizer == "bpe" else []
        run = run_prepare(base / "corpus", base / f"prepared-{tokenizer}", tokenizer, args.workers, extra)
        result["runs"].append(run)
        print(json.dumps(run), file=sys.stderr)
        if not args.keep:
            shutil.rmtree(run["out"], ignore_errors=True)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
