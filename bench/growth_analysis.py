"""Tables, noise checks and the plot of the growth experiment, from its run records."""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Tuple

from dimba.checkpointing.atomic_io import write_json_atomic

GOAL = 0.5


def ratio(record: Dict[str, Any], split: str) -> Optional[float]:
    """FLOPs-to-target on `split` (None: not reached within scratch's FLOPs)."""
    crossing = record["crossing"].get(split)
    return None if crossing is None else crossing["ratio"]


def score(record: Dict[str, Any], split: str) -> float:
    """For ranking: the ratio when reached, else 1 + the relative gap left at equal FLOPs."""
    value = ratio(record, split)
    if value is not None:
        return value
    return 1.0 + (record["final"]["loss"][split] - record["targets"][split]) / record["targets"][split]


def by_recipe(records: Iterable[Dict[str, Any]], phase: str) -> Dict[str, List[Dict[str, Any]]]:
    groups: Dict[str, List[Dict[str, Any]]] = defaultdict(list)
    for record in records:
        if record["phase"] == phase and record["targets"] is not None:
            groups[record["recipe"]["name"]].append(record)
    return groups


def rank_grid(records: Iterable[Dict[str, Any]], split: str = "select") -> List[str]:
    """Grid recipes from best to worst: mean score over the seeds run on the most seeds."""
    groups = by_recipe(list(records), "grid")
    if not groups:
        return []
    most = max(len(v) for v in groups.values())
    rows = [(statistics.mean(score(r, split) for r in runs), name) for name, runs in groups.items() if len(runs) == most]
    rows += [(statistics.mean(score(r, split) for r in runs) + 10.0, name) for name, runs in groups.items() if len(runs) < most]
    return [name for _, name in sorted(rows)]


def best_recipe(records: List[Dict[str, Any]], phase: str, split: str) -> Optional[str]:
    """The growing recipe with the best mean score among those run on the most seeds."""
    if phase == "grid":
        return next((n for n in rank_grid(records, split) if not n.startswith(("scratch", "small"))), None)
    groups = {n: runs for n, runs in by_recipe(records, phase).items() if not n.startswith(("scratch", "small"))}
    if not groups:
        return None
    most = max(len(runs) for runs in groups.values())
    return min((n for n, runs in groups.items() if len(runs) == most),
               key=lambda n: statistics.mean(score(r, split) for r in groups[n]))


def smoothed_ratio(record: Dict[str, Any], split: str) -> Optional[float]:
    """A check on the headline's luck: the first evaluation where the mean of it and the
    next evaluation is at or below the target (one lucky dip does not count)."""
    target = record["targets"][split]
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
            "gap_at_equal_flops": [round(r["final"]["loss"][split] - r["targets"][split], 4) if ratio(r, split) is None
                                   else None for r in runs],
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


def noise(records: Iterable[Dict[str, Any]], phase: str) -> Dict[str, Any]:
    """How noisy one evaluation is, on the scratch models' final evaluations and on each
    crossing (a grown model at the target against the scratch model that set it)."""
    records = list(records)
    scratch = {r["seed"]: r for r in records if r["phase"] == phase and r["targets"] is None}
    out: Dict[str, Any] = {"absolute": [], "paired_at_crossing": []}
    for seed, record in sorted(scratch.items()):
        final = record["points"][-1]
        for split, samples in final.get("samples", {}).items():
            per_seq = _sequence_means(samples, record["sequences_per_split"])
            half = len(per_seq) // 2
            draws = len(samples) // record["sequences_per_split"]
            draw_means = [statistics.mean(samples[d * record["sequences_per_split"]:(d + 1) * record["sequences_per_split"]])
                          for d in range(draws)]
            out["absolute"].append({
                "seed": seed, "split": split, "loss": statistics.mean(samples),
                "standard_error": statistics.stdev(per_seq) / math.sqrt(len(per_seq)),
                "halves_difference": statistics.mean(per_seq[:half]) - statistics.mean(per_seq[half: 2 * half]),
                "draws_spread": max(draw_means) - min(draw_means) if draws > 1 else None})
    for record in records:
        base = scratch.get(record["seed"])
        if record["phase"] != phase or record["targets"] is None or base is None:
            continue
        for split, crossing in record["crossing"].items():
            n = record["sequences_per_split"]
            diff = [a - b for a, b in zip(_sequence_means(crossing["samples"], n),
                                          _sequence_means(base["points"][-1]["samples"][split], n))]
            out["paired_at_crossing"].append({
                "recipe": record["recipe"]["name"], "seed": record["seed"], "split": split,
                "mean_difference": statistics.mean(diff), "standard_error": statistics.stdev(diff) / math.sqrt(n),
                "ratio_uncertainty": _ratio_uncertainty(record, split, statistics.stdev(diff) / math.sqrt(n))})
    return out


