"""`resume=auto` while Hydra composes: which run directory to continue. Torch-free.

A run is "the same experiment" when its command-line overrides match, ignoring the ones
that only steer resuming (`resume`, `ckpt_path`, `trainer.max_steps`, `hydra.*`,
`dry_run`). The latest such run that holds a complete checkpoint is continued in its own
directory. Which of its checkpoints to start from (the highest step) is decided later,
when torch is loaded (`dimba.resume`); here a checkpoint only has to look complete: a
milestone whose sidecar says "ok", or a Lightning checkpoint that is a whole zip archive or
a Distributed Checkpoint directory with its metadata.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, List, Optional, Tuple

from dimba.checkpointing import format as ckpt_format
from dimba.checkpointing.files import check_checkpoint_file, looks_complete
from dimba.checkpointing.layout import lightning_dir, milestone_dir_of

VOLATILE = ("resume=", "ckpt_path=", "trainer.max_steps=", "hydra.", "dry_run=")
LIGHTNING_GLOB = "*.ckpt"


def experiment_identity(overrides: Iterable[str]) -> Tuple[str, ...]:
    return tuple(sorted(o for o in overrides if not o.lstrip("+~").startswith(VOLATILE)))


def saved_overrides(run_dir: Path) -> Optional[List[str]]:
    """The overrides as typed (interpolations unresolved), or None for no readable record."""
    import yaml

    try:
        overrides = yaml.safe_load((run_dir / ".hydra" / "overrides.yaml").read_text())
    except (OSError, yaml.YAMLError):
        return None
    return [str(o) for o in overrides] if isinstance(overrides, list) else None


def check_resumable(path: Path) -> None:
    """What `ckpt_path=` names must be a whole Lightning checkpoint (a file, or a sharded
    directory); a CheckpointLoadError naming the file says what it is instead. No torch."""
    check_checkpoint_file(path, resumable=True)


def complete_milestones(milestone_dir: Path) -> List[ckpt_format.Entry]:
    return [e for e in ckpt_format.entries_in(milestone_dir) if e.ok and e.sidecar.size_bytes is not None]


def has_checkpoint(run_dir: Path, milestone_dir: Optional[Path] = None) -> bool:
    if complete_milestones(milestone_dir or milestone_dir_of(run_dir)):
        return True
    return any(looks_complete(p) for p in lightning_dir(run_dir).glob(LIGHTNING_GLOB))


def latest_matching_run(runs_root: Path, overrides: Iterable[str]) -> Optional[Path]:
    """The newest run directory under `runs_root/<date>/<time>/` with the same experiment."""
    wanted = experiment_identity(overrides)
    for run_dir in sorted((p.parent for p in runs_root.glob("*/*/.hydra")), reverse=True):
        saved = saved_overrides(run_dir)
        if saved is not None and experiment_identity(saved) == wanted and has_checkpoint(run_dir):
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
