"""Which growth recipe is best in bits? Candidate recipes of `growth=...`, each trained as
`python train.py objective=diffusion` trains it (the default continuous recipe), planned to 0.25, 0.5 and 1 times
B with its events at the same fractions of the steps, read against `bench/frontier.py`'s
fixed-size frontier (`python bench/frontier.py report` reports both).

Each candidate's rate is chosen on a grid (`RATE_GRID` times `optim.lr`) on seed 0's `select`
half at B; its other seeds and levels reuse it. Every candidate still grows to 4.5M parameters or more,
so the default run's 1M, 2M and 4M milestones are still written.

    python bench/frontier_recipes.py run [--recipes late,single] [--seeds 0] [--levels 1]
    python bench/frontier_recipes.py report   # = python bench/frontier.py report

Runs are appended to bench/results/frontier_recipes_runs.jsonl; a restart skips finished runs.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any, Dict, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent))

import frontier  # noqa: E402
import quality  # noqa: E402  (sets the CPU's flush of subnormals before torch starts threads)

log = logging.getLogger("bench.frontier_recipes")

RUNS = frontier.RESULTS / "frontier_recipes_runs.jsonl"
RATE_GRID = (0.5, 1.0)  # times optim.lr; every candidate spends most steps narrow, at (256/d)x the rate


def _events(*events: str) -> str:
    return "growth.schedule=[" + ",".join("{" + e + "}" for e in events) + "]"


DEPTH8, TO192, TO256 = "op:depth,n_layers:8,mode:identity", "op:width,d_model:192", "op:width,d_model:256"
RECIPES: Dict[str, tuple] = {
    "early": (),
    "late": (_events(f"at:0.8,{DEPTH8}", f"at:0.9,{TO192}", f"at:0.95,{TO256}"),),
    "single": (_events(f"at:0.9,{DEPTH8}", f"at:0.9,{TO256}"),),
    "last-muP": (_events(f"at:0.98,{DEPTH8}", f"at:0.98,{TO256}"),),
    "last": (_events(f"at:0.98,{DEPTH8}", f"at:0.98,{TO256}"), "growth.lr_width_exponent=0"),
    "end": (_events("at:1.0,op:depth,n_layers:10,mode:identity", f"at:1.0,{TO256}"), "growth.lr_width_exponent=0"),
    "small": ("model.d_model=96", _events(f"at:0.8,{DEPTH8}", "at:0.8,op:width,d_model:128",
                                          f"at:0.9,{TO192}", f"at:0.95,{TO256}")),
}
"""Label -> the Hydra overrides on top of `python train.py growth=early` (every bench run's
growth, `quality.BENCH_GROWTH`): `early` is that recipe (50/70/85%); `late` the same stages
at 80/90/95%; `single` one event to the final size at 90%; `last-muP` the same at 98%;
`last` that with one rate for every width; `end` the same after the last step, to d256x10
(`growth=default`: ten layers so that every objective crosses 4M); `small` a d96x4 start, then `late`'s stages. All but `last` and `end`
train a stage of width d at (256/d) times the rate.

`end` trains d128x4 alone, step for step the fixed d128x4 run planned to the same FLOPs, and
grows after its last step without changing what the model computes
(`tests/test_frontier_recipes.py`): its figures are the d128x4 column of the frontier, and it
is not trained again here."""
SAME_AS_FIXED = {"end": "d128x4"}
"""Recipes whose runs are a fixed size's (read from bench/frontier.py's runs, at that size's rate)."""
DEFAULT_RECIPE = "end"
"""The recipe `growth=default` is: the best in bits at the default run's budget."""


def label(name: str) -> str:
    return f"grown[{name}]"


def run_key(name: str, level: float, lr: float, seed: int) -> str:
    return quality.run_key("builtin", label(name), level, lr, seed)


def base_lr() -> float:
    return frontier.base_lr()


def ensure(name: str, level: float, lr: float, seed: int, halves: Sequence[str]) -> Dict[str, Any]:
    runs = quality.load_runs(RUNS)
    key = run_key(name, level, lr, seed)
    if key in runs:
        return runs[key]
    same = quality.load_runs().get(quality.run_key("builtin", "diffusion", level, lr, seed)) if name == "early" else None
    if same is not None and all(h in same["heldout"] for h in halves):
        record = {**same, "key": key, "variant": label(name), "adopted_from": same["key"]}  # quality.py's run
        quality.append_run(record, RUNS)
        return record
    record = quality.one_run("builtin", "diffusion", level, lr, seed, with_samples=False, extra=RECIPES[name],
                             label=label(name), halves=halves)
    quality.append_run(record, RUNS)
    return record


def recipe_rate(name: str, runs: Dict[str, Dict[str, Any]]) -> float | None:
    grid = [runs.get(run_key(name, 1.0, base_lr() * m, 0)) for m in RATE_GRID]
    if any(r is None for r in grid):
        return None
    return min(grid, key=lambda r: r["heldout"]["select"]["bpb"])["lr"]


def as_fixed(name: str, fixed_runs: Dict[str, Dict[str, Any]]) -> Dict[str, Dict[str, Any]]:
    """A recipe of `SAME_AS_FIXED` as recipe runs: the fixed size's runs at its chosen rate,
    if that rate is `optim.lr` (the recipe's own; else none)."""
    size = SAME_AS_FIXED[name]
    lr = frontier.chosen_rate(size, fixed_runs)
    if lr is None or lr != base_lr():
        return {}
    out = {}
    for run in fixed_runs.values():
        if run["size"] == size and run["lr"] == lr:
            for level, item in run["levels"].items():
                out[run_key(name, float(level), lr, run["seed"])] = {
                    "heldout": {h: item[h] for h in ("select", "report") if h in item}, "flops": item["flops"],
                    "steps": item["steps"], "growth_steps": [item["steps"]] * 2, "lr": lr, "same_as": run["key"]}
    return out


def cmd_run(args: argparse.Namespace) -> None:
    unrun = [name for name in args.recipes if name in SAME_AS_FIXED]
    if unrun:
        raise SystemExit(f"--recipes: {', '.join(unrun)} trains as a fixed size (bench/frontier.py run); "
                         f"accepted: {', '.join(r for r in RECIPES if r not in SAME_AS_FIXED)}")
    for name in args.recipes:
        for multiple in RATE_GRID:  # seed 0 at B: the rate grid
            ensure(name, 1.0, base_lr() * multiple, 0, ("select", "report"))
        lr = recipe_rate(name, quality.load_runs(RUNS))
        for seed in args.seeds:
            for level in args.levels:
                ensure(name, level, lr, seed, ("select", "report") if seed == 0 else ("report",))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run")
    run.add_argument("--recipes", default=",".join(r for r in RECIPES if r not in SAME_AS_FIXED),
                     type=lambda s: s.split(","))
    run.add_argument("--seeds", default="0", type=lambda s: [int(x) for x in s.split(",") if x])
    run.add_argument("--levels", default="1", type=lambda s: [float(x) for x in s.split(",") if x])
    sub.add_parser("report")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    if args.command == "run":
        unknown = [r for r in args.recipes if r not in RECIPES]
        if unknown:
            raise SystemExit(f"--recipes: unknown {', '.join(unknown)}; accepted: {', '.join(RECIPES)}")
        cmd_run(args)
    else:
        import frontier_report

        frontier_report.cmd_report(args)


if __name__ == "__main__":
    main()
