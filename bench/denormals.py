"""What flushing subnormal floats to zero is worth on this CPU: the continuous model's
(`objective=diffusion`) training step and a bound evaluation, with the flag on (as the trainers and `dimba` set it) and off.

Each case runs in a fresh process, since the flag is per thread and inherited by the threads
torch starts after it: a process that trains with it on sets it before its first op, as
`train.py` does. Models: `growth=early`'s final size (d_model 256, 8 layers) and the start
(d_model 128, 4 layers), the default recipe (normalised rows, Bayes x0: its rounding softmax
underflows) and the original one (free rows, regression x0), at the default batch and length.
A step is forward + backward + AdamW on random bytes; `--threads` threads (2: this machine).

    python bench/denormals.py [--steps 10] [--threads 2]   # one JSON object on stdout
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List

ROOT = Path(__file__).resolve().parents[1]
CONTINUOUS = "objective=diffusion"  # the continuous model's recipes (the run's default objective is ar)
ORIGINAL = ["model.embedding_norm=null", "model.x0_estimate=regression"]
RECIPES = {"default": [CONTINUOUS], "original": [CONTINUOUS, *ORIGINAL]}
SIZES = {"start": [], "final": ["model.d_model=256", "model.n_layers=8", "growth=none"]}


def one_case(recipe: str, size: str, flush: bool, steps: int) -> Dict[str, Any]:
    """Seconds per training step and per bound forward of one case (in this process)."""
    import torch

    sys.path.insert(0, str(ROOT / "bench"))
    from quality import compose  # noqa: E402  (it sets the flag: set it as this case wants, before any op)

    torch.set_flush_denormal(flush)
    from dimba.model import DIMBA
    from dimba.objectives import sequence_bound
    from dimba.training import steps as step_recipe

    config = compose(RECIPES[recipe] + SIZES[size])
    torch.manual_seed(0)
    model = DIMBA(config.model).train()
    optimizer = step_recipe.build_optimizer(model, config.optim)
    batch = torch.randint(0, config.model.vocab_size, (config.data.batch_size, config.data.seq_len))

    def train_step(step: int) -> None:
        out = step_recipe.training_loss(model, batch, config.objective, 0, step)
        optimizer.zero_grad(set_to_none=True)
        out["loss"].backward()
        optimizer.step()

    times: List[float] = []
    for step in range(steps + 3):
        started = time.perf_counter()
        train_step(step)
        if step >= 3:
            times.append(time.perf_counter() - started)
    model.eval()
    started = time.perf_counter()
    sequence_bound(model, batch, 2, torch.Generator().manual_seed(0))
    return {"recipe": recipe, "size": size, "flush_denormals": flush, "s_per_step": statistics.median(times),
            "bound_s": time.perf_counter() - started, "threads": torch.get_num_threads()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--case", help=argparse.SUPPRESS)  # recipe,size,flush: run one case here
    args = parser.parse_args()
    if args.case:
        recipe, size, flush = args.case.split(",")
        print(json.dumps(one_case(recipe, size, flush == "on", args.steps)))
        return
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    cases = []
    for size in SIZES:
        for recipe in RECIPES:
            for flush in ("off", "on"):
                out = subprocess.run([sys.executable, __file__, "--steps", str(args.steps), "--case",
                                      f"{recipe},{size},{flush}"], env=env, check=True, capture_output=True, text=True)
                cases.append(json.loads(out.stdout.strip().splitlines()[-1]))
                print(json.dumps(cases[-1]), file=sys.stderr)
    speedups = {f"{c['recipe']}/{c['size']}": {
        "step": off["s_per_step"] / c["s_per_step"], "bound": off["bound_s"] / c["bound_s"]}
        for c in cases if c["flush_denormals"]
        for off in cases if not off["flush_denormals"] and (off["recipe"], off["size"]) == (c["recipe"], c["size"])}
    print(json.dumps({"date": time.strftime("%Y-%m-%d"), "steps": args.steps, "cases": cases,
                      "speedup_from_flushing": speedups}, indent=1))


if __name__ == "__main__":
    main()
