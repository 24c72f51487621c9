"""Crash-safe writes: a failed write leaves neither a partial file nor a temporary."""

from __future__ import annotations

import json

import pytest

from dimba.checkpointing import atomic_io


def test_write_publishes_only_complete_files(tmp_path):
    target = tmp_path / "a.json"
    atomic_io.write_json_atomic(target, {"x": 1})
    assert json.loads(target.read_text()) == {"x": 1}
    assert list(atomic_io.stale_temporaries(tmp_path)) == []


def test_a_failing_writer_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "a.bin"
    target.write_bytes(b"old")

    def fail(tmp):
        tmp.write_bytes(b"half")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError):
        atomic_io.write_atomic(target, fail)
    assert target.read_bytes() == b"old"
    assert list(tmp_path.iterdir()) == [target]


def test_link_gives_a_second_name_without_copying(tmp_path):
    source = tmp_path / "a.bin"
    atomic_io.write_atomic(source, lambda tmp: tmp.write_bytes(b"data"))
    atomic_io.link_or_copy_atomic(source, tmp_path / "b.bin")
    assert (tmp_path / "b.bin").read_bytes() == b"data"
    assert (tmp_path / "b.bin").stat().st_ino == source.stat().st_ino


def test_stale_temporaries_are_removed(tmp_path):
    (tmp_path / ".x.pt.tmp").write_bytes(b"")
    (tmp_path / "keep.pt").write_bytes(b"")
    assert [p.name for p in atomic_io.remove_stale_temporaries(tmp_path)] == [".x.pt.tmp"]
    assert [p.name for p in tmp_path.iterdir()] == ["keep.pt"]
