"""Schemas of the `data` group (`builtin`, `text_files`, `shards`) and of `tokenizer`, validated.

No torch, numpy or tokenizers import: a bad value fails in well under a second, before
anything trains. `__post_init__` runs when OmegaConf turns the composed config into objects.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, List, Optional

from dimba.data.format import TOKENIZER_FILE, check_seq_len, read_manifest
from dimba.errors import ConfigError

TOKENIZERS = ("bytes", "bpe", "pretrained")
BYTE_VOCAB = 256
DEFAULT_BPE_VOCAB = 32000
MAX_VOCAB = 2**32 - 1
PREPARED = "a directory written by `dimba data prepare` (it holds manifest.json)"


def _int_at_least(key: str, value: Any, low: int, accepted: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ConfigError(key, value, accepted)


def check_vocab_size(value: Any, key: str = "tokenizer.vocab_size") -> int:
    """A BPE vocabulary: a whole number >= 256 (the byte alphabet every text falls back to)."""
    _int_at_least(key, value, BYTE_VOCAB, f"an integer from {BYTE_VOCAB} (the byte alphabet) to {MAX_VOCAB}")
    if value > MAX_VOCAB:
        raise ConfigError(key, value, f"an integer from {BYTE_VOCAB} (the byte alphabet) to {MAX_VOCAB}")
    return value


def pretrained_file(path: Any, key: str = "tokenizer.path") -> Path:
    """The tokenizer.json a `pretrained` path names: the file itself or one inside a
    Hugging Face tokenizer directory. Local only: a tokenizer is never downloaded."""
    accepted = f"a local {TOKENIZER_FILE} or a Hugging Face tokenizer directory holding one (nothing is downloaded)"
    if not isinstance(path, str) or not path.strip():
        raise ConfigError(key, path, accepted)
    candidate = Path(path).expanduser()
    if candidate.is_dir():
        candidate = candidate / TOKENIZER_FILE
    if not candidate.is_file():
        raise ConfigError(key, path, accepted)
    return candidate


@dataclass
class TokenizerConfig:
    """How text becomes token ids; the model's vocabulary follows it."""

    name: str = "auto"
    """auto (bytes; with data=shards the tokenizer the data was prepared with) | bytes
    (vocabulary 256, every byte a token) | bpe (trained on the training text) | pretrained
    (a local Hugging Face tokenizer.json)."""
    vocab_size: Optional[int] = None
    """bpe: the vocabulary to train (null: 32000; a small corpus may end below it), or with
    data=shards the prepared data's (null: taken from it; if set, it must agree).
    bytes: 256. pretrained: taken from the file (if set, it must agree)."""
    path: Optional[str] = None
    """pretrained: a tokenizer.json, or a directory holding one."""
    sample_mb: int = 256
    """bpe: train on at most this many MB of the text, an evenly spread sample (all of it
    when smaller), so training time does not grow with the corpus."""

    def __post_init__(self) -> None:
        if self.name == "auto":  # prepared data's tokenizer is filled in before this (config.store)
            self.name = "bytes"
        if self.name not in TOKENIZERS:
            raise ConfigError("tokenizer.name", self.name, " | ".join(("auto",) + TOKENIZERS))
        _int_at_least("tokenizer.sample_mb", self.sample_mb, 1, "a positive number of megabytes")
        if self.name == "bytes":
            if self.vocab_size not in (None, BYTE_VOCAB):
                raise ConfigError("tokenizer.vocab_size", self.vocab_size, f"{BYTE_VOCAB} or null with tokenizer=bytes")
            self.vocab_size = BYTE_VOCAB
        elif self.name == "bpe":
            self.vocab_size = check_vocab_size(DEFAULT_BPE_VOCAB if self.vocab_size is None else self.vocab_size)
        else:
            pretrained_file(self.path)
            if self.vocab_size is not None:
                check_vocab_size(self.vocab_size)


