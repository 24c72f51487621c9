"""Linear warmup then cosine decay, as a picklable-free callable (its state is plain data)."""

from __future__ import annotations

import math


class WarmupCosine:
    """LR multiplier for LambdaLR. An object with plain attributes, so LambdaLR's
    state_dict stores them and a resumed run continues the same schedule."""

    def __init__(self, warmup_steps: int, total_steps: int, min_ratio: float = 0.1) -> None:
        self.warmup_steps = int(warmup_steps)
        self.total_steps = max(int(total_steps), 1)
        self.min_ratio = float(min_ratio)

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / (self.warmup_steps + 1)
        span = max(self.total_steps - self.warmup_steps, 1)
        progress = min((step - self.warmup_steps) / span, 1.0)
        return self.min_ratio + (1 - self.min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
