"""`dimba checkpoints show`: metadata, architecture and growth history of one checkpoint.

A milestone checkpoint is described from its sidecar (no torch); anything else (Lightning's
`last.ckpt`, a sharded directory, an export) is opened through `dimba.io.read.open_checkpoint`
with its tensors left on disk.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, Tuple

from dimba.checkpointing import format as ckpt_format
from dimba.checkpointing.atomic_io import size_on_disk
from dimba.checkpointing.files import checkpoint_kind
from dimba.checkpointing.milestones import format_param_count, milestone_label
from dimba.checkpointing.record import EXPORT_CONFIG
from dimba.cli.checkpoints import CLIError
from dimba.growth.schedule import describe_event


def describe_checkpoint(path: Path) -> Tuple[Dict[str, Any], str]:
    """(record, where it came from). The record has the sidecar's keys (global_step,
    current_params, metadata{architecture, growth_history, ...}, ...). A milestone is
    described from its sidecar (no torch); anything else `dimba.io.read` opens, tensors
    left on disk."""
    kind = checkpoint_kind(path)  # CheckpointLoadError names the path
    if kind == "sidecar":
        return _from_sidecar(path), f"sidecar {path.name}"
    note = ""
    sidecar = ckpt_format.sidecar_of(path)
    if kind in ("file", "sharded") and sidecar.is_file():
        try:
            info = _from_sidecar(sidecar)
            if Path(info["path"]).name == path.name:
                return info, f"sidecar {sidecar.name}"
        except CLIError as exc:
            note = f" ({exc}; read the checkpoint instead)"
    source = {"export": f"export directory ({EXPORT_CONFIG})", "sharded": "sharded checkpoint directory"}
    return _record_from_checkpoint(path), source.get(kind, f"checkpoint file{note}")


def _from_sidecar(path: Path) -> Dict[str, Any]:
    entry = ckpt_format.inspect(path)
    if entry.sidecar is None:
        raise CLIError(f"{path} is not a dimba checkpoint sidecar ({entry.error})")
    info = entry.as_dict()
    info["status"] = entry.status if entry.ok else f"{entry.status} ({entry.error})"
    return info


def _record_from_checkpoint(path: Path) -> Dict[str, Any]:
    """Torch enters here only: a checkpoint without a sidecar (Lightning's last.ckpt, a sharded
    directory, an export)."""
    from dimba.errors import CheckpointLoadError
    from dimba.io.read import open_checkpoint
    from dimba.model import DIMBAConfig
    from dimba.model.params import architecture_parameters

    record = open_checkpoint(path, tensors=False)  # CheckpointLoadError names the file
    architecture = record.architecture
    if architecture is None:
        raise CheckpointLoadError(f"{path} records no model architecture; it was not written by dimba")
    metadata = dict(record.data.get("metadata") or {}) if isinstance(record.data.get("metadata"), dict) else {}
    metadata.update(architecture=architecture, growth_history=record.growth_history)
    keys = ("global_step", "epoch", "current_params", "target_milestone", "milestones", "reached_milestones",
            "format", "source_checkpoint")
    info = {k: record.data[k] for k in keys if k in record.data}
    if "current_params" not in info:
        try:
            info["current_params"] = architecture_parameters(DIMBAConfig.from_record(architecture))
        except (TypeError, ValueError):
            pass
    info.update(path=str(path), status="ok", size_bytes=size_on_disk(path), metadata=ckpt_format.jsonable(metadata))
    return info


def _milestone_list(values: Any) -> str:
    if not isinstance(values, list) or not values:
        return "-"
    try:
        return ", ".join(milestone_label(int(v)) for v in values)
    except (TypeError, ValueError):
        return ", ".join(map(str, values))


def _count(value: Any) -> str:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return f"{int(value):,} ({format_param_count(int(value))})"
    return "-"


def _value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    if value is None:
        return "-"
    return json.dumps(value) if isinstance(value, (dict, list)) else str(value)


def _header(info: Dict[str, Any], source: str) -> list:
    lines = [f"checkpoint   {info.get('path')}", f"read from    {source}", f"status       {info.get('status', 'ok')}"]
    if isinstance(info.get("size_bytes"), int):
        lines.append(f"size         {info['size_bytes'] / 1e6:.1f} MB")
    if info.get("checkpoint_format"):
        lines.append(f"format       {info['checkpoint_format']}")
    if info.get("milestone_str") or info.get("target_milestone") is not None:
        lines.append(f"milestone    {info.get('milestone_str') or _milestone_list([info.get('target_milestone')])}")
    if "milestones" in info:
        lines.append(f"reached      {_milestone_list(info.get('reached_milestones'))} "
                     f"(of {_milestone_list(info.get('milestones'))})")
    if info.get("saved_together_with"):
        lines.append(f"saved with   {', '.join(info['saved_together_with'])}")
    metadata = info.get("metadata") if isinstance(info.get("metadata"), dict) else {}
    architecture = metadata.get("architecture") if isinstance(metadata.get("architecture"), dict) else {}
    lines.append(f"objective    {architecture.get('objective', 'diffusion')}")
    lines.append(f"step         {_value(info.get('global_step'))}")
    lines.append(f"params       {_count(info.get('current_params'))}")
    if info.get("created_at"):
        lines.append(f"created      {info['created_at']}")
    if info.get("source_checkpoint"):
        lines.append(f"exported from {info['source_checkpoint']}")
    return lines


def _growth_lines(history: Any) -> list:
    lines = ["", "growth history"]
    events = [e for e in history if isinstance(e, dict)] if isinstance(history, list) else []
    if not events:
        return lines + ["  none (the model has its initial size)"]
    lines.append(f"  {'step':>8}  {'change':<32}  {'layers':>6}  {'d_model':>7}  {'params':>14}")
    for event in events:
        arch = event.get("architecture") if isinstance(event.get("architecture"), dict) else {}
        params = event.get("params")
        lines.append(
            f"  {_value(event.get('applied_at_step', event.get('step'))):>8}  {describe_event(event):<32}  "
            f"{_value(arch.get('n_layers')):>6}  {_value(arch.get('d_model')):>7}  "
            f"{f'{int(params):,}' if isinstance(params, (int, float)) else '-':>14}"
        )
    return lines


def format_record(info: Dict[str, Any], source: str) -> str:
    metadata = info.get("metadata") if isinstance(info.get("metadata"), dict) else {}
    lines = _header(info, source)
    bound = ckpt_format.bound_text(metadata)
    architecture = metadata.get("architecture")
    if bound is not None:
        exact = isinstance(architecture, dict) and architecture.get("objective") == "ar"
        what = "the exact likelihood" if exact else "the likelihood bound"
        lines.append(f"val bpb      {bound} bits per byte ({what} on the validation subset)")
    if isinstance(architecture, dict):
        width = max(map(len, architecture), default=0)
        lines += ["", "architecture"] + [f"  {k.ljust(width)}  {_value(v)}" for k, v in architecture.items()]
    lines += _growth_lines(metadata.get("growth_history"))
    others = {k: v for k, v in metadata.items() if k not in ("architecture", "growth_history", "data")}
    if others:
        width = max(map(len, others))
        lines += ["", "metadata"] + [f"  {k.ljust(width)}  {_value(v)}" for k, v in sorted(others.items())]
    return "\n".join(lines)


def cmd_show(path: str, out) -> int:
    info, source = describe_checkpoint(Path(path))
    print(format_record(info, source), file=out)
    return 0
