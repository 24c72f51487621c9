"""`dimba data prepare`: a user turns text, JSON lines and parquet into token shards, runs it
again (nothing happens), changes an input (refused unless --overwrite), and every bad input
stops with one `dimba: error:` line naming the file or option, the value and what is accepted."""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from dimba.cli.main import main
from dimba.data.format import read_manifest

LINES = [f"line {i}: the quick brown fox jumps over the lazy dog {i * i}.\n" for i in range(300)]


def dimba(capsys, *args: str):
    code = main(["data", "prepare", *args, "--quiet"])
    out, err = capsys.readouterr()
    return code, out, err


def stream(directory: Path) -> np.ndarray:
    manifest = read_manifest(directory)
    return np.concatenate([np.fromfile(directory / s["file"], dtype=manifest["dtype"]) for s in manifest["shards"]])


@pytest.fixture
def corpus(tmp_path):
    root = tmp_path / "corpus"
    (root / "sub").mkdir(parents=True)
    (root / "a.txt").write_text("".join(LINES[:100]))
    (root / "sub" / "b.md").write_text("".join(LINES[100:200]))
    (root / "c.jsonl").write_text("".join(json.dumps({"text": line, "id": i}) + "\n" for i, line in enumerate(LINES[200:])))
    (root / "logo.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" * 4)  # not text: a directory skips it
    return root


def test_prepare_a_directory_with_bytes_writes_shards_and_a_manifest(tmp_path, corpus, capsys):
    out = tmp_path / "prepared"
    code, stdout, err = dimba(capsys, str(corpus), "--out", str(out), "--workers", "0", "--val-fraction", "0.1")
    assert code == 0, err
    assert stdout.startswith(f"{out}: 3 file(s)") and "train +" in stdout and "MB/s" in stdout
    manifest = read_manifest(out)
    sources = manifest["sources"]
    assert [Path(s["path"]).name for s in sources] == ["a.txt", "c.jsonl", "b.md"]  # sorted walk, files first
    for source in sources:
        data = Path(source["path"]).read_bytes()
        assert source["bytes"] == len(data) and source["sha256"] == hashlib.sha256(data).hexdigest()
    assert [s["documents"] for s in sources] == [1, 100, 1]
    # Documents joined by a newline, JSON lines by their text field.
    expected = "\n".join(["".join(LINES[:100]), *LINES[200:], "".join(LINES[100:200])]).encode()
    tokens = stream(out)
    assert manifest["dtype"] == "uint8" and bytes(tokens.tobytes()) == expected
    assert manifest["tokens"] == {"train": len(expected) - int(len(expected) * 0.1), "val": int(len(expected) * 0.1)}
    assert manifest["tokenizer"] == {"name": "bytes", "vocab_size": 256, "sha256": None, "file": None}


def test_a_directory_of_many_small_files_reads_every_text_file_and_packs_them_into_few_shards(tmp_path, capsys):
    """Debian's /usr/share/common-licenses: text files with no suffix, hundreds of them, a few
    KB each. Every text file is read (a binary one is not); small files share shards."""
    root = tmp_path / "licenses"
    root.mkdir()
    texts = [f"Licence {i}: permission is hereby granted, free of charge.\n" * (5 + i) for i in range(40)]
    for i, text in enumerate(texts):
        (root / f"LICENSE-{i:02d}").write_text(text)  # no suffix
    (root / "archive").write_bytes(b"\x1f\x8b\x08\x00" + bytes(range(256)))  # gzip-like: skipped
    out = tmp_path / "prepared"
    code, stdout, err = dimba(capsys, str(root), "--out", str(out), "--workers", "0", "--val-fraction", "0.1")
    assert code == 0, err
    manifest = read_manifest(out)
    assert [Path(s["path"]).name for s in manifest["sources"]] == [f"LICENSE-{i:02d}" for i in range(40)]
    assert [s["documents"] for s in manifest["sources"]] == [1] * 40
    assert len(manifest["shards"]) == 1  # 40 files, one shard
    assert bytes(stream(out).tobytes()) == "\n".join(texts).encode()


def test_packing_small_files_changes_no_token(tmp_path):
    """The token stream is the files' documents in order, however the files share shards."""
    from dimba.data.prepare import prepare

    root = tmp_path / "small"
    root.mkdir()
    for i in range(12):
        (root / f"part{i:02d}.txt").write_text(f"document {i}\n" * (i + 1))
    streams = {}
    for piece_bytes in (1, 200, 1 << 20):  # every line its own shard, a few files per shard, all in one
        out = tmp_path / f"out-{piece_bytes}"
        prepare([str(root)], out, workers=0, piece_bytes=piece_bytes)
        streams[piece_bytes] = bytes(stream(out).tobytes())
        assert sum(s["tokens"] for s in read_manifest(out)["shards"]) == len(streams[piece_bytes])
    assert streams[1] == streams[200] == streams[1 << 20]
    shards = {b: len(read_manifest(tmp_path / f"out-{b}")["shards"]) for b in streams}
    assert shards[1] > 12 > shards[200] > 1 == shards[1 << 20]