@dataclass
class ShardsDataConfig:
    """Token shards written by `dimba data prepare`, memory-mapped and streamed."""

    _target_: str = "dimba.data.ShardsDataModule"
    path: str = ""
    """The prepared directory (local or mounted; memory-mapped files need a file system)."""
    seq_len: int = 128
    """Tokens per training sequence; the validation split must hold at least one."""
    batch_size: int = 16
    """Sequences per batch and device."""
    num_workers: int = 0
    """DataLoader worker processes (each maps the same files: no copy of the data)."""

    def __post_init__(self) -> None:
        _int_at_least("data.seq_len", self.seq_len, 1, "a positive integer")
        _int_at_least("data.batch_size", self.batch_size, 1, "a positive integer")
        _int_at_least("data.num_workers", self.num_workers, 0, "an integer >= 0")
        if not isinstance(self.path, str) or not self.path.strip():
            raise ConfigError("data.path", self.path, PREPARED)
        if "://" in self.path:
            raise ConfigError("data.path", self.path, "a local or mounted directory: memory-mapped shards need a file "
                                                      "system (mount object storage, e.g. with mountpoint-s3 or s3fs)")
        manifest = read_manifest(Path(self.path).expanduser(), key="data.path")
        check_seq_len(manifest, self.seq_len, self.batch_size, self.path)


TEXT_SUFFIXES = (".txt", ".text", ".md", ".rst")
FILES_ACCEPTED = (f"an existing text file, a directory (its {'/'.join(TEXT_SUFFIXES)} files, recursively, sorted) "
                  "or a glob such as 'corpus/*.txt'")


@dataclass
class DataConfig:
    """Text: the built-in corpus (`data=builtin`), or the user's own files (`data=text_files`)."""

    _target_: str = "dimba.data.TextDataModule"
    files: Optional[List[str]] = field(default_factory=list)
    """Text files, directories or globs to train on, in order; empty: the built-in offline
    corpus; null (`data=text_files` until set): refused. After validation the files they name."""
    seq_len: int = 128
    """Tokens per training sequence."""
    batch_size: int = 16
    """Sequences per batch and device."""
    val_fraction: float = 0.05
    """Share of the token stream, taken from its end, held out for validation."""
    num_workers: int = 0
    """DataLoader worker processes."""

    def __post_init__(self) -> None:
        _int_at_least("data.seq_len", self.seq_len, 1, "a positive integer")
        _int_at_least("data.batch_size", self.batch_size, 1, "a positive integer")
        _int_at_least("data.num_workers", self.num_workers, 0, "an integer >= 0")
        if not isinstance(self.val_fraction, (int, float)) or not 0 < self.val_fraction < 0.5:
            raise ConfigError("data.val_fraction", self.val_fraction, "a number between 0 and 0.5")
        if self.files is None:
            raise ConfigError("data.files", None, "your text: data=text_files 'data.files=[corpus/*.txt]' (files, "
                                                  "directories or globs), or data=builtin for the built-in corpus")
        self.files = [str(path) for i, name in enumerate(self.files) for path in text_files(f"data.files[{i}]", name)]
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


def text_files(key: str, name: Any) -> List[Path]:
    """What one `data.files` entry names: a file, a directory's text files, a glob's files."""
    import glob

    if not isinstance(name, str) or not name.strip():
        raise ConfigError(key, name, FILES_ACCEPTED)
    path = Path(name).expanduser()
    if path.is_dir():
        found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in TEXT_SUFFIXES
                       and not any(part.startswith(".") for part in p.relative_to(path).parts))
    elif glob.has_magic(name):
        found = [Path(p) for p in sorted(glob.glob(os.path.expanduser(name), recursive=True)) if Path(p).is_file()]
    else:
        found = [path]
    if not found:
        raise ConfigError(key, name, FILES_ACCEPTED + " (this one names no file)")
    return found


def _text_file_size(key: str, name: str) -> int:
    path = Path(name)
    if not path.is_file():
        raise ConfigError(key, name, FILES_ACCEPTED)
    if not os.access(path, os.R_OK):
        raise ConfigError(key, name, "a file this user can read")
    size = path.stat().st_size
    if size == 0:
        raise ConfigError(key, name, "a non-empty text file")
    return size


def builtin_corpus_size() -> int:
    from dimba.data.corpus import builtin_corpus

    return len(builtin_corpus().encode("utf-8"))
