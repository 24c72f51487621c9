"""`dimba checkpoints list`: every milestone checkpoint under a folder, from its sidecar.

Torch-free: the sidecars are read and judged by `dimba.checkpointing.format`, the same
rule the manager's listing and `resume=auto` use.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import List, Sequence, Tuple

from dimba.checkpointing import format as ckpt_format
from dimba.checkpointing.layout import LIGHTNING_DIR, MILESTONE_DIR
from dimba.checkpointing.milestones import MilestoneError, format_param_count, parse_milestone

RUN_MARKERS = (".hydra", "train.log", "logs", LIGHTNING_DIR)


class CLIError(Exception):
    """A user error: the message is printed as one line, the exit code is 2."""


def one_line(exc: object, limit: int = 300) -> str:
    """A message on one line, at most `limit` characters."""
    text = " ".join(line.strip() for line in str(exc).splitlines() if line.strip()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


@dataclass
class Row:
    run: str
    milestone: str
    milestone_value: int
    step: int
    params: str
    loss: str
    val_bpb: str
    status: str
    file: str
    error: str = ""

    def key(self) -> Tuple[str, int, int, str]:
        return (self.run, self.milestone_value, self.step, self.file)


def find_sidecars(root: Path) -> List[Path]:
    found = []
    for directory, subdirs, files in os.walk(root, onerror=lambda exc: None):
        subdirs.sort()
        found += [Path(directory) / name for name in sorted(files)
                  if name.endswith(".json") and ckpt_format.parse_name(name)]
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
    if directory.name == MILESTONE_DIR and directory != root:
        return directory.parent
    return directory


def read_row(sidecar_path: Path, root: Path) -> Row:
    run = run_directory(sidecar_path, root)
    label, step = ckpt_format.parse_name(sidecar_path.name) or ("?", -1)
    try:
        value = parse_milestone(label)
    except MilestoneError:
        value = -1
    entry = ckpt_format.inspect(sidecar_path)
    sidecar = entry.sidecar
    if sidecar is None:  # the sidecar itself could not be read
        return Row(os.path.relpath(run, root), label, value, step, "-", "-", "-", entry.status,
                   os.path.relpath(sidecar_path, run), one_line(entry.error))
    loss = sidecar.metadata.get("train/loss")
    return Row(
        run=os.path.relpath(run, root), milestone=entry.as_dict()["milestone_str"],
        milestone_value=sidecar.target_milestone, step=sidecar.global_step,
        params=format_param_count(sidecar.current_params),
        loss=f"{loss:.4f}" if isinstance(loss, (int, float)) and not isinstance(loss, bool) else "-",
        val_bpb=ckpt_format.bound_text(sidecar.metadata, digits=3, separator="±") or "-",
        status=entry.status, file=os.path.relpath(entry.checkpoint_path, run), error=entry.error or "",
    )


def list_checkpoints(root: Path) -> List[Row]:
    if not root.exists():
        raise CLIError(f"{root}: no such directory")
    if not root.is_dir():
        raise CLIError(f"{root} is not a directory; `dimba checkpoints list` takes a folder of runs")
    return sorted((read_row(sidecar, root) for sidecar in find_sidecars(root)), key=Row.key)


def format_table(rows: Sequence[Row]) -> str:
    headers = ("run", "milestone", "step", "params", "train loss", "val bpb", "status", "file")
    right = {"step", "params", "train loss", "val bpb"}
    cells = [headers] + [(r.run, r.milestone, str(r.step), r.params, r.loss, r.val_bpb, r.status, r.file) for r in rows]
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
