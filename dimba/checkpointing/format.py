"""The milestone checkpoint format, owned here: file layout, the versioned sidecar, the record.

Everything that writes or reads a milestone checkpoint goes through this module: the
trainers' writer, the manager's listing, `resume=auto`, the `dimba` command, the plot and
the loaders. It is plain Python (no torch): a sidecar is JSON, and a loaded checkpoint is a
dict whose tensors this module only passes along.

Layout: `checkpoint_<label>_step_<step>.pt` (one file, `torch.save`; or a directory of
Distributed Checkpoint shards written by every rank) beside `checkpoint_<label>_step_<step>.json`.
"""

from __future__ import annotations

import datetime as _dt
import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple

from dimba.checkpointing import atomic_io
from dimba.checkpointing.milestones import format_param_count, milestone_label
from dimba.version import __version__

SIDECAR_FORMAT = "dimba.progressive_checkpoint"
SIDECAR_VERSION = 2  # 2 adds `dimba_version`; version 1 files read the same
FORMAT_FILE, FORMAT_DCP = "torch_save", "torch_dcp"
CHECKPOINT_GLOB = "checkpoint_*_step_*.pt"
SIDECAR_GLOB = "checkpoint_*_step_*.json"
_NAME = re.compile(r"^checkpoint_(?P<label>.+)_step_(?P<step>\d+)\.(?:pt|json)$")


class SidecarError(ValueError):
    """A sidecar that does not parse or does not describe a milestone checkpoint."""


# ---------------------------------------------------------------------- layout
def checkpoint_name(milestone: int, global_step: int) -> str:
    return f"checkpoint_{milestone_label(milestone)}_step_{int(global_step)}.pt"


def parse_name(name: str) -> Optional[Tuple[str, int]]:
    """(milestone label, step) of a checkpoint or sidecar file name, or None."""
    match = _NAME.match(name)
    return (match.group("label"), int(match.group("step"))) if match else None


def sidecar_of(checkpoint: Path) -> Path:
    return Path(checkpoint).with_suffix(".json")


def sidecars_in(directory: Path) -> List[Path]:
    directory = Path(directory)
    return sorted(directory.glob(SIDECAR_GLOB)) if directory.is_dir() else []


# ---------------------------------------------------------------------- sidecar
VAL_BPB, VAL_BPB_SE = "val_bpb", "val_bpb_se"
"""Metadata keys of a milestone's likelihood bound (bits per byte) and its standard error."""


def bound_text(metadata: Mapping[str, Any], digits: int = 4, separator: str = " ± ") -> Optional[str]:
    """A milestone's likelihood bound from its metadata, `5.8213 ± 0.0612`; None if it has none."""
    def number(value: Any) -> bool:
        return isinstance(value, (int, float)) and not isinstance(value, bool)

    bpb, se = metadata.get(VAL_BPB), metadata.get(VAL_BPB_SE)
    if not number(bpb):
        return None
    return f"{bpb:.{digits}f}{separator}{se:.{digits}f}" if number(se) else f"{bpb:.{digits}f}"


@dataclass
class Sidecar:
    """The JSON written beside each milestone checkpoint: readable without torch."""

    checkpoint: str
    global_step: int
    current_params: int
    target_milestone: int
    milestones: List[int]
    reached_milestones: List[int]
    checkpoint_format: str = FORMAT_FILE
    saved_together_with: List[str] = field(default_factory=list)
    size_bytes: Optional[int] = None
    created_at: str = ""
    metadata: Dict[str, Any] = field(default_factory=dict)
    dimba_version: Optional[str] = None
    version: int = SIDECAR_VERSION

    def to_dict(self) -> Dict[str, Any]:
        data = asdict(self)
        data.pop("version")
        data["format"] = f"{SIDECAR_FORMAT}/{self.version}"
        data["current_params_str"] = format_param_count(self.current_params)
        data["milestone_str"] = milestone_label(self.target_milestone)
        data["metadata"] = jsonable(self.metadata)
        return data

    @classmethod
    def from_dict(cls, data: Any) -> "Sidecar":
        if not isinstance(data, dict):
            raise SidecarError(f"holds a JSON {type(data).__name__}, not an object")
        name, _, version = str(data.get("format", "")).partition("/")
        if name != SIDECAR_FORMAT or not version.isdigit():
            raise SidecarError(f"is not a dimba sidecar (format {data.get('format')!r})")
        if int(version) > SIDECAR_VERSION:
            raise SidecarError(f"has format version {version}; this dimba reads up to {SIDECAR_VERSION}")
        try:
            return cls(
                checkpoint=str(data["checkpoint"]), global_step=int(data["global_step"]),
                current_params=int(data["current_params"]), target_milestone=int(data["target_milestone"]),
                milestones=[int(m) for m in data.get("milestones", [])],
                reached_milestones=[int(m) for m in data.get("reached_milestones", [])],
                checkpoint_format=str(data.get("checkpoint_format", FORMAT_FILE)),
                saved_together_with=[str(s) for s in data.get("saved_together_with", [])],
                size_bytes=None if data.get("size_bytes") is None else int(data["size_bytes"]),
                created_at=str(data.get("created_at", "")), metadata=dict(data.get("metadata") or {}),
                dimba_version=data.get("dimba_version"), version=int(version),
            )
        except KeyError as exc:
            raise SidecarError(f"has no {exc.args[0]!r}") from None
        except (TypeError, ValueError) as exc:
            raise SidecarError(f"has a malformed value ({exc})") from None

    @classmethod
    def read(cls, path: Path) -> "Sidecar":
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise SidecarError(str(exc).splitlines()[0] if str(exc) else type(exc).__name__) from None
        return cls.from_dict(data)

    def write(self, path: Path) -> None:
        atomic_io.write_json_atomic(Path(path), self.to_dict())


