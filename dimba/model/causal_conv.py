"""The depthwise causal convolution of every direction of a Mamba-2 mixer.

`nn.Conv1d` wants (batch, channels, length); the mixer's activations lie in memory as
(batch, length, channels), and transposing them costs a copy each way, forward and
backward. Seen as a 2-D image (batch, channels, 1, length), the same memory is in
channels-last layout, which oneDNN's depthwise kernels read in place; the outputs come
out as (batch, directions, length, channels), the layout the scan reads both directions
from. The weights stay the `nn.Conv1d` parameters of the mixer (checkpoints and growth
see no difference); `tests/test_model.py` checks this against `F.conv1d`. The
alternatives tried are in docs/results/speed.md.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor


def causal_conv(seq: Tensor, weights: Sequence[Tensor], biases: Sequence[Tensor]) -> Tensor:
    """out[:, d, t] = biases[d] + sum_k weights[d][:, 0, k] * in_d[:, t - (K-1) + k] (zero before 0).

    seq (batch, length, channels); weights[d] (channels, 1, K), an `nn.Conv1d`'s depthwise
    weight; biases[d] (channels,). Direction 0 reads `seq` forwards, direction 1 (if any)
    reads it reversed, so out[:, 1] is in reversed time, as the backward scan consumes it.
    Returns (batch, directions, length, channels).
    """
    channels, _, K = weights[0].shape
    length = seq.shape[1]
    outs = []
    for d, (weight, bias) in enumerate(zip(weights, biases)):
        inp = seq.flip(1) if d else seq
        image = inp.transpose(1, 2).unsqueeze(2)  # (batch, channels, 1, length): channels-last strides
        out = F.conv2d(image, weight.unsqueeze(2), bias, padding=(0, K - 1), groups=channels)
        outs.append(out[..., :length].squeeze(2).transpose(1, 2))
    return torch.stack(outs, dim=1)
