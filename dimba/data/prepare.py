"""`dimba data prepare`: input files to token shards plus a manifest, in worker processes.

The result appears all at once: everything is written into a temporary directory beside
`out`, fsynced, and moved into place. Preparing again with the same inputs and settings
does nothing; with others it refuses unless `overwrite` (and it never replaces a
directory that holds anything but prepared data).
"""

from __future__ import annotations

import hashlib
import logging
import multiprocessing
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

from dimba.data.config import TokenizerConfig
from dimba.data.format import (FORMAT, MANIFEST, SHARD_DIR, TOKENIZER_FILE, VERSION, DataError, is_prepared,
                                read_manifest, token_dtype)
from dimba.data.sources import PIECE_BYTES, Source, builtin_source, expand_inputs, plan_pieces, read_piece, spread_sample
from dimba.data.tokenize import Job, PieceResult, PieceTokenizer, init_worker, run_piece, segments, shard_name
from dimba.data.tokenizer import ByteTokenizer, Tokenizer, load_tokenizer

log = logging.getLogger(__name__)
MB = 1_000_000


@dataclass
class Prepared:
    out: Path
    manifest: Dict[str, Any]
    seconds: float
    input_bytes: int
    up_to_date: bool

    def summary(self) -> str:
        m, tokens = self.manifest, self.manifest["tokens"]
        if self.up_to_date:
            return f"{self.out}: already prepared from these inputs ({tokens['train'] + tokens['val']:,} tokens); nothing to do"
        rate = self.input_bytes / MB / max(self.seconds, 1e-9)
        return (f"{self.out}: {len(m['sources'])} file(s), {self.input_bytes / MB:,.1f} MB of text -> "
                f"{tokens['train']:,} train + {tokens['val']:,} val tokens ({m['tokenizer']['name']}, vocabulary "
                f"{m['tokenizer']['vocab_size']:,}) in {len(m['shards'])} shard(s), {self.seconds:.1f} s ({rate:.1f} MB/s)")


def settings_of(tokenizer: TokenizerConfig, val_fraction: float, field: str) -> Dict[str, Any]:
    settings = {"tokenizer": tokenizer.name, "vocab_size": tokenizer.vocab_size, "val_fraction": val_fraction,
                "field": field, "sample_mb": tokenizer.sample_mb if tokenizer.name == "bpe" else None}
    if tokenizer.name == "pretrained":
        settings["tokenizer_sha256"] = load_tokenizer(tokenizer).sha256
    return settings


