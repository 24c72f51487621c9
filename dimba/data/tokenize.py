"""Turning one piece of input into one shard file: what each worker process does.

Torch-free. A worker loads the tokenizer once (from the tokenizer.json just written, or
none for bytes) and then writes `shards/NNNNNN.bin` for every piece it is handed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from dimba.data.sources import Piece, Source, read_piece
from dimba.data.tokenizer import SEPARATOR, ByteTokenizer, HFTokenizer, Tokenizer

SEGMENT_CHARS = 8192


@dataclass
class Job:
    """Everything a worker needs, sent once: plain data, cheap to pickle."""

    sources: Sequence[Source]
    tokenizer_json: Optional[str]  # None: bytes
    tokenizer_name: str
    dtype: str
    shard_dir: str
    field: str
    builtin: bytes = b""


@dataclass
class PieceResult:
    index: int
    tokens: int
    size: int
    documents: Tuple[Tuple[int, int], ...]  # (source, documents begun in this piece) for each file read


def segments(text: str, limit: int = SEGMENT_CHARS) -> List[str]:
    """`text` cut after line ends into pieces of about `limit` characters (a line longer
    than that is one piece): encoding them one by one keeps memory and time per call small."""
    out, start, n = [], 0, len(text)
    while start < n:
        end = min(n, start + limit)
        if end < n:
            newline = text.rfind("\n", start, end)
            end = newline + 1 if newline >= start else (text.find("\n", end) + 1 or n)
        out.append(text[start:end])
        start = end
    return out


def shard_name(index: int) -> str:
    return f"{index:06d}.bin"


class PieceTokenizer:
    def __init__(self, job: Job) -> None:
        self.job = job
        self.tokenizer: Tokenizer = (ByteTokenizer() if job.tokenizer_json is None
                                     else HFTokenizer.from_str(job.tokenizer_json, job.tokenizer_name))
        self.separator = np.asarray(self.tokenizer.encode_ids(SEPARATOR), dtype=job.dtype)

    def tokens(self, index: int, piece: Piece) -> Tuple[np.ndarray, Dict[int, int]]:
        """The piece's ids (a separator before each document but the corpus's first) and
        how many documents it began in each of its files."""
        job, as_bytes = self.job, isinstance(self.tokenizer, ByteTokenizer)
        parts: List[np.ndarray] = []
        documents: Dict[int, int] = {}
        for part in piece.parts:
            source = job.sources[part.source]
            for new_document, content in read_piece(source, part, not as_bytes, job.field, job.builtin):
                if new_document:
                    if not (index == 0 and not documents):
                        parts.append(self.separator)
                    documents[part.source] = documents.get(part.source, 0) + 1
                if isinstance(content, bytes):
                    ids = np.frombuffer(content, dtype=np.uint8)
                else:
                    ids = self.tokenizer.encode_array(segments(content))
                parts.append(ids.astype(job.dtype, copy=False))
        ids = np.concatenate(parts) if parts else np.zeros(0, dtype=job.dtype)
        return ids, documents

    def write(self, index: int, piece: Piece) -> PieceResult:
        ids, documents = self.tokens(index, piece)
        if len(ids):
            path = Path(self.job.shard_dir) / shard_name(index)
            ids.tofile(path)
        return PieceResult(index, int(len(ids)), piece.size, tuple(sorted(documents.items())))


_WORKER: Optional[PieceTokenizer] = None


def init_worker(job: Job) -> None:
    global _WORKER
    # One thread per worker process: the processes are the parallelism.
    os.environ["RAYON_NUM_THREADS"] = "1"
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    _WORKER = PieceTokenizer(job)


def run_piece(task: Tuple[int, Piece]) -> PieceResult:
    assert _WORKER is not None, "init_worker runs first"
    return _WORKER.write(*task)
