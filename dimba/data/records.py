"""The tokenizer as plain JSON in a checkpoint, rebuilt from it, and checked on resume.

A record is small and self-contained: name, vocab_size, the sha256 of the tokenizer.json,
its path, and (up to `EMBED_LIMIT` bytes, which a 32,000-token BPE is well under) the
file's content itself, so a checkpoint decodes on a machine without the prepared data.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Union

from dimba.data.config import TokenizerConfig
from dimba.data.format import TOKENIZER_FILE, read_manifest
from dimba.data.tokenizer import ByteTokenizer, HFTokenizer, Tokenizer, as_tokenizer_config, load_tokenizer
from dimba.errors import ConfigError

EMBED_LIMIT = 8 << 20
BYTES_RECORD = {"name": "bytes", "vocab_size": 256, "sha256": None, "path": None}


def tokenizer_record(tokenizer: Tokenizer, embed_limit: int = EMBED_LIMIT) -> Dict[str, Any]:
    """What a checkpoint stores about its tokenizer (plain JSON, loads with weights_only)."""
    if isinstance(tokenizer, ByteTokenizer):
        return dict(BYTES_RECORD)
    record: Dict[str, Any] = {"name": tokenizer.name, "vocab_size": tokenizer.vocab_size,
                              "sha256": tokenizer.sha256, "path": tokenizer.path}
    if len(tokenizer.json_text.encode("utf-8")) <= embed_limit:
        record["content"] = tokenizer.json_text
    return record


def tokenizer_from_record(record: Optional[Mapping[str, Any]], key: str = "checkpoint tokenizer") -> Tokenizer:
    """The tokenizer a record describes; a checkpoint without one was trained on bytes."""
    if not record or record.get("name") == "bytes":
        return ByteTokenizer()
    name, sha = str(record.get("name")), record.get("sha256")
    if record.get("content") is not None:
        tokenizer = HFTokenizer.from_str(record["content"], name, record.get("path"))
    elif record.get("path") and Path(record["path"]).is_file():
        tokenizer = HFTokenizer.from_file(record["path"], name, key=key)
    else:
        raise ConfigError(key, record.get("path"), f"the {TOKENIZER_FILE} the checkpoint was trained with "
                                                  f"(sha256 {sha}); it is not embedded and not at that path")
    if sha and tokenizer.sha256 != sha:
        raise ConfigError(key, record.get("path"), f"the {TOKENIZER_FILE} the checkpoint was trained with "
                                                  f"(sha256 {sha}); this file's is {tokenizer.sha256}")
    return tokenizer


def describe(record: Optional[Mapping[str, Any]]) -> str:
    record = record or BYTES_RECORD
    if record.get("name") == "bytes":
        return "bytes"
    return f"{record.get('name')}, vocabulary {record.get('vocab_size')}, sha256 {str(record.get('sha256'))[:12]}"


def same_tokenizer(a: Optional[Mapping[str, Any]], b: Optional[Mapping[str, Any]]) -> bool:
    a, b = a or BYTES_RECORD, b or BYTES_RECORD
    if a.get("name") == "bytes" or b.get("name") == "bytes":
        return a.get("name") == b.get("name")
    return a.get("sha256") == b.get("sha256") and int(a.get("vocab_size", -1)) == int(b.get("vocab_size", -2))


def check_resume_tokenizer(checkpoint_record: Optional[Mapping[str, Any]], data_record: Optional[Mapping[str, Any]],
                           data_path: str = "the built-in corpus", key: str = "data.path") -> None:
    """Refuse to continue a checkpoint on data tokenized differently: its embeddings mean
    other things there. A record of None is bytes (checkpoints from before tokenizers)."""
    if not same_tokenizer(checkpoint_record, data_record):
        raise ConfigError(key, data_path, f"data prepared with the checkpoint's tokenizer ({describe(checkpoint_record)}); "
                                          f"this data was prepared with {describe(data_record)}")


def prepared_tokenizer(directory: Union[str, Path], manifest: Optional[Mapping[str, Any]] = None) -> Tokenizer:
    """The tokenizer prepared data was written with (its tokenizer.json, hash checked)."""
    directory = Path(directory)
    manifest = manifest or read_manifest(directory)
    record = dict(manifest["tokenizer"])
    if record["name"] == "bytes":
        return ByteTokenizer()
    record["path"] = str((directory / (record.get("file") or TOKENIZER_FILE)).resolve())
    return tokenizer_from_record(record, key="data.path")


def check_tokenizer_config(config: Union[TokenizerConfig, Mapping[str, Any], None], manifest: Mapping[str, Any],
                           path: str) -> None:
    """The `tokenizer` group must name the tokenizer `data.path` was prepared with."""
    config = as_tokenizer_config(config)
    prepared, settings = manifest["tokenizer"], manifest.get("settings", {})
    if config.name != prepared["name"]:
        raise ConfigError("tokenizer.name", config.name, f"{prepared['name']} (the tokenizer {path} was prepared with)")
    if config.name == "bpe" and config.vocab_size != settings.get("vocab_size"):
        raise ConfigError("tokenizer.vocab_size", config.vocab_size,
                          f"{settings.get('vocab_size')} (the vocabulary {path} was prepared with)")
    if config.name == "pretrained" and load_tokenizer(config).sha256 != prepared["sha256"]:
        raise ConfigError("tokenizer.path", config.path, f"the {TOKENIZER_FILE} {path} was prepared with "
                                                         f"(sha256 {prepared['sha256']})")
