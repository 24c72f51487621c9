"""Rebuild a model, or a training state, from any checkpoint dimba writes.

`load_model` needs nothing but the file: the architecture (after growth) is recorded in
every checkpoint. `grow_to_checkpoint` + `load_optimizer_state` restore a training state
into a smaller model and its optimizer (`ProgressiveCheckpointManager.load_checkpoint`).
"""

from __future__ import annotations

import logging
import os
from typing import Any, Callable, Dict, List, Optional, Union

import torch
from torch import nn

from dimba.checkpointing.record import CheckpointRecord
from dimba.errors import CheckpointLoadError, ConfigError
from dimba.io.read import first_line, open_checkpoint
from dimba.model import DIMBA, DIMBAConfig

log = logging.getLogger(__name__)
PathLike = Union[str, os.PathLike]


def recorded_config(record: CheckpointRecord, path: PathLike, runtime: Optional[DIMBAConfig] = None) -> DIMBAConfig:
    """The architecture a checkpoint was saved with, computed as `runtime` says (the checkpoint
    decides the shape; dtype and scan are this process's: by default, the defaults)."""
    architecture = record.architecture
    if architecture is None:
        raise CheckpointLoadError(f"{path} records no model architecture; it was not written by dimba")
    try:
        return DIMBAConfig.from_record(architecture).with_runtime_of(runtime or DIMBAConfig())
    except (TypeError, ValueError) as exc:
        raise CheckpointLoadError(f"{path}: bad architecture record: {first_line(exc)}") from None


def load_model(path: PathLike, map_location: Any = "cpu") -> DIMBA:
    """A DIMBA of the recorded (grown) size with the checkpoint's weights, in eval mode.

    Takes milestone checkpoints (one file, or the sharded directory FSDP writes, gathered
    here in one process), Lightning checkpoints (`last.ckpt`) and `dimba checkpoints export`
    directories. Every failure is a CheckpointLoadError naming the file.
    """
    record = open_checkpoint(path, map_location=map_location)
    model = DIMBA(recorded_config(record, path))
    try:
        model.load_state_dict(record.model_state)
    except RuntimeError as exc:  # weights that do not fit the recorded shape
        raise CheckpointLoadError(f"cannot rebuild the model from {path}: {first_line(exc)}") from None
    attach_tokenizer(model, record.tokenizer, path)
    model.data_record = record.training_data  # what it trained on, where recorded (`dimba eval` finds the split)
    if map_location not in (None, "cpu") and isinstance(map_location, (str, torch.device)):
        model.to(map_location)
    return model.eval()


def attach_tokenizer(model: DIMBA, record: Optional[Dict[str, Any]], path: PathLike) -> None:
    """`model.tokenizer` (and `model.tokenizer_record`): what its token ids mean, from the
    checkpoint's record (a checkpoint without one was trained on bytes)."""
    from dimba.data.records import tokenizer_from_record

    try:
        model.tokenizer = tokenizer_from_record(record, key=f"{path}: tokenizer")
    except ConfigError as exc:
        raise CheckpointLoadError(str(exc)) from None
    model.tokenizer_record = record


def grow_to_checkpoint(model: nn.Module, optimizer: Optional[torch.optim.Optimizer], record: CheckpointRecord,
                       path: PathLike, group_for: Optional[Callable[[nn.Parameter], int]] = None) -> None:
    """Grow a DIMBA (in place, with its optimizer) to the architecture the checkpoint records."""
    from dimba.growth.operators import grow_to
    from dimba.growth.optim import transfer_optimizer_state

    if record.architecture is None or not isinstance(model, DIMBA):
        return
    target = recorded_config(record, path)
    if model.config == target:
        return
    if target.objective != model.config.objective:
        raise CheckpointLoadError(f"{path} holds a model trained with objective={target.objective}, not "
                                  f"{model.config.objective}; load it as what it is with dimba.load_model('{path}')")
    difference = model.config.fixed_difference(target)
    if difference:
        raise CheckpointLoadError(f"{path} holds a model trained with {difference}; load it as what it is with "
                                  f"dimba.load_model('{path}')")
    try:
        remaps = grow_to(model, target)
    except ValueError as exc:
        raise CheckpointLoadError(
            f"{path} holds a model of a different shape ({exc}); build one of its size with "
            f"dimba.load_model('{path}')"
        ) from None
    if optimizer is not None:
        groups = len(optimizer.param_groups)
        transfer_optimizer_state(optimizer, remaps, model,
                                 group_for or (lambda p: 0 if groups == 1 or p.dim() >= 2 else 1))


def optimizer_param_names(optimizer: torch.optim.Optimizer, model: nn.Module) -> List[List[str]]:
    """The model-relative name of every parameter in each optimizer group, in order.

    Stored beside the optimizer state, so that it loads into an optimizer whose groups are
    laid out differently (a plain `AdamW(model.parameters())`, say).
    """
    names = {id(p): n for n, p in model.named_parameters()}
    return [[names.get(id(p), "") for p in group["params"]] for group in optimizer.param_groups]


def load_optimizer_state(optimizer: torch.optim.Optimizer, state: Dict[str, Any], path: PathLike,
                         model: Optional[nn.Module] = None, saved_names: Optional[List[List[str]]] = None) -> None:
    """Load optimizer state, by parameter name where the group layouts differ. An optimizer
    without per-entry step counts gets each tensor's largest count."""
    from dimba.growth.optim import GrowableAdamW

    if not isinstance(optimizer, GrowableAdamW) and _flatten_entry_steps(state):
        log.warning("%s: per-entry Adam step counts (from growth) became one count per tensor for %s; "
                    "dimba.growth.GrowableAdamW keeps them", path, type(optimizer).__name__)
    layout = [len(g["params"]) for g in optimizer.param_groups]
    saved_layout = [len(g["params"]) for g in state.get("param_groups", [])]
    if layout != saved_layout and model is not None and saved_names:
        state = _regroup_by_name(optimizer, state, model, saved_names)
    try:
        optimizer.load_state_dict(state)
    except ValueError as exc:
        raise CheckpointLoadError(f"{path}: the optimizer does not match the checkpoint's ({exc})") from None


def _flatten_entry_steps(state: Dict[str, Any]) -> bool:
    flattened = False
    for entry in state.get("state", {}).values():
        step = entry.get("step")
        if isinstance(step, torch.Tensor) and step.dim() > 0:
            entry["step"] = step.max().reshape(())
            flattened = True
    return flattened


def _regroup_by_name(optimizer: torch.optim.Optimizer, state: Dict[str, Any], model: nn.Module,
                     saved_names: List[List[str]]) -> Dict[str, Any]:
    """The saved per-parameter state rearranged into `optimizer`'s own groups."""
    by_name: Dict[str, Any] = {}
    for group, names in zip(state["param_groups"], saved_names):
        for index, name in zip(group["params"], names):
            if index in state["state"]:
                by_name[name] = state["state"][index]
    current = optimizer_param_names(optimizer, model)
    new_state, groups, index = {}, [], 0
    for group, names in zip(optimizer.state_dict()["param_groups"], current):
        ids = []
        for name in names:
            if name in by_name:
                new_state[index] = by_name[name]
            ids.append(index)
            index += 1
        groups.append({**group, "params": ids})
    return {"state": new_state, "param_groups": groups}
