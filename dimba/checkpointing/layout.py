"""The run directory's layout: where a run's two kinds of checkpoint live. Torch-free.

    <run>/progressive_checkpoints/   milestone checkpoints and their sidecars (the default
                                     `progressive_checkpoints.save_dir`, relative to the run)
    <run>/checkpoints/               Lightning's `last.ckpt` (a file, or a sharded directory)

Every module that looks for checkpoints in a run directory asks here.
"""

from __future__ import annotations

from pathlib import Path

MILESTONE_DIR = "progressive_checkpoints"
LIGHTNING_DIR = "checkpoints"


def milestone_dir(run_dir: Path) -> Path:
    """Where a run writes its milestones when `progressive_checkpoints.save_dir` is the default."""
    return Path(run_dir) / MILESTONE_DIR


def milestone_dir_of(run_dir: Path) -> Path:
    """Where a finished or interrupted run wrote its milestones: its composed
    `progressive_checkpoints.save_dir` (`.hydra/config.yaml`; relative means inside the run),
    else the default folder."""
    import yaml

    run_dir = Path(run_dir)
    try:
        composed = yaml.safe_load((run_dir / ".hydra" / "config.yaml").read_text(encoding="utf-8"))
        save_dir = composed["progressive_checkpoints"]["save_dir"]
    except (OSError, yaml.YAMLError, KeyError, TypeError):
        return milestone_dir(run_dir)
    if not isinstance(save_dir, str) or not save_dir or "${" in save_dir:
        return milestone_dir(run_dir)
    path = Path(save_dir).expanduser()
    return path if path.is_absolute() else run_dir / path


def lightning_dir(run_dir: Path) -> Path:
    """Where a run writes Lightning's `last.ckpt`."""
    return Path(run_dir) / LIGHTNING_DIR


def is_run_dir(path: Path) -> bool:
    """A directory holding either kind of checkpoint folder."""
    path = Path(path)
    return path.is_dir() and (milestone_dir(path).is_dir() or lightning_dir(path).is_dir())


def run_of(checkpoint: Path) -> Path:
    """The run directory of a checkpoint inside one of its checkpoint folders."""
    return Path(checkpoint).parent.parent
