"""Subnormal floats flushed to zero on the CPU: the continuous model's speed there depends on it.

The rounding distribution softmax(x0_hat . E^T) of a model with normalised rows puts
probabilities far below float32's smallest normal number (1.2e-38) on part of the
vocabulary; they and the gradients they touch are subnormal, and x86 cores compute with
subnormals in microcode, many times slower. Measured on a 2-core Xeon, the default
model's backward pass took twice as long (docs/results/speed.md). Flushing them to zero
changes no figure above 1e-38 and nothing on a GPU.

The flag is per thread and inherited by the threads created after it, so it is set where a
process starts its work (the trainers, `train.py`, the `dimba` command), before torch's
intra-op thread pool exists; set later it still covers the main thread.
"""

from __future__ import annotations


def flush_denormals() -> bool:
    """Flush subnormal floats to zero in this thread and the threads it starts; False where
    the CPU cannot (the arithmetic is then IEEE's, only slower)."""
    import torch

    return bool(torch.set_flush_denormal(True))