def test_bpe_writes_its_tokenizer_beside_the_shards_and_workers_change_nothing(tmp_path, corpus, capsys):
    shards = {}
    for workers in ("0", "2"):
        out = tmp_path / f"bpe-{workers}"
        code, _, err = dimba(capsys, str(corpus / "a.txt"), str(corpus / "c.jsonl"), "--out", str(out),
                             "--tokenizer", "bpe", "--vocab-size", "400", "--workers", workers)
        assert code == 0, err
        shards[workers] = stream(out)
        manifest = read_manifest(out)
        assert manifest["dtype"] == "uint16" and 256 < manifest["tokenizer"]["vocab_size"] <= 400
        assert manifest["tokenizer"]["sha256"] == hashlib.sha256((out / "tokenizer.json").read_bytes()).hexdigest()
    np.testing.assert_array_equal(shards["0"], shards["2"])
    from dimba.data.records import prepared_tokenizer

    text = prepared_tokenizer(tmp_path / "bpe-2").decode(shards["2"].tolist())
    assert text == "\n".join(["".join(LINES[:100]), *LINES[200:]])


def test_parquet_and_globs(tmp_path, capsys):
    pa = pytest.importorskip("pyarrow")  # in the dev extra: CI has it
    import pyarrow.parquet as pq

    table = pa.table({"body": ["first row\n", "", "second row"], "n": [1, 2, 3]})
    pq.write_table(table, tmp_path / "rows.parquet", row_group_size=2)
    (tmp_path / "x1.txt").write_text("one")
    (tmp_path / "x2.txt").write_text("two")
    out = tmp_path / "prepared"
    code, _, err = dimba(capsys, str(tmp_path / "rows.parquet"), str(tmp_path / "x*.txt"), "--out", str(out),
                         "--field", "body", "--workers", "0")
    assert code == 0, err
    assert stream(out).tobytes() == b"first row\n\nsecond row\none\ntwo"
    assert [s["documents"] for s in read_manifest(out)["sources"]] == [2, 1, 1]
    code, _, err = dimba(capsys, str(tmp_path / "rows.parquet"), "--out", str(tmp_path / "other"), "--workers", "0")
    assert code == 2 and err == (f"dimba: error: {tmp_path / 'rows.parquet'}: \"columns ['body', 'n']\" is invalid; "
                                 f"accepted: a string column 'text' (another column: --field)\n")


def test_preparing_again_does_nothing_and_other_inputs_need_overwrite(tmp_path, corpus, capsys):
    out = tmp_path / "prepared"
    args = [str(corpus / "a.txt"), "--out", str(out), "--workers", "0"]
    assert dimba(capsys, *args)[0] == 0
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    code, stdout, _ = dimba(capsys, *args)
    assert code == 0 and "nothing to do" in stdout
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == before

    (corpus / "a.txt").write_text("".join(LINES[:50]))
    code, _, err = dimba(capsys, *args)
    assert code == 2 and err.count("\n") == 1
    assert err.startswith(f"dimba: error: --out: '{out}' is invalid; accepted: a new or empty directory, or --overwrite")
    assert "other input files or sizes" in err
    code, _, err = dimba(capsys, *args, "--overwrite")
    assert code == 0 and stream(out).tobytes() == "".join(LINES[:50]).encode()
    assert not list(tmp_path.glob(".*.tmp")), "no temporary directory is left behind"


def test_a_directory_of_other_files_is_never_replaced(tmp_path, corpus, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "thesis.tex").write_text("precious")
    code, _, err = dimba(capsys, str(corpus), "--out", str(out), "--overwrite")
    assert code == 2 and "holds other files, which are never replaced" in err
    assert (out / "thesis.tex").read_text() == "precious"


def bad(tmp_path: Path, name: str, content: bytes) -> str:
    path = tmp_path / name
    path.write_bytes(content)
    return str(path)


