"""Reading a loaded checkpoint the way dimba writes it, and the export directory's config.

Torch-free: a loaded checkpoint is a dict whose tensors are only passed along. Every reader
(loading, resuming, the `dimba` command, exports) gets the architecture, growth history,
weights and optimizer state from here, whichever writer and format made the file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional

from dimba.errors import CheckpointLoadError

MODEL_PREFIX = "model."  # where a LightningModule keeps the DIMBA in Lightning's `state_dict`
BULKY_KEYS = frozenset({"model_state_dict", "optimizer_state_dict", "state_dict", "optimizer_states", "lr_schedulers"})
EXPORT_FORMAT, EXPORT_VERSION = "dimba.export", 1
EXPORT_WEIGHTS, EXPORT_CONFIG = "model.safetensors", "config.json"


class CheckpointRecord:
    """A loaded checkpoint read the way dimba writes it, whichever writer and format made it.

    Milestone files carry the milestone format's keys; Lightning checkpoints carry `state_dict` (with the
    module's `model.` prefix) and `optimizer_states`; a gathered Distributed Checkpoint comes
    back with Lightning's keys. The architecture and growth history sit under `dimba` (every
    writer) or, in files of the first format version, under `metadata`.
    """

    def __init__(self, data: Mapping[str, Any]) -> None:
        self.data = data

    def _dimba(self) -> Mapping[str, Any]:
        for key in ("dimba", "metadata"):
            record = self.data.get(key)
            if isinstance(record, Mapping) and isinstance(record.get("architecture"), Mapping):
                return record
        return {}

    @property
    def architecture(self) -> Optional[Dict[str, Any]]:
        found = self._dimba().get("architecture")
        return dict(found) if found is not None else None

    @property
    def growth_history(self) -> List[Dict[str, Any]]:
        return [dict(e) for e in self._dimba().get("growth_history", []) if isinstance(e, Mapping)]

    @property
    def tokenizer(self) -> Optional[Dict[str, Any]]:
        found = self._dimba().get("tokenizer")
        return dict(found) if isinstance(found, Mapping) else None

    @property
    def training_data(self) -> Optional[Dict[str, Any]]:
        """The data and tokenizer configs the model trained on ({"data": ..., "tokenizer": ...});
        None in checkpoints written before they were recorded."""
        found = self._dimba().get("data")
        return dict(found) if isinstance(found, Mapping) and isinstance(found.get("data"), Mapping) else None

    @property
    def is_milestone(self) -> bool:
        return "model_state_dict" in self.data and not self.data.get("export")

    @property
    def model_state(self) -> Dict[str, Any]:
        if "model_state_dict" in self.data:
            return self.data["model_state_dict"]
        return model_view(self.data.get("state_dict", {}))

    @property
    def optimizer_state(self) -> Optional[Dict[str, Any]]:
        if "optimizer_state_dict" in self.data:
            return self.data["optimizer_state_dict"]
        states = self.data.get("optimizer_states") or []
        return states[0] if states else None

    @property
    def optimizer_param_names(self) -> Optional[List[List[str]]]:
        return self.data.get("optimizer_param_names")

    @property
    def global_step(self) -> Optional[int]:
        step = self.data.get("global_step")
        return None if step is None else int(step)

    @property
    def reached_milestones(self) -> List[int]:
        return [int(m) for m in self.data.get("reached_milestones", [])]

    def summary(self) -> Dict[str, Any]:
        """Every key but the tensors."""
        return {k: v for k, v in self.data.items() if k not in BULKY_KEYS}


def read_export_config(directory: Path) -> Dict[str, Any]:
    """The `config.json` of a `dimba checkpoints export` directory, checked (CheckpointLoadError)."""
    directory, path = Path(directory), Path(directory) / EXPORT_CONFIG
    if not directory.is_dir():
        raise CheckpointLoadError(f"{directory} is not an export directory")
    if not path.is_file():
        raise CheckpointLoadError(f"{directory} is not a dimba export (no {EXPORT_CONFIG})")
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise CheckpointLoadError(f"{path} is unreadable: {str(exc).splitlines()[0]}") from None
    if not isinstance(info, dict) or info.get("format") != EXPORT_FORMAT:
        raise CheckpointLoadError(f"{path} is not a dimba export config (format is not {EXPORT_FORMAT!r})")
    if int(info.get("format_version", 0)) > EXPORT_VERSION:
        raise CheckpointLoadError(f"{directory} has export format version {info['format_version']}; "
                                  f"this dimba reads up to {EXPORT_VERSION}")
    if not isinstance(info.get("architecture"), dict):
        raise CheckpointLoadError(f"{directory} is not a dimba export (its {EXPORT_CONFIG} has no architecture)")
    return info


def model_view(state_dict: Mapping[str, Any]) -> Dict[str, Any]:
    """The DIMBA's entries of a LightningModule's state dict, unprefixed (the same tensors)."""
    prefixed = {k[len(MODEL_PREFIX):]: v for k, v in state_dict.items() if k.startswith(MODEL_PREFIX)}
    return prefixed or dict(state_dict)