def _ratio_uncertainty(record: Dict[str, Any], split: str, loss_se: float) -> Optional[float]:
    """Loss noise turned into FLOPs-to-target noise through the curve's slope before the crossing."""
    crossing = record["crossing"][split]
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
        row = out[record["phase"]]
        row["runs"] += 1
        row["train_s"] += record["wall_train_s"]
        row["eval_s"] += record["wall_eval_s"]
    return {phase: {**row, "total_h": round((row["train_s"] + row["eval_s"]) / 3600, 2)} for phase, row in out.items()}


def plot(records: List[Dict[str, Any]], recipe: str, phase: str, split: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 5.5))
    scratch = sorted((r for r in records if r["phase"] == phase and r["targets"] is None), key=lambda r: r["seed"])
    grown = {r["seed"]: r for r in records if r["phase"] == phase and r["recipe"]["name"] == recipe}
    tail: List[float] = []
    for i, base in enumerate(scratch):
        color = f"C{i}"
        for record, style, label in ((base, "--", "scratch"), (grown.get(base["seed"]), "-", "grown")):
            if record is None:
                continue
            pts = [p for p in record["points"] if p["step"] > 0]
            x = [p["flops"] / base["plan"]["budget_flops"] for p in pts]
            y = [p["loss"][split] for p in pts]
            tail += [v for xi, v in zip(x, y) if xi > 0.2]
            ax.plot(x, y, style, color=color, lw=1.3, label=f"{label}, seed {record['seed']}")
            for event in record["growth"]:
                ax.plot(event["flops"] / base["plan"]["budget_flops"], event["loss_after"][split], "v", color=color, ms=5)
        ax.axhline(base["final"]["loss"][split], color=color, ls=":", lw=0.8)
    ax.axvline(GOAL, color="gray", lw=0.8)
    if tail:
        ax.set_ylim(min(tail) * 0.97, max(tail) * 1.05)
    ax.set(xlabel="training FLOPs / scratch's training FLOPs", ylabel=f"held-out loss ({split} split)",
           title=f"{recipe} vs scratch ({phase}); dotted: scratch's final loss (target), v: growth")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_report(records: List[Dict[str, Any]], results: Path) -> Dict[str, Any]:
    """growth_experiment.json (summary plus every run) and growth_experiment.png."""
    summary: Dict[str, Any] = {"goal": f"FLOPs-to-target <= {GOAL} on every seed", "timings": timings(records)}
    for phase, split in (("grid", "select"), ("confirm", "report")):
        rows = table(records, phase, split)
        if not rows:
            continue
        summary[phase] = {"split": split, "table": rows, "other_split": table(records, phase, "select" if split == "report" else "report"),
                          "noise": noise(records, phase)}
        best = best_recipe(records, phase, split)
        summary[phase]["best"] = best
        if best:
            summary[phase]["recovery"] = {r["seed"]: recovery(r, split) for r in records
                                          if r["phase"] == phase and r["recipe"]["name"] == best}
    phase = "confirm" if "confirm" in summary else "grid"
    if summary.get(phase, {}).get("best"):
        plot(records, summary[phase]["best"], phase, summary[phase]["split"], results / "growth_experiment.png")
    write_json_atomic(results / "growth_experiment.json", {"summary": summary, "runs": records})
    return summary
