"""`dimba.run.train` in process: what train.py hands a composed, validated config to."""

from __future__ import annotations

import csv
from pathlib import Path

from hydra import compose, initialize_config_dir

from dimba.config import register_configs, validate
from dimba.run import train

CONF = Path(__file__).resolve().parents[1] / "conf"
register_configs()
SMALL = ["model.d_model=32", "model.n_layers=1", "model.head_dim=16", "data.seq_len=32", "data.batch_size=4",
         "trainer.limit_val_batches=1", "trainer.enable_progress_bar=false", "growth=none",
         "progressive_checkpoints=disabled", "trainer.enable_model_summary=false"]


def compose_config(*overrides: str):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return validate(compose("config", overrides=[*SMALL, *overrides]))


def test_train_returns_the_validation_loss_of_the_last_step(tmp_path):
    """The last scheduled validation came at step 4; the run validates again at step 5."""
    result = train(compose_config("trainer.max_steps=5", "trainer.val_check_interval=2"), tmp_path)
    assert result.trainer.global_step == 5 and result.trainer.lightning_module.last_validation_step == 5
    with open(tmp_path / "logs" / "metrics.csv", newline="") as handle:
        validations = [row for row in csv.DictReader(handle) if row.get("val/loss")]
    assert len(validations) == 3 and float(validations[-1]["val/loss"]) == result.val_loss


def test_a_run_without_validation_returns_no_loss(tmp_path):
    result = train(compose_config("trainer.max_steps=2", "trainer.limit_val_batches=0"), tmp_path)
    assert result.val_loss is None and result.trainer.global_step == 2


def test_every_logger_hears_the_growth_and_milestone_events(tmp_path):
    """Not a stand-in: the real growth and milestone code send them, at their steps."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    config = compose_config("trainer.max_steps=3", "trainer.val_check_interval=3", "logger=many",
                            "growth.schedule=[{step:2,op:width,d_model:48}]",
                            "progressive_checkpoints=millions", "progressive_checkpoints.milestones=[20K,40K]")
    train(config, tmp_path)
    board = EventAccumulator(str(tmp_path / "tensorboard"))
    board.Reload()
    assert [(e.step, e.value) for e in board.Scalars("growth/d_model")] == [(2, 48.0)]
    assert [(e.step, e.value) for e in board.Scalars("milestone/reached")] == [(1, 20_000.0), (2, 40_000.0)]
    with open(tmp_path / "logs" / "metrics.csv", newline="") as handle:
        reached = [float(r["milestone/reached"]) for r in csv.DictReader(handle) if r.get("milestone/reached")]
    assert reached == [20_000.0, 40_000.0]
