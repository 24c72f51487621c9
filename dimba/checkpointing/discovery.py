"""`resume=auto` while Hydra composes: which run directory to continue. Torch-free.

A run is "the same experiment" when its command-line overrides match, ignoring the ones that
only steer resuming (`resume`, `ckpt_path`, `trainer.max_steps`, `hydra.*`, `dry_run`), and
it trained the same objective: the `objective` option Hydra chose, typed or the default (a
run from before the default became `ar` trained `diffusion`, so `objective=diffusion
resume=auto` continues it and `resume=auto` alone starts afresh). The latest such run that
holds a complete checkpoint is continued in its own directory. Which of its checkpoints to
start from (the highest step) is decided later, when torch is loaded (`dimba.resume`); here
a checkpoint only has to look complete: a milestone whose sidecar says "ok", or a Lightning
checkpoint that is a whole zip archive or a Distributed Checkpoint directory with its
metadata.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, List, Optional, Tuple

from dimba.checkpointing import format as ckpt_format
from dimba.checkpointing.files import check_checkpoint_file, looks_complete
from dimba.checkpointing.layout import lightning_dir, milestone_dir_of

VOLATILE = ("resume=", "ckpt_path=", "trainer.max_steps=", "hydra.", "dry_run=")
LIGHTNING_GLOB = "*.ckpt"


OBJECTIVE = "objective="
"""The objective is compared as Hydra's choice (`saved_objective`), not as an override."""
BEFORE_OBJECTIVES = "diffusion"
"""The objective of a run whose record names none: the only one there was."""


def experiment_identity(overrides: Iterable[str]) -> Tuple[str, ...]:
    return tuple(sorted(o for o in overrides if not o.lstrip("+~").startswith((*VOLATILE, OBJECTIVE))))


def typed_objective(overrides: Iterable[str]) -> List[str]:
    return [o for o in overrides if o.lstrip("+~").startswith(OBJECTIVE)]


def saved_objective(run_dir: Path) -> Optional[str]:
    """The `objective` option a run trained (`.hydra/hydra.yaml`'s runtime choices); None if
    the run has no readable Hydra record."""
    import yaml

    try:
        record = yaml.safe_load((run_dir / ".hydra" / "hydra.yaml").read_text())
    except (OSError, yaml.YAMLError):
        return None
    try:
        choices = record["hydra"]["runtime"]["choices"]
    except (KeyError, TypeError):
        return None
    return str(choices.get("objective") or BEFORE_OBJECTIVES) if isinstance(choices, dict) else None


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


def latest_matching_run(runs_root: Path, overrides: Iterable[str], objective: Optional[str] = None) -> Optional[Path]:
    """The newest run directory under `runs_root/<date>/<time>/` with the same experiment:
    given `objective` (Hydra's choice), a run that recorded its choice must have made the
    same; otherwise the `objective=` overrides must be the same as typed."""
    overrides = list(overrides)
    wanted = experiment_identity(overrides)
    for run_dir in sorted((p.parent for p in runs_root.glob("*/*/.hydra")), reverse=True):
        saved = saved_overrides(run_dir)
        if saved is None or experiment_identity(saved) != wanted or not has_checkpoint(run_dir):
            continue
        recorded = saved_objective(run_dir) if objective is not None else None
        if recorded is not None:
            if recorded == objective:
                return run_dir
        elif typed_objective(overrides) == typed_objective(saved):  # no record of the choice: as typed
            return run_dir
    return None


def resolve_run_dir(resume: Optional[str], overrides: Iterable[str], objective: str, fresh: str) -> str:
    """Hydra resolver for `hydra.run.dir`: the run to continue under `resume=auto`, else
    `fresh`; `objective` is Hydra's choice of the `objective` option."""
    if resume != "auto":
        return fresh
    from omegaconf import ListConfig, OmegaConf

    if isinstance(overrides, ListConfig):  # compare the overrides as typed, never resolved
        overrides = OmegaConf.to_container(overrides, resolve=False)
    runs_root = Path(fresh).parent.parent  # fresh is <root>/<date>/<time>
    found = latest_matching_run(runs_root, [str(o) for o in overrides or []], str(objective))
    return str(found) if found is not None else fresh
