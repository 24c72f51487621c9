"""One picture of a training run: how the model grew and how the loss went.

Panels on a shared step axis: the parameter count (a vertical line at every growth event, a
star at every milestone checkpoint), the train/validation loss (log scale: the first steps
fall from about 15 to 2 and would flatten the rest) and, where it was logged, the
validation bits per byte (exact for `ar`, a bound otherwise) with its standard error (log scale: it falls
by orders of magnitude early in training). matplotlib is
imported only when a plot is drawn, through its object API and the Agg canvas, so pyplot's
global state is never touched.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from dimba.checkpointing.milestones import format_param_count
from dimba.plotting.record import PathLike, PlotError, RunRecord, read_run

LOSS_STYLES = {"train/loss": dict(color="tab:blue", linewidth=1.2),
               "val/loss": dict(color="tab:orange", marker="o", linewidth=1.5)}


def _running_mean(values: Sequence[float], window: int) -> List[float]:
    out, total = [], 0.0
    for i, value in enumerate(values):
        total += value
        if i >= window:
            total -= values[i - window]
        out.append(total / min(i + 1, window))
    return out


def _draw_parameters(axis: Any, record: RunRecord) -> None:
    from matplotlib.ticker import FuncFormatter

    if record.params:
        xs, ys = zip(*record.params)
        source = "logged" if record.params_source == "metrics" else "from growth history"
        axis.step(xs, ys, where="post", color="tab:blue", linewidth=2, label=f"trainable parameters ({source})")
    else:
        axis.text(0.5, 0.5, "parameter count not recorded", transform=axis.transAxes, ha="center", va="center",
                  color="gray")
    if record.milestones:
        axis.plot([m.step for m in record.milestones], [m.params for m in record.milestones], linestyle="none",
                  marker="*", markersize=14, color="tab:red", markeredgecolor="black", zorder=5,
                  label="milestone checkpoint")
        for mark in record.milestones:
            axis.annotate(mark.label, (mark.step, mark.params), textcoords="offset points", xytext=(-9, 3),
                          ha="right", fontsize=9, color="tab:red", fontweight="bold")
    axis.set_ylabel("trainable parameters")
    axis.yaxis.set_major_formatter(FuncFormatter(lambda v, _: format_param_count(int(v)) if v >= 0 else ""))
    highest = max([p for _, p in record.params] + [m.params for m in record.milestones], default=0)
    if highest > 0:  # headroom: the growth labels sit in the band above the curve
        axis.set_ylim(0, highest * 1.35)


def _draw_losses(axis: Any, record: RunRecord) -> None:
    from matplotlib.ticker import MaxNLocator

    plotted = False
    for name, style in LOSS_STYLES.items():
        series = record.columns.get(name)
        if not series:
            continue
        xs, ys = zip(*series)
        if name == "train/loss" and len(series) > 100:  # noisy per-step loss: faint raw, bold mean
            axis.plot(xs, ys, color=style["color"], linewidth=0.6, alpha=0.3)
            window = max(2, len(series) // 50)
            axis.plot(xs, _running_mean(ys, window), label=f"{name} (mean of {window})", **style)
        else:
            axis.plot(xs, ys, label=name, markersize=4, **style)
        plotted = True
    if not record.columns.get("train/loss") and record.milestone_losses:
        xs, ys = zip(*record.milestone_losses)
        axis.plot(xs, ys, linestyle="none", marker="s", color="tab:blue", label="train/loss (at milestones)")
        plotted = True
    if not plotted:
        axis.text(0.5, 0.5, "no loss logged", transform=axis.transAxes, ha="center", va="center", color="gray")
    values = [y for line in axis.get_lines() for y in line.get_ydata()]
    if values and min(values) > 0:  # the first steps fall by an order of magnitude: keep the rest visible
        axis.set_yscale("log")
    axis.set_ylabel("loss (log scale)" if axis.get_yscale() == "log" else "loss")
    axis.set_xlabel("optimizer step")
    axis.xaxis.set_major_locator(MaxNLocator(integer=True))


def _draw_bound(axis: Any, record: RunRecord) -> None:
    from matplotlib.ticker import MaxNLocator

    series = dict(record.columns.get("val/bpb") or [])
    spread = dict(record.columns.get("val/bpb_se") or [])
    steps = sorted(series)
    values = [series[s] for s in steps]
    errors = [spread.get(s, 0.0) for s in steps]
    lower = [max(v - e, v * 0.05) for v, e in zip(values, errors)]  # a log axis cannot go to zero
    axis.errorbar(steps, values, yerr=[[v - lo for v, lo in zip(values, lower)], errors], color="tab:purple",
                  marker="o", markersize=4, capsize=3,
                  label=f"val/bpb ({'exact' if record.objective == 'ar' else 'bound'}, ± standard error)")
    if min(values) > 0:
        axis.set_yscale("log")
    axis.set_ylabel("bits per byte")
    axis.set_xlabel("optimizer step")
    axis.xaxis.set_major_locator(MaxNLocator(integer=True))


def _draw_growth(axes: Sequence[Any], record: RunRecord) -> None:
    """Growth events on every panel, labelled once at the top: one line and one label per
    step, the events of a step joined with "+" (the default run grows depth and width at once)."""
    top = axes[0]
    labels: Dict[int, List[str]] = {}
    for mark in record.growth:
        labels.setdefault(mark.step, []).append(mark.label)
    for index, (step, names) in enumerate(sorted(labels.items())):
        for axis in axes:
            axis.axvline(step, color="tab:green", linestyle="--", linewidth=1, alpha=0.8,
                         label="growth event" if index == 0 and axis is top else None)
        top.annotate(" + ".join(names), (step, 1.0), xycoords=("data", "axes fraction"), xytext=(3, -4),
                     textcoords="offset points", rotation=90, va="top", ha="left", fontsize=9, color="darkgreen")


def plot_run(run_dir: PathLike, out: Optional[PathLike] = None) -> Path:
    """Write the run's growth-and-loss PNG (default `run_dir/training.png`) and return its path.

    Raises PlotError (a ValueError with a one-line message) when the directory has no
    metrics to plot.
    """
    from matplotlib.figure import Figure

    run_dir = Path(run_dir)
    record = read_run(run_dir)
    out = Path(out) if out is not None else run_dir / "training.png"
    bound = bool(record.columns.get("val/bpb"))
    figure = Figure(figsize=(10, 10 if bound else 7.5), dpi=110, layout="constrained")
    axes = figure.subplots(3 if bound else 2, 1, sharex=True, height_ratios=[1, 1.15, 1] if bound else [1, 1.15])
    top, bottom = axes[0], axes[1]
    figure.suptitle(f"dimba run {' / '.join(run_dir.resolve().parts[-2:])}", fontsize=12)
    _draw_parameters(top, record)
    _draw_losses(bottom, record)
    if bound:
        bottom.set_xlabel("")
        _draw_bound(axes[2], record)
    _draw_growth(axes, record)
    for axis in axes:
        axis.grid(True, alpha=0.3)
        if axis.get_legend_handles_labels()[0]:
            axis.legend(loc="lower right" if axis is top else "upper right", fontsize=9)
    tmp = out.with_name(f".{out.name}.tmp")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(tmp, format="png")
        os.replace(tmp, out)
    except OSError as exc:  # name the file asked for, not the temporary beside it
        raise PlotError(f"cannot write {out}: {exc.strerror or exc}") from None
    finally:
        tmp.unlink(missing_ok=True)
    return out
