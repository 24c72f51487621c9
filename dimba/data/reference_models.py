"""Reference lines for a likelihood in bits per byte: uniform, unigram and byte 4-gram models.

A bound of 3 bits per byte means little alone; beside what a unigram over the same tokens and
a smoothed byte 4-gram reach on the same text, a reader can judge it. Both are fit on the
checkpoint's training split and are proper distributions (every symbol gets mass), so their
figures are real code lengths, in the same bits and bytes as the model's bound.

No torch: numpy only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict

import numpy as np

NGRAM_ORDER = 4
DISCOUNT = 0.75
"""Absolute discount of the interpolated n-gram (Ney, Essen & Kneser 1994's usual value)."""


@dataclass
class ReferenceBits:
    """Bits per byte of the reference models on one text."""

    uniform: float
    unigram: float
    byte_4gram: float

    def as_dict(self) -> Dict[str, float]:
        return {"uniform": self.uniform, "unigram": self.unigram, "byte_4gram": self.byte_4gram}


def uniform_bits(tokens: int, vocab_size: int) -> float:
    """Every token equally likely: log2(V) bits each."""
    return tokens * math.log2(vocab_size)


def unigram_bits(train_ids: np.ndarray, eval_ids: np.ndarray, vocab_size: int) -> float:
    """Token frequencies of the training split, add-one smoothed over the vocabulary."""
    counts = np.bincount(np.asarray(train_ids, dtype=np.int64), minlength=vocab_size)[:vocab_size] + 1.0
    log_p = np.log2(counts) - math.log2(counts.sum())
    return float(-log_p[np.asarray(eval_ids, dtype=np.int64)].sum())


def _keys(data: np.ndarray, order: int) -> np.ndarray:
    """The n-grams of `data` (uint8) as integers, first byte most significant."""
    key = np.zeros(len(data) - order + 1, dtype=np.int64)
    for i in range(order):
        key = (key << 8) | data[i:len(data) - order + 1 + i].astype(np.int64)
    return key


class ByteNgram:
    """An interpolated absolute-discounting byte n-gram (order 4 by default), backing off to a
    uniform distribution over the 256 bytes:

        P_n(b | h) = max(c(h b) - D, 0) / c(h) + D * N1+(h .) / c(h) * P_{n-1}(b | h')

    where h' drops h's oldest byte; a context never seen in training gives P_{n-1} alone.
    """

    def __init__(self, train: bytes, order: int = NGRAM_ORDER, discount: float = DISCOUNT) -> None:
        self.order, self.discount = order, discount
        data = np.frombuffer(train, dtype=np.uint8)
        self.grams = []  # per n: (sorted n-gram keys, counts, sorted context keys, context counts, distinct followers)
        for n in range(1, order + 1):
            if len(data) < n:
                self.grams.append(None)
                continue
            keys, counts = np.unique(_keys(data, n), return_counts=True)
            contexts, first = np.unique(keys >> 8, return_index=True)
            context_counts = np.add.reduceat(counts, first)
            followers = np.diff(np.append(first, len(keys)))
            self.grams.append((keys, counts, contexts, context_counts, followers))

    @staticmethod
    def _lookup(sorted_keys: np.ndarray, values: np.ndarray, query: np.ndarray) -> np.ndarray:
        index = np.searchsorted(sorted_keys, query).clip(max=len(sorted_keys) - 1)
        return np.where(sorted_keys[index] == query, values[index], 0)

    def bits(self, text: bytes) -> float:
        """-log2 P(text), each byte given the (up to order - 1) bytes before it in `text`."""
        data = np.frombuffer(text, dtype=np.uint8)
        if len(data) == 0:
            return 0.0
        total = 0.0
        for position_start in range(min(self.order - 1, len(data))):  # the first bytes have shorter contexts
            total += -math.log2(self._prob(data[:position_start + 1], position_start + 1))
        if len(data) >= self.order:
            total += float(-np.log2(self._probs(_keys(data, self.order), self.order)).sum())
        return total

    def _prob(self, prefix: np.ndarray, n: int) -> float:
        return float(self._probs(_keys(prefix[-n:], n), n)[0])

    def _probs(self, keys: np.ndarray, n: int) -> np.ndarray:
        """P_n of the last byte of each n-gram key given its first n - 1 bytes."""
        lower = np.full(len(keys), 1.0 / 256)
        for m in range(1, n + 1):  # from unigrams up
            tables = self.grams[m - 1]
            if tables is None:
                continue
            gram_keys, counts, contexts, context_counts, followers = tables
            query = keys & ((1 << (8 * m)) - 1)  # the last m bytes
            c = self._lookup(gram_keys, counts, query).astype(np.float64)
            ch = self._lookup(contexts, context_counts, query >> 8).astype(np.float64)
            n1 = self._lookup(contexts, followers, query >> 8).astype(np.float64)
            seen = ch > 0
            safe = np.where(seen, ch, 1.0)
            mixed = np.maximum(c - self.discount, 0) / safe + self.discount * n1 / safe * lower
            lower = np.where(seen, mixed, lower)
        return lower


def reference_bits(train_ids: np.ndarray, eval_ids: np.ndarray, train_bytes: bytes, eval_bytes: bytes,
                   vocab_size: int) -> ReferenceBits:
    """Bits per byte of the three references on `eval_*`, fit on `train_*`."""
    size = max(1, len(eval_bytes))
    return ReferenceBits(
        uniform=uniform_bits(len(eval_ids), vocab_size) / size,
        unigram=unigram_bits(train_ids, eval_ids, vocab_size) / size,
        byte_4gram=ByteNgram(train_bytes).bits(eval_bytes) / size,
    )
