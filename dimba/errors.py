"""The one error type for user mistakes in configuration: field, value, what is accepted."""

from __future__ import annotations

from typing import Any


class ConfigError(ValueError):
    """A configuration value the run cannot use. Its message is one line, shown as is."""

    def __init__(self, key: str, value: Any, accepted: str) -> None:
        self.key = key
        self.value = value
        self.accepted = accepted
        super().__init__(f"{key}: {value!r} is invalid; accepted: {accepted}")
