"""Milestones: parsing, formatting and tracking of parameter-count targets.

Plain Python on purpose (no torch, no Lightning): this is the logic every other layer
relies on, so it must be cheap to import and trivial to test.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any, Dict, Iterable, List, Optional, Sequence

__all__ = [
    "ACCEPTED_FORMS",
    "MilestoneError",
    "MilestoneTracker",
    "format_param_count",
    "milestone_label",
    "parse_milestone",
    "parse_milestone_input",
    "parse_milestones",
]

UNITS: Dict[str, int] = {"K": 10**3, "M": 10**6, "B": 10**9, "T": 10**12}

ACCEPTED_FORMS = (
    "positive whole parameter counts such as 1000000000, 1e9 or 1_000_000_000, "
    "or a number with a K/M/B/T suffix such as 500K, 100M, 1.5B"
)

_TOKEN = re.compile(r"^(?P<number>[0-9][0-9_]*(?:\.[0-9]*)?(?:[eE][+-]?[0-9]+)?|\.[0-9]+(?:[eE][+-]?[0-9]+)?)\s*(?P<unit>[A-Za-z]*)$")


class MilestoneError(ValueError):
    """A milestone value that is not a positive whole parameter count."""

    def __init__(self, value: Any, reason: str) -> None:
        self.value = value
        self.reason = reason
        super().__init__(f"{value!r} {reason}; accepted: {ACCEPTED_FORMS}")


def parse_milestone(value: Any, default_unit: Optional[str] = None) -> int:
    """One milestone to an exact int.

    Decimal arithmetic keeps `1.5B` and `1e9` exact (float would turn 1.1e9 into
    1100000000.0000002 and then fail the whole-number check). A bare number is a raw
    count unless `default_unit` says otherwise (the interactive prompt uses "B").
    """
    if isinstance(value, bool) or value is None:
        raise MilestoneError(value, "is not a parameter count")
    if isinstance(value, int):
        number, unit = Decimal(value), ""
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise MilestoneError(value, "is not finite")
        number, unit = Decimal(repr(value)), ""
    elif isinstance(value, str):
        text = value.strip()
        if not text:
            raise MilestoneError(value, "is empty")
        sign = text[0] in "+-"
        match = _TOKEN.match(text[1:].strip() if sign else text)
        if match is None:
            lowered = text.lower().lstrip("+-")
            if lowered in ("nan", "inf", "infinity"):
                raise MilestoneError(value, "is not finite")
            raise MilestoneError(value, "is not a parameter count")
        if text[0] == "-":
            raise MilestoneError(value, "is negative")
        unit = match.group("unit").upper()
        if unit and unit not in UNITS:
            raise MilestoneError(value, f"has an unknown unit suffix {match.group('unit')!r}")
        try:
            number = Decimal(match.group("number").replace("_", ""))
        except InvalidOperation:
            raise MilestoneError(value, "is not a parameter count") from None
    else:
        raise MilestoneError(value, f"has unsupported type {type(value).__name__}")

    if not unit and default_unit:
        unit = default_unit.upper()
    count = number * UNITS.get(unit, 1)
    if not count.is_finite():
        raise MilestoneError(value, "is not finite")
    if count < 0:
        raise MilestoneError(value, "is negative")
    if count == 0:
        raise MilestoneError(value, "is zero")
    if count != count.to_integral_value():
        raise MilestoneError(value, "is not a whole number of parameters")
    return int(count)


def parse_milestones(values: Any, default_unit: Optional[str] = None) -> List[int]:
    """A list, tuple or comma-separated string of milestones to sorted, unique ints."""
    if isinstance(values, str):
        items: Iterable[Any] = values.split(",")
    elif isinstance(values, (list, tuple)):
        items = values
    elif isinstance(values, (int, float)) and not isinstance(values, bool):
        items = [values]
    else:
        raise MilestoneError(values, "is not a list of parameter counts")
    return sorted({parse_milestone(item, default_unit) for item in items})


def parse_milestone_input(text: Any, default_unit: str = "B") -> List[int]:
    """The interactive parser: `"1,5,10,30"` means billions, `"100M,1B"` mixes units.

    Bare numbers are billions by default, as the seed table says; pass `default_unit=None`
    to read bare numbers as raw counts (what the YAML config does).
    """
    return parse_milestones(text, default_unit=default_unit)


def _scaled(count: int) -> tuple[Decimal, str]:
    for suffix in ("T", "B", "M", "K"):
        if count >= UNITS[suffix]:
            return Decimal(count) / UNITS[suffix], suffix
    return Decimal(count), ""


def format_param_count(count: int, precision: int = 1) -> str:
    """Human form for logs: 1_234_567_890 -> '1.2B' (the checkpoint file names' format)."""
    value, suffix = _scaled(int(count))
    if not suffix:
        return str(int(count))
    return f"{value:.{precision}f}{suffix}"


def milestone_label(milestone: int) -> str:
    """Exact, injective label for file names: 1e9 -> '1.0B', 1_040_000 -> '1.04M'.

    The documented one-decimal form ('1.0B') is kept where it is exact; otherwise as many decimals
    as the value needs, so two milestones that display alike never share a file name.
    """
    value, suffix = _scaled(int(milestone))
    if not suffix:
        return str(int(milestone))
    text = format(value.normalize(), "f")
    if "." not in text:
        text += ".0"
    return text + suffix


@dataclass
class MilestoneTracker:
    """Which milestones are configured, which were saved, and what comes next."""

    milestones: List[int]
    reached: List[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.milestones = sorted({int(m) for m in self.milestones})
        self.reached = sorted({int(m) for m in self.reached})

    def next_milestone(self) -> Optional[int]:
        return next((m for m in self.milestones if m not in self.reached), None)

    def crossed(self, count: int) -> List[int]:
        """Milestones at or below `count` that have not been saved yet, smallest first."""
        return [m for m in self.milestones if m <= count and m not in self.reached]

    def mark_reached(self, milestones: Sequence[int]) -> None:
        self.reached = sorted(set(self.reached) | {int(m) for m in milestones})

    def state_dict(self) -> Dict[str, List[int]]:
        return {"milestones": list(self.milestones), "reached_milestones": list(self.reached)}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        """Restore what was reached; the configured milestones stay the current run's.

        A milestone reached earlier stays reached even if it is no longer configured,
        so resuming with an edited list never saves an old milestone twice.
        """
        self.reached = sorted({int(m) for m in state.get("reached_milestones", [])})
