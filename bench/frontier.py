"""Does growing pay, in bits? The default grown run against the best model of any fixed size
at the same training FLOPs.

The frontier: every size the default run passes through (d128x4, d128x8, d192x8, d256x8)
and two smaller sizes, d64x4 and d96x4 (smaller starts `bench/frontier_recipes.py` tries),
trained from scratch with `growth=none` and the default recipe, its learning rate chosen on a
grid (`quality.LR_GRID` times `optim.lr`, seed 0, the `select` half, at the full budget), its
schedule planned to each FLOPs level it is compared at. One run per size, seed and rate serves
every level: warmup-stable-decay trains identically up to a level's decay, so each level's
decay (the last `optim.decay_fraction` of its steps) branches off one stable phase, as the
WSD literature does; a branch is the run planned to that level, bit for bit
(`tests/test_frontier.py`). The budget B is `bench/quality.py`'s: the default run's FLOPs.

The grown runs are `bench/frontier_recipes.py`'s: each growth recipe planned to each level
(its events at the same fractions of its steps); the report reads both.

Every figure is the held-out bound in bits per byte (`quality.bpb`: the same windows and noise
draws for every model, so differences are paired). The report gives, per seed and level,
each recipe's bpb against the frontier's (the size picked on `select`, read on `report`),
and the FLOPs at which it reaches the final size's scratch figure at B.

    python bench/frontier.py run [--sizes d128x4,...] [--seeds 3] [--only-seeds 1,2]
    python bench/frontier.py report    # JSON on stdout, bench/results/frontier.{json,md,png}

Runs are appended to bench/results/frontier_runs.jsonl; a restart skips finished runs.
"""

from __future__ import annotations

import argparse
import copy
import logging
import math
import sys
import time
from pathlib import Path
from typing import Any, Dict, Sequence

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

import quality  # noqa: E402  (sets the CPU's flush of subnormals before torch starts threads)

log = logging.getLogger("bench.frontier")

RESULTS = ROOT / "bench" / "results"
RUNS = RESULTS / "frontier_runs.jsonl"
SIZES: Dict[str, tuple] = {"d64x4": (64, 4), "d96x4": (96, 4), "d128x4": (128, 4), "d128x8": (128, 8), "d192x8": (192, 8), "d256x8": (256, 8)}
LEVELS = (0.25, 0.5, 1.0)  # times B
VERSION = "v1"


def size_config(size: str, seed: int):
    d_model, n_layers = SIZES[size]
    return quality.compose(["objective=diffusion", f"seed={seed}", f"model.d_model={d_model}",
                            f"model.n_layers={n_layers}", "growth=none"])


def budget_flops() -> int:
    """B: the default run's FLOPs, as bench/quality.py budgets its runs."""
    default = quality.compose(["objective=diffusion", quality.BENCH_GROWTH, *quality.ORIGINAL_RECIPE])
    return quality.run_flops(default, default.trainer.max_steps, list(default.growth.schedule))


def level_steps(per_step: int, budget: int, levels: Sequence[float] = LEVELS) -> Dict[float, int]:
    """Steps of a fixed-size run planned to each level (its FLOPs at most the level's)."""
    return {level: max(1, math.floor(level * budget / per_step)) for level in levels}


def branch_runs(config, lr: float, steps_of: Dict[Any, int], loader, on_branch) -> None:
    """Train one stable phase and, for each planned length in `steps_of`, its decay from the
    step where wsd starts decaying: `on_branch(name, trainer)` gets each run, finished, in turn.
    Each branch is the run planned to its length (`schedule=wsd` is flat until then)."""
    from dimba.training.lr_schedule import wsd_decay_start

    if config.optim.schedule != "wsd":
        raise SystemExit(f"optim.schedule={config.optim.schedule}: branching needs wsd")
    longest = max(steps_of.values())
    main = quality.trainer_for(config, lr, longest, loader)
    for name, total in sorted(steps_of.items(), key=lambda item: item[1]):
        main.max_steps = wsd_decay_start(total, config.optim.warmup_steps, config.optim.decay_fraction)
        main.train()
        branch = quality.trainer_for(config, lr, total, loader)
        branch.model.load_state_dict(main.model.state_dict())
        branch.optimizer.load_state_dict(copy.deepcopy(main.optimizer.state_dict()))  # (its tensors, else shared)
        branch.global_step = main.global_step
        branch.train()
        on_branch(name, branch)


