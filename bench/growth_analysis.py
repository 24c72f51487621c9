"""Tables, noise checks and the plot of the growth experiment, from its run records."""

from __future__ import annotations

import json
import math
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Tuple

from dimba.checkpointing.atomic_io import write_atomic

from growth_recipes import DEFAULT_RECIPE

GOAL = 0.5


def ratio(record: Dict[str, Any], key: str) -> Optional[float]:
    """FLOPs-to-target for target `key` ("split": cosine scratch's final loss on that split,
    "split@best": the better scratch's); None: not reached within scratch's FLOPs."""
    crossing = record["crossing"].get(key)
    return None if crossing is None else crossing["ratio"]


def gap(record: Dict[str, Any], key: str) -> float:
    """Final loss minus the target (what is left at equal FLOPs when it was not reached)."""
    return record["final"]["loss"][key.split("@")[0]] - record["targets"][key]


def score(record: Dict[str, Any], key: str) -> float:
    """For ranking: the ratio when reached, else 1 + the relative gap left at equal FLOPs."""
    value = ratio(record, key)
    return value if value is not None else 1.0 + gap(record, key) / record["targets"][key]


def by_recipe(records: Iterable[Dict[str, Any]], phase: str) -> Dict[str, List[Dict[str, Any]]]:
    groups: Dict[str, List[Dict[str, Any]]] = defaultdict(list)
    for record in records:
        if record["phase"] == phase and record["targets"] is not None:
            groups[record["recipe"]["name"]].append(record)
    return groups


def grid_of(phase: str) -> str:
    """The grid a phase chooses from: `grid` for the first experiment, `grid+lr` for the one
    against LR-tuned scratch (`confirm@grid+lr` -> `grid+lr`)."""
    suffix = phase.partition("+")[2]
    return "grid" + (f"+{suffix}" if suffix else "")


def is_grid(phase: str) -> bool:
    return phase.split("+")[0] == "grid"


def headline_key(records: Iterable[Dict[str, Any]], phase: str) -> str:
    """The target a phase is read against: the select split in a grid (where recipes are
    chosen), the report split elsewhere; `@best` (the best scratch run) once other scratch
    runs than cosine at optim.lr's default (wsd, other rates) trained in the phase."""
    split = "select" if is_grid(phase) else "report"
    with_best = any(f"{split}@best" in (r["targets"] or {}) for r in records if r["phase"] == phase)
    return f"{split}@best" if with_best else split


def rank_grid(records: Iterable[Dict[str, Any]], split: str = "select", phase: str = "grid") -> List[str]:
    """Grid recipes from best to worst: mean score over the seeds run on the most seeds."""
    groups = by_recipe(list(records), phase)
    if not groups:
        return []
    most = max(len(v) for v in groups.values())
    rows = [(statistics.mean(score(r, split) for r in runs), name) for name, runs in groups.items() if len(runs) == most]
    rows += [(statistics.mean(score(r, split) for r in runs) + 10.0, name) for name, runs in groups.items() if len(runs) < most]
    return [name for _, name in sorted(rows)]


def best_recipe(records: List[Dict[str, Any]], phase: str, split: str) -> Optional[str]:
    """The growing recipe with the best mean score among those run on the most seeds; a tie
    keeps the default recipe (a change of default needs a better figure), then goes by name."""
    if is_grid(phase):
        return next((n for n in rank_grid(records, split, phase) if not n.startswith(("scratch", "small"))), None)
    groups = {n: runs for n, runs in by_recipe(records, phase).items() if not n.startswith(("scratch", "small"))}
    if not groups:
        return None
    most = max(len(runs) for runs in groups.values())
    return min((n for n, runs in groups.items() if len(runs) == most),
               key=lambda n: (round(statistics.mean(score(r, split) for r in groups[n]), 9), n != DEFAULT_RECIPE, n))


def smoothed_ratio(record: Dict[str, Any], key: str) -> Optional[float]:
    """A check on the headline's luck: the first evaluation where the mean of it and the
    next evaluation is at or below the target (one lucky dip does not count)."""
    target, split = record["targets"][key], key.split("@")[0]
    points = [p for p in record["points"] if p["tag"] != "after_growth"]
    for a, b in zip(points, points[1:]):
        if (a["loss"][split] + b["loss"][split]) / 2 <= target:
            return a["flops"] / record["plan"]["budget_flops"]
    return None


