"""Open any checkpoint dimba writes, safely, with errors that name the file: `open_checkpoint`.

One file (`torch.load(weights_only=True)`: data, never code), a Distributed Checkpoint
directory written by every rank under FSDP (gathered here in one process) or an export
directory (safetensors), all returned as a `dimba.checkpointing.record.CheckpointRecord`.
What a path is, `dimba.checkpointing.files.checkpoint_kind` decides.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Dict, Union

import torch

from dimba import internals
from dimba.checkpointing.record import EXPORT_WEIGHTS, CheckpointRecord, model_view, read_export_config
from dimba.checkpointing.files import check_checkpoint_file
from dimba.errors import CheckpointLoadError

PathLike = Union[str, os.PathLike]


def open_checkpoint(filepath: PathLike, map_location: Any = "cpu", tensors: bool = True) -> CheckpointRecord:
    """Any checkpoint dimba writes, as a CheckpointRecord: a one-file checkpoint (a milestone's
    .pt, Lightning's .ckpt), a sharded directory (gathered in one process) or an export
    directory. With `tensors=False` only what describes it is read: a one-file checkpoint
    memory-mapped (tensors stay on disk until touched), a sharded directory's `meta.pt`, an
    export's config; that is what is checked before a run starts (objective, tokenizer, step).
    The one reader: every failure is a CheckpointLoadError naming the path."""
    path = Path(filepath)
    kind = check_checkpoint_file(path)
    if kind == "export":
        return _export_record(path, tensors)
    if not tensors:
        target = path / "meta.pt" if kind == "sharded" else path
        return CheckpointRecord(_torch_load(target, path, mmap=True))
    if kind == "sharded":
        return CheckpointRecord(read_distributed_checkpoint(path))
    return CheckpointRecord(_torch_load(path, path, map_location=map_location))


def _torch_load(target: Path, path: Path, map_location: Any = "cpu", mmap: bool = False) -> Dict[str, Any]:
    try:
        checkpoint = torch.load(target, map_location=map_location, weights_only=True, mmap=mmap)
    except Exception as exc:  # corrupt zip, truncated file, refused pickle
        raise CheckpointLoadError(f"Cannot load checkpoint {path}: {first_line(exc)}") from exc
    if not isinstance(checkpoint, dict):
        raise CheckpointLoadError(f"{path} is not a checkpoint (it holds a {type(checkpoint).__name__})")
    return checkpoint


def _export_record(path: Path, tensors: bool) -> CheckpointRecord:
    """An export directory under the record's keys: its config.json as the `dimba` record (a
    shipped tokenizer file resolved beside it), its safetensors as the model's state."""
    info = dict(read_export_config(path))
    tokenizer = info.get("tokenizer")
    if isinstance(tokenizer, dict) and tokenizer.get("path") and not Path(tokenizer["path"]).is_absolute():
        info["tokenizer"] = {**tokenizer, "path": str(path / tokenizer["path"])}  # shipped beside the weights
    data: Dict[str, Any] = {"dimba": info, "export": True,
                            **{k: info[k] for k in ("global_step", "format", "source_checkpoint") if k in info}}
    if "param_count" in info:
        data["current_params"] = info["param_count"]
    if tensors:
        weights = path / str(info.get("weights", EXPORT_WEIGHTS))
        if not weights.is_file():
            raise CheckpointLoadError(f"{path} has no {weights.name}")
        st = safetensors_torch()
        try:
            data["model_state_dict"] = st.load_file(str(weights), device="cpu")
        except Exception as exc:  # SafetensorError (truncated, not safetensors), OSError
            raise CheckpointLoadError(f"cannot read {weights}: {first_line(exc)}") from None
    return CheckpointRecord(data)


def safetensors_torch():
    try:
        import safetensors.torch as st
    except ImportError:
        raise CheckpointLoadError("exports need the safetensors package: pip install safetensors") from None
    return st


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
