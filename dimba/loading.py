"""Rebuild a model from any checkpoint dimba writes, with nothing but the file."""

from __future__ import annotations

import os
from typing import Any, Dict, Optional, Union

import torch

from dimba.checkpointing.atomic_io import is_sharded_checkpoint
from dimba.checkpointing.manager import CheckpointLoadError, read_checkpoint
from dimba.model import DIMBA, DIMBAConfig


def recorded_architecture(checkpoint: Dict[str, Any]) -> Optional[DIMBAConfig]:
    """The architecture a checkpoint was saved with (after growth), if it says."""
    for record in (checkpoint.get("dimba"), checkpoint.get("metadata")):
        if isinstance(record, dict) and isinstance(record.get("architecture"), dict):
            # The shape as recorded, computed the way this machine can (scan=auto).
            return DIMBAConfig.from_dict(record["architecture"]).with_runtime_of(DIMBAConfig())
    return None


def model_state_dict(checkpoint: Dict[str, Any]) -> Dict[str, torch.Tensor]:
    if "model_state_dict" in checkpoint:
        return checkpoint["model_state_dict"]
    state = checkpoint.get("state_dict", {})
    return {k[len("model."):]: v for k, v in state.items() if k.startswith("model.")}


def load_model(path: Union[str, os.PathLike], map_location: Any = "cpu") -> DIMBA:
    """A DIMBA of the recorded (grown) size with the checkpoint's weights, in eval mode.

    Works for milestone checkpoints (one file, or the sharded directory FSDP writes, gathered
    here in one process), Lightning checkpoints (`last.ckpt`) and the directories
    `dimba checkpoints export` writes.
    """
    if os.path.isdir(path) and not is_sharded_checkpoint(path):  # an export (not DCP shards)
        from dimba.cli.export import load_exported

        return load_exported(path, map_location=map_location)
    checkpoint = read_checkpoint(path, map_location=map_location)
    config = recorded_architecture(checkpoint)
    if config is None:
        raise CheckpointLoadError(f"{path} records no model architecture; it was not written by dimba")
    model = DIMBA(config)
    model.load_state_dict(model_state_dict(checkpoint))
    return model.eval()
