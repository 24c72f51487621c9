"""One picture of a training run: how the model grew and how the loss went.

`plot_run(run_dir)` reads what a run directory already holds (logs/metrics.csv, the
milestone sidecars, .hydra/config.yaml) and writes a PNG with two panels on a shared step
axis: the parameter count (with a vertical line at every growth event and a marker at every
milestone checkpoint) and the train/val loss. matplotlib is imported only when a plot is
drawn, through its object API and the Agg canvas, so pyplot's global state is never touched.
"""

from __future__ import annotations

import csv
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

from dimba.checkpointing.milestones import format_param_count

__all__ = ["PlotError", "RunRecord", "plot_run", "read_run"]

PathLike = Union[str, os.PathLike]
SIDECAR_GLOB = "checkpoint_*_step_*.json"
Series = List[Tuple[float, float]]


class PlotError(ValueError):
    """A run directory that cannot be plotted. The message is one line."""


@dataclass
class GrowthMark:
    step: int
    label: str  # "depth→8", "width→256"
    params: Optional[int] = None


@dataclass
class MilestoneMark:
    step: int
    params: int
    label: str  # milestone_str, several joined with "+" when saved at one step


@dataclass
class RunRecord:
    """Everything plot_run draws, read from the run directory (useful on its own too)."""

    metrics_path: Path
    columns: Dict[str, Series]
    params: Series = field(default_factory=list)
    params_source: str = ""  # "metrics", "growth history", or "" when unknown
    growth: List[GrowthMark] = field(default_factory=list)
    milestones: List[MilestoneMark] = field(default_factory=list)
    milestone_losses: Series = field(default_factory=list)  # train/loss recorded in the sidecars


# ---------------------------------------------------------------------- reading
def find_metrics(run_dir: Path) -> Path:
    if not run_dir.exists():
        raise PlotError(f"{run_dir}: no such directory")
    if not run_dir.is_dir():
        raise PlotError(f"{run_dir} is not a directory; pass a run directory (outputs/<date>/<time>)")
    default = run_dir / "logs" / "metrics.csv"
    if default.is_file():
        return default
    found = sorted(run_dir.rglob("metrics.csv"))
    if len(found) == 1:
        return found[0]
    if len(found) > 1:
        raise PlotError(f"{run_dir} holds {len(found)} runs' metrics (e.g. {found[0]}); pass one run directory")
    raise PlotError(f"{run_dir} has no metrics (no logs/metrics.csv); pass the directory of a dimba training run")


def read_metrics(path: Path) -> Dict[str, Series]:
    """column -> [(step, value)] for every numeric cell; Lightning's rows are sparse."""
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise PlotError(f"cannot read {path}: {exc}") from None
    columns: Dict[str, Series] = {}
    for row in rows:
        step = _number(row.get("step"))
        if step is None:
            continue
        for name, cell in row.items():
            if name in (None, "step", "epoch"):
                continue
            value = _number(cell)
            if value is not None:
                columns.setdefault(name, []).append((step, value))
    for series in columns.values():
        series.sort(key=lambda point: point[0])
    return columns


