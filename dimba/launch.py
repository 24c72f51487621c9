"""Hydra multirun jobs and the SLURM launcher.

Two things Hydra and Lightning do not do on their own:

- Inside a sweep job, Lightning's DDP relaunches the script with the process's own
  `sys.argv` (which still says `-m` and holds the sweep lists) and `hydra.run.dir`, so
  each child would run a whole sweep of its own, in a new `multirun/<date>/<time>/`.
  `multirun_job` makes the children run exactly this job in this job's directory, and
  leaves no process group or rank variables behind for the next job of the same process.
- A SLURM job that submitit requeues (preemption, time limit) runs the task function
  again from the pickled config. `SlurmLauncher` pins the sweep directory to one absolute
  path and adds `resume=auto`, so the requeued job continues from the newest valid
  checkpoint of its own directory.
"""

from __future__ import annotations

import logging
import os
import sys
import types
from contextlib import contextmanager
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence

from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import JobReturn
from hydra.types import RunMode
from hydra_plugins.hydra_submitit_launcher import submitit_launcher
from omegaconf import DictConfig, OmegaConf, read_write

from dimba import internals

log = logging.getLogger(__name__)

# What Lightning's subprocess launcher writes into os.environ when it starts DDP children.
DDP_ENV_VARS = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE")


def in_multirun() -> bool:
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def pin_ddp_children_to_this_job() -> None:
    """Make Lightning's relaunch command (`sys.argv[1:]` + `hydra.run.dir=<run.dir>`) run
    this job alone, in this job's output directory, as a single run."""
    hydra_cfg = HydraConfig.get()
    sys.argv = [sys.argv[0], *hydra_cfg.overrides.task]
    with read_write(hydra_cfg.run):
        hydra_cfg.run.dir = hydra_cfg.runtime.output_dir


def _script_main_module() -> Optional[types.ModuleType]:
    """A stand-in `__main__` naming the script, when this process's `__main__` is not it
    (a joblib worker runs jobs inside loky's own module; Lightning would relaunch that)."""
    import __main__

    script = Path(HydraConfig.get().runtime.cwd, sys.argv[0]).resolve()
    if Path(getattr(__main__, "__file__", "") or "").resolve() == script:
        return None
    stand_in = types.ModuleType("__main__")
    stand_in.__file__ = str(script)
    stand_in.__spec__ = None
    return stand_in


@contextmanager
def multirun_job() -> Iterator[None]:
    """Wrap building and fitting the Trainer. Outside a sweep this does nothing."""
    if not in_multirun():
        yield
        return
    saved_argv = sys.argv
    saved_env: Dict[str, Optional[str]] = {name: os.environ.get(name) for name in DDP_ENV_VARS}
    saved_main = sys.modules["__main__"]
    stand_in = _script_main_module()
    pin_ddp_children_to_this_job()
    if stand_in is not None:
        sys.modules["__main__"] = stand_in
    try:
        yield
    finally:
        sys.modules["__main__"] = saved_main
        sys.argv = saved_argv
        end_process_group()
        for name, value in saved_env.items():  # else the next job takes itself for a DDP child
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def end_process_group() -> None:
    """Shut the process group down before the interpreter does: a gloo group still alive at
    exit can abort a finished run ("terminate called without an active exception")."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _override_key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def pin_sweep_dir(config: DictConfig) -> Path:
    """Resolve `hydra.sweep.dir` once, here, to an absolute path, and make every job (also a
    requeued one, which composes its config again on the compute node) use exactly it."""
    sweep_dir = Path(str(config.hydra.sweep.dir)).absolute()
    with read_write(config.hydra):
        config.hydra.sweep.dir = str(sweep_dir)
        hydra_overrides = [o for o in config.hydra.overrides.hydra if _override_key(o) != "hydra.sweep.dir"]
        config.hydra.overrides.hydra = [*hydra_overrides, f"hydra.sweep.dir={internals.quote_override_value(str(sweep_dir))}"]
    return sweep_dir


def with_resume_auto(overrides: Sequence[str], config: DictConfig) -> List[str]:
    """The job's overrides plus `resume=auto`, unless the user chose `resume` or `ckpt_path`."""
    keys = ("resume", "ckpt_path")
    typed = any(_override_key(o) in keys for o in overrides)
    configured = any(OmegaConf.select(config, key) is not None for key in keys)
    return list(overrides) if typed or configured else [*overrides, "resume=auto"]


class SlurmLauncher(submitit_launcher.SlurmLauncher):
    """hydra-submitit-launcher's SLURM launcher whose requeued jobs resume where they stopped.

    `checkpoint()` (inherited) resubmits the same call: same overrides, same job number, so
    the same job directory."""

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        assert self.config is not None, "setup() comes first"
        sweep_dir = pin_sweep_dir(self.config)
        log.info("Sweep directory %s; a requeued job resumes from its own newest valid checkpoint", sweep_dir)
        return super().launch([with_resume_auto(o, self.config) for o in job_overrides], initial_job_idx)
