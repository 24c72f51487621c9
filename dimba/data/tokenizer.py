"""Tokenizers: bytes (vocabulary 256, nothing to train) and Hugging Face `tokenizers` ones
(a BPE trained here, or a local pretrained tokenizer.json).

Both answer `encode(text)` with a torch tensor (what sampling takes) and `encode_array` /
`decode` without torch, so `dimba data prepare` and its workers never import it.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Iterable, List, Mapping, Optional, Sequence, Union

import numpy as np

from dimba.data.config import BYTE_VOCAB, TokenizerConfig, check_vocab_size, pretrained_file
from dimba.errors import ConfigError

SEPARATOR = "\n"
"""Between documents (files, JSON lines, parquet rows), as between files before."""


def _as_torch(ids: Sequence[int]):
    import torch

    return torch.tensor(list(ids), dtype=torch.long)


class ByteTokenizer:
    """Every byte a token: any file trains (even invalid UTF-8) and its size is its token count."""

    name = "bytes"
    vocab_size = BYTE_VOCAB
    path: Optional[str] = None
    sha256: Optional[str] = None
    json_text: Optional[str] = None

    def encode(self, text: str):
        import torch

        data = text.encode("utf-8")
        if not data:  # frombuffer refuses an empty buffer
            return torch.zeros(0, dtype=torch.long)
        return torch.frombuffer(bytearray(data), dtype=torch.uint8).long()

    def encode_ids(self, text: str) -> List[int]:
        return list(text.encode("utf-8"))

    def encode_array(self, texts: Sequence[str]) -> np.ndarray:
        return np.frombuffer("".join(texts).encode("utf-8"), dtype=np.uint8).astype(np.int64)

    def decode(self, ids: Iterable[int]) -> str:
        return bytes(int(i) for i in ids).decode("utf-8", errors="replace")

    def byte_length(self, ids: Sequence[int]) -> int:
        """Bytes of text the ids stand for (the denominator of bits per byte): one each."""
        return len(ids)


class HFTokenizer:
    """A Hugging Face `tokenizers.Tokenizer` and the exact tokenizer.json it came from."""

    def __init__(self, tokenizer: Any, name: str, json_text: str, path: Optional[str] = None) -> None:
        self.tokenizer = tokenizer
        self.name = name
        self.json_text = json_text
        self.path = path
        self.sha256 = hashlib.sha256(json_text.encode("utf-8")).hexdigest()
        self.vocab_size = int(tokenizer.get_vocab_size(with_added_tokens=True))

    @classmethod
    def from_str(cls, json_text: str, name: str, path: Optional[str] = None) -> "HFTokenizer":
        from tokenizers import Tokenizer

        return cls(Tokenizer.from_str(json_text), name, json_text, path)

    @classmethod
    def from_file(cls, path: Union[str, Path], name: str, key: str = "tokenizer.path") -> "HFTokenizer":
        path = Path(path)
        try:
            json_text = path.read_text(encoding="utf-8")
            return cls.from_str(json_text, name, str(path.resolve()))
        except Exception as exc:  # tokenizers raises plain Exception for a malformed file
            raise ConfigError(key, str(path), f"a Hugging Face tokenizer.json ({type(exc).__name__}: "
                                              f"{str(exc).splitlines()[0] if str(exc) else ''})") from None

    def save(self, path: Path) -> None:
        from dimba.checkpointing.atomic_io import write_atomic

        write_atomic(Path(path), lambda tmp: Path(tmp).write_text(self.json_text, encoding="utf-8"))

    def encode(self, text: str):
        return _as_torch(self.encode_ids(text))

    def encode_ids(self, text: str) -> List[int]:
        return list(self.tokenizer.encode(text, add_special_tokens=False).ids)

    def encode_array(self, texts: Sequence[str]) -> np.ndarray:
        """Ids of the texts, concatenated. Each text is encoded on its own (they are cut at
        line ends), so the result depends on the input alone, not on how work was split."""
        if not texts:
            return np.zeros(0, dtype=np.int64)
        encode = getattr(self.tokenizer, "encode_batch_fast", self.tokenizer.encode_batch)
        encodings = encode(list(texts), add_special_tokens=False)
        return np.concatenate([np.asarray(e.ids, dtype=np.int64) for e in encodings])

    def decode(self, ids: Iterable[int]) -> str:
        return self.tokenizer.decode([int(i) for i in ids], skip_special_tokens=False)

    def byte_length(self, ids: Sequence[int]) -> int:
        """UTF-8 bytes of the decoded text (the denominator of bits per byte). Exact for a
        whole text; a window cut inside a character counts it as the replacement character."""
        return len(self.decode(ids).encode("utf-8"))


Tokenizer = Union[ByteTokenizer, HFTokenizer]


def as_tokenizer_config(config: Union[TokenizerConfig, Mapping[str, Any], None]) -> TokenizerConfig:
    if config is None:
        return TokenizerConfig()
    if isinstance(config, TokenizerConfig):
        return config
    return TokenizerConfig(**{k: v for k, v in dict(config).items() if not str(k).startswith("_")})


def load_tokenizer(config: Union[TokenizerConfig, Mapping[str, Any], None]) -> Tokenizer:
    """The tokenizer a config names, where nothing has to be trained (bytes, pretrained)."""
    config = as_tokenizer_config(config)
    if config.name == "bytes":
        return ByteTokenizer()
    if config.name == "bpe":
        raise ConfigError("tokenizer.name", "bpe", "bytes | pretrained here: a bpe tokenizer is trained by "
                                                   "`dimba data prepare` (or the data module) on the training text")
    tokenizer = HFTokenizer.from_file(pretrained_file(config.path), "pretrained")
    if config.vocab_size is not None and config.vocab_size != tokenizer.vocab_size:
        raise ConfigError("tokenizer.vocab_size", config.vocab_size,
                          f"{tokenizer.vocab_size} (the vocabulary of {config.path}) or null")
    return tokenizer


def checked_vocab_size(value: Any, key: str = "--vocab-size") -> int:
    """`--vocab-size` from the command line: its text must be a whole number >= 256."""
    try:
        number = int(value, 10) if isinstance(value, str) else value
    except ValueError:
        number = value
    return check_vocab_size(number, key)
