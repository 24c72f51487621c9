"""The `data` group's schema: which text, cut into which sequences (torch-free)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import List

from dimba.errors import ConfigError


@dataclass
class DataConfig:
    """Byte-level text: the built-in corpus, or the user's own files."""

    _target_: str = "dimba.data.TextDataModule"
    files: List[str] = field(default_factory=list)
    """Text files to train on, in order; empty means the built-in offline corpus."""
    seq_len: int = 128
    """Tokens (bytes) per training sequence."""
    batch_size: int = 16
    """Sequences per batch and device."""
    val_fraction: float = 0.05
    """Share of the token stream, taken from its end, held out for validation."""
    num_workers: int = 0
    """DataLoader worker processes."""

    def __post_init__(self) -> None:
        _positive_int("data.seq_len", self.seq_len)
        _positive_int("data.batch_size", self.batch_size)
        if isinstance(self.num_workers, bool) or not isinstance(self.num_workers, int) or self.num_workers < 0:
            raise ConfigError("data.num_workers", self.num_workers, "an integer >= 0")
        if not isinstance(self.val_fraction, (int, float)) or not 0 < self.val_fraction < 0.5:
            raise ConfigError("data.val_fraction", self.val_fraction, "a number between 0 and 0.5")
        total = 0 if self.files else builtin_corpus_size()
        for i, name in enumerate(self.files):
            total += _text_file_size(f"data.files[{i}]", name)
        train_tokens = total - max(self.seq_len, int(total * self.val_fraction))
        if train_tokens < self.seq_len * self.batch_size:
            key, value = ("data.files", list(self.files)) if self.files else ("data.seq_len", self.seq_len)
            raise ConfigError(
                key, value,
                f"text for at least one training batch: seq_len*batch_size = {self.seq_len * self.batch_size} bytes "
                f"beyond the validation share, but the text holds {total}",
            )


def _positive_int(key: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(key, value, "a positive integer")


def _text_file_size(key: str, name: str) -> int:
    path = Path(name)
    if not path.is_file():
        raise ConfigError(key, name, "an existing, readable text file")
    if not os.access(path, os.R_OK):
        raise ConfigError(key, name, "a file this user can read")
    size = path.stat().st_size
    if size == 0:
        raise ConfigError(key, name, "a non-empty text file")
    return size


def builtin_corpus_size() -> int:
    from dimba.data.corpus import builtin_corpus

    return len(builtin_corpus().encode("utf-8"))
