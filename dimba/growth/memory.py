"""The memory plan: bytes per rank for each stage of a growing run, before it starts (no torch).

Everything comes from the architecture (`dimba.model.shapes`), so a 30B plan is
instant. Per rank and stage:

- weights, gradients, AdamW moments: whole on every rank (single device, DDP), or sharded
  on the first dimension by the world size (FSDP2: every rank's storage is padded to rank
  0's, so ceil(rows / world) rows of each tensor);
- step counts: GrowableAdamW's birth-step vectors, 4 bytes per row and column of each
  tensor, whole on every rank (the scalar counts live in host memory);
- activations kept for backward by one micro-batch (see `activation_elements`);
- transient: FSDP2 holds two units gathered (the current one and the prefetched next)
  and one unit's unsharded gradients before the reduce-scatter; DDP's gradient buckets
  copy every gradient (Lightning's default gradient_as_bucket_view=False).

A growth event runs after an optimizer step, when activations are freed but the old
gradients still exist (sharded growth frees them first). Its peak is the old stage's
weights, moments, step counts (and gradients, unsharded), plus its extra: the new stage's
weights, moments and step counts, plus (sharded) the largest grown tensor gathered with
its old version, one at a time. The old moments are freed tensor by tensor as they move,
so the measured peak is lower (bench/sharded_growth.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, List, Optional, Sequence, Tuple

from dimba.errors import ConfigError
from dimba.growth.shapes import ROOT, padded_shard_numel, unit_of
from dimba.model.shapes import numel, parameter_count, parameter_shapes

if TYPE_CHECKING:
    from dimba.model.config import DIMBAConfig

STRATEGIES = ("single", "ddp", "fsdp")
PRECISIONS = ("32-true", "32", "64-true", "64", "16-mixed", "16", "bf16-mixed", "bf16", "16-true", "bf16-true")
GiB = 1024**3
GB = 10**9  # what the tables print, as `trainer_memory_gb` and device specifications count
# trainer.precision -> bytes of (weights, gradients, each AdamW moment, activations). Under
# autocast the saved activations are a mix (matmul outputs in 16 bits, norms, decays and the
# log-softmax in 32): measured 0.65-0.71 of the fp32 bytes on CPU bf16, so 3 bytes each.
_PRECISION = {"32": (4, 4, 4, 4), "64": (8, 8, 8, 8), "16-mixed": (4, 4, 4, 3), "bf16-mixed": (4, 4, 4, 3),
              "16-true": (2, 2, 2, 2), "bf16-true": (2, 2, 2, 2)}


def precision_bytes(precision: str) -> Tuple[int, int, int, int]:
    key = {"32-true": "32", "64-true": "64", "16": "16-mixed", "bf16": "bf16-mixed"}.get(str(precision), str(precision))
    if key not in _PRECISION:
        raise ConfigError("trainer.precision", precision, " | ".join(PRECISIONS))
    return _PRECISION[key]


@dataclass(frozen=True)
class MemorySetting:
    """Where a stage runs: strategy, world size (devices x nodes), precision, micro-batch."""

    strategy: str = "single"
    world_size: int = 1
    precision: str = "32-true"
    micro_batch: int = 16
    seq_len: int = 128
    device_bytes: Optional[int] = None  # None: unknown (nothing is judged to fit or not)
    activation_checkpointing: bool = False  # per block: keep block inputs, recompute one block at a time

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ConfigError("trainer.strategy", self.strategy, " | ".join(STRATEGIES))
        for key, value in (("trainer.devices x trainer.num_nodes", self.world_size),
                           ("data.batch_size", self.micro_batch), ("data.seq_len", self.seq_len)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(key, value, "a positive integer")
        if self.strategy == "single" and self.world_size != 1:
            raise ConfigError("trainer.devices", self.world_size, "1 for a single device (use ddp or fsdp for more)")
        if self.device_bytes is not None and (isinstance(self.device_bytes, bool) or self.device_bytes <= 0):
            raise ConfigError("trainer_memory_gb", self.device_bytes, "a positive device memory")
        precision_bytes(self.precision)

    def with_world_size(self, world_size: int) -> "MemorySetting":
        return MemorySetting(self.strategy, world_size, self.precision, self.micro_batch, self.seq_len,
                             self.device_bytes, self.activation_checkpointing)


def block_activation_elements(cfg: "DIMBAConfig") -> float:
    """Elements one Mamba-2 block keeps for backward, per token (PyTorch SSD scan).

    Counted: the residual input, the RMSNorm's normalised output, its modulated output and
    the mixer's input (4 D) with a few per-token scalars; the fused input projection's
    output (z | xBC | dt); the reversed xBC of the backward direction, the convolutions'
    outputs and their SiLUs (all directions), the step sizes before and after the
    softplus; per direction the scan's saved tensors (its head-major x and dt * x, the
    (heads, Q, Q) decay and score matrices, C B^T, the decayed B and C, the chunk states
    entering each chunk (d_inner * d_state / Q per token) and the per-head decays); then
    the summed directions, the gated norm's output and the output projection's input.
    Checked against the tensors autograd saves (tests/test_memory_plan.py): within 10%, a
    little above.
    """
    d, di, n, q = cfg.d_model, cfg.expand * cfg.d_model, cfg.d_state, cfg.chunk_size
    h = di // cfg.head_dim
    directions = 2 if cfg.bidirectional else 1
    conv_channels = di + 2 * n
    per_direction = 2 * di + 2 * h * q + q + 2 * h * n + di * n / q + 2 * h + h / q
    return (4 * d + 4 + (2 * di + 2 * n + h) + (directions - 1) * conv_channels + 2 * directions * conv_channels
            + 2 * directions * h + directions * per_direction + 3 * di + h)


def activation_elements(cfg: "DIMBAConfig", checkpointing: bool = False) -> float:
    """Elements kept for backward per token by the whole model: every block, plus the
    embeddings, the output projection and the logits with their log-softmax (V + 3E + 3D),
    and a few per-token scalars (token ids, norms, the loss); the continuous recipe's options
    add theirs: the rounding distribution of a softmax or Bayes x0 estimate (V + 3E, with the
    Bayes likelihood term), normalised embeddings (3E, the rows' norms included) and a
    self-conditioned input (E).
    With per-block activation checkpointing, each block keeps only its input (D) and one
    block at a time is recomputed whole."""
    e = cfg.d_embed
    head = cfg.vocab_size + 3 * e + 3 * cfg.d_model + 8
    head += cfg.vocab_size + 3 * e if cfg.x0_estimate != "regression" else 0
    head += (3 * e if cfg.embedding_norm is not None else 0) + (e if cfg.self_condition else 0)
    block = block_activation_elements(cfg)
    if checkpointing:
        return head + cfg.n_layers * cfg.d_model + block
    return head + cfg.n_layers * block


@dataclass(frozen=True)
class StageMemory:
    """Bytes per rank of one stage (rank 0: FSDP2's other ranks hold at most as much)."""

    params: int
    grads: int
    optimizer: int
    step_counts: int
    activations: int
    transient: int

    @property
    def states(self) -> int:
        """Weights, gradients, moments and step counts: what persists between steps."""
        return self.params + self.grads + self.optimizer + self.step_counts

    @property
    def total(self) -> int:
        return self.states + self.activations + self.transient


def _per_rank_numel(shape: Tuple[int, ...], setting: MemorySetting) -> int:
    return padded_shard_numel(shape, setting.world_size) if setting.strategy == "fsdp" else numel(shape)


def stage_memory(cfg: "DIMBAConfig", setting: MemorySetting) -> StageMemory:
    weight, grad, moment, activation = precision_bytes(setting.precision)
    shapes = parameter_shapes(cfg)
    local = sum(_per_rank_numel(s, setting) for s in shapes.values())
    births = 4 * sum(sum(s) for s in shapes.values())
    if setting.strategy == "fsdp":
        unit_sizes = {}
        for name, shape in shapes.items():
            unit_sizes[unit_of(name)] = unit_sizes.get(unit_of(name), 0) + numel(shape)
        largest_unit = max(size for unit, size in unit_sizes.items() if unit != ROOT)
        transient = largest_unit * (2 * weight + grad)
    else:
        transient = parameter_count(cfg) * grad if setting.strategy == "ddp" else 0
    tokens = setting.micro_batch * setting.seq_len
    activations = math.ceil(activation_elements(cfg, setting.activation_checkpointing) * tokens) * activation
    return StageMemory(local * weight, local * grad, 2 * local * moment, births, activations, transient)


def growth_extra(old: "DIMBAConfig", new: "DIMBAConfig", setting: MemorySetting) -> int:
    """Extra bytes on one rank while growing `old` into `new`, above the old stage's states."""
    grown = stage_memory(new, setting)
    extra = grown.params + grown.optimizer + grown.step_counts
    if setting.strategy == "fsdp":  # one tensor at a time: gathered old and whole new
        old_shapes, new_shapes = parameter_shapes(old), parameter_shapes(new)
        weight = precision_bytes(setting.precision)[0]
        extra += max(numel(s) + numel(old_shapes.get(name, (0,))) for name, s in new_shapes.items()) * weight
    return extra


def growth_peak(old: "DIMBAConfig", new: "DIMBAConfig", setting: MemorySetting) -> int:
    before = stage_memory(old, setting)
    kept = before.states - (before.grads if setting.strategy == "fsdp" else 0)
    return kept + growth_extra(old, new, setting)


def _stage_peak(cfg: "DIMBAConfig", previous: Optional["DIMBAConfig"], setting: MemorySetting) -> int:
    peak = stage_memory(cfg, setting).total
    return max(peak, growth_peak(previous, cfg, setting)) if previous is not None else peak


def smallest_world_size(cfg: "DIMBAConfig", setting: MemorySetting, previous: Optional["DIMBAConfig"] = None,
                        limit: int = 1 << 20) -> Optional[int]:
    """The fewest ranks on which the stage (and the growth into it from `previous`) fits in
    `setting.device_bytes`; None when no world size does (a single device or DDP replicates
    everything; under FSDP the activations and step counts are not sharded)."""
    if setting.device_bytes is None:
        raise ValueError("smallest_world_size needs setting.device_bytes")
    fits = lambda w: _stage_peak(cfg, previous, setting.with_world_size(w)) <= setting.device_bytes  # noqa: E731
    if setting.strategy != "fsdp":
        return setting.world_size if fits(setting.world_size) else None
    if not fits(limit):
        return None
    low, high = 1, limit  # per-rank bytes only fall as the world grows
    while low < high:
        middle = (low + high) // 2
        low, high = (low, middle) if fits(middle) else (middle + 1, high)
    return low


@dataclass(frozen=True)
class MemoryRow:
    label: str
    params: int
    memory: StageMemory
    growth_peak: Optional[int]  # None for the first stage
    fits: Optional[bool]  # None when the device memory is unknown
    smallest_world_size: Optional[int]  # when it does not fit: the fewest ranks that would (None: none)

    @property
    def peak(self) -> int:
        return max(self.memory.total, self.growth_peak or 0)


def memory_table(stages: Sequence[Tuple[str, "DIMBAConfig"]], setting: MemorySetting) -> List[MemoryRow]:
    """One row per stage (label, architecture), in growth order: the plan's memory column."""
    rows, previous = [], None
    for label, cfg in stages:
        memory = stage_memory(cfg, setting)
        peak = growth_peak(previous, cfg, setting) if previous is not None else None
        fits = None if setting.device_bytes is None else max(memory.total, peak or 0) <= setting.device_bytes
        smallest = smallest_world_size(cfg, setting, previous) if fits is False else None
        rows.append(MemoryRow(label, parameter_count(cfg), memory, peak, fits, smallest))
        previous = cfg
    return rows


def format_memory_table(rows: Sequence[MemoryRow], setting: MemorySetting) -> str:
    head = (f"memory per rank (GB), {setting.strategy} x {setting.world_size}, {setting.precision}, "
            f"micro-batch {setting.micro_batch} x {setting.seq_len} tokens"
            + (", activation checkpointing" if setting.activation_checkpointing else "")
            + ("" if setting.device_bytes is None else f", device {setting.device_bytes / GB:.1f} GB"))
    lines = [head, f"{'stage':<34} {'params':>16} {'weights':>8} {'grads':>8} {'adam':>8} {'steps':>6} "
                   f"{'activ':>8} {'transnt':>8} {'total':>8} {'growth':>8}  fits"]
    for row in rows:
        m = row.memory
        cells = [m.params, m.grads, m.optimizer, m.step_counts, m.activations, m.transient, m.total]
        growth = "" if row.growth_peak is None else f"{row.growth_peak / GB:8.2f}"
        fits = {None: "", True: "yes"}.get(row.fits, "NO: " + (
            f"needs {row.smallest_world_size} ranks" if row.smallest_world_size else "at no world size"))
        lines.append(f"{row.label:<34} {row.params:>16,} " + " ".join(
            f"{c / GB:{6 if i == 3 else 8}.2f}" for i, c in enumerate(cells)) + f" {growth:>8}  {fits}")
    return "\n".join(lines)
