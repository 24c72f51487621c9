"""Input files: which ones (files, directories, globs), cut into pieces, read as documents.

A piece is a byte range of a text or JSON-lines file (cut after a line end) or a run of
parquet row groups. Pieces depend on the files alone, never on the number of workers, so
the prepared tokens are the same however many processes tokenize them.
"""

from __future__ import annotations

import glob
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, List, Sequence, Tuple, Union

from dimba.data.format import DataError

PIECE_BYTES = 16 << 20
SEARCH_BYTES = 1 << 20
DIR_SUFFIXES = (".txt", ".text", ".md", ".rst", ".jsonl", ".parquet")  # read without looking inside
BUILTIN = "<builtin: pydoc_data.topics>"
PARQUET_EXTRA = "pyarrow: pip install 'dimba[parquet]'"


@dataclass(frozen=True)
class Source:
    path: str
    kind: str  # text | jsonl | parquet | builtin
    size: int
    mtime_ns: int

    def describe(self) -> dict:
        return {"path": self.path, "kind": self.kind, "bytes": self.size, "mtime_ns": self.mtime_ns}


@dataclass(frozen=True)
class Piece:
    source: int
    start: int  # bytes (text, jsonl) or row groups (parquet)
    end: int
    size: int  # bytes of input it covers, for progress and sampling
    members: Tuple["Piece", ...] = ()  # a pack of small whole files (then source is the first's)

    @property
    def parts(self) -> Tuple["Piece", ...]:
        """What is read: the piece itself, or each file of a pack in order."""
        return self.members or (self,)


def kind_of(path: Path) -> str:
    suffix = path.suffix.lower()
    return {".jsonl": "jsonl", ".parquet": "parquet"}.get(suffix, "text")


def _source(path: Path, kind: str = "") -> Source:
    stat = path.stat()
    return Source(str(path.resolve()), kind or kind_of(path), stat.st_size, stat.st_mtime_ns)


