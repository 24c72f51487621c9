"""Checks that need the run's output directory, done before any heavy import or training:
the accelerator exists, the save directory is writable and no other run is writing to it."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import ContextManager

from dimba.checkpointing.ownership import SaveDirClaim
from dimba.errors import ConfigError


def resolve_save_dir(save_dir: str, output_dir: Path) -> Path:
    """A relative save_dir lives inside the run's own output directory."""
    path = Path(save_dir).expanduser()
    return path if path.is_absolute() else output_dir / path


WRITABLE_DIR = "a directory this user can create and write to"


def _probe_write(directory: Path) -> None:
    """Prove a file can be written in `directory` (root ignores modes, so try it); OSError if not."""
    probe = directory / f".dimba-write-probe-{os.getpid()}"
    probe.write_bytes(b"")
    probe.unlink()


def check_writable_dir(path: Path, key: str) -> None:
    """Create `path` if needed and prove a file can be written there."""
    if path.exists() and not path.is_dir():
        raise ConfigError(key, str(path), f"{WRITABLE_DIR} (it exists and is not a directory)")
    try:
        path.mkdir(parents=True, exist_ok=True)
        _probe_write(path)
    except OSError as exc:
        raise ConfigError(key, str(path), f"{WRITABLE_DIR} ({exc.strerror or exc})") from None


def check_creatable_dir(path: Path, key: str) -> None:
    """`path` exists as a writable directory, or could be created: its nearest existing
    ancestor is a directory this user can write in. Creates nothing (a probe file comes and
    goes), so a refused run leaves no directory behind."""
    path = Path(path).expanduser().absolute()
    existing = path
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError(key, str(path), f"{WRITABLE_DIR} ({existing} is not a directory)")
    try:
        _probe_write(existing)
    except OSError as exc:
        raise ConfigError(key, str(path), f"{WRITABLE_DIR} ({exc.strerror or exc} in {existing})") from None


def check_accelerator(accelerator: str) -> None:
    """`trainer=gpu`/`fsdp` on a machine without a CUDA GPU fails here, in one line, instead
    of deep inside Lightning."""
    if accelerator in ("gpu", "cuda"):
        import torch

        if not torch.cuda.is_available():
            raise ConfigError("trainer.accelerator", accelerator,
                              "cpu or auto on this machine: no CUDA GPU is visible (for several CPU processes: trainer=ddp_cpu)")


def is_first_process() -> bool:
    """Global rank zero of the job, from the launchers' environment (torchrun, SLURM, the
    processes Lightning starts for DDP): the one process that owns shared files."""
    ranks = [os.environ.get(name) for name in ("RANK", "LOCAL_RANK", "NODE_RANK", "GROUP_RANK")]
    if int(os.environ.get("SLURM_NTASKS", "1")) > 1:
        ranks.append(os.environ.get("SLURM_PROCID"))
    return all(rank in (None, "", "0") for rank in ranks)


def prepare_run(config, output_dir: Path) -> ContextManager:
    """Every check of a run that is about to train; returns its claim on the save directory
    (released when the `with` block ends)."""
    if config.dry_run:
        return contextlib.nullcontext()
    check_accelerator(config.trainer.accelerator)
    if not config.progressive_checkpoints.enabled:
        return contextlib.nullcontext()
    save_dir = resolve_save_dir(config.progressive_checkpoints.save_dir, output_dir)
    check_writable_dir(save_dir, "progressive_checkpoints.save_dir")
    if not is_first_process():  # the processes Lightning starts for DDP: rank zero holds the claim
        return contextlib.nullcontext()
    return SaveDirClaim(save_dir, str(output_dir))
