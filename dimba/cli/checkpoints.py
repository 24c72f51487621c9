"""`dimba checkpoints list` and `show`: milestone checkpoints read from their JSON sidecars.

Torch-free at import. `list` never loads torch; `show` loads it only for a checkpoint
without a readable sidecar (a Lightning `last.ckpt`, say).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Sequence, Tuple

from dimba.checkpointing.atomic_io import is_sharded_checkpoint, size_on_disk
from dimba.checkpointing.milestones import MilestoneError, format_param_count, parse_milestone
from dimba.checkpointing.sidecars import SIDECAR_NAME, inspect_sidecar

RUN_MARKERS = (".hydra", "train.log", "logs", "checkpoints")
EXPORT_CONFIG = "config.json"


class CLIError(Exception):
    """A user error: the message is printed as one line, the exit code is 2."""


@dataclass
class Row:
    run: str
    milestone: str
    milestone_value: int
    step: int
    params: str
    loss: str
    status: str
    file: str
    error: str = ""

    def key(self) -> Tuple[str, int, int, str]:
        return (self.run, self.milestone_value, self.step, self.file)


# ---------------------------------------------------------------------- list
def find_sidecars(root: Path) -> List[Path]:
    found = []
    for directory, subdirs, files in os.walk(root, onerror=lambda exc: None):
        subdirs.sort()
        found += [Path(directory) / name for name in sorted(files) if SIDECAR_NAME.match(name)]
    return found


def run_directory(sidecar: Path, root: Path) -> Path:
    """The run a sidecar belongs to: the nearest directory (not above `root`) that looks
    like a run (has .hydra, train.log, logs or checkpoints); else the folder above a
    `progressive_checkpoints` folder; else the sidecar's own folder."""
    directory = sidecar.parent
    for candidate in (directory, *directory.parents):
        if any((candidate / marker).exists() for marker in RUN_MARKERS):
            return candidate
        if candidate == root:
            break
    if directory.name == "progressive_checkpoints" and directory != root:
        return directory.parent
    return directory


def read_row(sidecar: Path, root: Path) -> Row:
    run = run_directory(sidecar, root)
    run_name = os.path.relpath(run, root)
    match = SIDECAR_NAME.match(sidecar.name)
    label, step = match.group("label"), int(match.group("step"))
    try:
        value = parse_milestone(label)
    except MilestoneError:
        value = -1
    row = Row(run_name, label, value, step, "-", "-", "ok", os.path.relpath(sidecar.with_suffix(".pt"), run))
    info = inspect_sidecar(sidecar)
    if "checkpoint" not in info:  # the sidecar itself could not be read
        row.status, row.error = "unreadable", one_line(info["error"])
        row.file = os.path.relpath(sidecar, run)
        return row
    row.milestone = str(info.get("milestone_str") or label)
    row.milestone_value, row.step = info["target_milestone"], info["global_step"]
    row.file = os.path.relpath(info["path"], run)
    params = info.get("current_params")
    row.params = str(info.get("current_params_str") or (format_param_count(int(params)) if params else "-"))
    loss = (info.get("metadata") or {}).get("train/loss") if isinstance(info.get("metadata"), dict) else None
    if isinstance(loss, (int, float)) and not isinstance(loss, bool):
        row.loss = f"{loss:.4f}"
    row.status, row.error = info["status"], info.get("error", row.error)
    return row


def list_checkpoints(root: Path) -> List[Row]:
    if not root.exists():
        raise CLIError(f"{root}: no such directory")
    if not root.is_dir():
        raise CLIError(f"{root} is not a directory; `dimba checkpoints list` takes a folder of runs")
    return sorted((read_row(sidecar, root) for sidecar in find_sidecars(root)), key=Row.key)


