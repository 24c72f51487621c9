"""Optimizer state across growth: AdamW whose new entries keep their own step count.

Copying Adam's step count onto entries that were just created skips their bias correction,
so their first update is about sqrt(1/(1-beta2)) times too large. Each entry needs its own
count, but a tensor of counts costs 4 bytes per parameter (120 GB at 30B). The counts have
structure that makes them cheap: an entry exists from the moment both its row and its
column (and so on) exist, so

    count[i, j, ...] = step - max(born_0[i], born_1[j], ...)

where `step` is the tensor's own count and `born_d` the count it had when index i of
dimension d appeared (0 for the original ones). `GrowableAdamW` keeps one `born_d` vector
per dimension (float32, on every rank, the size of that dimension), exactly equivalent to
per-entry counts at a cost of 4 bytes per row and column. It steps plain tensors and FSDP2
DTensor parameters alike, working on each rank's local shard.
"""

from __future__ import annotations

from itertools import chain
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple

import torch
from torch import Tensor, nn
from torch.distributed.tensor import DTensor

from dimba.growth.remap import Remap
from dimba.growth.dtensor_rows import local, local_rows, regrow


def births(state: Dict[str, Any]) -> List[Tensor]:
    """The birth-step vectors of a parameter's state, one per dimension (none in older states)."""
    out: List[Tensor] = []
    while f"born_{len(out)}" in state:
        out.append(state[f"born_{len(out)}"])
    return out


class GrowableAdamW(torch.optim.Optimizer):
    """Decoupled-weight-decay Adam (as torch.optim.AdamW) whose entries may differ in age.

    State per parameter: `step` (a float32 scalar, as torch's AdamW), `exp_avg`,
    `exp_avg_sq`, and `born_0`..`born_{k-1}` (see the module docstring). A `step` of the
    parameter's shape (per-entry counts, as dimba wrote them before) is still stepped.
    """

    def __init__(self, params: Iterable, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0.01) -> None:
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay))
        self._any_births: Dict[int, Tuple[Tuple[Tensor, ...], bool]] = {}  # id(param) -> (births, any younger)

    @staticmethod
    def fresh_state(p: Tensor) -> Dict[str, Tensor]:
        device = local(p).device
        state = {"step": torch.zeros((), dtype=torch.float32),
                 "exp_avg": torch.zeros_like(p, memory_format=torch.preserve_format),
                 "exp_avg_sq": torch.zeros_like(p, memory_format=torch.preserve_format)}
        state.update({f"born_{d}": torch.zeros(n, dtype=torch.float32, device=device) for d, n in enumerate(p.shape)})
        return state

    @torch.no_grad()
    def step(self, closure: Optional[Callable[[], Tensor]] = None) -> Optional[Tensor]:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    if not self.state[p]:
                        self.state[p] = self.fresh_state(p)
                    self._update(p, self.state[p], group)
        if len(self._any_births) > 2 * len(self.state):  # forget parameters grown away
            live = {id(p) for p in self.state}
            self._any_births = {k: v for k, v in self._any_births.items() if k in live}
        return loss

    def _update(self, p: Tensor, state: Dict[str, Any], group: Dict[str, Any]) -> None:
        beta1, beta2 = group["betas"]
        lr, eps, weight_decay = group["lr"], group["eps"], group["weight_decay"]
        param, grad = local(p), local(p.grad)
        exp_avg, exp_avg_sq = local(state["exp_avg"]), local(state["exp_avg_sq"])
        step = state["step"]
        if step.dim() and local(step).device != param.device:  # loaded to the CPU: move it once
            state["step"] = step = step.to(param.device)
        step += 1
        if weight_decay:
            param.mul_(1 - lr * weight_decay)
        exp_avg.lerp_(grad, 1 - beta1)
        exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        if step.dim():  # per-entry counts; float32 even for bf16 weights (0.999**t is 1.0 in bf16)
            t = local(step).to(dtype=torch.float32)
            bias1, bias2 = 1 - beta1**t, 1 - beta2**t
        elif self._has_births(p, state):
            bias1, bias2 = (_entry_correction(p, state, beta) for beta in (beta1, beta2))
        else:
            t = float(step)
            bias1, bias2 = 1 - beta1**t, 1 - beta2**t
            denom = (exp_avg_sq / bias2).sqrt_().add_(eps)
            param.addcdiv_(exp_avg, denom, value=-lr / bias1)
            return
        work = torch.promote_types(param.dtype, torch.float32)  # bf16 entries are corrected in float32
        denom = (exp_avg_sq.to(work) / bias2).sqrt_().add_(eps)
        param.add_((exp_avg.to(work) / bias1 / denom).mul_(-lr).to(param.dtype))

    def _has_births(self, p: Tensor, state: Dict[str, Any]) -> bool:
        """Whether any entry is younger than the tensor (one device sync per loaded or grown tensor)."""
        born = tuple(births(state))
        if not born:
            return False
        cached = self._any_births.get(id(p))
        if cached is None or len(cached[0]) != len(born) or any(a is not b for a, b in zip(cached[0], born)):
            cached = (born, any(bool(b.any()) for b in born))
            self._any_births[id(p)] = cached
        return cached[1]

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        """As torch's, but birth steps stay float32 (torch casts state to the parameter's dtype,
        and bf16 cannot hold a step such as 6001)."""
        saved = {pid: {k: v for k, v in s.items() if k.startswith("born_")} for pid, s in state_dict["state"].items()}
        saved_ids = chain.from_iterable(g["params"] for g in state_dict["param_groups"])
        super().load_state_dict(state_dict)
        params = chain.from_iterable(g["params"] for g in self.param_groups)
        for pid, p in zip(saved_ids, params):
            for key, value in saved.get(pid, {}).items():
                self.state[p][key] = value.to(device=local(p).device, dtype=torch.float32)
        self._any_births.clear()


