"""Checks that need the run's output directory, done before any heavy import or training."""

from __future__ import annotations

import os
from pathlib import Path

from dimba.errors import ConfigError


def resolve_save_dir(save_dir: str, output_dir: Path) -> Path:
    """A relative save_dir lives inside the run's own output directory."""
    path = Path(save_dir).expanduser()
    return path if path.is_absolute() else output_dir / path


def check_writable_dir(path: Path, key: str) -> None:
    """Create `path` if needed and prove a file can be written there (root ignores modes)."""
    accepted = "a directory this user can create and write to"
    if path.exists() and not path.is_dir():
        raise ConfigError(key, str(path), f"{accepted} (it exists and is not a directory)")
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".dimba-write-probe-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise ConfigError(key, str(path), f"{accepted} ({exc.strerror or exc})") from None


def check_accelerator(accelerator: str) -> None:
    """`trainer=gpu`/`fsdp` on a machine without a CUDA GPU fails here, in one line, instead
    of deep inside Lightning."""
    if accelerator in ("gpu", "cuda"):
        import torch

        if not torch.cuda.is_available():
            raise ConfigError("trainer.accelerator", accelerator,
                              "cpu or auto on this machine: no CUDA GPU is visible (for several CPU processes: trainer=ddp_cpu)")
