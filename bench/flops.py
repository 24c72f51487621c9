"""FLOPs of a DIMBA training step and of an evaluation forward, with the depthwise
convolution's backward counted per group.

torch's `FlopCounterMode` formula for a convolution's backward ignores `groups`: it counts
the weight gradient of a depthwise convolution as if the convolution were dense (once per
channel pair), which at DIMBA's sizes is a large share of the "FLOPs" of a step that the
CPU never executes. As `bench/cdlm_eval.py` does, this module counts that backward as two
forwards (input and weight gradient), with the weight already per group. Matmuls and
convolutions are counted (the SSD scan is made of einsums/matmuls); elementwise ops and the
optimizer are not.
"""

from __future__ import annotations

import math
from typing import Callable, Dict

import torch
from torch.utils.flop_counter import FlopCounterMode


def conv_backward_flops(grad_out_shape, x_shape, w_shape, bias, stride, padding, dilation, transposed,
                        output_padding, groups, output_mask, out_shape=None, **kwargs) -> int:
    """A (non-transposed) convolution's input and weight gradients each cost its forward:
    2 * batch * output positions * weight size, with the weight already per group."""
    if transposed:
        raise NotImplementedError("transposed convolutions: DIMBA has none")
    forward = 2 * grad_out_shape[0] * math.prod(grad_out_shape[2:]) * math.prod(w_shape)
    return forward * (int(bool(output_mask[0])) + int(bool(output_mask[1])))


def baddbmm_inplace_flops(self_shape, a_shape, b_shape, *args, out_shape=None, **kwargs) -> int:
    """`Tensor.baddbmm_` (the SSD scan accumulates into its output): FlopCounterMode has a
    formula for `baddbmm` only, and would leave these matmuls out."""
    return 2 * a_shape[0] * a_shape[1] * a_shape[2] * b_shape[2]


CUSTOM_MAPPING: Dict = {torch.ops.aten.convolution_backward: conv_backward_flops,
                        torch.ops.aten.baddbmm_: baddbmm_inplace_flops}


def count_flops(fn: Callable[[], object]) -> int:
    """FLOPs (matmuls and convolutions, depthwise backward per group) of running `fn()`."""
    with FlopCounterMode(display=False, custom_mapping=CUSTOM_MAPPING) as counter:
        fn()
    return int(counter.get_total_flops())


def training_step_flops(model: torch.nn.Module, tokens: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> int:
    """Forward + backward of `model.loss` on one batch (gradients are cleared afterwards)."""
    flops = count_flops(lambda: model.loss(tokens, t=t, noise=noise)["loss"].backward())
    model.zero_grad(set_to_none=True)
    return flops


def forward_flops(model: torch.nn.Module, tokens: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> int:
    """One no-grad forward of `model.loss` (what an evaluation batch costs)."""
    with torch.no_grad():
        return count_flops(lambda: model.loss(tokens, t=t, noise=noise))
