"""`data=builtin` and `data=text_files` go through prepared data too, prepared once into a
cache directory keyed by the inputs and the tokenizer.

    $DIMBA_CACHE_DIR (default $XDG_CACHE_HOME/dimba, i.e. ~/.cache/dimba)/prepared/<key>/

The key hashes the built-in text itself, or each file's absolute path, size and
modification time, with the tokenizer settings: an edited file gets a new entry. Every
process of a run (DDP ranks, nodes on a shared file system) may ask at once: a file lock
lets the first one prepare while the others wait, then all read the same directory.
Entries are never deleted by dimba; removing the folder is always safe.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
from pathlib import Path
from typing import List, Optional, Sequence, Union

from dimba.data.config import TokenizerConfig
from dimba.data.format import VERSION, is_prepared
from dimba.data.prepare import prepare, settings_of
from dimba.data.sources import Source, builtin_source, expand_inputs

CACHE_ENV = "DIMBA_CACHE_DIR"


def cache_root() -> Path:
    configured = os.environ.get(CACHE_ENV)
    if configured:
        return Path(configured).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache").expanduser() / "dimba"


def text_sources(files: Sequence[str]) -> List[Source]:
    """`data.files` as before: each file's bytes as plain text, in order (repeats kept)."""
    if not files:
        return [builtin_source()[0]]
    return expand_inputs(list(files), all_text=True)


def cache_key(sources: Sequence[Source], tokenizer: TokenizerConfig) -> str:
    described = [s.describe() for s in sources]
    for entry, source in zip(described, sources):
        if source.kind == "builtin":
            entry["sha256"] = hashlib.sha256(builtin_source()[1]).hexdigest()
    payload = {"version": VERSION, "sources": described, "settings": settings_of(tokenizer, 0.0, "text")}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode("utf-8")).hexdigest()[:24]


def prepared_text(files: Sequence[str], tokenizer: Optional[TokenizerConfig] = None,
                  cache_dir: Union[str, Path, None] = None) -> Path:
    """The cache directory holding `files` (or the built-in corpus) as one unsplit stream."""
    tokenizer = tokenizer or TokenizerConfig()
    sources = text_sources(files)
    root = Path(cache_dir).expanduser() if cache_dir else cache_root()
    key = cache_key(sources, tokenizer)
    directory = root / "prepared" / key
    if is_prepared(directory):
        return directory
    (root / "locks").mkdir(parents=True, exist_ok=True)
    with open(root / "locks" / f"{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, also if this process dies
        if not is_prepared(directory):
            prepare(sources, directory, tokenizer, val_fraction=0.0, workers=0, overwrite=True)
    return directory
