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


def test_fsdp1_wrap_on_cpu_reads_the_strategy_settings():
    from lightning.pytorch.strategies import FSDPStrategy

    strategy = FSDPStrategy()
    for name in ("cpu_offload", "mixed_precision_config", "sharding_strategy", "kwargs", "_activation_checkpointing_kwargs"):
        assert hasattr(strategy, name), name  # the wrap itself runs in tests/test_fsdp_cpu.py
    from lightning.fabric.strategies.fsdp import _setup_activation_checkpointing  # noqa: F401


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
