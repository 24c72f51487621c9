"""The one adapter for framework internals: every private Lightning, torch or Hydra name dimba
relies on is touched here and nowhere else.

Each function answers one question the public APIs do not (assemble a checkpoint without
the barrier `Trainer.save_checkpoint` ends in, is a strategy sharded, gather a Distributed
Checkpoint in one process, ...). `tests/test_internals.py` has a test per function, so a
Lightning, torch or Hydra upgrade that moves one of these fails there, in one place, with
the name of what moved. Frameworks are imported inside the functions: importing this module
is free, and it imports nothing of dimba, so any layer may use it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Optional

# Lightning strategies whose ranks hold shards of the parameters, not the whole model.
PARAMETER_SHARDING = ("FSDPStrategy", "ModelParallelStrategy", "DeepSpeedStrategy")


# ---------------------------------------------------------------------- Lightning
def dump_checkpoint(trainer: Any) -> Dict[str, Any]:
    """The dict `Trainer.save_checkpoint` would write, without its closing barrier (which
    would leave the other ranks waiting if rank zero's write failed)."""
    return trainer._checkpoint_connector.dump_checkpoint(weights_only=False)


def attached_trainer(module: Any) -> Optional[Any]:
    """The Trainer a LightningModule is attached to, or None (`module.trainer` raises then)."""
    return module._trainer


def shards_parameters(strategy: Any) -> bool:
    """True where a rank's parameter tensors are shards: counts must come from the architecture."""
    return any(cls.__name__ in PARAMETER_SHARDING for cls in type(strategy).__mro__)


def writes_sharded_checkpoints(strategy: Any) -> bool:
    """True where `strategy.save_checkpoint` writes a directory of per-rank shards (FSDP2's
    ModelParallelStrategy with `save_distributed_checkpoint`, FSDP with `state_dict_type="sharded"`)."""
    return bool(getattr(strategy, "_save_distributed_checkpoint", False)) or \
        getattr(strategy, "_state_dict_type", None) == "sharded"


def rewrap_ddp(trainer: Any, module: Any) -> bool:
    """After growth, wrap the module in a new DistributedDataParallel: the old one's reducer
    holds the old parameters. Wrapping broadcasts rank 0's weights. False if not under DDP."""
    from lightning.pytorch.strategies import DDPStrategy
    from torch.nn.parallel import DistributedDataParallel

    strategy = trainer.strategy
    if not (isinstance(strategy, DDPStrategy) and isinstance(strategy.model, DistributedDataParallel)):
        return False
    strategy.model = module
    strategy.configure_ddp()
    return True


def continuing_csv_writer(log_dir: str, keep_rows: list) -> Any:
    """Lightning's CSV ExperimentWriter for a resumed run's directory: the old `metrics.csv`
    is replaced by `keep_rows` (the rows before the resumed step), without Lightning's
    warning that previous log files will be deleted."""
    from lightning.pytorch.loggers.csv_logs import ExperimentWriter

    class ContinuingWriter(ExperimentWriter):
        def _check_log_dir_exists(self) -> None:
            if self._fs.isfile(self.metrics_file_path):
                self._fs.rm_file(self.metrics_file_path)

    writer = ContinuingWriter(log_dir=log_dir)
    writer.metrics = list(keep_rows)
    return writer


def csv_metrics_name() -> str:
    from lightning.pytorch.loggers.csv_logs import ExperimentWriter

    return ExperimentWriter.NAME_METRICS_FILE


def set_csv_experiment(logger: Any, writer: Any) -> None:
    """Give a CSVLogger its writer (Lightning builds one lazily in `experiment`)."""
    logger._experiment = writer


def csv_experiment(logger: Any) -> Optional[Any]:
    return logger._experiment


def finish_wandb_run(logger: Any, exit_code: int) -> None:
    """Finish the W&B run a WandbLogger holds and forget it: Lightning leaves it open, and the
    next run of the same process (a sweep job) would log into it."""
    experiment = logger._experiment
    if experiment is not None:
        experiment.finish(exit_code=exit_code)
        logger._experiment = None


# ---------------------------------------------------------------------- torch
def gather_distributed_checkpoint(path: Path) -> Dict[str, Any]:
    """Every tensor of a Distributed Checkpoint directory, as full tensors in one process
    without a process group (torch's public loaders need a state dict of the right shapes)."""
    from torch.distributed.checkpoint import FileSystemReader
    from torch.distributed.checkpoint.format_utils import _EmptyStateDictLoadPlanner
    from torch.distributed.checkpoint.state_dict_loader import _load_state_dict

    shards: Dict[str, Any] = {}
    _load_state_dict(shards, storage_reader=FileSystemReader(path), planner=_EmptyStateDictLoadPlanner(), no_dist=True)
    return shards


def raise_recompile_limit(limit: int) -> None:
    """Dynamo recompiles a grown model; at its default limit (8) a few growth events would
    silently fall back to eager."""
    import torch._dynamo

    config = torch._dynamo.config
    name = "recompile_limit" if hasattr(config, "recompile_limit") else "cache_size_limit"  # torch < 2.6
    setattr(config, name, max(getattr(config, name), limit))


# ---------------------------------------------------------------------- Hydra
def quote_override_value(value: str) -> str:
    """Escape a value for a Hydra command-line override (paths with `=`, spaces, brackets)."""
    from hydra._internal.grammar.utils import escape_special_characters

    return escape_special_characters(value)


def hydra_argument_parser() -> Any:
    """The argument parser `@hydra.main` uses: train.py reads its own command line the same way."""
    from hydra._internal.utils import get_args_parser

    return get_args_parser()


def hydra_groups() -> list:
    """The config groups, inside an initialized Hydra (compose API)."""
    from hydra.core.global_hydra import GlobalHydra

    return sorted(g for g in GlobalHydra.instance().config_loader().list_groups("") if g != "hydra")


def hydra_group_options(group: str) -> list:
    """A config group's options, inside an initialized Hydra (compose API)."""
    from hydra.core.global_hydra import GlobalHydra

    return list(GlobalHydra.instance().config_loader().get_group_options(group))


def expand_sweep(overrides: list) -> list:
    """The jobs of a `-m` sweep, as Hydra's basic sweeper would run them (lists of overrides)."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper

    return [job for batch in BasicSweeper.split_arguments(overrides, None) for job in batch]


def model_parallel_data_only(strategy: Any) -> None:
    """Lightning's ModelParallelStrategy splits `auto` sizes into data parallel across nodes
    and tensor parallel within one; FSDP alone wants every rank in the data dimension."""
    strategy._data_parallel_size = strategy.num_processes * strategy.num_nodes
    strategy._tensor_parallel_size = 1
