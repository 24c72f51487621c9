"""Sampling speed: a DDIM step against one forward pass of the same batch, and tokens/s.

A sampling step (dimba.diffusion.sampling) runs the denoiser once on the whole batch and
then does per-token work: logits against the embedding table, argmax, the nearest
embedding, the DDIM update. The goal is a step within 1.5x of the bare forward pass
(`model.denoise` on the same batch, no gradients). Generation tokens/s counts the sampled
(non-prompt) tokens of the batch over the wall time of `sample_many`, at each step count.

The model: `--checkpoint` (anything `dimba generate` takes), or a freshly initialised one
of `--config` (`default`: the default run's 0.6M start; `grown`: its 4.5M end; `reference`:
bench/throughput.py's). `--cli` also times `dimba generate` end to end in a subprocess
(imports, loading, tokenising), which is what a user waits for. One JSON object on stdout.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from dimba.diffusion.sampling import sample_many  # noqa: E402
from dimba.model import DIMBA, DIMBAConfig  # noqa: E402
from dimba.model.params import count_parameters  # noqa: E402

log = logging.getLogger("bench.generate_speed")

CONFIGS = {
    "default": DIMBAConfig(d_model=128, n_layers=4),
    "grown": DIMBAConfig(d_model=256, n_layers=8),
    "reference": DIMBAConfig(vocab_size=256, d_model=256, n_layers=4, d_state=16, expand=2, head_dim=64, d_conv=4),
}
GOAL_RATIO = 1.5


def median_seconds(fn: Any, repeats: int) -> float:
    fn()  # warm up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure(model: DIMBA, batch: int, length: int, prompt_len: int, steps: int, repeats: int) -> Dict[str, Any]:
    x_t = torch.randn(batch, length, model.config.d_embed)
    t = torch.full((batch,), model.config.diffusion_steps // 2)
    with torch.no_grad():
        forward_s = median_seconds(lambda: model.denoise(x_t, t), repeats)
    prompt = torch.randint(0, model.config.vocab_size, (prompt_len,))
    seeds = list(range(batch))
    sample_s = median_seconds(lambda: sample_many(model, prompt, length, steps, seeds), max(1, repeats // 4))
    step_s = sample_s / steps
    return {"batch": batch, "length": length, "prompt_tokens": prompt_len, "steps": steps,
            "forward_s": forward_s, "sample_s": sample_s, "step_s": step_s, "step_over_forward": step_s / forward_s,
            "generated_tokens_per_s": batch * (length - prompt_len) / sample_s,
            "meets_goal": step_s / forward_s <= GOAL_RATIO}


def time_cli(checkpoint: str, length: int, steps: int) -> Dict[str, Any]:
    command = [sys.executable, "-m", "dimba.cli.main", "generate", checkpoint, "--prompt", "The ",
               "--length", str(length), "--steps", str(steps), "--seed", "0"]
    start = time.perf_counter()
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if result.returncode:
        raise SystemExit(f"dimba generate failed: {result.stderr.strip().splitlines()[-1]}")
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import dimba.cli.main, dimba.io.load, dimba.diffusion.sampling, torch"],
                   cwd=ROOT, check=True)
    imports = time.perf_counter() - start
    return {"command": " ".join(command[1:]), "steps": steps, "wall_s": wall, "imports_s": imports}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default=None, help="a checkpoint, export or run directory (default: a fresh model)")
    parser.add_argument("--config", choices=sorted(CONFIGS), default="grown", help="fresh model's size (default: grown)")
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 8], help="batch sizes (default: 1 8)")
    parser.add_argument("--steps", type=int, nargs="+", default=[16, 64], help="DDIM step counts (default: 16 64)")
    parser.add_argument("--length", type=int, default=256, help="tokens per sample, prompt included (default: 256)")
    parser.add_argument("--prompt-tokens", type=int, default=4, help="(default: 4)")
    parser.add_argument("--repeats", type=int, default=8, help="timed repeats of the forward pass (default: 8)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--cli", action="store_true", help="also time `dimba generate` end to end")
    args = parser.parse_args()
    if args.cli and not args.checkpoint:
        parser.error("--cli times `dimba generate` on a file: give --checkpoint")
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(message)s")
    torch.set_num_threads(args.threads)

    if args.checkpoint:
        from dimba.cli.main import checkpoint_of
        from dimba.io.load import load_model

        model = load_model(checkpoint_of(args.checkpoint))
    else:
        torch.manual_seed(0)
        model = DIMBA(CONFIGS[args.config]).eval()
    rows: List[Dict[str, Any]] = []
    for batch in args.batch:
        for steps in args.steps:
            rows.append(measure(model, batch, args.length, args.prompt_tokens, steps, args.repeats))
            r = rows[-1]
            log.info("batch %d, %d steps: step %.1f ms = %.2fx forward (%.1f ms); %.0f generated tokens/s",
                     batch, steps, r["step_s"] * 1e3, r["step_over_forward"], r["forward_s"] * 1e3,
                     r["generated_tokens_per_s"])
    result: Dict[str, Any] = {
        "model": {"checkpoint": args.checkpoint, "config": None if args.checkpoint else args.config,
                  "params": count_parameters(model), **model.config.to_dict()},
        "torch_version": torch.__version__, "num_threads": torch.get_num_threads(),
        "goal_step_over_forward": GOAL_RATIO, "runs": rows,
        "meets_goal": all(r["meets_goal"] for r in rows),
    }
    if args.cli:
        result["cli"] = [time_cli(args.checkpoint, args.length, steps) for steps in args.steps]
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
