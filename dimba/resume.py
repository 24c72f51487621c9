"""`resume=auto`: find the run to continue and its newest valid checkpoint.

A run is "the same experiment" when its command-line overrides match, ignoring the ones
that only steer resuming (`resume`, `ckpt_path`, `trainer.max_steps`, `hydra.*`). Its
newest valid checkpoint is the one with the highest step among Lightning's checkpoints
and the milestone checkpoints, skipping files that cannot be opened (a truncated file
left by another tool) and milestone files without their sidecar.
"""

from __future__ import annotations

import logging
import zipfile
from pathlib import Path
from typing import Iterable, List, Optional, Tuple

from dimba.checkpointing.atomic_io import is_sharded_checkpoint
from dimba.checkpointing.sidecars import inspect_sidecar

log = logging.getLogger(__name__)

VOLATILE = ("resume=", "ckpt_path=", "trainer.max_steps=", "hydra.", "dry_run=")


def experiment_identity(overrides: Iterable[str]) -> Tuple[str, ...]:
    return tuple(sorted(o for o in overrides if not o.lstrip("+~").startswith(VOLATILE)))


def _saved_overrides(run_dir: Path) -> Optional[List[str]]:
    """The overrides as typed (interpolations unresolved), or None for no readable record."""
    import yaml

    try:
        overrides = yaml.safe_load((run_dir / ".hydra" / "overrides.yaml").read_text())
    except (OSError, yaml.YAMLError):
        return None
    return [str(o) for o in overrides] if isinstance(overrides, list) else None


def checkpoint_step(path: Path) -> Optional[int]:
    """The global step a checkpoint holds, read without loading its tensors; None if unreadable.
    A sharded (FSDP) checkpoint is a directory whose `meta.pt` holds the step."""
    if path.is_dir():
        if not is_sharded_checkpoint(path):
            log.warning("Skipping incomplete sharded checkpoint %s (no .metadata)", path)
            return None
        path = path / "meta.pt"
    try:
        with zipfile.ZipFile(path) as archive:  # a truncated file has no central directory
            archive.infolist()
        import torch

        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        return int(checkpoint["global_step"])
    except Exception as exc:
        log.warning("Skipping unreadable checkpoint %s: %s", path, exc)
        return None


def _milestone_checkpoint_complete(path: Path) -> bool:
    info = inspect_sidecar(path.with_suffix(".json"))
    return info["status"] == "ok" and "size_bytes" in info and Path(info["path"]) == path


def newest_valid_checkpoint(run_dir: Path, milestone_dir: Optional[Path] = None) -> Optional[Path]:
    candidates = list((run_dir / "checkpoints").glob("*.ckpt"))
    milestone_dir = milestone_dir or run_dir / "progressive_checkpoints"
    candidates += [p for p in milestone_dir.glob("checkpoint_*_step_*.pt") if _milestone_checkpoint_complete(p)]
    best: Optional[Tuple[int, float, Path]] = None
    for path in candidates:
        step = checkpoint_step(path)
        if step is not None and (best is None or (step, path.stat().st_mtime) > best[:2]):
            best = (step, path.stat().st_mtime, path)
    return best[2] if best else None


def latest_matching_run(runs_root: Path, overrides: Iterable[str]) -> Optional[Path]:
    """The newest run directory under `runs_root/<date>/<time>/` with the same experiment."""
    wanted = experiment_identity(overrides)
    for run_dir in sorted((p.parent for p in runs_root.glob("*/*/.hydra")), reverse=True):
        saved = _saved_overrides(run_dir)
        if saved is not None and experiment_identity(saved) == wanted and newest_valid_checkpoint(run_dir):
            return run_dir
    return None


def resolve_run_dir(resume: Optional[str], overrides: Iterable[str], fresh: str) -> str:
    """Hydra resolver for `hydra.run.dir`: the run to continue under `resume=auto`, else `fresh`."""
    if resume != "auto":
        return fresh
    from omegaconf import ListConfig, OmegaConf

    if isinstance(overrides, ListConfig):  # compare the overrides as typed, never resolved
        overrides = OmegaConf.to_container(overrides, resolve=False)
    runs_root = Path(fresh).parent.parent  # fresh is <root>/<date>/<time>
    found = latest_matching_run(runs_root, [str(o) for o in overrides or []])
    return str(found) if found is not None else fresh
