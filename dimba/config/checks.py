"""Small value checks the schemas share: each raises the one-line ConfigError."""

from __future__ import annotations

import math
from typing import Any

from dimba.errors import ConfigError


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def int_at_least(value: Any, low: int) -> bool:
    return is_int(value) and value >= low


def finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def positive_int(key: str, value: Any) -> None:
    if not int_at_least(value, 1):
        raise ConfigError(key, value, "a positive integer")


def non_negative_int(key: str, value: Any) -> None:
    if not int_at_least(value, 0):
        raise ConfigError(key, value, "an integer >= 0")
