"""Export a checkpoint as `model.safetensors` + `config.json`, and load such a directory back.

The export holds the weights only (no optimizer state, no pickle): every entry of
`model.state_dict()` (RMSNorm's `eps` is a buffer there, and growth rescales it, so it is
exported too), plus a JSON config from which `DIMBA(DIMBAConfig(**config["architecture"]))`
rebuilds the model. safetensors is imported when an export is written or read.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Dict, Union

import torch

from dimba.checkpointing.manager import CheckpointLoadError
from dimba.checkpointing.atomic_io import is_sharded_checkpoint
from dimba.cli.checkpoints import check_checkpoint_file, one_line as _one_line
from dimba.model import DIMBA, DIMBAConfig

EXPORT_FORMAT = "dimba.export"
EXPORT_VERSION = 1
WEIGHTS = "model.safetensors"
CONFIG = "config.json"

PathLike = Union[str, os.PathLike]




def _safetensors_torch():
    try:
        import safetensors.torch as st
    except ImportError:
        raise CheckpointLoadError("exports need the safetensors package: pip install safetensors") from None
    return st


def load_any(path: PathLike, map_location: Any = "cpu") -> DIMBA:
    """A DIMBA from a checkpoint file or an export directory, in eval mode. Every failure
    (missing, corrupt, weights that do not fit the recorded shape) is a CheckpointLoadError."""
    path = Path(path)
    if path.is_dir() and not is_sharded_checkpoint(path):  # an export, not FSDP's shards
        return load_exported(path, map_location=map_location)
    from dimba.loading import load_model

    check_checkpoint_file(path)
    try:
        return load_model(path, map_location=map_location)
    except CheckpointLoadError:
        raise
    except (RuntimeError, ValueError, KeyError, TypeError) as exc:  # shape mismatch, bad architecture record
        raise CheckpointLoadError(f"cannot rebuild the model from {path}: {_one_line(exc)}") from exc


def export_checkpoint(checkpoint: PathLike, out_dir: PathLike) -> Path:
    """Write OUT/model.safetensors then OUT/config.json (the config last: a directory with a
    config.json is complete). Returns OUT."""
    st = _safetensors_torch()
    checkpoint, out_dir = Path(checkpoint), Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise CheckpointLoadError(f"{out_dir} exists and is not a directory")
    model = load_any(checkpoint)
    tensors: Dict[str, torch.Tensor] = {}
    seen = set()
    for name, tensor in model.state_dict().items():
        tensor = tensor.detach().cpu().contiguous()
        key = (tensor.untyped_storage().data_ptr(), tensor.storage_offset())
        if key in seen or tensor.untyped_storage().nbytes() != tensor.numel() * tensor.element_size():
            tensor = tensor.clone()  # safetensors refuses tensors that share or overhang storage
        seen.add(key)
        tensors[name] = tensor
    config = {
        "format": EXPORT_FORMAT,
        "format_version": EXPORT_VERSION,
        "weights": WEIGHTS,
        "architecture": model.config.to_dict(),
        "param_count": sum(p.numel() for p in model.parameters()),
        "dtype": str(next(iter(tensors.values())).dtype).replace("torch.", ""),
        "source_checkpoint": str(checkpoint.resolve()) if checkpoint.exists() else str(checkpoint),
    }
    config.update(_source_record(checkpoint))
    out_dir.mkdir(parents=True, exist_ok=True)
    weights_tmp, config_tmp = out_dir / f".{WEIGHTS}.tmp", out_dir / f".{CONFIG}.tmp"
    try:
        st.save_file(tensors, str(weights_tmp), metadata={"format": "pt", "dimba_format": EXPORT_FORMAT})
        config_tmp.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        os.chmod(weights_tmp, config_tmp.stat().st_mode & 0o777)  # safetensors writes 0600; use the umask's mode
        os.replace(weights_tmp, out_dir / WEIGHTS)
        os.replace(config_tmp, out_dir / CONFIG)
    finally:
        weights_tmp.unlink(missing_ok=True)
        config_tmp.unlink(missing_ok=True)
    return out_dir


def _source_record(checkpoint: Path) -> Dict[str, Any]:
    """global_step and growth history from the checkpoint's sidecar, when it has one."""
    sidecar = checkpoint.with_suffix(".json")
    if not sidecar.is_file():
        return {}
    try:
        info = json.loads(sidecar.read_text(encoding="utf-8"))
        return {"global_step": int(info["global_step"]),
                "growth_history": list((info.get("metadata") or {}).get("growth_history") or [])}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {}


def load_exported(path: PathLike, map_location: Any = "cpu") -> DIMBA:
    """A DIMBA (eval mode) from a directory written by `export_checkpoint`."""
    path = Path(path)
    config_path = path / CONFIG
    if not path.is_dir():
        raise CheckpointLoadError(f"{path} is not an export directory")
    if not config_path.is_file():
        raise CheckpointLoadError(f"{path} is not a dimba export (no {CONFIG})")
    try:
        info = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise CheckpointLoadError(f"{config_path} is unreadable: {_one_line(exc)}") from None
    if not isinstance(info, dict) or info.get("format") != EXPORT_FORMAT:
        raise CheckpointLoadError(f"{config_path} is not a dimba export config (format is not {EXPORT_FORMAT!r})")
    if int(info.get("format_version", 0)) > EXPORT_VERSION:
        raise CheckpointLoadError(f"{path} has export format version {info['format_version']}; "
                                  f"this dimba reads up to {EXPORT_VERSION}")
    try:
        config = DIMBAConfig.from_dict(info["architecture"]).with_runtime_of(DIMBAConfig())
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointLoadError(f"{config_path}: bad architecture: {_one_line(exc)}") from None
    weights = path / str(info.get("weights", WEIGHTS))
    if not weights.is_file():
        raise CheckpointLoadError(f"{path} has no {weights.name}")
    st = _safetensors_torch()
    try:
        state = st.load_file(str(weights), device="cpu")
    except Exception as exc:  # SafetensorError (truncated, not safetensors), OSError
        raise CheckpointLoadError(f"cannot read {weights}: {_one_line(exc)}") from None
    model = DIMBA(config)
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise CheckpointLoadError(f"{weights} does not fit the architecture in {CONFIG}: {_one_line(exc)}") from None
    if map_location not in (None, "cpu") and isinstance(map_location, (str, torch.device)):
        model.to(map_location)
    return model.eval()