def table(records: Iterable[Dict[str, Any]], phase: str, split: str) -> List[Dict[str, Any]]:
    """Recipes x seeds: FLOPs-to-target (None: not reached), mean and range over seeds."""
    rows = []
    for name, runs in by_recipe(records, phase).items():
        runs = sorted(runs, key=lambda r: r["seed"])
        values = [ratio(r, split) for r in runs]
        reached = [v for v in values if v is not None]
        rows.append({
            "recipe": name, "seeds": [r["seed"] for r in runs], "flops_to_target": values,
            "mean": statistics.mean(values) if len(reached) == len(values) else None,
            "min": min(reached) if reached else None, "max": max(reached) if len(reached) == len(values) else None,
            "reached": f"{len(reached)}/{len(values)}",
            "gap_at_equal_flops": [round(gap(r, split), 4) if ratio(r, split) is None else None for r in runs],
            "score": statistics.mean(score(r, split) for r in runs),
            "smoothed_flops_to_target": [smoothed_ratio(r, split) for r in runs],
            "resolution": [None if ratio(r, split) is None
                           else round(r["crossing"][split]["ratio"] - r["crossing"][split]["previous_ratio"], 4) for r in runs],
            "meets_goal_every_seed": len(reached) == len(values) and max(reached) <= GOAL,
        })
    return sorted(rows, key=lambda row: row["score"])


def _sequence_means(samples: List[float], sequences: int) -> List[float]:
    """Per-sequence mean over its draws (samples are laid out draw by draw)."""
    draws = len(samples) // sequences
    return [statistics.mean(samples[d * sequences + i] for d in range(draws)) for i in range(sequences)]


def baselines(records: Iterable[Dict[str, Any]], phase: str) -> List[Dict[str, Any]]:
    """Runs trained to the full budget without a target (scratch cosine, and wsd in confirm)."""
    return sorted((r for r in records if r["phase"] == phase and r["targets"] is None), key=lambda r: r["seed"])


def _absolute_noise(record: Dict[str, Any]) -> List[Dict[str, Any]]:
    rows, n = [], record["sequences_per_split"]
    for split, samples in record["points"][-1].get("samples", {}).items():
        per_seq, half, draws = _sequence_means(samples, n), n // 2, len(samples) // n
        draw_means = [statistics.mean(samples[d * n:(d + 1) * n]) for d in range(draws)]
        rows.append({"recipe": record["recipe"]["name"], "seed": record["seed"], "split": split,
                     "loss": statistics.mean(samples),
                     "standard_error": statistics.stdev(per_seq) / math.sqrt(n),
                     "halves_difference": statistics.mean(per_seq[:half]) - statistics.mean(per_seq[half: 2 * half]),
                     "draws_spread": max(draw_means) - min(draw_means) if draws > 1 else None})
    return rows


def noise(records: Iterable[Dict[str, Any]], phase: str) -> Dict[str, Any]:
    """How noisy one evaluation is. `absolute`: a scratch model's final loss (its standard
    error over sequences, the difference between the two halves of the split, the spread
    between draws). `paired_at_crossing`: a grown model at its crossing against the
    scratch model that set the target, on the same (sequence, t, noise) triples, and what
    that standard error means for FLOPs-to-target through the curve's slope."""
    records = list(records)
    base = baselines(records, phase)
    out: Dict[str, Any] = {"absolute": [row for r in base for row in _absolute_noise(r)], "paired_at_crossing": []}
    for record in records:
        if record["phase"] != phase or record["targets"] is None:
            continue
        for key, crossing in record["crossing"].items():
            split, n = key.split("@")[0], record["sequences_per_split"]
            setter = next((b for b in base if b["seed"] == record["seed"]
                           and b["final"]["loss"][split] == record["targets"][key]), None)
            if setter is None or "samples" not in setter["points"][-1]:
                continue
            diff = [a - b for a, b in zip(_sequence_means(crossing["samples"], n),
                                          _sequence_means(setter["points"][-1]["samples"][split], n))]
            se = statistics.stdev(diff) / math.sqrt(n)
            out["paired_at_crossing"].append({
                "recipe": record["recipe"]["name"], "seed": record["seed"], "target": key,
                "against": setter["recipe"]["name"], "mean_difference": statistics.mean(diff),
                "standard_error": se, "ratio_uncertainty": _ratio_uncertainty(record, key, se)})
    return out


