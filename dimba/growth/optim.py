"""Optimizer state across growth: AdamW whose new entries keep their own step count.

Copying Adam's step count onto entries that were just created skips their bias correction,
so their first update is about sqrt(1/(1-beta2)) times too large. `GrowableAdamW` accepts
a per-entry `step` tensor; `transfer_optimizer_state` writes one (old entries keep their
count, new entries start at 0) while it moves every moment into the grown tensors.
"""

from __future__ import annotations

from typing import Callable, Dict, Iterable, Optional

import torch
from torch import Tensor, nn

from dimba.growth.operators import Remap


class GrowableAdamW(torch.optim.Optimizer):
    """Decoupled-weight-decay Adam (as torch.optim.AdamW) where `state["step"]` may be a
    tensor of the parameter's shape, giving each entry its own bias correction."""

    def __init__(self, params: Iterable, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0.01) -> None:
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure: Optional[Callable[[], Tensor]] = None) -> Optional[Tensor]:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            lr, eps, weight_decay = group["lr"], group["eps"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["step"] = torch.zeros((), dtype=torch.float32)
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                step, exp_avg, exp_avg_sq = state["step"], state["exp_avg"], state["exp_avg_sq"]
                if step.dim() and step.device != p.device:  # loaded to the CPU: move it once
                    state["step"] = step = step.to(p.device)
                step += 1
                if weight_decay:
                    p.mul_(1 - lr * weight_decay)
                exp_avg.lerp_(p.grad, 1 - beta1)
                exp_avg_sq.mul_(beta2).addcmul_(p.grad, p.grad, value=1 - beta2)
                if step.dim() == 0:
                    t = float(step)
                    bias1, bias2 = 1 - beta1**t, 1 - beta2**t
                    denom = (exp_avg_sq / bias2).sqrt_().add_(eps)
                    p.addcdiv_(exp_avg, denom, value=-lr / bias1)
                else:  # per-entry counts; float32 even for bf16 weights (0.999**t is 1.0 in bf16)
                    t = step.to(device=p.device, dtype=torch.float32)
                    bias1, bias2 = 1 - beta1**t, 1 - beta2**t
                    denom = (exp_avg_sq.float() / bias2).sqrt_().add_(eps)
                    p.add_((exp_avg.float() / bias1 / denom).mul_(-lr).to(p.dtype))
        return loss


def _carry_state(state: Dict[str, Tensor], remap: Remap) -> Dict[str, Tensor]:
    """Old moments at their new positions (rescaled with a rescaled gain), zeros elsewhere.

    A gain multiplied by s sees gradients divided by s, so the first moment is divided by
    s and the second by s**2 to stay consistent with the gradients still to come.
    """
    carried = dict(state)
    s = remap.scale
    if "exp_avg" in state:
        carried["exp_avg"] = remap.embed(state["exp_avg"] / s)
    if "exp_avg_sq" in state:
        carried["exp_avg_sq"] = remap.embed(state["exp_avg_sq"] / (s * s))
    step = state.get("step")
    if step is not None and remap.index is not None:
        per_entry = torch.as_tensor(step, dtype=torch.float32).expand(remap_old_shape(remap)).to(remap.new.device)
        carried["step"] = remap.embed(per_entry)
    return carried


def remap_old_shape(remap: Remap) -> torch.Size:
    return torch.Size(len(i) if i is not None else n for i, n in zip(remap.index, remap.new.shape))


def transfer_optimizer_state(
    optimizer: torch.optim.Optimizer,
    remaps: Dict[nn.Parameter, Remap],
    model: nn.Module,
    group_for: Callable[[nn.Parameter], int],
) -> None:
    """Point `optimizer` at the grown model's parameters, in place.

    The optimizer object (and so the LR scheduler holding it) stays the same: its param
    groups swap old parameters for their successors, moments move with them, and
    parameters that are entirely new join the group `group_for` names, with no state.
    Each group ends in the model's parameter order, the order a freshly built optimizer
    has, so a checkpoint of the grown optimizer loads into one built after a resume.
    """
    placed = set()
    for group in optimizer.param_groups:
        successors = []
        for old in group["params"]:
            remap = remaps.get(old)
            if remap is None:
                raise ValueError("optimizer holds a parameter the growth operator did not account for")
            successors.append(remap.new)
            placed.add(remap.new)
            state = optimizer.state.pop(old, None)
            if state:
                optimizer.state[remap.new] = _carry_state(state, remap)
        group["params"] = successors
    order = {param: i for i, param in enumerate(model.parameters())}
    for param in order:
        if param.requires_grad and param not in placed:
            optimizer.param_groups[group_for(param)]["params"].append(param)
    for group in optimizer.param_groups:
        group["params"].sort(key=lambda p: order.get(p, len(order)))