def looks_like_text(path: Path, probe: int = 8192) -> bool:
    """A file of text whatever its name (Debian's licence texts, READMEs, man pages have no
    suffix): its first bytes hold no NUL and are UTF-8 (a character cut at the end aside)."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(probe)
    except OSError:
        return True  # unreadable: kept, so the user hears why (expand_inputs refuses it in one line)
    if not head or b"\0" in head:
        return False
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        return exc.start >= len(head) - 3 and len(head) == probe
    return True


def _expand_one(name: str) -> List[Path]:
    path = Path(name).expanduser()
    if path.is_file():
        return [path]
    if path.is_dir():
        found = []
        for directory, subdirs, files in os.walk(path):
            subdirs[:] = sorted(d for d in subdirs if not d.startswith("."))
            found += [Path(directory) / f for f in sorted(files) if not f.startswith(".") and (
                Path(f).suffix.lower() in DIR_SUFFIXES or looks_like_text(Path(directory) / f))]
        return found
    if glob.has_magic(name):
        return [Path(p) for p in sorted(glob.glob(os.path.expanduser(name), recursive=True)) if Path(p).is_file()]
    return []


def expand_inputs(inputs: Sequence[str], all_text: bool = False) -> List[Source]:
    """Every input file in order, each once. `all_text` reads every file as plain text and
    keeps repeats (what `data.files` always did, whatever the suffix)."""
    if not inputs:
        raise DataError("INPUT", [], "one or more text, .jsonl or .parquet files, directories or globs")
    sources, seen = [], set()
    for name in inputs:
        paths = _expand_one(str(name))
        if not paths:
            raise DataError("INPUT", str(name), "an existing file, a directory holding text, .jsonl or .parquet "
                                                "files, or a glob that matches files")
        for path in paths:
            resolved = str(path.resolve())
            if resolved in seen and not all_text:
                continue
            seen.add(resolved)
            source = _source(path, "text" if all_text else "")
            if source.size == 0:
                raise DataError(source.path, "an empty file", "an input with text")
            if not os.access(path, os.R_OK):
                raise DataError(source.path, "unreadable", "a file this user can read")
            sources.append(source)
    return sources


def builtin_source() -> Tuple[Source, bytes]:
    from dimba.data.corpus import builtin_corpus

    data = builtin_corpus().encode("utf-8")
    return Source(BUILTIN, "builtin", len(data), 0), data


# ---------------------------------------------------------------------- pieces
def _cut(handle, target: int, size: int, need_line_end: bool) -> int:
    """The first line end at or after `target` (just after it); without one nearby, the
    nearest UTF-8 character boundary (plain text only: a JSON line is never cut)."""
    position = target
    while position < size:
        handle.seek(position)
        block = handle.read(SEARCH_BYTES)
        newline = block.find(b"\n")
        if newline >= 0:
            return position + newline + 1
        if not need_line_end:
            break
        position += len(block)
    if need_line_end or target >= size:
        return size
    handle.seek(target)
    block = handle.read(4)
    back = 0
    while back < len(block) and 0x80 <= block[back] < 0xC0:
        back += 1  # step past continuation bytes to the next character's first byte
    return min(size, target + back)


def byte_pieces(index: int, source: Source, piece_bytes: int) -> List[Piece]:
    pieces, start = [], 0
    with open(source.path, "rb") as handle:
        while start < source.size:
            end = _cut(handle, start + piece_bytes, source.size, source.kind == "jsonl")
            pieces.append(Piece(index, start, end, end - start))
            start = end
    return pieces


def parquet_pieces(index: int, source: Source, piece_bytes: int) -> List[Piece]:
    metadata = open_parquet(source.path).metadata
    pieces, start, size = [], 0, 0
    for group in range(metadata.num_row_groups):
        size += metadata.row_group(group).total_byte_size
        if size >= piece_bytes or group == metadata.num_row_groups - 1:
            pieces.append(Piece(index, start, group + 1, size))
            start, size = group + 1, 0
    if not pieces:
        raise DataError(source.path, "no rows", "an input with text")
    return pieces


def plan_pieces(sources: Sequence[Source], piece_bytes: int = PIECE_BYTES) -> List[Piece]:
    """Large files cut into pieces of about `piece_bytes`; consecutive small text and JSON-lines
    files packed whole into pieces of at most that (one shard each, not one per file)."""
    pieces: List[Piece] = []
    for index, source in enumerate(sources):
        if source.kind == "builtin":
            pieces.append(Piece(index, 0, source.size, source.size))
        elif source.kind == "parquet":
            pieces += parquet_pieces(index, source, piece_bytes)
        else:
            pieces += byte_pieces(index, source, piece_bytes)
    return _packed(pieces, sources, piece_bytes)


def _packed(pieces: Sequence[Piece], sources: Sequence[Source], piece_bytes: int) -> List[Piece]:
    out: List[Piece] = []
    pack: List[Piece] = []

    def flush() -> None:
        if len(pack) == 1:
            out.append(pack[0])
        elif pack:
            out.append(Piece(pack[0].source, 0, 0, sum(p.size for p in pack), tuple(pack)))
        pack.clear()

    for piece in pieces:
        source = sources[piece.source]
        whole_small = source.kind in ("text", "jsonl") and piece.start == 0 and piece.end == source.size \
            and piece.size < piece_bytes
        if not whole_small:
            flush()
            out.append(piece)
            continue
        if pack and sum(p.size for p in pack) + piece.size > piece_bytes:
            flush()
        pack.append(piece)
    flush()
    return out


def spread_sample(pieces: Sequence[Piece], budget_bytes: int) -> List[Piece]:
    """Whole pieces, evenly spread over the input, until `budget_bytes` (all if smaller)."""
    total = sum(p.size for p in pieces)
    if total <= budget_bytes:
        return list(pieces)
    count = max(1, min(len(pieces), round(len(pieces) * budget_bytes / total)))
    return [pieces[(i * len(pieces)) // count] for i in range(count)]


# ---------------------------------------------------------------------- reading
def open_parquet(path: str):
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise DataError(path, "a .parquet file", f"text or .jsonl inputs, or install {PARQUET_EXTRA}") from None
    try:
        return pq.ParquetFile(path)
    except Exception as exc:  # pyarrow's errors have no common public base
        raise DataError(path, "not a parquet file", f"a readable .parquet file ({str(exc).splitlines()[0]})") from None


def read_bytes(path: str, start: int, end: int) -> bytes:
    with open(path, "rb") as handle:
        handle.seek(start)
        return handle.read(end - start)


def decode_utf8(data: bytes, path: str, offset: int) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        at = offset + exc.start
        raise DataError(f"{path} at byte {at}", data[exc.start:exc.start + 4],
                        "UTF-8 text (only --tokenizer bytes takes any bytes)") from None


def _line_number(path: str, offset: int) -> int:
    with open(path, "rb") as handle:
        return handle.read(offset).count(b"\n") + 1


def jsonl_documents(path: str, data: bytes, offset: int, field: str) -> Iterator[str]:
    position = 0
    for line in data.splitlines(keepends=True):
        at, position = offset + position, position + len(line)
        if not line.strip():
            continue
        accepted = f"a JSON object with a string field '{field}' on every line (another field: --field)"
        try:
            record = json.loads(decode_utf8(line, path, at))
        except json.JSONDecodeError:
            record = None
        if not isinstance(record, dict) or not isinstance(record.get(field), str):
            preview = line[:60].decode("utf-8", errors="replace").strip()
            raise DataError(f"{path} line {_line_number(path, at)}", preview, accepted)
        if record[field]:
            yield record[field]


def parquet_documents(path: str, first_group: int, end_group: int, field: str) -> Iterator[str]:
    handle = open_parquet(path)
    names = handle.schema_arrow.names
    if field not in names:
        raise DataError(path, f"columns {names}", f"a string column '{field}' (another column: --field)")
    for group in range(first_group, end_group):
        for row, value in enumerate(handle.read_row_group(group, columns=[field]).column(0).to_pylist()):
            if not isinstance(value, str):
                raise DataError(f"{path} row group {group} row {row}", value, f"a string in column '{field}'")
            if value:
                yield value


Document = Tuple[bool, Union[bytes, str]]  # (starts a new document, its content)


def read_piece(source: Source, piece: Piece, as_text: bool, field: str, builtin: bytes = b"") -> Iterator[Document]:
    """The piece's documents; plain text stays bytes unless `as_text` (a tokenizer of text)."""
    if source.kind == "parquet":
        yield from ((True, text) for text in parquet_documents(source.path, piece.start, piece.end, field))
        return
    data = builtin if source.kind == "builtin" else read_bytes(source.path, piece.start, piece.end)
    if source.kind == "jsonl":
        yield from ((True, text) for text in jsonl_documents(source.path, data, piece.start, field))
        return
    yield piece.start == 0, decode_utf8(data, source.path, piece.start) if as_text else data
