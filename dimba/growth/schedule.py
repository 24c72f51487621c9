"""Growth events as config data, and the check that a schedule makes sense for a model."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from enum import Enum
from typing import Any, Dict, List, Mapping, Optional, Sequence

from dimba.errors import ConfigError
from dimba.model.config import DIMBAConfig


class GrowthOp(str, Enum):
    DEPTH = "depth"
    WIDTH = "width"


DEPTH_MODES = ("identity", "stack")


@dataclass
class GrowthEvent:
    """Grow once, after optimizer step `step`.

    op=depth grows to `n_layers` blocks (mode identity: function-preserving; stack: copies
    of the existing blocks, as G_stack); op=width grows the residual stream to `d_model`
    (the blocks' inner width and heads follow `expand` and `head_dim`).
    """

    step: Optional[int] = None
    """The optimizer step after which it grows; or give `at`."""
    op: str = "depth"
    n_layers: Optional[int] = None
    d_model: Optional[int] = None
    mode: str = "identity"
    at: Optional[float] = None
    """The step as a fraction of the run's `trainer.max_steps` (0.5: halfway), so a recipe keeps
    its shape when the run is made longer or shorter; resolved to `step` before training."""

    def apply(self, config: DIMBAConfig) -> DIMBAConfig:
        if GrowthOp(self.op) is GrowthOp.DEPTH:
            return replace(config, n_layers=self.n_layers)
        return replace(config, d_model=self.d_model)

    def describe(self) -> str:
        return describe_event(self.to_dict())

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)


def describe_event(event: Mapping[str, Any], short: bool = False) -> str:
    """A growth event, or a growth-history entry of a checkpoint, in words: "depth -> 8 layers
    (identity)", "width -> d_model 256"; `short`: "depth→8", "width→256" (for plots)."""
    op = event.get("op")
    if op == GrowthOp.DEPTH.value:
        return f"depth→{event.get('n_layers')}" if short else f"depth -> {event.get('n_layers')} layers ({event.get('mode', 'identity')})"
    if op == GrowthOp.WIDTH.value:
        return f"width→{event.get('d_model')}" if short else f"width -> d_model {event.get('d_model')}"
    return str(op if op is not None else "growth")


def as_events(schedule: Sequence[GrowthEvent | Mapping[str, Any]] | None) -> List[GrowthEvent]:
    return [e if isinstance(e, GrowthEvent) else GrowthEvent(**dict(e)) for e in (schedule or [])]


def resolve_steps(schedule: Sequence[GrowthEvent], total_steps: Optional[int], key: str = "growth.schedule",
                  total_key: str = "trainer.max_steps", strict: bool = True) -> List[GrowthEvent]:
    """The schedule with every `at:` fraction turned into a step of a run of `total_steps`
    (round(at * total), at least 1); one with neither is refused. `strict`: an event given both
    must agree; otherwise (a recipe read back from hyperparameters, resolved before) a step
    already there is kept."""
    resolved = []
    for i, event in enumerate(schedule):
        where = f"{key}[{i}]"
        if event.at is None or (event.step is not None and not strict):
            if event.step is None:
                raise ConfigError(f"{where}.step", None, "an integer step, or at: a fraction of the run (at: 0.5)")
            resolved.append(event)
            continue
        at = event.at
        if isinstance(at, bool) or not isinstance(at, (int, float)) or not 0 < at <= 1:
            raise ConfigError(f"{where}.at", at, "a fraction of the run in (0, 1]")
        if total_steps is None:
            raise ConfigError(f"{where}.at", at, f"a step instead: {total_key} is not known here")
        step = max(1, round(at * total_steps))
        if event.step is not None and event.step != step:
            raise ConfigError(f"{where}.step", event.step,
                              f"{step} (at: {at} of {total_key}={total_steps}), or leave step out")
        resolved.append(replace(event, step=step))
    return resolved


def _int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def validate_schedule(model: DIMBAConfig, schedule: Sequence[GrowthEvent], key: str = "growth.schedule") -> List[DIMBAConfig]:
    """The architecture after each event; a ConfigError for the first event that cannot happen."""
    stages, current, last_step = [], model, 0
    ops = " | ".join(op.value for op in GrowthOp)
    for i, event in enumerate(schedule):
        where = f"{key}[{i}]"
        if not _int(event.step) or event.step < max(last_step, 1):
            raise ConfigError(f"{where}.step", event.step,
                              f"an integer step >= {max(last_step, 1)} (events in order; two may share a step, "
                              f"as fractions of a short run do)")
        try:
            op = GrowthOp(event.op)
        except ValueError:
            raise ConfigError(f"{where}.op", event.op, ops) from None
        if op is GrowthOp.DEPTH:
            if event.mode not in DEPTH_MODES:
                raise ConfigError(f"{where}.mode", event.mode, " | ".join(DEPTH_MODES))
            if not _int(event.n_layers) or event.n_layers <= current.n_layers:
                raise ConfigError(f"{where}.n_layers", event.n_layers,
                                  f"an integer larger than the current {current.n_layers} layers")
            if event.d_model is not None:
                raise ConfigError(f"{where}.d_model", event.d_model, "null for op=depth (use a separate width event)")
        else:
            if not _int(event.d_model) or event.d_model <= current.d_model:
                raise ConfigError(f"{where}.d_model", event.d_model,
                                  f"an integer larger than the current d_model {current.d_model}")
            if (current.expand * event.d_model) % current.head_dim:
                raise ConfigError(f"{where}.d_model", event.d_model,
                                  f"a width whose inner width expand*d_model is a multiple of head_dim={current.head_dim}")
            if event.n_layers is not None:
                raise ConfigError(f"{where}.n_layers", event.n_layers, "null for op=width (use a separate depth event)")
        current = event.apply(current)
        stages.append(current)
        last_step = event.step
    return stages
