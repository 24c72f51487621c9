"""Training a byte-level BPE tokenizer offline with Hugging Face `tokenizers`.

Byte-level (GPT-2 style): the 256 byte symbols are the base alphabet, so every text
encodes without an unknown token and decodes back exactly. No normalizer and no special
tokens: what goes in comes out. The same texts in the same order give the same
tokenizer.json, byte for byte (the trainer breaks ties deterministically).
"""

from __future__ import annotations

from typing import Iterable

from dimba.data.tokenizer import HFTokenizer


def new_byte_level_bpe():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tokenizer.decoder = decoders.ByteLevel()
    return tokenizer


def train_bpe(texts: Iterable[str], vocab_size: int) -> HFTokenizer:
    """A BPE tokenizer of at most `vocab_size` tokens learnt from `texts` (a small text
    runs out of merges earlier: the result's `vocab_size` is what it really holds)."""
    from tokenizers import pre_tokenizers, trainers

    tokenizer = new_byte_level_bpe()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=2, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), special_tokens=[])
    tokenizer.train_from_iterator(texts, trainer)
    return HFTokenizer.from_str(tokenizer.to_str(), "bpe")