def one_run(size: str, lr: float, seed: int, halves: Sequence[str]) -> Dict[str, Any]:
    from dimba.run import build_data

    config = size_config(size, seed)
    budget = budget_flops()
    per_step = quality.run_flops(config, 1, [])
    steps_of = level_steps(per_step, budget)
    data = build_data(config)
    held_out = quality.held_out(data)
    levels: Dict[str, Any] = {}
    timing = {"eval_wall_s": 0.0}
    started = time.perf_counter()

    def evaluate(level: float, trainer) -> None:
        begun = time.perf_counter()
        trainer.model.eval()
        levels[f"{level:g}"] = {"steps": trainer.global_step, "flops": trainer.global_step * per_step,
                                **{h: quality.bpb(trainer.model, *held_out[h]) for h in halves}}
        timing["eval_wall_s"] += time.perf_counter() - begun
        log.info("  %s lr %g seed %d x%g (%d steps): %s", size, lr, seed, level, trainer.global_step,
                 {h: round(levels[f"{level:g}"][h]["bpb"], 4) for h in halves})

    log.info("%s lr %g seed %d: %d FLOPs a step, levels %s", size, lr, seed, per_step, steps_of)
    branch_runs(config, lr, steps_of, data.train_dataloader(), evaluate)
    return {"key": run_key(size, lr, seed), "size": size, "lr": lr, "seed": seed, "budget_flops": budget,
            "step_flops": per_step, "levels": levels, "params": _params(config),
            "train_wall_s": time.perf_counter() - started - timing["eval_wall_s"], "eval_wall_s": timing["eval_wall_s"],
            "decay_fraction": config.optim.decay_fraction}


def _params(config) -> int:
    from dimba.model.params import architecture_parameters

    return int(architecture_parameters(config.model))


def run_key(size: str, lr: float, seed: int) -> str:
    return f"{VERSION}|builtin|{size}|lr{lr:g}|seed{seed}"


def base_lr() -> float:
    return quality.compose(["objective=diffusion"]).optim.lr


def chosen_rate(size: str, runs: Dict[str, Dict[str, Any]]) -> float | None:
    """The grid's rate with the lowest `select` figure at the full budget, seed 0 (None: grid not run)."""
    grid = [runs.get(run_key(size, base_lr() * m, 0)) for m in quality.LR_GRID]
    if any(r is None for r in grid):
        return None
    return min(grid, key=lambda r: r["levels"]["1"]["select"]["bpb"])["lr"]


def ensure(size: str, lr: float, seed: int, halves: Sequence[str]) -> Dict[str, Any]:
    runs = quality.load_runs(RUNS)
    key = run_key(size, lr, seed)
    if key in runs:
        return runs[key]
    record = one_run(size, lr, seed, halves)
    quality.append_run(record, RUNS)
    return record


def cmd_run(args: argparse.Namespace) -> None:
    seeds = args.only_seeds or list(range(args.seeds))
    for seed in seeds:
        if seed == 0:  # the default rate for every size first, then the rest of the grid
            for multiple in sorted(quality.LR_GRID, key=lambda m: (m != 1.0, -m)):
                for size in args.sizes:
                    ensure(size, base_lr() * multiple, 0, ("select", "report"))
        else:
            for size in args.sizes:
                lr = chosen_rate(size, quality.load_runs(RUNS))
                if lr is None:
                    raise SystemExit(f"{size}: seed 0's rate grid is not run yet (run --only-seeds 0 first)")
                ensure(size, lr, seed, ("report",))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run")
    run.add_argument("--sizes", default=",".join(SIZES), type=lambda s: s.split(","))
    run.add_argument("--seeds", type=int, default=3)
    run.add_argument("--only-seeds", default="", type=lambda s: [int(x) for x in s.split(",") if x])
    sub.add_parser("report")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    if args.command == "run":
        unknown = [s for s in args.sizes if s not in SIZES]
        if unknown:
            raise SystemExit(f"--sizes: unknown {', '.join(unknown)}; accepted: {', '.join(SIZES)}")
        cmd_run(args)
    else:
        import frontier_report

        frontier_report.cmd_report(args)


if __name__ == "__main__":
    main()