@pytest.mark.parametrize("make, extra, expected", [
    (lambda t: bad(t, "empty.txt", b""), [], "dimba: error: {t}/empty.txt: 'an empty file' is invalid; accepted: an input with text"),
    (lambda t: bad(t, "blank.jsonl", b'{"text": ""}\n\n'), [],
     "dimba: error: {t}/blank.jsonl: 'no text' is invalid; accepted: an input with text"),
    (lambda t: bad(t, "docs.jsonl", b'{"text": "ok"}\n{"text": "ok"}\n{"body": "x"}\n'), [],
     "dimba: error: {t}/docs.jsonl line 3: '{{\"body\": \"x\"}}' is invalid; accepted: a JSON object with a string "
     "field 'text' on every line (another field: --field)"),
    (lambda t: bad(t, "broken.jsonl", b'{"text": "ok"}\nnot json\n'), [],
     "dimba: error: {t}/broken.jsonl line 2: 'not json' is invalid; accepted: a JSON object"),
    (lambda t: bad(t, "latin1.txt", "fine\ncaf\xe9\n".encode("latin-1")), ["--tokenizer", "bpe"],
     "dimba: error: {t}/latin1.txt at byte 8: b'\\xe9\\n' is invalid; accepted: UTF-8 text (only --tokenizer bytes takes any bytes)"),
    (lambda t: str(t / "missing.txt"), [], "dimba: error: INPUT: '{t}/missing.txt' is invalid; accepted: an existing file"),
    (lambda t: str(t / "*.nothing"), [], "dimba: error: INPUT: '{t}/*.nothing' is invalid; accepted: an existing file"),
    (lambda t: bad(t, "ok.txt", b"text"), ["--tokenizer", "bpe", "--vocab-size", "100"],
     "dimba: error: --vocab-size: 100 is invalid; accepted: an integer from 256 (the byte alphabet)"),
    (lambda t: bad(t, "ok.txt", b"text"), ["--tokenizer", "bpe", "--vocab-size", "32k"],
     "dimba: error: --vocab-size: '32k' is invalid; accepted: an integer from 256 (the byte alphabet)"),
    (lambda t: bad(t, "ok.txt", b"text"), ["--vocab-size", "1000"],
     "dimba: error: --vocab-size: '1000' is invalid; accepted: nothing with --tokenizer bytes"),
    (lambda t: bad(t, "ok.txt", b"text"), ["--val-fraction", "0.7"],
     "dimba: error: --val-fraction: '0.7' is invalid; accepted: a number between 0 and 0.5"),
    (lambda t: bad(t, "ok.txt", b"text"), ["--workers", "two"],
     "dimba: error: --workers: 'two' is invalid; accepted: a whole number >= 0"),
    (lambda t: bad(t, "ok.txt", b"text"), ["--tokenizer", "gpt2"],
     "dimba: error: --tokenizer: 'gpt2' is invalid; accepted: a local tokenizer.json or a Hugging Face tokenizer "
     "directory holding one (nothing is downloaded)"),
], ids=["empty-file", "jsonl-no-text", "jsonl-field", "jsonl-invalid", "utf8-offset", "missing", "glob-no-match",
        "vocab-small", "vocab-not-int", "vocab-with-bytes", "val-fraction", "workers", "pretrained-hub-name"])
def test_bad_input_is_one_line_naming_file_value_and_what_is_accepted(tmp_path, capsys, make, extra, expected):
    source = make(tmp_path)
    code, stdout, err = dimba(capsys, source, "--out", str(tmp_path / "out"), "--workers", "0", *extra)
    assert code == 2 and stdout == ""
    assert err.startswith(expected.format(t=tmp_path)), err
    assert err.count("\n") == 1
    assert not (tmp_path / "out").exists()


def test_parquet_without_pyarrow_names_the_extra(tmp_path, capsys, monkeypatch):
    path = bad(tmp_path, "rows.parquet", b"PAR1 not really")
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # import pyarrow now raises ImportError
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    code, _, err = dimba(capsys, path, "--out", str(tmp_path / "out"), "--workers", "0")
    assert code == 2
    assert err == (f"dimba: error: {path}: 'a .parquet file' is invalid; accepted: text or .jsonl inputs, "
                   f"or install pyarrow: pip install 'dimba[parquet]'\n")


def test_an_error_in_a_worker_process_is_the_same_one_line(tmp_path, capsys):
    good = bad(tmp_path, "good.txt", b"fine text\n")
    broken = bad(tmp_path, "broken.jsonl", b'{"text": "ok"}\n[1, 2]\n')  # found by a worker: bytes need no training
    code, _, err = dimba(capsys, good, broken, "--out", str(tmp_path / "out"), "--workers", "2")
    assert code == 2 and err.count("\n") == 1
    assert err.startswith(f"dimba: error: {broken} line 2: '[1, 2]' is invalid; accepted: a JSON object")
    assert not list(tmp_path.glob(".*.tmp"))
