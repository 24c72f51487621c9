"""The report of `bench/frontier.py` and `bench/frontier_recipes.py`: each growth recipe
against the fixed-size frontier, in bits per byte at equal training FLOPs
(bench/results/frontier.{json,md,png})."""

from __future__ import annotations

import argparse
import json
import math
import time
from typing import Any, Dict, Optional, Sequence

from dimba.checkpointing.atomic_io import write_atomic

import quality
from frontier import LEVELS, RESULTS, RUNS, SIZES, chosen_rate, run_key
from frontier_recipes import (DEFAULT_RECIPE, RECIPES, RUNS as RECIPE_RUNS, SAME_AS_FIXED, as_fixed, recipe_rate,
                              run_key as recipe_key)

COMMAND = ("python bench/frontier.py run --seeds 3 && python bench/frontier_recipes.py run && "
           "python bench/frontier_recipes.py run --recipes early,last --seeds 0,1,2 --levels 0.25,0.5,1 && "
           "python bench/frontier.py report")


def summarize(values: Sequence[float]) -> Dict[str, float]:
    mean = sum(values) / len(values)
    sd = (sum((v - mean) ** 2 for v in values) / (len(values) - 1)) ** 0.5 if len(values) > 1 else float("nan")
    return {"mean": mean, "sd": sd, "n": len(values), "min": min(values), "max": max(values)}


def crossing(points: Sequence[tuple], target: float) -> Optional[float]:
    """FLOPs at which the curve through `points` ((flops, bpb), by flops) first reaches `target`,
    interpolated linearly in (log FLOPs, bpb) from the level before; None if it never does."""
    previous = None
    for flops, bpb in points:
        if bpb <= target:
            if previous is None or previous[1] == bpb:
                return flops
            share = (previous[1] - target) / (previous[1] - bpb)
            return math.exp(math.log(previous[0]) + share * (math.log(flops) - math.log(previous[0])))
        previous = (flops, bpb)
    return None


def frontier_levels(runs: Dict[str, Dict[str, Any]], rates: Dict[str, float | None], budget: float) -> Dict[str, Any]:
    """Per level: the frontier's size (lowest `select` figure of seed 0 at its chosen rate) and,
    per seed, its `report` figure beside every size's."""
    sizes = [size for size, lr in rates.items() if lr is not None]
    seeds = sorted({r["seed"] for r in runs.values()})
    levels: Dict[str, Any] = {}
    for level in LEVELS:
        name = f"{level:g}"
        pick = min(sizes, key=lambda s: runs[run_key(s, rates[s], 0)]["levels"][name]["select"]["bpb"])
        rows = []
        for seed in seeds:
            fixed = {s: runs[k]["levels"][name]["report"]["bpb"] for s in sizes if (k := run_key(s, rates[s], seed)) in runs}
            if pick in fixed:
                rows.append({"seed": seed, "fixed": fixed, "frontier": fixed[pick]})
        levels[name] = {"flops": level * budget, "frontier_size": pick,
                        "per_seed": rows, "frontier": summarize([r["frontier"] for r in rows]),
                        "fixed": {s: summarize([r["fixed"][s] for r in rows if s in r["fixed"]]) for s in sizes}}
    return levels


def against_frontier(recipe: str, lr: float, recipe_runs: Dict[str, Dict[str, Any]], levels: Dict[str, Any],
                     targets: Dict[int, float], budget: float) -> Dict[str, Any]:
    """One recipe's figures per level and seed, paired with that seed's frontier, and the FLOPs
    at which it reaches the final size's scratch figure at B (`targets`, by seed)."""
    out: Dict[str, Any] = {"lr": lr, "overrides": list(RECIPES[recipe]), "levels": {}, "flops_to_target": []}
    for name, level in levels.items():
        rows = []
        for item in level["per_seed"]:
            run = recipe_runs.get(recipe_key(recipe, float(name), lr, item["seed"]))
            if run is not None:
                bpb = run["heldout"]["report"]["bpb"]
                rows.append({"seed": item["seed"], "bpb": bpb, "flops": run["flops"], "difference": bpb - item["frontier"],
                             "steps": run["steps"], "growth_steps": run["growth_steps"]})
        if rows:
            out["levels"][name] = {"per_seed": rows, "bpb": summarize([r["bpb"] for r in rows]),
                                   "difference": summarize([r["difference"] for r in rows]),
                                   "below_on_every_seed": all(r["difference"] < 0 for r in rows)}
    for seed, target in sorted(targets.items()):
        curve = [(run["flops"], run["heldout"]["report"]["bpb"]) for level in LEVELS
                 if (run := recipe_runs.get(recipe_key(recipe, level, lr, seed)))]
        if len(curve) == len(LEVELS):
            reached = crossing(curve, target)
            out["flops_to_target"].append({"seed": seed, "target_bpb": target, "flops": reached,
                                           "ratio": None if reached is None else reached / budget})
    return out