def _ratio_uncertainty(record: Dict[str, Any], key: str, loss_se: float) -> Optional[float]:
    """Loss noise turned into FLOPs-to-target noise through the curve's slope before the crossing."""
    crossing, split = record["crossing"][key], key.split("@")[0]
    points = [p for p in record["points"] if p["flops"] <= crossing["flops"] and p["tag"] != "after_growth"]
    budget = record["plan"]["budget_flops"]
    before = [p for p in points if p["flops"] <= crossing["flops"] - 0.02 * budget]
    if not before:
        return None
    a, b = before[-1], points[-1]
    slope = (a["loss"][split] - b["loss"][split]) / ((b["flops"] - a["flops"]) / budget)
    return loss_se / slope if slope > 0 else None


def recovery(record: Dict[str, Any], split: str = "select") -> List[Dict[str, Any]]:
    """Per growth event: loss before, right after, the worst within 32 steps, and the steps
    until the loss is back at or below its value before the growth."""
    rows = []
    points = record["points"]
    for event in record["growth"]:
        before = event["loss_before"][split]
        later = [p for p in points if p["step"] > event["step"]]
        window = [p for p in later if p["step"] <= event["step"] + 32]
        back = next((p["step"] - event["step"] for p in later if p["loss"][split] <= before), None)
        rows.append({"step": event["step"], "op": f"{event['op']}->{event['size']}", "loss_before": before,
                     "loss_after": event["loss_after"][split],
                     "worst_within_32_steps": max((p["loss"][split] for p in window), default=None),
                     "steps_to_recover": back})
    return rows


def timings(records: Iterable[Dict[str, Any]]) -> Dict[str, Any]:
    out: Dict[str, Dict[str, float]] = defaultdict(lambda: {"runs": 0, "train_s": 0.0, "eval_s": 0.0})
    for record in records:
        if "copied_from" in record:  # trained once, in the phase it was copied from
            continue
        row = out[record["phase"]]
        row["runs"] += 1
        row["train_s"] += record["wall_train_s"]
        row["eval_s"] += record["wall_eval_s"]
    return {phase: {**row, "total_h": round((row["train_s"] + row["eval_s"]) / 3600, 2)} for phase, row in out.items()}


def _curve(record: Dict[str, Any], split: str, budget: float) -> Tuple[List[float], List[float]]:
    pts = [p for p in record["points"] if p["step"] > 0]
    return [p["flops"] / budget for p in pts], [p["loss"][split] for p in pts]