def sha256_file(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(8 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def differences(manifest: Dict[str, Any], sources: Sequence[Source], settings: Dict[str, Any]) -> List[str]:
    """Why existing prepared data does not match these inputs (empty: it does)."""
    found = []
    for key, value in settings.items():
        if manifest["settings"].get(key) != value:
            found.append(f"{key} {manifest['settings'].get(key)!r} -> {value!r}")
    old = manifest["sources"]
    if [(s["path"], s["bytes"]) for s in old] != [(s.path, s.size) for s in sources]:
        found.append("other input files or sizes")
        return found
    for recorded, source in zip(old, sources):
        if recorded["mtime_ns"] != source.mtime_ns and source.kind != "builtin":
            if recorded["sha256"] != sha256_file(source.path):
                found.append(f"{source.path} changed")
    return found


def check_out(out: Path, sources: Sequence[Source], settings: Dict[str, Any], overwrite: bool) -> Optional[Dict]:
    """The existing manifest when `out` already holds exactly this data; else None when
    `out` may be (re)written, or a one-line refusal."""
    if is_prepared(out):
        manifest = read_manifest(out, key="--out")
        changed = differences(manifest, sources, settings)
        if not changed:
            return manifest
        if not overwrite:
            raise DataError("--out", str(out), f"a new or empty directory, or --overwrite to replace the data "
                                               f"prepared there from other inputs ({'; '.join(changed)})")
    elif out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise DataError("--out", str(out), "a new or empty directory, or one holding prepared data "
                                           "(this one holds other files, which are never replaced)")
    return None


def bpe_texts(sources: Sequence[Source], pieces, budget: int, field: str, builtin: bytes):
    for piece in spread_sample(pieces, budget):
        for part in piece.parts:
            for _, text in read_piece(sources[part.source], part, True, field, builtin):
                yield from segments(text, 1 << 20)


def make_tokenizer(config: TokenizerConfig, sources, pieces, field: str, builtin: bytes, tmp: Path,
                   progress: bool = False) -> Tokenizer:
    if config.name == "bytes":
        return ByteTokenizer()
    if config.name == "pretrained":
        tokenizer = load_tokenizer(config)
    else:
        from dimba.data.bpe import train_bpe

        started = time.perf_counter()
        sample = sum(p.size for p in spread_sample(pieces, config.sample_mb * MB))
        if progress:
            print(f"training a BPE tokenizer (vocabulary {config.vocab_size:,}) on {sample / MB:,.1f} MB of the input",
                  file=sys.stderr, flush=True)
        tokenizer = train_bpe(bpe_texts(sources, pieces, config.sample_mb * MB, field, builtin), config.vocab_size)
        log.info("Trained a BPE tokenizer (vocabulary %d) on %.1f MB in %.1f s", tokenizer.vocab_size, sample / MB,
                 time.perf_counter() - started)
    tokenizer.save(tmp / TOKENIZER_FILE)
    return tokenizer


def run_pieces(job: Job, pieces, workers: int, progress: bool) -> List[PieceResult]:
    bar = _progress_bar(sum(p.size for p in pieces), progress)
    tasks = list(enumerate(pieces))
    results: List[PieceResult] = []
    try:
        if workers <= 0:
            worker = PieceTokenizer(job)
            for task in tasks:
                results.append(worker.write(*task))
                bar.update(task[1].size)
        else:
            with multiprocessing.get_context("spawn").Pool(workers, initializer=init_worker, initargs=(job,)) as pool:
                for result in pool.imap_unordered(run_piece, tasks):
                    results.append(result)
                    bar.update(result.size)
    finally:
        bar.close()
    return sorted(results, key=lambda r: r.index)


class _NoBar:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


def _progress_bar(total: int, enabled: bool):
    """A bar on a terminal (none in logs and pipes): bytes of input tokenized."""
    if not enabled:
        return _NoBar()
    try:
        from tqdm import tqdm
    except ImportError:
        return _NoBar()
    return tqdm(total=total, unit="B", unit_scale=True, desc="tokenizing", dynamic_ncols=True, disable=None)


def _hash_sources(sources: Sequence[Source], builtin: bytes, into: Dict[int, str]) -> threading.Thread:
    def work() -> None:
        for i, source in enumerate(sources):
            into[i] = hashlib.sha256(builtin).hexdigest() if source.kind == "builtin" else sha256_file(source.path)

    thread = threading.Thread(target=work, name="dimba-hash-inputs", daemon=True)
    thread.start()
    return thread


def build_manifest(tokenizer: Tokenizer, dtype: str, results: Sequence[PieceResult], sources: Sequence[Source],
                   hashes: Dict[int, str], settings: Dict[str, Any], val_fraction: float) -> Dict[str, Any]:
    documents = [0] * len(sources)
    for result in results:
        for source, count in result.documents:
            documents[source] += count
    for count, source in zip(documents, sources):
        if count == 0:
            raise DataError(source.path, "no text", "an input with text (a non-empty document)")
    total = sum(r.tokens for r in results)
    val = max(1, int(total * val_fraction)) if val_fraction > 0 else 0
    record = {"name": tokenizer.name, "vocab_size": tokenizer.vocab_size, "sha256": tokenizer.sha256,
              "file": TOKENIZER_FILE if tokenizer.sha256 else None}
    return {
        "format": FORMAT, "version": VERSION, "dtype": dtype, "tokenizer": record,
        "tokens": {"train": total - val, "val": val},
        "splits": {"train": [0, total - val], "val": [total - val, total]},
        "shards": [{"file": f"{SHARD_DIR}/{shard_name(r.index)}", "tokens": r.tokens} for r in results if r.tokens],
        "sources": [{**s.describe(), "sha256": hashes[i], "documents": documents[i]} for i, s in enumerate(sources)],
        "settings": settings,
    }


def prepare(inputs: Union[Sequence[str], Sequence[Source]], out: Union[str, Path],
            tokenizer: Optional[TokenizerConfig] = None, val_fraction: float = 0.05, workers: int = 2,
            field: str = "text", overwrite: bool = False, progress: bool = False,
            piece_bytes: int = PIECE_BYTES) -> Prepared:
    """Tokenize `inputs` (paths, or `Source`s) into prepared data at `out`; a piece of
    about `piece_bytes` of input becomes one shard."""
    started = time.perf_counter()
    from dimba.checkpointing.atomic_io import discard, replace_directory, temporary_path, write_json_atomic

    tokenizer = tokenizer or TokenizerConfig()
    if isinstance(val_fraction, bool) or not isinstance(val_fraction, (int, float)) or not 0 <= val_fraction < 0.5:
        raise DataError("--val-fraction", val_fraction, "a number in [0, 0.5)")
    if inputs and all(isinstance(s, Source) for s in inputs):
        sources = list(inputs)
    else:
        sources = expand_inputs([str(s) for s in inputs])
    builtin = builtin_source()[1] if any(s.kind == "builtin" for s in sources) else b""
    out = Path(out).expanduser().absolute()
    settings = settings_of(tokenizer, val_fraction, field)
    existing = check_out(out, sources, settings, overwrite)
    total_bytes = sum(s.size for s in sources)
    if existing is not None:
        return Prepared(out, existing, time.perf_counter() - started, total_bytes, True)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_path(out, tag=".prepare")
    discard(tmp)
    (tmp / SHARD_DIR).mkdir(parents=True)
    try:
        hashes: Dict[int, str] = {}
        hashing = _hash_sources(sources, builtin, hashes)
        pieces = plan_pieces(sources, piece_bytes)
        made = make_tokenizer(tokenizer, sources, pieces, field, builtin, tmp, progress)
        dtype = token_dtype(made.vocab_size)
        job = Job(sources, made.json_text, made.name, dtype, str(tmp / SHARD_DIR), field, builtin)
        results = run_pieces(job, pieces, workers, progress)
        hashing.join()
        manifest = build_manifest(made, dtype, results, sources, hashes, settings, val_fraction)
        write_json_atomic(tmp / MANIFEST, manifest)
        replace_directory(tmp, out)
    except BaseException:
        discard(tmp)
        raise
    return Prepared(out, manifest, time.perf_counter() - started, total_bytes, False)
