"""What a training run's directory says about it, read without torch: the logged metrics,
the growth events and the milestone checkpoints (from the sidecars, through
`dimba.checkpointing.format`)."""

from __future__ import annotations

import csv
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

from dimba.checkpointing.format import SIDECAR_GLOB, Sidecar, entries_in
from dimba.checkpointing.milestones import format_param_count, milestone_label
from dimba.growth.schedule import describe_event

PathLike = Union[str, os.PathLike]
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

    metrics_path: Optional[Path]  # None: the run logged no metrics.csv (another logger only)
    columns: Dict[str, Series]
    params: Series = field(default_factory=list)
    params_source: str = ""  # "growth history", "metrics", or "" when unknown
    growth: List[GrowthMark] = field(default_factory=list)
    milestones: List[MilestoneMark] = field(default_factory=list)
    milestone_losses: Series = field(default_factory=list)  # train/loss recorded in the sidecars
    objective: Optional[str] = None  # the run's objective (`ar`'s val/bpb is exact, the others' a bound)


# ---------------------------------------------------------------------- reading
def find_metrics(run_dir: Path) -> Optional[Path]:
    if not run_dir.exists():
        raise PlotError(f"{run_dir}: no such directory")
    if not run_dir.is_dir():
        raise PlotError(f"{run_dir} is not a directory; pass a run directory (outputs/<date>/<time>)")
    default = run_dir / "logs" / "metrics.csv"
    if default.is_file():
        return default
    found = sorted(run_dir.rglob("metrics.csv"))
    if len(found) > 1:
        raise PlotError(f"{run_dir} holds {len(found)} runs' metrics (e.g. {found[0]}); pass one run directory")
    return found[0] if found else None


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


def read_sidecars(run_dir: Path) -> List[Sidecar]:
    """The run's milestone sidecars that parse, oldest step first (unreadable ones skipped)."""
    sidecars = []
    for directory in sorted({p.parent for p in run_dir.rglob(SIDECAR_GLOB)}):
        sidecars += [e.sidecar for e in entries_in(directory) if e.sidecar is not None]
    return sorted(sidecars, key=lambda s: (s.global_step, s.target_milestone))


def run_network(run_dir: Path) -> Optional[Any]:
    """The network the run started with (a `DIMBAConfig`), from its .hydra/config.yaml: the
    model section built for the run's objective, which decides the network (`ar` has no
    timestep input and one scan direction). None if the file is absent or unreadable."""
    config_path = run_dir / ".hydra" / "config.yaml"
    if not config_path.is_file():
        return None
    try:
        from omegaconf import OmegaConf

        from dimba.model import DIMBAConfig
        from dimba.objective import ObjectiveConfig

        config = OmegaConf.load(config_path)
        model = DIMBAConfig.from_record(OmegaConf.to_container(config.model, resolve=True))
        name = OmegaConf.select(config, "objective.name", default=None)
        return ObjectiveConfig(name=str(name)).network(model) if name else model
    except Exception:  # an old or hand-edited config: the curve starts at the first known point
        return None


def read_run(run_dir: PathLike) -> RunRecord:
    run_dir = Path(run_dir)
    metrics_path = find_metrics(run_dir)
    record = RunRecord(metrics_path, read_metrics(metrics_path) if metrics_path else {})
    network = run_network(run_dir)  # read once: the objective and the count before any growth
    record.objective = None if network is None else network.objective
    sidecars = read_sidecars(run_dir)
    newest = max(sidecars, key=lambda s: (s.global_step, len(_history(s))), default=None)
    record.growth = [
        GrowthMark(int(e.get("applied_at_step", e.get("step", 0))), describe_event(e, short=True),
                   int(e["params"]) if isinstance(e.get("params"), (int, float)) else None)
        for e in (_history(newest) if newest else []) if isinstance(e, dict)
    ]
    by_step: Dict[int, List[Sidecar]] = {}
    for sidecar in sidecars:
        by_step.setdefault(sidecar.global_step, []).append(sidecar)
    for step, group in sorted(by_step.items()):
        labels = [milestone_label(s.target_milestone) for s in group]
        record.milestones.append(MilestoneMark(step, group[0].current_params, "+".join(labels)))
        loss = group[0].metadata.get("train/loss")
        if isinstance(loss, (int, float)) and not isinstance(loss, bool) and math.isfinite(loss):
            record.milestone_losses.append((step, float(loss)))
    if not record.growth:
        record.growth = _growth_from_metrics(record.columns)
    logged = record.columns.get("model/params")
    if record.growth or not logged:  # the count steps exactly at the growth events, to the last step
        record.params = _reconstruct_params(network, record)
        record.params_source = "growth history" if record.params else ""
    else:
        record.params, record.params_source = logged, "metrics"
    if not record.params and not any(record.columns.get(k) for k in ("train/loss", "val/loss")) \
            and not record.milestone_losses:
        raise PlotError(f"{run_dir} has no metrics (logs/metrics.csv), growth events or milestones to plot; "
                        "pass the directory of a dimba training run")
    return record


def _growth_from_metrics(columns: Dict[str, Series]) -> List[GrowthMark]:
    """The growth events every logger receives (growth/params at the step of each); for older
    runs, the jumps of the logged count."""
    if columns.get("growth/params"):
        return [GrowthMark(int(s), f"grew→{format_param_count(int(p))}", int(p)) for s, p in columns["growth/params"]]
    logged = columns.get("model/params") or []
    return [GrowthMark(int(s1), f"grew→{format_param_count(int(p1))}", int(p1))
            for (s0, p0), (s1, p1) in zip(logged, logged[1:]) if p1 != p0]


def _history(sidecar: Optional[Sidecar]) -> list:
    history = (sidecar.metadata if sidecar else {}).get("growth_history") or []
    return history if isinstance(history, list) else []


def _reconstruct_params(network: Optional[Any], record: RunRecord) -> Series:
    """The parameter count as a step function: start (`network`'s count, else the first
    logged one), each growth event, each milestone."""
    from dimba.model.params import architecture_parameters

    points: Dict[int, int] = {}
    start = None if network is None else architecture_parameters(network)
    logged = record.columns.get("model/params")
    if start is None and logged and (not record.growth or logged[0][0] < record.growth[0].step):
        start = int(logged[0][1])
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


