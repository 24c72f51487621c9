"""The `logger` group: each option trains a tiny model, and what each logger wrote is read
back (metrics.csv, TensorBoard events, the MLflow file store, the W&B offline run file),
milestone and growth events included. Nothing may reach for the network."""

from __future__ import annotations

import csv
import json
import os
import shutil
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, List

import lightning as L
import pytest
from hydra import compose, initialize_config_dir
from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, OmegaConf

from dimba.errors import ConfigError
from dimba.config.loggers import LoggerConfig, check_logger_packages
from dimba.training import DIMBALightningModule
from dimba.training.loggers import build_loggers, growth_metrics, log_event, milestone_metrics

ROOT = Path(__file__).resolve().parents[1]
MILESTONE_STEP, GROWTH_STEP, MAX_STEPS = 3, 2, 5


@pytest.fixture(autouse=True)
def restore_environment() -> Iterator[None]:
    """Lightning's WandbLogger and our MLflow setup write os.environ; no test leaks that."""
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)


@pytest.fixture
def wandb_home(tmp_path, monkeypatch) -> None:
    """W&B's own service logs and settings (not the run's data) go here instead of ~/.cache."""
    for name, folder in (("WANDB_CACHE_DIR", "cache"), ("WANDB_CONFIG_DIR", "config"), ("WANDB_DATA_DIR", "data")):
        monkeypatch.setenv(name, str(tmp_path / "wandb-home" / folder))


@pytest.fixture
def network_attempts(monkeypatch) -> List[str]:
    """Every name looked up or address connected to in this process that is not this machine."""
    attempts: List[str] = []
    real_lookup, real_connect = socket.getaddrinfo, socket.socket.connect

    def is_local(host) -> bool:
        return host in ("localhost", "::1", "0.0.0.0", "", None) or str(host).startswith("127.")

    def lookup(host, *args, **kwargs):
        if not is_local(host):
            attempts.append(f"lookup {host}")
            raise OSError("the test allows no network")
        return real_lookup(host, *args, **kwargs)

    def connect(self, address):
        if self.family in (socket.AF_INET, socket.AF_INET6) and not is_local(address[0]):
            attempts.append(f"connect {address}")
            raise OSError("the test allows no network")
        return real_connect(self, address)

    monkeypatch.setattr(socket, "getaddrinfo", lookup)
    monkeypatch.setattr(socket.socket, "connect", connect)
    return attempts


class StandInEvents(L.Callback):
    """Sends a growth and a milestone event as the growth and milestone callbacks will."""

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == GROWTH_STEP:
            log_event(trainer, growth_metrics(params=40_000, n_layers=2, d_model=32), trainer.global_step)
        if trainer.global_step == MILESTONE_STEP:
            log_event(trainer, milestone_metrics(milestone=30_000, params=40_000), trainer.global_step)


def options(*enabled: str) -> LoggerConfig:
    config = LoggerConfig()
    for name in enabled:
        getattr(config, name).enabled = True
    return config


def fit(tiny_model_config, token_loader, run_dir: Path, config: LoggerConfig) -> L.Trainer:
    loggers = build_loggers(config, run_dir, resume_step=None)
    trainer = L.Trainer(
        max_steps=MAX_STEPS, accelerator="cpu", devices=1, logger=loggers, log_every_n_steps=1,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        limit_val_batches=0, default_root_dir=str(run_dir), callbacks=[StandInEvents()],
    )
    trainer.fit(DIMBALightningModule(model_config=tiny_model_config), token_loader(n_batches=MAX_STEPS))
    return trainer


@dataclass
class LoggerOnly:
    """The top-level config, cut down to the group under test."""

    logger: LoggerConfig = MISSING


def test_every_option_composes_to_its_loggers(tmp_path):
    store = ConfigStore.instance()
    store.store(name="logger_only", node=LoggerOnly)
    store.store(group="logger", name="base_logger", node=LoggerConfig)
    shutil.copytree(ROOT / "conf" / "logger", tmp_path / "logger")
    (tmp_path / "config.yaml").write_text("defaults:\n  - logger_only\n  - logger: csv\n  - _self_\n")
    expected = {"csv": ["csv"], "tensorboard": ["tensorboard"], "wandb": ["wandb"], "mlflow": ["mlflow"],
                "many": ["csv", "tensorboard"]}
    with initialize_config_dir(config_dir=str(tmp_path), version_base="1.3"):
        assert [n for n, _ in OmegaConf.to_object(compose("config")).logger.active()] == ["csv"]  # the default
        for option, names in expected.items():
            logger = OmegaConf.to_object(compose("config", overrides=[f"logger={option}"])).logger
            assert [name for name, _ in logger.active()] == names, option
        added = OmegaConf.to_object(compose("config", overrides=["logger=many", "logger.wandb.enabled=true"])).logger
        assert [name for name, _ in added.active()] == ["csv", "tensorboard", "wandb"]
        wandb = OmegaConf.to_object(compose("config", overrides=["logger=wandb"])).logger.wandb
        assert wandb.offline is True  # offline unless the user says otherwise
        with pytest.raises(ConfigError, match=r"^logger\.wandb\.log_model: True is invalid; accepted: false while"):
            OmegaConf.to_object(compose("config", overrides=["logger=wandb", "logger.wandb.log_model=true"]))


