"""`data=builtin` and `data=text_files` go through prepared shards (prepared once into the
cache) and still give exactly the sequences and batch order of the in-memory loader they
replaced, which the README's figures were measured with."""

from __future__ import annotations

import hashlib
import sys
import threading
from pathlib import Path

import pytest
import torch

from dimba.data import TextDataModule
from dimba.data.corpus import builtin_corpus
from dimba.data.sampler import EpochShuffleSampler


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DIMBA_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def reference_batches(data: bytes, seq_len: int, batch_size: int, val_fraction: float, seed: int, epoch: int):
    """The loader before prepared shards (commit 1b24b11), inlined: the whole text as an
    int64 tensor, its last share for validation, `torch.randperm` windows per epoch."""
    tokens = torch.frombuffer(bytearray(data), dtype=torch.uint8).long()
    n_val = max(seq_len, int(len(tokens) * val_fraction))
    train, val = tokens[:-n_val], tokens[-n_val:]
    n = len(train) // seq_len
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch)).tolist()
    windows = [train[i * seq_len:(i + 1) * seq_len] for i in order]
    batches = [torch.stack(windows[b:b + batch_size]) for b in range(0, n - n % batch_size, batch_size)]
    vals = [val[i * seq_len:(i + 1) * seq_len] for i in range(len(val) // seq_len)]
    return batches, [torch.stack(vals[b:b + batch_size]) for b in range(0, len(vals), batch_size)]


def batches_of(data: TextDataModule, epoch: int):
    data.setup()
    loader = data.train_dataloader()
    loader.sampler.set_epoch(epoch)
    return list(loader), list(data.val_dataloader())


def assert_same(actual, expected):
    assert len(actual) == len(expected)
    for a, b in zip(actual, expected):
        assert a.dtype == b.dtype == torch.int64 and torch.equal(a, b)


@pytest.mark.parametrize("seq_len, batch_size, val_fraction, seed", [(128, 16, 0.05, 0), (256, 8, 0.1, 3)])
def test_the_builtin_corpus_gives_the_same_batches_as_before(seq_len, batch_size, val_fraction, seed):
    for epoch in (0, 1):
        train, val = batches_of(TextDataModule(seq_len=seq_len, batch_size=batch_size, val_fraction=val_fraction,
                                               seed=seed), epoch)
        ref_train, ref_val = reference_batches(builtin_corpus().encode(), seq_len, batch_size, val_fraction, seed, epoch)
        assert_same(train, ref_train)
        assert_same(val, ref_val)


def test_the_default_run_sees_the_batches_its_readme_figures_came_from():
    if sys.version_info[:2] != (3, 11):
        pytest.skip("the built-in corpus is CPython's own documentation: this digest is of Python 3.11's")
    data = TextDataModule(seq_len=128, batch_size=16, seed=0)  # data=builtin's defaults
    digest = hashlib.sha256()
    for epoch in (0, 1):
        for batch in batches_of(data, epoch)[0]:
            digest.update(batch.numpy().tobytes())
    # Taken from the in-memory loader of commit 1b24b11 before it was replaced.
    assert digest.hexdigest() == "2fcf82d98fc34a3926984c86f63d60828280d1db13a74642ae79f28f06daee43"


def test_text_files_give_the_same_batches_as_before(tmp_path):
    files = [tmp_path / "a.txt", tmp_path / "b.md", tmp_path / "a.txt"]  # a repeat counts twice, as before
    files[0].write_bytes("".join(f"alpha {i} ünïcödé\n" for i in range(500)).encode() + b"\xff raw bytes\n")
    files[1].write_text("".join(f"beta {i}\n" for i in range(700)))
    joined = b"\n".join(f.read_bytes() for f in files)
    train, val = batches_of(TextDataModule(files=[str(f) for f in files], seq_len=64, batch_size=4, seed=2), 0)
    ref_train, ref_val = reference_batches(joined, 64, 4, 0.05, 2, 0)
    assert_same(train, ref_train)
    assert_same(val, ref_val)


def test_text_is_prepared_once_and_again_only_when_a_file_changes(tmp_path, cache, monkeypatch):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("x" * 5000)
    first = TextDataModule(files=[str(corpus)], seq_len=32, batch_size=4)
    first.setup()
    entries = list((cache / "prepared").iterdir())
    assert len(entries) == 1

    import dimba.data.cache as cache_module

    monkeypatch.setattr(cache_module, "prepare", lambda *a, **k: pytest.fail("prepared twice"))
    again = TextDataModule(files=[str(corpus)], seq_len=32, batch_size=4)
    again.setup()
    assert again._directory()[0] == entries[0]
    monkeypatch.undo()
    monkeypatch.setenv("DIMBA_CACHE_DIR", str(cache))

    corpus.write_text("y" * 6000)
    changed = TextDataModule(files=[str(corpus)], seq_len=32, batch_size=4)
    changed.setup()
    assert len(list((cache / "prepared").iterdir())) == 2
    assert set(changed.train_set[0].tolist()) == {ord("y")}


def test_ranks_preparing_at_once_prepare_once(tmp_path, cache, monkeypatch):
    import dimba.data.cache as cache_module

    calls = []
    real = cache_module.prepare

    def counted(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(cache_module, "prepare", counted)
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("z" * 200_000)
    found = []
    threads = [threading.Thread(target=lambda: found.append(cache_module.prepared_text([str(corpus)]))) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(calls) == 1 and len(set(found)) == 1 and len(found) == 4


def test_builtin_with_a_bpe_tokenizer_trains_it_into_the_cache(cache):
    data = TextDataModule(seq_len=64, batch_size=4, tokenizer={"name": "bpe", "vocab_size": 2000})
    assert 256 < data.vocab_size <= 2000
    data.setup()
    text = builtin_corpus()
    assert len(data.train_set.stream) < len(text.encode()) / 3  # about 4.5 bytes a token
    assert data.tokenizer.decode(data.train_set.stream.read(0, 200).tolist()) == text[:len(
        data.tokenizer.decode(data.train_set.stream.read(0, 200).tolist()))]
    assert (Path(data._directory()[0]) / "tokenizer.json").is_file()
    assert data.tokenizer_record["content"]  # small enough to travel inside a checkpoint


def test_the_sampler_yields_the_same_order_in_chunks():
    sampler = EpochShuffleSampler(200_003, seed=4)
    sampler.set_epoch(1)
    expected = torch.randperm(200_003, generator=torch.Generator().manual_seed(4 * 1_000_003 + 1)).tolist()
    assert list(sampler) == expected


def test_text_too_short_for_a_batch_once_tokenized_is_refused_in_one_line(tmp_path):
    from dimba.errors import ConfigError

    corpus = tmp_path / "corpus.txt"
    corpus.write_text("the same few words again and again. " * 200)  # 7,200 bytes, far fewer BPE tokens
    data = TextDataModule(files=[str(corpus)], seq_len=64, batch_size=64, tokenizer={"name": "bpe", "vocab_size": 400})
    with pytest.raises(ConfigError, match=r"^data.seq_len: 64 is invalid; accepted: seq_len\*batch_size at most \d+: "
                                          r"the training text holds \d+ tokens$"):
        data.setup()
