"""train.py's command line, checked before Hydra creates anything.

`python train.py ...` composes every job it would run (one, or every job of a `-m` sweep)
and validates it here first: a typo, a wrong type, an unknown group option or a bad value
stops the run with one line (per invalid job of a sweep) and exit status 2, and nothing is
written, no run directory either. `dry_run=true` prints its plan to stdout here and writes
nothing. With `HYDRA_FULL_ERROR=1`, or for Hydra's own informational flags, the command
line is left to Hydra as it is.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, List, Optional, Sequence

from dimba import internals
from dimba.config import Config, register_configs, validate
from dimba.config.errors import BASE_PREFIX, composition_error, unknown_option, visible
from dimba.errors import ConfigError

INFORMATIONAL = ("help", "hydra_help", "cfg", "info", "shell_completion", "experimental_rerun", "config_path",
                 "config_dir")
NOT_EXPANDABLE = ("IntervalSweep",)  # an optimizing sweeper draws these values: checked when it does


@dataclass
class Job:
    overrides: List[str]
    config: Optional[Config] = None
    error: Optional[ConfigError] = None


def jobs_of(argv: Sequence[str]) -> Optional[List[List[str]]]:
    """The override lists of the jobs the command line runs, or None to leave it to Hydra."""
    if os.environ.get("HYDRA_FULL_ERROR") == "1":
        return None
    args = internals.hydra_argument_parser().parse_args(list(argv))
    if any(getattr(args, name, None) for name in INFORMATIONAL):
        return None
    if not args.multirun:
        return [list(args.overrides)]
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        parsed = OverridesParser.create().parse_overrides(list(args.overrides))
    except Exception:  # a grammar error: composing the overrides as given reports it
        return [list(args.overrides)]
    expandable = [o for o in parsed if type(o.value()).__name__ not in NOT_EXPANDABLE]
    return internals.expand_sweep(expandable)


def check_job(overrides: List[str], conf_dir: Path, config_name: str) -> Job:
    from hydra import compose, initialize_config_dir

    job = Job(list(overrides))
    with initialize_config_dir(config_dir=str(conf_dir), version_base="1.3"):
        try:
            _refuse_schema_names(overrides)
            _check_hydra_dirs(overrides)
            job.config = validate(compose(config_name, overrides=list(overrides)))
            if not job.config.dry_run:
                _check_before_running(job.config)
        except ConfigError as exc:
            job.error = exc
        except Exception as exc:  # Hydra's and OmegaConf's composition errors
            job.error = composition_error(exc, Config, internals.hydra_groups(), internals.hydra_group_options)
    return job


def _check_before_running(config: Config) -> None:
    """What can be known before Hydra creates the run's directory: the memory planned per rank
    is what the ranks have, the model does not start above every milestone, every stage
    fits, and an absolute save directory is not another live run's (train.py claims it later)."""
    from dimba.checkpointing.ownership import check_free
    from dimba.planning import check_memory, check_memory_setting, check_milestones_ahead, growth_plan, memory_rows
    from dimba.preflight import check_accelerator, check_creatable_dir, is_first_process
    from dimba.resume import check_resume_before_running

    check_accelerator(config.trainer.accelerator)
    check_memory_setting(config)
    check_resume_before_running(config)
    check_milestones_ahead(config, growth_plan(config))
    check_memory(*memory_rows(config))
    save_dir = Path(config.progressive_checkpoints.save_dir).expanduser()
    if config.progressive_checkpoints.enabled and save_dir.is_absolute() and is_first_process():
        check_creatable_dir(save_dir, "progressive_checkpoints.save_dir")
        check_free(save_dir)


def _check_hydra_dirs(overrides: Sequence[str]) -> None:
    """`hydra.run.dir=`/`hydra.sweep.dir=` somewhere no directory can be made: one line here,
    not Hydra's traceback when it tries."""
    from dimba.preflight import check_creatable_dir

    for override in overrides:
        key, _, value = override.partition("=")
        if key.lstrip("+~") in ("hydra.run.dir", "hydra.sweep.dir") and value and "${" not in value:
            check_creatable_dir(Path(value.strip("'\"")), key.lstrip("+~"))


def _refuse_schema_names(overrides: Sequence[str]) -> None:
    """`trainer=base_trainer` would train on a bare schema: it is not an option."""
    for override in overrides:
        key, _, value = override.partition("=")
        group = key.lstrip("+~")
        if value.startswith(BASE_PREFIX) and "." not in group:
            raise unknown_option(group, value, visible(internals.hydra_group_options(group)))


def check_command_line(argv: Sequence[str], conf_dir: Path, config_name: str = "config",
                       out=sys.stdout, err=sys.stderr, plan: Optional[Callable[[Config], str]] = None) -> Optional[int]:
    """Check every job; an exit status when train.py should stop here (2: invalid, 0: a dry
    run, printed), None when Hydra should run the command line."""
    overrides = jobs_of(argv)
    if overrides is None:
        return None
    register_configs()
    checked = [check_job(job, conf_dir, config_name) for job in overrides]
    invalid = [(i, job) for i, job in enumerate(checked) if job.error is not None]
    if invalid and len(checked) == 1:
        print(f"Invalid config: {invalid[0][1].error}", file=err)
        return 2
    if invalid:
        print(f"Invalid sweep: {len(invalid)} of {len(checked)} jobs are invalid; no job was started:", file=err)
        for index, job in invalid:
            print(f"  job {index} ({' '.join(job.overrides) or 'no overrides'}): {job.error}", file=err)
        return 2
    dry = [job for job in checked if job.config is not None and job.config.dry_run]
    if dry and plan is not None:
        for job in dry:
            if len(checked) > 1:
                print(f"job {checked.index(job)} ({' '.join(job.overrides)}):", file=out)
            print(plan(job.config), file=out)
        return 0
    return None
