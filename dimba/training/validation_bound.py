"""`val/bpb`: the likelihood bound on a fixed subset of the validation split, during training.

The subset (evenly spaced windows of the validation split) and the noise (timesteps and
Gaussian draws from one fixed seed) are the same at every validation, so successive values
differ only by the model. The subset is a sample of the split, so `val/bpb_se` is the
standard error over sequences (sampling and Monte Carlo together). Where a few windows of
the split carry most of the bits, a subset that misses them reports less than `dimba eval`
of the whole split, by more than an error computed from the windows it has can show.
"""

from __future__ import annotations

from typing import Any, Optional

import torch

from dimba.diffusion.bound import BitsPerByte, bits_per_byte
from dimba.objectives import sequence_bound

NOISE_SEED = 20_221_206


def validation_windows(val_set: Any, count: int) -> Optional[torch.Tensor]:
    """`count` windows spread evenly over the validation split (all of them if it holds fewer),
    as one (n, seq_len) tensor; None if the split is empty."""
    total = len(val_set) if val_set is not None else 0
    if total == 0 or count <= 0:
        return None
    picks = torch.linspace(0, total - 1, steps=min(count, total)).round().long().unique()
    return torch.stack([val_set[int(i)] for i in picks])


class ValidationBound:
    """The bound of one fixed subset, with one fixed noise, for any model that can denoise it."""

    def __init__(self, windows: torch.Tensor, samples: int, tokenizer: Any, whole_split: bool) -> None:
        self.windows = windows
        self.samples = samples
        self.whole_split = whole_split
        self.byte_counts = torch.tensor([tokenizer.byte_length(w.tolist()) for w in windows], dtype=torch.float64)

    def evaluate(self, model: Any) -> BitsPerByte:
        generator = torch.Generator().manual_seed(NOISE_SEED)
        bound = sequence_bound(model, self.windows, self.samples, generator)
        tokens = torch.full((self.windows.shape[0],), self.windows.shape[1])
        return bits_per_byte(bound, tokens, self.byte_counts, sampled=not self.whole_split)