def build(runs: Dict[str, Dict[str, Any]], recipe_runs: Dict[str, Dict[str, Any]]) -> Dict[str, Any]:
    rates = {size: chosen_rate(size, runs) for size in SIZES}
    budget = next(iter(runs.values()))["budget_flops"]
    levels = frontier_levels(runs, rates, budget)
    targets = {r["seed"]: r["levels"]["1"]["report"]["bpb"] for r in runs.values()
               if r["size"] == "d256x8" and r["lr"] == rates["d256x8"]}
    rate = {name: recipe_rate(name, recipe_runs) for name in RECIPES if name not in SAME_AS_FIXED}
    for name in SAME_AS_FIXED:
        same = as_fixed(name, runs)
        recipe_runs = {**recipe_runs, **same}
        rate[name] = next(iter(same.values()))["lr"] if same else None
    recipes = {name: against_frontier(name, lr, recipe_runs, levels, targets, budget)
               for name, lr in rate.items() if lr is not None}
    return {"date": time.strftime("%Y-%m-%d"), "command": COMMAND, "budget_flops": budget, "rates": rates,
            "seeds": sorted({r["seed"] for r in runs.values()}), "levels": levels, "recipes": recipes,
            "default_recipe": DEFAULT_RECIPE,
            "run_hours": sum(r["train_wall_s"] + r["eval_wall_s"] for r in [*runs.values(), *recipe_runs.values()]
                             if "adopted_from" not in r and "same_as" not in r) / 3600}


def fmt(s: Dict[str, float]) -> str:
    return f"{s['mean']:.3f}" + ("" if math.isnan(s["sd"]) else f" ± {s['sd']:.3f}") + f" (n={s['n']})"


def markdown(result: Dict[str, Any]) -> str:
    lines = [f"Generated by `{result['command']}` on {result['date']}; B = {result['budget_flops']:.3e} FLOPs; "
             f"{result['run_hours']:.1f} h of training and evaluation. Report half, bits per byte, mean ± sd "
             "over seeds; a difference is paired per seed (negative: below the frontier).", "",
             "Rates (chosen on seed 0's `select` half at B): " +
             ", ".join(f"{s} {lr:g}" for s, lr in result["rates"].items() if lr is not None) + "; recipes " +
             ", ".join(f"{name} {r['lr']:g}" for name, r in result["recipes"].items()) + ".", "",
             "| FLOPs | frontier size (select) | frontier | " +
             " | ".join(f"{name}{' (default)' if name == result['default_recipe'] else ''} | − frontier"
                        for name in result["recipes"]) + " |",
             "|---|---|---|" + "---|---|" * len(result["recipes"])]
    for name, level in result["levels"].items():
        cells = []
        for recipe in result["recipes"].values():
            item = recipe["levels"].get(name)
            cells += [fmt(item["bpb"]), fmt(item["difference"]) + (" ✓" if item["below_on_every_seed"] else "")] \
                if item else ["–", "–"]
        lines.append(f"| {name} B | {level['frontier_size']} | {fmt(level['frontier'])} | " + " | ".join(cells) + " |")
    lines += ["", "Every fixed size:", "", "| FLOPs | " + " | ".join(result["rates"]) + " |",
              "|---|" + "---|" * len(result["rates"])]
    for name, level in result["levels"].items():
        lines.append(f"| {name} B | " + " | ".join(fmt(level["fixed"][s]) if s in level["fixed"] else "–"
                                                  for s in result["rates"]) + " |")
    lines += ["", "FLOPs for a grown run to reach d256x8's scratch figure at B (interpolated in log FLOPs "
              "between the levels it was planned to):", ""]
    for name, recipe in result["recipes"].items():
        for item in recipe["flops_to_target"]:
            ratio = "not reached by B" if item["ratio"] is None else f"{item['ratio']:.2f} B"
            lines.append(f"- {name}, seed {item['seed']}: target {item['target_bpb']:.3f} bpb, {ratio}")
    lines += ["", "Recipes (Hydra overrides on top of `python train.py objective=diffusion growth=early`):", ""]
    lines += [f"- `{name}`: `{' '.join(r['overrides']) or 'growth=early'}`" for name, r in result["recipes"].items()]
    return "\n".join(lines) + "\n"


def plot(result: Dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    levels = result["levels"]
    for size in result["rates"]:
        points = [(level["flops"], level["fixed"][size]) for level in levels.values() if size in level["fixed"]]
        if points:
            ax.errorbar([p[0] for p in points], [p[1]["mean"] for p in points],
                        yerr=[0 if math.isnan(p[1]["sd"]) else p[1]["sd"] for p in points], marker="o", lw=1,
                        alpha=0.6, capsize=2, label=f"{size} (fixed)")
    ax.plot([l["flops"] for l in levels.values()], [l["frontier"]["mean"] for l in levels.values()], "k--", lw=1.2,
            label="frontier (best size on select)")
    for name, recipe in result["recipes"].items():
        items = [(levels[n]["flops"], item["bpb"]) for n, item in recipe["levels"].items() if item["bpb"]["n"] > 1]
        if len(items) > 1:
            ax.errorbar([i[0] for i in items], [i[1]["mean"] for i in items], yerr=[i[1]["sd"] for i in items],
                        marker="s", lw=2, capsize=3,
                        label=f"grown: {name}" + (" (default)" if name == result["default_recipe"] else ""))
    ax.set(xscale="log", xlabel="training FLOPs", ylabel="held-out bits per byte (report half)",
           title="Growth recipes against the fixed-size frontier")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(RESULTS / "frontier.png", dpi=110)


def cmd_report(args: argparse.Namespace) -> None:
    result = build(quality.load_runs(RUNS), quality.load_runs(RECIPE_RUNS))
    write_atomic(RESULTS / "frontier.json", lambda tmp: tmp.write_text(json.dumps(result, indent=1) + "\n"))
    write_atomic(RESULTS / "frontier.md", lambda tmp: tmp.write_text(markdown(result), encoding="utf-8"))
    plot(result)
    print(markdown(result))