def _entry_correction(p: Tensor, state: Dict[str, Any], beta: float) -> Tensor:
    """1 - beta**count per local entry: the minimum over dimensions of the per-row/column
    corrections (count = step - max_d born_d and the correction grows with the count).

    Each vector is computed whole on every rank, then cut to the local rows, so a sharded
    step computes bit for bit what the unsharded one does."""
    t = float(state["step"])
    out: Optional[Tensor] = None
    for d, born in enumerate(births(state)):
        vector = (1 - torch.pow(beta, t - born.double())).float()
        if d == 0 and isinstance(p, DTensor):
            start, stop = local_rows(p)
            vector = vector[start:stop]
        vector = vector.view([-1 if k == d else 1 for k in range(p.dim())])
        out = vector if out is None else torch.minimum(out, vector)
    return out


def entry_steps(optimizer: torch.optim.Optimizer, p: Tensor) -> Tensor:
    """The step count of every entry of `p` (whole, gathered if sharded): for tests and inspection."""
    state = optimizer.state[p]
    step = state["step"]
    if step.dim():
        return step.full_tensor() if isinstance(step, DTensor) else step
    youngest = torch.zeros(p.shape, dtype=torch.float32, device=local(p).device)
    for d, born in enumerate(births(state)):
        youngest = torch.maximum(youngest, born.view([-1 if k == d else 1 for k in range(p.dim())]))
    return float(step) - youngest


def _carry_state(state: Dict[str, Any], remap: Remap) -> Dict[str, Any]:
    """Old moments at their new positions (rescaled with a rescaled gain), zeros elsewhere;
    new rows and columns born now.

    A gain multiplied by s sees gradients divided by s, so the first moment is divided by
    s and the second by s**2 to stay consistent with the gradients still to come.
    """
    if remap.index is None and remap.scale == 1.0:
        return state
    carried = dict(state)
    for key, divisor in (("exp_avg", remap.scale), ("exp_avg_sq", remap.scale**2)):
        if key in state:
            carried[key] = regrow(state[key], remap.new,
                                  lambda whole, d=divisor: remap.embed(whole if d == 1.0 else whole / d))
    step = state.get("step")
    if step is None or remap.index is None:
        return carried
    if step.dim():  # per-entry counts (older checkpoints)
        carried["step"] = regrow(step, remap.new, lambda full: remap.embed(full.float()))
        return carried
    now, device = float(step), local(remap.new).device
    for d, positions in enumerate(remap.index):
        old = state.get(f"born_{d}")
        if old is None:
            old = torch.zeros(remap.old_shape[d], dtype=torch.float32, device=device)
        if positions is not None:
            old = old.new_full((remap.new.shape[d],), now).index_copy_(0, positions.to(old.device), old)
        carried[f"born_{d}"] = old
    return carried


def transfer_optimizer_state(
    optimizer: torch.optim.Optimizer,
    remaps: Dict[nn.Parameter, Remap],
    model: nn.Module,
    group_for: Callable[[nn.Parameter], int],
) -> None:
    """Point `optimizer` at the grown model's parameters, in place.

    The optimizer object (and so the LR scheduler holding it) stays the same: its param
    groups swap old parameters for their successors, moments move with them (gathered
    and re-sharded one tensor at a time when they are DTensors), and parameters that are
    entirely new join the group `group_for` names, with no state. Each group ends in the
    model's parameter order, the order a freshly built optimizer has, so a checkpoint of
    the grown optimizer loads into one built after a resume.
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