def format_table(rows: Sequence[Row]) -> str:
    headers = ("run", "milestone", "step", "params", "loss", "status", "file")
    right = {"step", "params", "loss"}
    cells = [headers] + [(r.run, r.milestone, str(r.step), r.params, r.loss, r.status, r.file) for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = []
    for row in cells:
        parts = [c.rjust(w) if h in right else c.ljust(w) for c, w, h in zip(row, widths, headers)]
        lines.append("  ".join(parts).rstrip())
    return "\n".join(lines)


def cmd_list(path: str, out) -> int:
    root = Path(path)
    rows = list_checkpoints(root)
    if not rows:
        print(f"No milestone checkpoints under {root}", file=out)
        return 0
    print(format_table(rows), file=out)
    for row in rows:
        if row.error:
            print(f"! {os.path.join(row.run, row.file)}: {row.error}", file=out)
    return 0


# ---------------------------------------------------------------------- show
_TORCH_BOILERPLATE = (
    # torch.load(weights_only=True) refusals: keep the reason, drop the advice around it.
    (re.compile(r"Weights only load failed\.[^\n]*"), "refused by torch.load(weights_only=True):"),
    (re.compile(r"^\s*Please file an issue[^\n]*?WeightsUnpickler error:", re.M), ""),
    (re.compile(r"^\s*Check the documentation of torch\.load[^\n]*", re.M), ""),
    (re.compile(r" This is an internal miniz error\..*", re.S), ""),
)


def one_line(exc: Any, limit: int = 300) -> str:
    """An exception's message on one line (torch's are often several), at most `limit` chars."""
    text = str(exc)
    for pattern, replacement in _TORCH_BOILERPLATE:
        text = pattern.sub(replacement, text)
    text = " ".join(line.strip() for line in text.splitlines() if line.strip()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def check_checkpoint_file(path: Path) -> None:
    """Refuse, before torch sees it, a file that cannot be a checkpoint (CheckpointLoadError)."""
    from dimba.checkpointing.manager import CheckpointLoadError

    if not path.exists():
        raise CheckpointLoadError(f"{path}: no such file or directory")
    if is_sharded_checkpoint(path):
        return
    if not path.is_file():
        raise CheckpointLoadError(f"{path} is not a file")
    try:
        with path.open("rb") as handle:
            head = handle.read(4)
    except OSError as exc:
        raise CheckpointLoadError(f"cannot read {path}: {one_line(exc)}") from None
    if not head:
        raise CheckpointLoadError(f"{path} is empty (0 bytes): not a checkpoint, or an interrupted write")
    if head != b"PK\x03\x04" and head[:1] != b"\x80":
        raise CheckpointLoadError(f"{path} is not a checkpoint (neither a PyTorch zip archive nor a pickle)")




def read_sidecar(path: Path) -> Dict[str, Any]:
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise CLIError(f"{path}: sidecar unreadable: {one_line(exc)}") from None
    if not isinstance(info, dict) or "global_step" not in info:
        raise CLIError(f"{path} is not a dimba checkpoint sidecar")
    return info


def describe_checkpoint(path: Path) -> Tuple[Dict[str, Any], str]:
    """(record, where it came from). The record has the sidecar's keys (global_step,
    current_params, metadata{architecture, growth_history, ...}, ...)."""
    if not path.exists():
        raise CLIError(f"{path}: no such file or directory")
    if path.is_dir() and not is_sharded_checkpoint(path):
        config = path / EXPORT_CONFIG
        if config.is_file():
            return _export_record(path, config), f"export directory ({EXPORT_CONFIG})"
        raise CLIError(f"{path} is a directory, not a checkpoint")
    if path.suffix == ".json":
        info = read_sidecar(path)
        checkpoint = path.with_name(str(info.get("checkpoint", path.with_suffix(".pt").name)))
        return _with_file_status(info, checkpoint), f"sidecar {path.name}"
    sidecar = path.with_suffix(".json")
    note = ""
    if sidecar.is_file():
        try:
            info = read_sidecar(sidecar)
            if info.get("checkpoint") in (None, path.name):
                return _with_file_status(info, path), f"sidecar {sidecar.name}"
        except CLIError as exc:
            note = f" ({exc}; read the checkpoint instead)"
    return _record_from_checkpoint(path), f"checkpoint file{note}"


def _with_file_status(info: Dict[str, Any], checkpoint: Path) -> Dict[str, Any]:
    info = dict(info)
    info["path"] = str(checkpoint)
    size = size_on_disk(checkpoint) if checkpoint.exists() else None
    if size is None:
        info["status"] = f"missing ({checkpoint.name} is gone)"
    elif info.get("size_bytes") not in (None, size):
        info["status"] = f"unreadable ({size} bytes on disk, {info['size_bytes']} written)"
    else:
        info["status"] = "ok"
    return info



def _export_record(path: Path, config: Path) -> Dict[str, Any]:
    try:
        info = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise CLIError(f"{config}: unreadable: {one_line(exc)}") from None
    if not isinstance(info, dict) or not isinstance(info.get("architecture"), dict):
        raise CLIError(f"{path} is not a dimba export (its {EXPORT_CONFIG} has no architecture)")
    metadata = {"architecture": info["architecture"], "growth_history": info.get("growth_history", [])}
    return {"path": str(path), "status": "ok", "global_step": info.get("global_step"),
            "current_params": info.get("param_count"), "format": info.get("format"),
            "source_checkpoint": info.get("source_checkpoint"), "metadata": metadata}


def _record_from_checkpoint(path: Path) -> Dict[str, Any]:
    """Torch enters here only: a checkpoint without a sidecar (e.g. Lightning's last.ckpt)."""
    from dimba.checkpointing.manager import read_checkpoint

    check_checkpoint_file(path)
    checkpoint = read_checkpoint(path)  # CheckpointLoadError names the file
    record = checkpoint.get("dimba") if isinstance(checkpoint.get("dimba"), dict) else None
    metadata = dict(checkpoint.get("metadata") or {}) if isinstance(checkpoint.get("metadata"), dict) else {}
    if record:
        metadata.update(record)
    if not isinstance(metadata.get("architecture"), dict):
        from dimba.checkpointing.manager import CheckpointLoadError

        raise CheckpointLoadError(f"{path} records no model architecture; it was not written by dimba")
    info = {k: checkpoint[k] for k in ("global_step", "epoch", "current_params", "target_milestone", "milestones",
                                       "reached_milestones") if k in checkpoint}
    if "current_params" not in info:
        try:
            from dimba.growth.plan import count_parameters
            from dimba.model import DIMBAConfig

            info["current_params"] = count_parameters(DIMBAConfig.from_dict(metadata["architecture"]))
        except Exception:
            pass
    info.update(path=str(path), status="ok", size_bytes=size_on_disk(path), metadata=_plain(metadata))
    return info


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "item") and hasattr(value, "numel"):  # a tensor
        return value.item() if value.numel() == 1 else f"<tensor {tuple(value.shape)}>"
    return value


def _milestone_list(values: Any) -> str:
    if not isinstance(values, list) or not values:
        return "-"
    from dimba.checkpointing.milestones import milestone_label

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


def growth_change(event: Dict[str, Any]) -> str:
    if event.get("op") == "depth":
        return f"depth -> {event.get('n_layers')} layers ({event.get('mode', 'identity')})"
    if event.get("op") == "width":
        return f"width -> d_model {event.get('d_model')}"
    return str(event.get("op", "?"))


def format_record(info: Dict[str, Any], source: str) -> str:
    metadata = info.get("metadata") if isinstance(info.get("metadata"), dict) else {}
    lines = []
    size = info.get("size_bytes")
    lines.append(f"checkpoint   {info.get('path')}")
    lines.append(f"read from    {source}")
    lines.append(f"status       {info.get('status', 'ok')}")
    if isinstance(size, int):
        lines.append(f"size         {size / 1e6:.1f} MB")
    if info.get("checkpoint_format"):
        lines.append(f"format       {info['checkpoint_format']}")
    if info.get("milestone_str") or info.get("target_milestone") is not None:
        label = info.get("milestone_str") or _milestone_list([info.get("target_milestone")])
        lines.append(f"milestone    {label}")
    if "milestones" in info:
        lines.append(f"reached      {_milestone_list(info.get('reached_milestones'))} "
                     f"(of {_milestone_list(info.get('milestones'))})")
    if info.get("saved_together_with"):
        lines.append(f"saved with   {', '.join(info['saved_together_with'])}")
    lines.append(f"step         {_value(info.get('global_step'))}")
    lines.append(f"params       {_count(info.get('current_params'))}")
    if info.get("created_at"):
        lines.append(f"created      {info['created_at']}")
    if info.get("source_checkpoint"):
        lines.append(f"exported from {info['source_checkpoint']}")

    architecture = metadata.get("architecture")
    if isinstance(architecture, dict):
        lines += ["", "architecture"]
        width = max(map(len, architecture), default=0)
        lines += [f"  {k.ljust(width)}  {_value(v)}" for k, v in architecture.items()]

    history = metadata.get("growth_history")
    lines += ["", "growth history"]
    if isinstance(history, list) and history:
        lines.append(f"  {'step':>8}  {'change':<32}  {'layers':>6}  {'d_model':>7}  {'params':>14}")
        for event in history:
            if not isinstance(event, dict):
                continue
            arch = event.get("architecture") if isinstance(event.get("architecture"), dict) else {}
            params = event.get("params")
            lines.append(
                f"  {_value(event.get('applied_at_step', event.get('step'))):>8}  {growth_change(event):<32}  "
                f"{_value(arch.get('n_layers')):>6}  {_value(arch.get('d_model')):>7}  "
                f"{f'{int(params):,}' if isinstance(params, (int, float)) else '-':>14}"
            )
    else:
        lines.append("  none (the model has its initial size)")

    others = {k: v for k, v in metadata.items() if k not in ("architecture", "growth_history")}
    if others:
        lines += ["", "metadata"]
        width = max(map(len, others))
        lines += [f"  {k.ljust(width)}  {_value(v)}" for k, v in sorted(others.items())]
    return "\n".join(lines)


def cmd_show(path: str, out) -> int:
    info, source = describe_checkpoint(Path(path))
    print(format_record(info, source), file=out)
    return 0
