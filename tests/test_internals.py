"""One test per framework internal in `dimba.internals`: a Lightning, torch or Hydra upgrade
that moves one of them fails here, by name, not somewhere deep in a training run."""

from __future__ import annotations

import csv
from pathlib import Path

import lightning as L
import pytest
import torch

from dimba import internals
from dimba.training import DIMBALightningModule


@pytest.fixture
def fitted(tiny_model_config, token_loader, quiet_trainer_kwargs):
    module = DIMBALightningModule(model_config=tiny_model_config, warmup_steps=0)
    trainer = L.Trainer(max_steps=1, **quiet_trainer_kwargs)
    trainer.fit(module, token_loader(n_batches=2))
    return trainer, module


def test_dump_checkpoint_is_what_save_checkpoint_writes(fitted, tmp_path):
    trainer, _ = fitted
    dumped = internals.dump_checkpoint(trainer)
    trainer.save_checkpoint(tmp_path / "x.ckpt")
    saved = torch.load(tmp_path / "x.ckpt", weights_only=True)
    assert dumped.keys() == saved.keys() and dumped["global_step"] == saved["global_step"] == 1
    assert dumped["optimizer_states"] and dumped["dimba"]["architecture"]


def test_attached_trainer_is_none_until_fit(tiny_model_config, fitted):
    assert internals.attached_trainer(DIMBALightningModule(model_config=tiny_model_config)) is None
    trainer, module = fitted
    assert internals.attached_trainer(module) is trainer


def test_strategy_questions():
    from lightning.pytorch.strategies import DDPStrategy, FSDPStrategy, ModelParallelStrategy, SingleDeviceStrategy

    assert internals.shards_parameters(FSDPStrategy()) and internals.shards_parameters(ModelParallelStrategy())
    assert not internals.shards_parameters(DDPStrategy()) and not internals.shards_parameters(SingleDeviceStrategy())
    assert internals.writes_sharded_checkpoints(FSDPStrategy(state_dict_type="sharded"))
    assert not internals.writes_sharded_checkpoints(FSDPStrategy(state_dict_type="full"))
    assert not internals.writes_sharded_checkpoints(DDPStrategy())


def test_rewrap_ddp_is_a_no_op_without_ddp(fitted):
    trainer, module = fitted
    assert internals.rewrap_ddp(trainer, module) is False  # DDP itself: tests/test_growth_training.py


def test_continuing_csv_writer_keeps_rows_and_does_not_warn(tmp_path, recwarn):
    from lightning.pytorch.loggers import CSVLogger

    (tmp_path / internals.csv_metrics_name()).write_text("step,train/loss\n1,2.0\n2,1.5\n3,1.0\n")
    writer = internals.continuing_csv_writer(str(tmp_path), [{"step": "1", "train/loss": "2.0"}])
    writer.log_metrics({"train/loss": 0.5}, step=2)
    writer.save()
    with open(tmp_path / "metrics.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["step"], r["train/loss"]) for r in rows] == [("1", "2.0"), ("2", "0.5")]
    assert not [w for w in recwarn if "will be deleted" in str(w.message)]
    logger = CSVLogger(save_dir=str(tmp_path), name="logs", version="")
    assert internals.csv_experiment(logger) is None
    internals.set_csv_experiment(logger, writer)
    assert logger.experiment is writer


def test_gather_distributed_checkpoint_reads_shards_without_a_process_group(tmp_path):
    import torch.distributed.checkpoint as dcp

    state = {"model": {"w": torch.arange(6.0).reshape(2, 3)}, "optimizer_0": {"state": {0: {"step": torch.tensor(3.0)}}}}
    dcp.save(state, checkpoint_id=str(tmp_path / "shards"))
    gathered = internals.gather_distributed_checkpoint(Path(tmp_path / "shards"))
    assert torch.equal(gathered["model"]["w"], state["model"]["w"])
    assert float(next(iter(gathered["optimizer_0"]["state"].values()))["step"]) == 3.0


def test_raise_recompile_limit_only_raises():
    import torch._dynamo

    config = torch._dynamo.config
    name = "recompile_limit" if hasattr(config, "recompile_limit") else "cache_size_limit"
    before = getattr(config, name)
    try:
        internals.raise_recompile_limit(before + 5)
        assert getattr(config, name) == before + 5
        internals.raise_recompile_limit(1)
        assert getattr(config, name) == before + 5
    finally:
        setattr(config, name, before)


def test_quote_override_value_survives_hydras_parser():
    from hydra.core.override_parser.overrides_parser import OverridesParser

    value = "/tmp/a dir/with=sign,comma[1]"
    parsed = OverridesParser.create().parse_override(f"hydra.sweep.dir={internals.quote_override_value(value)}")
    assert parsed.value() == value


def test_finish_wandb_run_finishes_the_run_the_logger_holds(tmp_path):
    from lightning.pytorch.loggers import WandbLogger

    finished = []

    class Run:
        def finish(self, exit_code: int) -> None:
            finished.append(exit_code)

    logger = WandbLogger(offline=True, save_dir=str(tmp_path))
    internals.finish_wandb_run(logger, exit_code=0)  # no run yet: nothing to finish
    logger._experiment = Run()  # what `logger.experiment` starts
    internals.finish_wandb_run(logger, exit_code=1)
    assert finished == [1] and logger._experiment is None


def test_hydras_argument_parser_reads_train_py_command_lines():
    args = internals.hydra_argument_parser().parse_args(["-m", "seed=1,2", "--config-name", "config"])
    assert args.multirun and args.overrides == ["seed=1,2"] and args.config_name == "config"


def test_sweeps_expand_as_hydras_basic_sweeper_runs_them():
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(["seed=1,2", "model.d_model=range(64,193,64)", "growth=none"])
    jobs = internals.expand_sweep(parsed)
    assert len(jobs) == 6 and jobs[0] == ["seed=1", "model.d_model=64", "growth=none"]


def test_group_listings_inside_an_initialized_hydra():
    from hydra import initialize_config_dir

    from dimba.config import register_configs

    register_configs()
    with initialize_config_dir(config_dir=str(Path(__file__).resolve().parents[1] / "conf"), version_base="1.3"):
        assert {"data", "trainer", "progressive_checkpoints"} <= set(internals.hydra_groups())
        assert {"cpu", "fsdp", "base_trainer"} <= set(internals.hydra_group_options("trainer"))


def test_model_parallel_data_only_puts_every_rank_in_the_data_dimension():
    from types import SimpleNamespace

    strategy = SimpleNamespace(num_processes=4, num_nodes=2, _data_parallel_size="auto", _tensor_parallel_size="auto")
    internals.model_parallel_data_only(strategy)
    assert (strategy._data_parallel_size, strategy._tensor_parallel_size) == (8, 1)
    from lightning.pytorch.strategies import ModelParallelStrategy

    real = ModelParallelStrategy()
    assert hasattr(real, "_data_parallel_size") and hasattr(real, "_tensor_parallel_size")  # what it sets