def new_sidecar(checkpoint: Path, milestone: int, together: List[Path], global_step: int, current_params: int,
                milestones: List[int], reached: List[int], metadata: Mapping[str, Any], size_bytes: int,
                sharded: bool) -> Sidecar:
    return Sidecar(
        checkpoint=checkpoint.name, global_step=int(global_step), current_params=int(current_params),
        target_milestone=int(milestone), milestones=list(milestones), reached_milestones=list(reached),
        checkpoint_format=FORMAT_DCP if sharded else FORMAT_FILE,
        saved_together_with=[p.name for p in together if p != checkpoint], size_bytes=int(size_bytes),
        created_at=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        metadata=dict(metadata), dimba_version=__version__,
    )


# ---------------------------------------------------------------------- status
@dataclass
class Entry:
    """One milestone checkpoint as a listing sees it: its sidecar and the state of its file."""

    sidecar_path: Path
    checkpoint_path: Path
    status: str  # "ok", "missing" (only the sidecar is left) or "unreadable"
    sidecar: Optional[Sidecar] = None
    error: Optional[str] = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def as_dict(self) -> Dict[str, Any]:
        """A listing entry of `list_checkpoints`: the sidecar's keys plus status, path and
        metadata_path (and `error` unless ok). An unreadable sidecar still gets milestone_str,
        global_step and target_milestone (-1) from its file name."""
        if self.sidecar is not None:
            info = self.sidecar.to_dict()
        else:
            label, step = parse_name(self.sidecar_path.name) or ("?", -1)
            info = {"milestone_str": label, "global_step": step, "target_milestone": -1}
        info.update(status=self.status, path=str(self.checkpoint_path), metadata_path=str(self.sidecar_path))
        if self.error is not None:
            info["error"] = self.error
        return info


def inspect(sidecar_path: Path) -> Entry:
    """Judge a milestone checkpoint by its sidecar: ok when the sidecar parses and names a
    file (or shard directory) of the size it recorded."""
    sidecar_path = Path(sidecar_path)
    try:
        sidecar = Sidecar.read(sidecar_path)
    except SidecarError as exc:
        return Entry(sidecar_path, sidecar_path.with_suffix(".pt"), "unreadable", error=f"sidecar unreadable: {exc}")
    checkpoint = sidecar_path.with_name(sidecar.checkpoint)
    if not checkpoint.exists():
        return Entry(sidecar_path, checkpoint, "missing", sidecar, f"{checkpoint.name} is gone (only its sidecar is left)")
    size = atomic_io.size_on_disk(checkpoint)
    if sidecar.size_bytes not in (None, size):
        return Entry(sidecar_path, checkpoint, "unreadable", sidecar,
                     f"{size} bytes on disk, {sidecar.size_bytes} written (truncated or replaced)")
    return Entry(sidecar_path, checkpoint, "ok", sidecar)


def entries_in(directory: Path) -> List[Entry]:
    """Every milestone checkpoint of a directory that left a sidecar, by milestone then step."""
    entries = [inspect(path) for path in sidecars_in(directory)]
    return sorted(entries, key=lambda e: (e.sidecar.target_milestone if e.sidecar else -1,
                                          e.sidecar.global_step if e.sidecar else -1, e.sidecar_path.name))


def is_our_sidecar(path: Path) -> bool:
    try:
        Sidecar.read(path)
    except SidecarError:
        return False
    return True


# ---------------------------------------------------------------------- checkpoint contents
def milestone_entries(global_step: int, saved: List[int], current_params: int, milestones: List[int],
                      reached: List[int], metadata: Optional[Mapping[str, Any]] = None) -> Dict[str, Any]:
    """The milestone format's scalar keys. With several milestones in one save, the file's
    `target_milestone` is the largest; each sidecar names its own milestone."""
    return {
        "global_step": int(global_step),
        "current_params": int(current_params),
        "target_milestone": int(max(saved)),
        "milestones": sorted(int(m) for m in milestones),
        "reached_milestones": sorted(set(int(m) for m in reached) | {int(m) for m in saved}),
        "metadata": dict(metadata or {}),
    }


def jsonable(value: Any) -> Any:
    """Metadata for JSON: scalar tensors become numbers, other objects their text."""
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if hasattr(value, "numel") and hasattr(value, "tolist"):  # a tensor, without importing torch
        return value.item() if value.numel() == 1 else value.tolist()
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)
