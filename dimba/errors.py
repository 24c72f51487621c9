"""The error types for user mistakes, each with a one-line message shown as is.

Torch-free, so every layer (the config, the `dimba` command, the loaders) can raise and
catch them without importing torch.
"""

from __future__ import annotations

from typing import Any, Optional


class ConfigError(ValueError):
    """A configuration value the run cannot use: names the key, the value and what is accepted."""

    def __init__(self, key: str, value: Any, accepted: str, line: Optional[str] = None) -> None:
        """`line`: the message, where `key: value is invalid; accepted: ...` would read badly
        (an unknown key or group option)."""
        self.key = key
        self.value = value
        self.accepted = accepted
        super().__init__(line or f"{key}: {value!r} is invalid; accepted: {accepted}")


class CheckpointLoadError(RuntimeError):
    """A checkpoint that cannot be read or used; the message names the file."""


class CheckpointWriteError(RuntimeError):
    """A checkpoint that could not be written; the message names the file and the cause."""