def test_many_writes_metrics_csv_and_tensorboard_events_with_the_events(tiny_model_config, token_loader, tmp_path,
                                                                        network_attempts):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = tmp_path / "run"
    trainer = fit(tiny_model_config, token_loader, run, options("csv", "tensorboard"))
    assert [type(logger).__name__ for logger in trainer.loggers] == ["ContinuingCSVLogger", "TensorBoardLogger"]

    with open(run / "logs" / "metrics.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    events = {int(row["step"]): row for row in rows if row["milestone/reached"] or row["growth/params"]}
    assert float(events[MILESTONE_STEP]["milestone/reached"]) == 30_000
    assert float(events[MILESTONE_STEP]["milestone/params"]) == 40_000
    assert float(events[GROWTH_STEP]["growth/params"]) == 40_000 and float(events[GROWTH_STEP]["growth/n_layers"]) == 2
    assert any(row["train/loss"] for row in rows)

    board = EventAccumulator(str(run / "tensorboard"))
    board.Reload()
    scalars = board.Tags()["scalars"]
    assert {"train/loss", "model/params", "milestone/reached", "growth/params", "growth/d_model"} <= set(scalars)
    assert [(e.step, e.value) for e in board.Scalars("milestone/reached")] == [(MILESTONE_STEP, 30_000)]
    assert [(e.step, e.value) for e in board.Scalars("growth/params")] == [(GROWTH_STEP, 40_000)]
    assert len(board.Scalars("train/loss")) == MAX_STEPS
    assert network_attempts == []


def test_mlflow_writes_a_local_file_store_without_telemetry(tiny_model_config, token_loader, tmp_path, monkeypatch,
                                                            network_attempts):
    import mlflow.telemetry.utils as telemetry_utils
    from mlflow.telemetry import get_telemetry_client
    from mlflow.tracking import MlflowClient

    # pytest alone switches MLflow's telemetry off; take that away so the run's own setting is what counts
    monkeypatch.setattr(telemetry_utils, "_IS_IN_CI_ENV_OR_TESTING", False)
    for name in ("MLFLOW_DISABLE_TELEMETRY", "DO_NOT_TRACK", "MLFLOW_ALLOW_FILE_STORE", "MLFLOW_TRACKING_URI"):
        monkeypatch.delenv(name, raising=False)
    run = tmp_path / "run"
    trainer = fit(tiny_model_config, token_loader, run, options("mlflow"))
    assert get_telemetry_client() is None

    (logger,) = trainer.loggers
    client = MlflowClient(f"file:{run / 'mlruns'}")
    assert client.get_experiment_by_name("dimba").experiment_id == logger.experiment_id
    history = {key: [(m.step, m.value) for m in client.get_metric_history(logger.run_id, key)]
               for key in ("milestone/reached", "growth/params", "train/loss")}
    assert history["milestone/reached"] == [(MILESTONE_STEP, 30_000)]
    assert history["growth/params"] == [(GROWTH_STEP, 40_000)]
    assert len(history["train/loss"]) == MAX_STEPS
    assert client.get_run(logger.run_id).info.status == "FINISHED"
    assert network_attempts == []


def wandb_records(run_file: Path) -> list:
    """The records of an offline `.wandb` file: W&B's 7-byte header, then LevelDB log records
    (32 KiB blocks; a 7-byte header of checksum, length and type: 1 whole, 2 first, 3 middle,
    4 last) holding `wandb_internal_pb2.Record` messages. A record still being written is left out."""
    from wandb.proto import wandb_internal_pb2

    data, block, position, pending, records = run_file.read_bytes(), 32768, 7, b"", []
    assert data[:4] == b":W&B"
    while position + 7 <= len(data):
        if block - position % block < 7:  # the rest of a block is padding
            position += block - position % block
            continue
        length, kind = int.from_bytes(data[position + 4:position + 6], "little"), data[position + 6]
        if position + 7 + length > len(data):
            break
        pending += data[position + 7:position + 7 + length]
        position += 7 + length
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
            pending = b""
    return records


def wandb_history(run_dir: Path, timeout_s: float = 30.0) -> List[Dict[str, float]]:
    """The history rows of a finished offline run. `finish()` returns before W&B's service
    process has flushed the file, so wait (bounded) for its exit record."""
    run_file, deadline = next(run_dir.glob("run-*.wandb")), time.monotonic() + timeout_s
    records = wandb_records(run_file)
    while not any(record.WhichOneof("record_type") == "exit" for record in records):
        assert time.monotonic() < deadline, f"{run_file} has no exit record after {timeout_s} s"
        time.sleep(0.05)
        records = wandb_records(run_file)
    return [{item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in record.history.item}
            for record in records if record.WhichOneof("record_type") == "history"]


def test_wandb_writes_an_offline_run_in_the_run_directory(tiny_model_config, token_loader, tmp_path, monkeypatch,
                                                          wandb_home, network_attempts):
    import wandb

    monkeypatch.setenv("WANDB_MODE", "online")  # the option's offline: true wins over the environment
    run = tmp_path / "run"
    fit(tiny_model_config, token_loader, run, options("wandb"))
    assert wandb.run is None  # finished with the fit: a next run in this process starts its own

    (run_dir,) = (run / "wandb").glob("offline-run-*")
    history = wandb_history(run_dir)
    events = {int(row["trainer/global_step"]): row for row in history
              if "milestone/reached" in row or "growth/params" in row}
    assert events[MILESTONE_STEP]["milestone/reached"] == 30_000
    assert events[MILESTONE_STEP]["milestone/params"] == 40_000
    assert events[GROWTH_STEP]["growth/params"] == 40_000 and events[GROWTH_STEP]["growth/d_model"] == 32
    assert sum("train/loss" in row for row in history) == MAX_STEPS
    assert network_attempts == []


def test_a_resumed_run_continues_each_loggers_run(tmp_path, wandb_home, network_attempts):
    """TensorBoard hides the old steps from the checkpoint on; W&B and MLflow continue the same run."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = tmp_path / "run"
    board, wandb_run, mlflow_run = build_loggers(options("tensorboard", "wandb", "mlflow"), run, resume_step=None)
    for step in range(6):  # interrupted after step 5; its checkpoint holds step 4
        for logger in (board, wandb_run, mlflow_run):
            logger.log_metrics({"train/loss": 1.0}, step=step)
    wandb_id, mlflow_id = wandb_run.experiment.id, mlflow_run.run_id
    for logger in (board, wandb_run, mlflow_run):
        logger.finalize("success")

    board, wandb_run, mlflow_run = build_loggers(options("tensorboard", "wandb", "mlflow"), run, resume_step=4)
    for step in range(4, 7):
        for logger in (board, wandb_run, mlflow_run):
            logger.log_metrics({"train/loss": 2.0}, step=step)
    assert wandb_run.experiment.id == wandb_id and mlflow_run.run_id == mlflow_id
    for logger in (board, wandb_run, mlflow_run):
        logger.finalize("success")

    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    board_steps = [(e.step, e.value) for e in events.Scalars("train/loss")]
    assert board_steps == [(0, 1), (1, 1), (2, 1), (3, 1), (4, 2), (5, 2), (6, 2)]  # 4 and 5 once, as retrained
    assert len(list((run / "wandb").glob("offline-run-*"))) == 2  # one id: `wandb sync` sends both into one run
    history = mlflow_run.experiment.get_metric_history(mlflow_id, "train/loss")
    assert [(m.step, m.value) for m in history][-3:] == [(4, 2), (5, 2), (6, 2)] and len(history) == 9
    assert network_attempts == []


def test_a_missing_package_is_one_line_naming_the_extra(monkeypatch, tmp_path):
    import dimba.config.loggers as loggers_config

    monkeypatch.setattr(loggers_config, "find_spec", lambda name: None)
    check_logger_packages(options("csv"))  # built in: needs nothing
    for name in ("tensorboard", "wandb", "mlflow"):
        with pytest.raises(ConfigError) as error:
            check_logger_packages(options("csv", name))
        message = str(error.value)
        assert message.startswith(f"logger: '{name}' is invalid; accepted: csv, or install the loggers extra")
        assert message.endswith("pip install -e '.[loggers]'") and "\n" not in message
    with pytest.raises(ConfigError, match=r"the package 'wandb' is missing"):
        build_loggers(options("wandb"), tmp_path / "run", resume_step=None)
    assert not (tmp_path / "run").exists()  # refused before anything was written


def test_log_event_writes_only_on_global_rank_zero(tmp_path):
    class Recording(L.pytorch.loggers.Logger):
        name, version = "recording", 0
        calls: list = []

        def log_metrics(self, metrics, step=None):
            self.calls.append((dict(metrics), step))

        def log_hyperparams(self, params, *args, **kwargs):
            pass

    class FakeTrainer:
        def __init__(self, rank_zero):
            self.is_global_zero, self.loggers = rank_zero, [Recording()]

    log_event(FakeTrainer(rank_zero=False), {"milestone/reached": 1}, step=3)
    assert Recording.calls == []
    log_event(FakeTrainer(rank_zero=True), {"milestone/reached": 1}, step=3)
    assert Recording.calls == [({"milestone/reached": 1.0}, 3)]
