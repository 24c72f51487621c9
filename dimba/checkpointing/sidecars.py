"""Reading one milestone sidecar and judging its checkpoint, without torch.

The one rule the manager's listing, `resume=auto` and `dimba checkpoints list` share: a
milestone checkpoint is "ok" when its sidecar parses and names a file of the size it
recorded (a file, or a directory of shards under FSDP: its files' total); "unreadable"
when the sidecar does not parse or the size differs; "missing" when only the sidecar is
left.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Dict

from dimba.checkpointing.atomic_io import size_on_disk

SIDECAR_NAME = re.compile(r"^checkpoint_(?P<label>.+)_step_(?P<step>\d+)\.json$")


def inspect_sidecar(sidecar: Path) -> Dict[str, Any]:
    """The sidecar's contents plus `status`, `path` (the checkpoint), `metadata_path` and,
    unless ok, `error`. An unreadable sidecar still gets `milestone_str`, `global_step` and
    `target_milestone` (-1) from its file name, so code reading every entry keeps working."""
    sidecar = Path(sidecar)
    checkpoint = sidecar.with_suffix(".pt")
    try:
        info = json.loads(sidecar.read_text(encoding="utf-8"))
        if not isinstance(info, dict):
            raise ValueError(f"holds a JSON {type(info).__name__}, not an object")
        info["target_milestone"] = int(info["target_milestone"])
        info["global_step"] = int(info["global_step"])
        checkpoint = sidecar.with_name(str(info["checkpoint"]))
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as exc:
        match = SIDECAR_NAME.match(sidecar.name)
        label, step = (match.group("label"), int(match.group("step"))) if match else ("?", -1)
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return {"status": "unreadable", "error": f"sidecar unreadable: {reason}", "path": str(checkpoint),
                "metadata_path": str(sidecar), "milestone_str": label, "global_step": step, "target_milestone": -1}
    info.update(status="ok", path=str(checkpoint), metadata_path=str(sidecar))
    if not checkpoint.exists():
        info.update(status="missing", error=f"{checkpoint.name} is gone (only its sidecar is left)")
        return info
    size = size_on_disk(checkpoint)
    if info.get("size_bytes") not in (None, size):
        info.update(status="unreadable", error=f"{size} bytes on disk, {info['size_bytes']} written (truncated or replaced)")
    return info
