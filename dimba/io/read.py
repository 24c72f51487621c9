"""Read any checkpoint dimba writes, safely, with errors that name the file.

One file (`torch.load(weights_only=True)`: data, never code) or a Distributed Checkpoint
directory written by every rank under FSDP (gathered here in one process), both returned
as the same dictionary and viewed through `dimba.checkpointing.format.CheckpointRecord`.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Dict, Union

import torch

from dimba import internals
from dimba.checkpointing.atomic_io import is_sharded_checkpoint
from dimba.checkpointing.record import CheckpointRecord, model_view
from dimba.checkpointing.files import check_checkpoint_file
from dimba.errors import CheckpointLoadError

PathLike = Union[str, os.PathLike]


def read_checkpoint(filepath: PathLike, map_location: Any = "cpu") -> Dict[str, Any]:
    """The checkpoint's dictionary; a sharded directory comes back under one-file keys."""
    path = Path(filepath)
    check_checkpoint_file(path)
    if is_sharded_checkpoint(path):
        return read_distributed_checkpoint(path)
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # corrupt zip, truncated file, refused pickle
        raise CheckpointLoadError(f"Cannot load checkpoint {path}: {first_line(exc)}") from exc
    if not isinstance(checkpoint, dict):
        raise CheckpointLoadError(f"{path} is not a checkpoint (it holds a {type(checkpoint).__name__})")
    return checkpoint


def read_record(filepath: PathLike, map_location: Any = "cpu") -> CheckpointRecord:
    return CheckpointRecord(read_checkpoint(filepath, map_location))


def read_metadata(filepath: PathLike) -> CheckpointRecord:
    """The record of a checkpoint without reading its tensors: a one-file checkpoint memory-
    mapped (tensors stay on disk until touched), or a sharded directory's `meta.pt` alone.
    What is checked before a run starts (objective, tokenizer, shape) reads this."""
    path = Path(filepath)
    check_checkpoint_file(path)
    target = path / "meta.pt" if is_sharded_checkpoint(path) else path
    try:
        return CheckpointRecord(torch.load(target, map_location="cpu", weights_only=True, mmap=True))
    except Exception as exc:
        raise CheckpointLoadError(f"Cannot load checkpoint {path}: {first_line(exc)}") from exc


def read_distributed_checkpoint(path: Path) -> Dict[str, Any]:
    """A sharded checkpoint directory as one full dictionary on the CPU.

    Lightning keeps the module's state under "state_dict" (FSDP2; "model" in FSDP1 checkpoints) and the optimizers under
    "optimizer_<i>" in the shards, everything else in `meta.pt`; they come back under the
    keys of a one-file checkpoint (`state_dict`, `optimizer_states`) plus the milestone format's
    `model_state_dict`. Both parts load with `weights_only=True`.
    """
    try:
        shards = internals.gather_distributed_checkpoint(path)
        meta = path / "meta.pt"
        checkpoint = torch.load(meta, map_location="cpu", weights_only=True) if meta.is_file() else {}
    except Exception as exc:
        raise CheckpointLoadError(f"Cannot load checkpoint {path}: {first_line(exc)}") from exc
    checkpoint["state_dict"] = shards.pop("state_dict", None) or shards.pop("model", {})  # FSDP2 / FSDP1
    optimizers = sorted(k for k in shards if k.startswith("optimizer_"))
    if optimizers:
        checkpoint["optimizer_states"] = [shards.pop(k) for k in optimizers]
    checkpoint.setdefault("model_state_dict", model_view(checkpoint["state_dict"]))
    return checkpoint


# torch.load(weights_only=True) refusals: keep the reason, drop the advice around it.
_TORCH_BOILERPLATE = (
    (re.compile(r"Weights only load failed\.[^\n]*"), "refused by torch.load(weights_only=True):"),
    (re.compile(r"^\s*Please file an issue[^\n]*?WeightsUnpickler error:", re.M), ""),
    (re.compile(r"^\s*Check the documentation of torch\.load[^\n]*", re.M), ""),
    (re.compile(r" This is an internal miniz error\..*", re.S), ""),
)


def first_line(exc: BaseException, limit: int = 300) -> str:
    """An exception's message as one line (torch's run over several), at most `limit` chars."""
    text = str(exc)
    for pattern, replacement in _TORCH_BOILERPLATE:
        text = pattern.sub(replacement, text)
    text = " ".join(line.strip() for line in text.splitlines() if line.strip()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."
