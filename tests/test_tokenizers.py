"""Tokenizers: bytes, a BPE trained here, a local pretrained one; their checkpoint record,
rebuilding from it, and the refusals of bad settings (one line: key, value, accepted)."""

from __future__ import annotations

import json

import pytest

from dimba.data.bpe import train_bpe
from dimba.data.config import TokenizerConfig
from dimba.data.corpus import builtin_corpus
from dimba.data.records import check_resume_tokenizer, tokenizer_from_record, tokenizer_record
from dimba.data.tokenizer import ByteTokenizer, HFTokenizer, load_tokenizer
from dimba.errors import ConfigError

TEXT = builtin_corpus()[:60_000]
SAMPLE = "Unicode too: naïve café — 東京 🚀\n\tdef f(x): return x ** 2\n"


@pytest.fixture(scope="module")
def bpe():
    return train_bpe([TEXT[i:i + 5000] for i in range(0, len(TEXT), 5000)], 1000)


def test_bytes_tokenizer_is_every_utf8_byte():
    tokenizer = ByteTokenizer()
    assert tokenizer.encode_ids("é!") == [0xC3, 0xA9, 0x21]
    assert tokenizer.encode("é!").tolist() == [0xC3, 0xA9, 0x21]
    assert tokenizer.decode(tokenizer.encode_ids(SAMPLE)) == SAMPLE
    assert load_tokenizer(None).vocab_size == 256


def test_bpe_learns_merges_and_decodes_exactly(bpe):
    assert 256 < bpe.vocab_size <= 1000
    ids = bpe.encode_ids(TEXT[:2000])
    assert len(ids) < 2000 / 2  # merges: far fewer tokens than bytes
    assert bpe.decode(ids) == TEXT[:2000]
    assert bpe.decode(bpe.encode_ids(SAMPLE)) == SAMPLE  # byte-level: unseen characters too


def test_bpe_training_is_deterministic(bpe):
    again = train_bpe([TEXT[i:i + 5000] for i in range(0, len(TEXT), 5000)], 1000)
    assert again.json_text == bpe.json_text and again.sha256 == bpe.sha256


def test_a_pretrained_tokenizer_loads_from_its_file_or_its_directory(tmp_path, bpe):
    directory = tmp_path / "my-tokenizer"
    directory.mkdir()
    bpe.save(directory / "tokenizer.json")
    for path in (directory, directory / "tokenizer.json"):
        tokenizer = load_tokenizer(TokenizerConfig(name="pretrained", path=str(path)))
        assert tokenizer.sha256 == bpe.sha256 and tokenizer.encode_ids(SAMPLE) == bpe.encode_ids(SAMPLE)


def test_a_checkpoint_record_is_plain_json_and_rebuilds_the_tokenizer(tmp_path, bpe):
    path = tmp_path / "tokenizer.json"
    bpe.save(path)
    loaded = HFTokenizer.from_file(path, "bpe")
    record = json.loads(json.dumps(tokenizer_record(loaded)))
    assert record["name"] == "bpe" and record["vocab_size"] == bpe.vocab_size
    assert record["sha256"] == bpe.sha256 and record["path"] == str(path.resolve())
    path.unlink()  # the record alone is enough: the file's content is embedded
    assert tokenizer_from_record(record).encode_ids(SAMPLE) == bpe.encode_ids(SAMPLE)
    assert tokenizer_record(ByteTokenizer())["name"] == "bytes"
    assert isinstance(tokenizer_from_record(None), ByteTokenizer)  # checkpoints from before tokenizers


def test_a_record_without_content_needs_its_file_with_the_same_hash(tmp_path, bpe):
    path = tmp_path / "tokenizer.json"
    bpe.save(path)
    record = tokenizer_record(HFTokenizer.from_file(path, "bpe"), embed_limit=0)
    assert "content" not in record
    assert tokenizer_from_record(record).sha256 == bpe.sha256
    path.write_text(bpe.json_text.replace('"merges"', '"merges" '), encoding="utf-8")
    with pytest.raises(ConfigError, match=r"^checkpoint tokenizer: .*sha256") as err:
        tokenizer_from_record(record)
    assert "\n" not in str(err.value)
    path.unlink()
    with pytest.raises(ConfigError, match="not embedded and not at that path"):
        tokenizer_from_record(record)


def test_resuming_with_data_of_another_tokenizer_is_refused(bpe):
    record = tokenizer_record(bpe)
    check_resume_tokenizer(record, dict(record), "/data/prepared")  # same tokenizer: fine
    check_resume_tokenizer(None, tokenizer_record(ByteTokenizer()))
    with pytest.raises(ConfigError) as err:
        check_resume_tokenizer(tokenizer_record(ByteTokenizer()), record, "/data/prepared")
    message = str(err.value)
    assert message.startswith("data.path: '/data/prepared' is invalid; accepted: data prepared with the checkpoint's "
                              "tokenizer (bytes); this data was prepared with bpe, vocabulary")
    assert "\n" not in message
    with pytest.raises(ConfigError, match="checkpoint's tokenizer \\(bpe"):
        check_resume_tokenizer(record, {**record, "sha256": "0" * 64}, "/data/other")


@pytest.mark.parametrize("settings, key, accepted", [
    (dict(name="sentencepiece"), "tokenizer.name", "bytes | bpe | pretrained"),
    (dict(name="bpe", vocab_size=100), "tokenizer.vocab_size", "an integer from 256"),
    (dict(name="bpe", vocab_size="32k"), "tokenizer.vocab_size", "an integer from 256"),
    (dict(name="bpe", vocab_size=True), "tokenizer.vocab_size", "an integer from 256"),
    (dict(name="bpe", sample_mb=0), "tokenizer.sample_mb", "a positive number of megabytes"),
    (dict(name="bytes", vocab_size=1000), "tokenizer.vocab_size", "256 or null with tokenizer=bytes"),
    (dict(name="pretrained"), "tokenizer.path", "a local tokenizer.json"),
    (dict(name="pretrained", path="gpt2"), "tokenizer.path", "nothing is downloaded"),
])
def test_bad_tokenizer_settings_are_refused_in_one_line(settings, key, accepted):
    with pytest.raises(ConfigError) as err:
        TokenizerConfig(**settings)
    assert err.value.key == key and accepted in err.value.accepted and "\n" not in str(err.value)


def test_bpe_vocabulary_defaults_to_32000():
    assert TokenizerConfig(name="bpe").vocab_size == 32000
    assert TokenizerConfig().vocab_size == 256


def test_a_pretrained_file_that_is_not_a_tokenizer_is_refused(tmp_path):
    path = tmp_path / "tokenizer.json"
    path.write_text('{"not": "a tokenizer"}')
    with pytest.raises(ConfigError, match=r"^tokenizer.path: .*a Hugging Face tokenizer.json \(Exception"):
        load_tokenizer(TokenizerConfig(name="pretrained", path=str(path)))
