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

from dimba.checkpointing import format as ckpt_format
from dimba.checkpointing.atomic_io import fsync_dir
from dimba.checkpointing.record import EXPORT_CONFIG, EXPORT_FORMAT, EXPORT_VERSION, EXPORT_WEIGHTS
from dimba.data.format import TOKENIZER_FILE
from dimba.errors import CheckpointLoadError
from dimba.io.load import load_model
from dimba.io.read import safetensors_torch
from dimba.model import DIMBA
from dimba.model.params import count_parameters

PathLike = Union[str, os.PathLike]


def export_checkpoint(checkpoint: PathLike, out_dir: PathLike) -> Path:
    """Write OUT/model.safetensors, then OUT/config.json (a directory with a config.json is
    complete). Returns OUT."""
    st = safetensors_torch()
    checkpoint, out_dir = Path(checkpoint), Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise CheckpointLoadError(f"{out_dir} exists and is not a directory")
    model = load_model(checkpoint)
    tensors = _standalone_tensors(model)
    config = {
        "format": EXPORT_FORMAT,
        "format_version": EXPORT_VERSION,
        "weights": EXPORT_WEIGHTS,
        "architecture": model.config.to_dict(),
        "param_count": count_parameters(model),
        "dtype": str(next(iter(tensors.values())).dtype).replace("torch.", ""),
        "source_checkpoint": str(checkpoint.resolve()) if checkpoint.exists() else str(checkpoint),
    }
    config.update(_source_record(checkpoint))
    out_dir.mkdir(parents=True, exist_ok=True)
    config["tokenizer"] = _ship_tokenizer(model, out_dir)
    weights_tmp, config_tmp = out_dir / f".{EXPORT_WEIGHTS}.tmp", out_dir / f".{EXPORT_CONFIG}.tmp"
    try:
        st.save_file(tensors, str(weights_tmp), metadata={"format": "pt", "dimba_format": EXPORT_FORMAT})
        config_tmp.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        os.chmod(weights_tmp, config_tmp.stat().st_mode & 0o777)  # safetensors writes 0600; use the umask's mode
        for tmp in (weights_tmp, config_tmp):
            with open(tmp, "rb") as handle:
                os.fsync(handle.fileno())
        os.replace(weights_tmp, out_dir / EXPORT_WEIGHTS)
        os.replace(config_tmp, out_dir / EXPORT_CONFIG)
        fsync_dir(out_dir)
    finally:
        weights_tmp.unlink(missing_ok=True)
        config_tmp.unlink(missing_ok=True)
    return out_dir


def _ship_tokenizer(model: DIMBA, out_dir: Path) -> Dict[str, Any]:
    """The tokenizer's record for config.json; a trained tokenizer also as OUT/tokenizer.json
    (what Hugging Face tools read), written atomically."""
    from dimba.checkpointing.atomic_io import write_atomic
    from dimba.data.records import tokenizer_record

    record = tokenizer_record(model.tokenizer)
    if record.get("name") != "bytes":
        text = model.tokenizer.json_text
        write_atomic(out_dir / TOKENIZER_FILE, lambda tmp: tmp.write_text(text, encoding="utf-8"))
        record = {**record, "path": TOKENIZER_FILE}
    return record


def _standalone_tensors(model: DIMBA) -> Dict[str, torch.Tensor]:
    """The state dict with no two tensors sharing storage (safetensors refuses that)."""
    tensors: Dict[str, torch.Tensor] = {}
    seen = set()
    for name, tensor in model.state_dict().items():
        tensor = tensor.detach().cpu().contiguous()
        key = (tensor.untyped_storage().data_ptr(), tensor.storage_offset())
        if key in seen or tensor.untyped_storage().nbytes() != tensor.numel() * tensor.element_size():
            tensor = tensor.clone()
        seen.add(key)
        tensors[name] = tensor
    return tensors


def _source_record(checkpoint: Path) -> Dict[str, Any]:
    """global_step and growth history from the checkpoint's sidecar, when it has one."""
    sidecar = ckpt_format.sidecar_of(checkpoint)
    if not sidecar.is_file():
        return {}
    try:
        info = ckpt_format.Sidecar.read(sidecar)
    except ckpt_format.SidecarError:
        return {}
    return {"global_step": info.global_step, "growth_history": list(info.metadata.get("growth_history") or [])}
