"""Tokenizers, prepared token shards, the built-in corpus and the data modules.

Light on import: the torch-free parts (config schemas, the shard format, `prepare`) load
without torch or Lightning; the data modules and samplers load when first asked for.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_EXPORTS = {
    "builtin_corpus": "dimba.data.corpus",
    "DataConfig": "dimba.data.config",
    "TokenizerConfig": "dimba.data.config",
    "ShardsDataConfig": "dimba.data.config",
    "ByteTokenizer": "dimba.data.tokenizer",
    "HFTokenizer": "dimba.data.tokenizer",
    "load_tokenizer": "dimba.data.tokenizer",
    "tokenizer_record": "dimba.data.records",
    "tokenizer_from_record": "dimba.data.records",
    "check_resume_tokenizer": "dimba.data.records",
    "check_tokenizer_config": "dimba.data.records",
    "prepared_tokenizer": "dimba.data.records",
    "prepare": "dimba.data.prepare",
    "ShardsDataModule": "dimba.data.datamodule",
    "TextDataModule": "dimba.data.datamodule",
    "EpochShuffleSampler": "dimba.data.sampler",
    "ResumableDataLoader": "dimba.data.sampler",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'dimba.data' has no attribute {name!r}")
