"""The on-disk format of prepared data: numpy token files plus a JSON manifest.

    DIR/manifest.json        tokenizer, dtype, splits, shards, sources (sizes, sha256)
    DIR/tokenizer.json       the Hugging Face tokenizer (bpe and pretrained only)
    DIR/shards/000000.bin    raw little-endian tokens; their concatenation is one stream

The splits are token ranges of that one stream (validation is its tail), so the number of
shards (one per piece of input, independent of the number of workers) never changes the
sequences. Plain JSON and numpy-free: `dimba.config` validates `data.path` with it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, Mapping

from dimba.errors import ConfigError

FORMAT = "dimba-token-shards"
VERSION = 1
MANIFEST = "manifest.json"
TOKENIZER_FILE = "tokenizer.json"
SHARD_DIR = "shards"
SPLITS = ("train", "val")


class DataError(ConfigError):
    """Bad input data: `key` names the file (or option), `value` what was found there."""

    def __reduce__(self):  # raised in worker processes: pickle the three parts, not the message
        return (type(self), (self.key, self.value, self.accepted))


def token_dtype(vocab_size: int) -> str:
    """The narrowest unsigned type that holds every id: 1, 2 or 4 bytes a token."""
    if vocab_size <= 2**8:
        return "uint8"
    if vocab_size <= 2**16:
        return "uint16"
    return "uint32"


def is_prepared(directory: Any) -> bool:
    return (Path(directory) / MANIFEST).is_file()


def read_manifest(directory: Any, key: str = "data.path") -> Dict[str, Any]:
    """The manifest of prepared data, checked for shape; one-line `DataError` otherwise."""
    directory = Path(directory)
    accepted = "a directory written by `dimba data prepare` (it holds manifest.json)"
    if not directory.is_dir():
        raise DataError(key, str(directory), accepted)
    path = directory / MANIFEST
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(key, str(directory), accepted) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(key, str(path), f"a readable manifest.json ({type(exc).__name__}: {exc})".replace("\n", " ")) from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise DataError(key, str(directory), accepted)
    if manifest.get("version") != VERSION:
        raise DataError(key, str(directory), f"prepared data of format version {VERSION} "
                                             f"(found {manifest.get('version')!r}; prepare it again)")
    _check_shape(manifest, directory, key)
    return manifest


def _check_shape(manifest: Mapping[str, Any], directory: Path, key: str) -> None:
    try:
        total = sum(int(s["tokens"]) for s in manifest["shards"])
        for split in SPLITS:
            start, end = manifest["splits"][split]
            if not 0 <= start <= end <= total:
                raise ValueError(f"split {split} {start}..{end} outside 0..{total}")
        manifest["tokenizer"]["name"], int(manifest["tokenizer"]["vocab_size"]), manifest["dtype"]
    except (KeyError, TypeError, ValueError) as exc:
        raise DataError(key, str(directory), f"a complete manifest.json (this one is damaged: {exc!r})") from None
    for shard in manifest["shards"]:
        file = directory / shard["file"]
        if not file.is_file():
            raise DataError(key, str(file), "every shard the manifest lists (prepare the data again)")


def split_tokens(manifest: Mapping[str, Any], split: str) -> int:
    start, end = manifest["splits"][split]
    return int(end) - int(start)


def check_seq_len(manifest: Mapping[str, Any], seq_len: int, batch_size: int, path: str) -> None:
    """A training batch must fit in the training split, one sequence in validation."""
    train, val = split_tokens(manifest, "train"), split_tokens(manifest, "val")
    if val < seq_len:
        raise ConfigError("data.seq_len", seq_len, f"at most {val}: the validation split of {path} holds {val} tokens "
                                                   f"(prepare with a larger --val-fraction or more text)")
    if train < seq_len * batch_size:
        raise ConfigError("data.seq_len", seq_len,
                          f"seq_len*batch_size at most {train}: the training split of {path} holds {train} tokens")