def _number(cell) -> Optional[float]:
    if cell is None or not isinstance(cell, str) or not cell.strip():
        return None
    try:
        value = float(cell)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def read_sidecars(run_dir: Path) -> List[dict]:
    """The run's milestone sidecars that parse, oldest step first (unreadable ones skipped)."""
    sidecars = []
    for path in sorted(run_dir.rglob(SIDECAR_GLOB)):
        try:
            info = json.loads(path.read_text(encoding="utf-8"))
            int(info["global_step"]), int(info["current_params"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if isinstance(info, dict):
            sidecars.append(info)
    return sorted(sidecars, key=lambda s: (int(s["global_step"]), int(s.get("target_milestone", 0))))


def growth_label(event: dict) -> str:
    if event.get("op") == "depth":
        return f"depth→{event.get('n_layers')}"
    if event.get("op") == "width":
        return f"width→{event.get('d_model')}"
    return str(event.get("op", "growth"))


def initial_params(run_dir: Path) -> Optional[int]:
    """The parameter count before any growth, from the run's .hydra/config.yaml (None if absent)."""
    config_path = run_dir / ".hydra" / "config.yaml"
    if not config_path.is_file():
        return None
    try:
        from omegaconf import OmegaConf

        from dimba.growth.plan import count_parameters
        from dimba.model import DIMBAConfig

        model = OmegaConf.to_container(OmegaConf.load(config_path).model, resolve=True)
        return count_parameters(DIMBAConfig.from_dict(model))
    except Exception:  # an old or hand-edited config: the curve starts at the first known point
        return None


def read_run(run_dir: PathLike) -> RunRecord:
    run_dir = Path(run_dir)
    metrics_path = find_metrics(run_dir)
    record = RunRecord(metrics_path, read_metrics(metrics_path))
    sidecars = read_sidecars(run_dir)

    newest = max(sidecars, key=lambda s: (int(s["global_step"]), len(_history(s))), default=None)
    history = _history(newest) if newest else []
    record.growth = [
        GrowthMark(int(e.get("applied_at_step", e.get("step", 0))), growth_label(e),
                   int(e["params"]) if isinstance(e.get("params"), (int, float)) else None)
        for e in history if isinstance(e, dict)
    ]

    by_step: Dict[int, List[dict]] = {}
    for s in sidecars:
        by_step.setdefault(int(s["global_step"]), []).append(s)
    for step, group in sorted(by_step.items()):
        labels = [str(s.get("milestone_str", s.get("target_milestone", "?"))) for s in group]
        record.milestones.append(MilestoneMark(step, int(group[0]["current_params"]), "+".join(labels)))
        loss = _number(str((group[0].get("metadata") or {}).get("train/loss", "")))
        if loss is not None:
            record.milestone_losses.append((step, loss))

    if record.columns.get("model/params"):
        record.params, record.params_source = record.columns["model/params"], "metrics"
        if not record.growth:  # no sidecar: the jumps of the logged count are the growth events
            record.growth = [
                GrowthMark(int(s1), f"grew→{format_param_count(int(p1))}", int(p1))
                for (s0, p0), (s1, p1) in zip(record.params, record.params[1:]) if p1 != p0
            ]
    else:
        record.params = _reconstruct_params(run_dir, record)
        record.params_source = "growth history" if record.params else ""

    if not record.params and not any(record.columns.get(k) for k in ("train/loss", "val/loss")) \
            and not record.milestone_losses:
        raise PlotError(f"{metrics_path} has no loss or parameter-count rows to plot")
    return record


def _history(sidecar: Optional[dict]) -> list:
    history = ((sidecar or {}).get("metadata") or {}).get("growth_history") or []
    return history if isinstance(history, list) else []


def _reconstruct_params(run_dir: Path, record: RunRecord) -> Series:
    """The parameter count as a step function: start, each growth event, each milestone."""
    points: Dict[int, int] = {}
    start = initial_params(run_dir)
    if start is not None:
        points[0] = start
    for mark in record.growth:
        if mark.params is not None:
            points[mark.step] = mark.params
    for mark in record.milestones:
        points.setdefault(mark.step, mark.params)
    if not points:
        return []
    series: Series = [(float(s), float(p)) for s, p in sorted(points.items())]
    last_step = max((s for col in record.columns.values() for s, _ in col), default=series[-1][0])
    if last_step > series[-1][0]:
        series.append((last_step, series[-1][1]))
    return series


# ---------------------------------------------------------------------- drawing
def _running_mean(values: Sequence[float], window: int) -> List[float]:
    out, total = [], 0.0
    for i, value in enumerate(values):
        total += value
        if i >= window:
            total -= values[i - window]
        out.append(total / min(i + 1, window))
    return out


def plot_run(run_dir: PathLike, out: Optional[PathLike] = None) -> Path:
    """Write the run's growth-and-loss PNG (default `run_dir/training.png`) and return its path.

    Raises PlotError (a ValueError with a one-line message) when the directory has no
    metrics to plot.
    """
    run_dir = Path(run_dir)
    record = read_run(run_dir)
    out = Path(out) if out is not None else run_dir / "training.png"

    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    figure = Figure(figsize=(10, 7.5), dpi=110, layout="constrained")
    top, bottom = figure.subplots(2, 1, sharex=True, height_ratios=[1, 1.15])
    title = " / ".join(run_dir.resolve().parts[-2:])
    figure.suptitle(f"dimba run {title}", fontsize=12)

    # Parameters.
    if record.params:
        xs, ys = zip(*record.params)
        source = "logged" if record.params_source == "metrics" else "from growth history"
        top.step(xs, ys, where="post", color="tab:blue", linewidth=2, label=f"trainable parameters ({source})")
    else:
        top.text(0.5, 0.5, "parameter count not recorded", transform=top.transAxes, ha="center", va="center",
                 color="gray")
    if record.milestones:
        top.plot([m.step for m in record.milestones], [m.params for m in record.milestones], linestyle="none",
                 marker="*", markersize=14, color="tab:red", markeredgecolor="black", zorder=5,
                 label="milestone checkpoint")
        for mark in record.milestones:
            top.annotate(mark.label, (mark.step, mark.params), textcoords="offset points", xytext=(-9, 3),
                         ha="right", fontsize=9, color="tab:red", fontweight="bold")
    top.set_ylabel("trainable parameters")
    top.yaxis.set_major_formatter(FuncFormatter(lambda v, _: format_param_count(int(v)) if v >= 0 else ""))
    highest = max([p for _, p in record.params] + [m.params for m in record.milestones], default=0)
    if highest > 0:  # headroom: the growth labels sit in the band above the curve
        top.set_ylim(0, highest * 1.35)

    # Loss.
    plotted = False
    styles = {"train/loss": dict(color="tab:blue", linewidth=1.2), "val/loss": dict(color="tab:orange", marker="o",
                                                                                     linewidth=1.5)}
    for name, style in styles.items():
        series = record.columns.get(name)
        if not series:
            continue
        xs, ys = zip(*series)
        if name == "train/loss" and len(series) > 100:  # noisy per-step loss: faint raw, bold mean
            bottom.plot(xs, ys, color=style["color"], linewidth=0.6, alpha=0.3)
            window = max(2, len(series) // 50)
            bottom.plot(xs, _running_mean(ys, window), label=f"{name} (mean of {window})", **style)
        else:
            bottom.plot(xs, ys, label=name, markersize=4, **style)
        plotted = True
    if not record.columns.get("train/loss") and record.milestone_losses:
        xs, ys = zip(*record.milestone_losses)
        bottom.plot(xs, ys, linestyle="none", marker="s", color="tab:blue", label="train/loss (at milestones)")
        plotted = True
    if not plotted:
        bottom.text(0.5, 0.5, "no loss logged", transform=bottom.transAxes, ha="center", va="center", color="gray")
    bottom.set_ylabel("loss")
    bottom.set_xlabel("optimizer step")
    bottom.xaxis.set_major_locator(MaxNLocator(integer=True))

    # Growth events on both panels, labelled once at the top.
    for index, mark in enumerate(record.growth):
        for axis in (top, bottom):
            axis.axvline(mark.step, color="tab:green", linestyle="--", linewidth=1, alpha=0.8,
                         label="growth event" if index == 0 and axis is top else None)
        top.annotate(mark.label, (mark.step, 1.0), xycoords=("data", "axes fraction"), xytext=(3, -4),
                     textcoords="offset points", rotation=90, va="top", ha="left", fontsize=9, color="darkgreen")

    for axis in (top, bottom):
        axis.grid(True, alpha=0.3)
        if axis.get_legend_handles_labels()[0]:
            axis.legend(loc="lower right" if axis is top else "upper right", fontsize=9)

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    try:
        figure.savefig(tmp, format="png")
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return out