def plot(records: List[Dict[str, Any]], recipe: str, phase: str, key: str, path: Path) -> None:
    """Held-out loss against training FLOPs (in units of scratch's), every seed: scratch
    (cosine, and wsd where it ran, at optim.lr's default; of other rates, the run that set the
    target), the recipe, and the target it was measured against."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    split = key.split("@")[0]
    fig, ax = plt.subplots(figsize=(10, 6))
    grown = {r["seed"]: r for r in records if r["phase"] == phase and r["recipe"]["name"] == recipe}
    styles = {"scratch|cosine|h1": ("--", "scratch (cosine)"), "scratch|wsd|h1": (":", "scratch (wsd)")}
    tail: List[float] = []
    for base in baselines(records, phase):
        color = f"C{sorted({r['seed'] for r in baselines(records, phase)}).index(base['seed'])}"
        budget = base["plan"]["budget_flops"]
        setter = grown.get(base["seed"]) is not None and base["final"]["loss"][split] == grown[base["seed"]]["targets"][key]
        if base["recipe"]["name"] not in styles and not setter:
            continue  # of an LR sweep's scratch runs, only the one that set the target
        style, label = styles.get(base["recipe"]["name"], ("-.", base["recipe"]["name"]))
        x, y = _curve(base, split, budget)
        ax.plot(x, y, style, color=color, lw=1.1, label=f"{label}, seed {base['seed']}")
        tail += [v for xi, v in zip(x, y) if xi > 0.2]
        record = grown.get(base["seed"])
        if record is None or base["recipe"]["name"] != "scratch|cosine|h1":
            continue
        x, y = _curve(record, split, budget)
        ax.plot(x, y, "-", color=color, lw=1.8, label=f"grown, seed {record['seed']}")
        tail += [v for xi, v in zip(x, y) if xi > 0.2]
        for event in record["growth"]:
            ax.plot(event["flops"] / budget, event["loss_after"][split], "v", color=color, ms=6)
        ax.axhline(record["targets"][key], color=color, lw=0.7, alpha=0.7)
        if key in record["crossing"]:
            ax.plot(record["crossing"][key]["ratio"], record["targets"][key], "o", color=color, ms=8, mfc="none")
    ax.axvline(GOAL, color="gray", lw=0.8)
    if tail:
        ax.set_ylim(min(tail) * 0.97, max(tail) * 1.03)
    ax.set(xlabel="training FLOPs / scratch's training FLOPs (evaluation not counted)",
           ylabel=f"held-out loss ({split} split, x0 MSE + CE)",
           title=f"{phase}: {recipe} vs scratch\nthin line: target ({key}); o: first evaluation at or below it; v: growth")
    ax.legend(fontsize=7, ncol=2)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_results(path: Path, summary: Dict[str, Any], records: List[Dict[str, Any]]) -> None:
    """The summary, indented to be read, and the keys of the runs it was computed from; the
    runs' curves stay in growth_experiment_runs.jsonl.xz."""
    text = json.dumps({"summary": summary, "runs": sorted(r["key"] for r in records)}, indent=2, sort_keys=True)
    write_atomic(path, lambda tmp: tmp.write_text(text + "\n", encoding="utf-8"))


def write_report(records: List[Dict[str, Any]], results: Path) -> Dict[str, Any]:
    """growth_experiment.json (the summary and the runs' keys) and growth_experiment.png.

    The grid is read on the select split against cosine scratch (its only baseline); each
    confirmation (`confirm`, `confirm@grid`, `confirm@mid`: other seeds, other sizes) on the
    report split, against the better of the two scratch runs (`@best`) and, for the record,
    against cosine scratch alone. One plot per phase: growth_experiment[_phase].png."""
    summary: Dict[str, Any] = {"goal": f"FLOPs-to-target <= {GOAL} on every seed", "timings": timings(records)}
    phases = sorted({r["phase"] for r in records}, key=lambda p: (not is_grid(p), p))
    for phase in phases:
        key = headline_key(records, phase)
        with_best = key.endswith("@best")
        rows = table(records, phase, key)
        if not rows:
            continue
        others = (["select", "report@best", "report"] if with_best else ["report"]) if is_grid(phase) else (
            ["report", "select@best", "select"] if with_best else ["select"])
        # A confirmation reports the recipe its grid chose on the select split, or, where it
        # ran others, its own best on the select split (the best on the report split would
        # tune on the figure).
        chosen = summary.get(grid_of(phase), {}).get("best")
        best = chosen if not is_grid(phase) and chosen in {r["recipe"] for r in rows} else best_recipe(
            records, phase, key if is_grid(phase) else key.replace("report", "select"))
        summary[phase] = {"headline_target": key, "table": rows, "other_targets": {k: table(records, phase, k) for k in others},
                          "noise": noise(records, phase), "best": best}
        if summary[phase]["best"]:
            summary[phase]["recovery"] = {str(r["seed"]): recovery(r, key.split("@")[0]) for r in records
                                          if r["phase"] == phase and r["recipe"]["name"] == summary[phase]["best"]}
            suffix = "" if phase == "grid" else "_" + phase.replace("@", "_").replace("+", "_")
            plot(records, summary[phase]["best"], phase, key, results / f"growth_experiment{suffix}.png")
    write_results(results / "growth_experiment.json", summary, records)
    return summary
