"""The checkpoint format has one owner, and checkpoints written before it still load.

`tests/data/v1/` holds files written by dimba before the redesign (format version 1): a
train.py run (two milestones and its last.ckpt, grown in depth and width), a SimpleTrainer
milestone and a sharded (FSDP, two ranks) milestone directory; `expected.json` has what
that code computed from them (listings, and the logits of the loaded models).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import lightning as L
import pytest
import torch

import dimba
from dimba.checkpointing import format as ckpt_format
from dimba.checkpointing.record import CheckpointRecord
from dimba.cli.main import main
from dimba.io.manager import ProgressiveCheckpointManager
from dimba.model import DIMBA, DIMBAConfig
from dimba.training.lr_schedule import WarmupCosine

V1 = Path(__file__).resolve().parent / "data" / "v1"
EXPECTED = json.loads((V1 / "expected.json").read_text())
MODELS = [name for name, value in EXPECTED.items() if isinstance(value, dict)]
# The v1 runs trained the original recipe (free embeddings, regression x0): code that continues
# one builds that recipe (a model of today's default recipe is refused in one line).
SMALL = dict(d_model=16, n_layers=1, d_state=4, head_dim=16, chunk_size=16, d_embed=8, d_time=8, diffusion_steps=100,
             embedding_norm=None, x0_estimate="regression")


@pytest.fixture
def v1(tmp_path) -> Path:
    """A writable copy: listings and loads must never need to touch the originals."""
    return Path(shutil.copytree(V1, tmp_path / "v1"))


@pytest.mark.parametrize("name", MODELS)
def test_every_v1_checkpoint_loads_to_the_same_model(v1, name):
    model = dimba.load_model(v1 / name)
    expected = EXPECTED[name]
    assert model.config == DIMBAConfig.from_record(expected["architecture"])
    assert (model.config.embedding_norm, model.config.x0_estimate) == (None, "regression")  # the original recipe
    x = torch.randn(1, 8, model.config.d_embed, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        logits = model(x, torch.tensor([10]))
    # float32 kernels round differently across CPUs (an AMD EPYC gives 2.2e-7 off on a logit of
    # 0.197 written elsewhere); a checkpoint loaded wrongly is off by orders of magnitude more.
    assert float(logits.double().sum()) == pytest.approx(expected["logits_sum"], rel=1e-5)
    assert [float(v) for v in logits[0, 0, :4]] == pytest.approx(expected["logits_first"], rel=1e-5, abs=1e-6)


@pytest.mark.parametrize("directory", ["run/progressive_checkpoints", "simple", "fsdp"])
def test_v1_sidecars_list_as_before(v1, directory):
    listed = ProgressiveCheckpointManager([], v1 / directory, enabled=False).list_checkpoints()
    keys = ("milestone_str", "global_step", "current_params", "target_milestone", "status")
    assert [{k: e[k] for k in keys} for e in listed] == EXPECTED[directory]


def test_the_seed_manager_resumes_a_v1_milestone_into_a_smaller_model(v1):
    manager = ProgressiveCheckpointManager([6000, 9000, 20000], v1 / "run" / "progressive_checkpoints")
    today = DIMBA(DIMBAConfig(**{**SMALL, "embedding_norm": 8.0, "x0_estimate": "bayes"}))
    path = manager.get_checkpoint_path_for_milestone(9000)
    with pytest.raises(dimba.errors.CheckpointLoadError, match="model.embedding_norm=null, not 8.0"):
        manager.load_checkpoint(path, today)
    model = DIMBA(DIMBAConfig(**SMALL))
    info = manager.load_checkpoint(manager.get_checkpoint_path_for_milestone(9000), model)
    assert info["global_step"] == 3 and manager.get_next_milestone() == 20000
    assert (model.config.d_model, model.config.n_layers) == (24, 2)


def test_a_lightning_run_continues_from_a_v1_last_checkpoint_without_saving_again(v1, tmp_path, quiet_trainer_kwargs):
    from dimba.data import TextDataModule

    from dimba.training import DIMBALightningModule

    module = DIMBALightningModule(
        model_config=SMALL, warmup_steps=0, enable_progressive_checkpoints=True, progressive_milestones=[6000, 9000],
        progressive_save_dir=str(tmp_path / "new_run"),
        growth_schedule=[{"step": 2, "op": "depth", "n_layers": 2}, {"step": 3, "op": "width", "d_model": 24}])
    trainer = L.Trainer(max_steps=6, **quiet_trainer_kwargs)
    trainer.fit(module, datamodule=TextDataModule(seq_len=32, batch_size=4),
                ckpt_path=str(v1 / "run" / "checkpoints" / "last.ckpt"))
    assert trainer.global_step == 6 and (module.model.config.d_model, module.model.config.n_layers) == (24, 2)
    schedule = trainer.lr_scheduler_configs[0].scheduler.lr_lambdas[0]  # the v1 run's cosine, not today's default
    saved = torch.load(v1 / "run" / "checkpoints" / "last.ckpt", weights_only=True)["lr_schedulers"][0]["lr_lambdas"][0]
    old = WarmupCosine(saved["warmup_steps"], saved["total_steps"], saved["min_ratio"])
    assert schedule.kind == "cosine" and [schedule(s) for s in range(12)] == [old(s) for s in range(12)]
    assert not (tmp_path / "new_run").exists() or not list((tmp_path / "new_run").glob("*.pt"))  # held by the v1 run


def test_dimba_checkpoints_show_reads_a_v1_sidecar(v1, capsys):
    assert main(["checkpoints", "show", str(v1 / "run" / "progressive_checkpoints" / "checkpoint_9.0K_step_3.pt")]) == 0
    out = capsys.readouterr().out
    assert "read from    sidecar checkpoint_9.0K_step_3.json" in out and "width -> d_model 24" in out


def test_a_sidecar_round_trips_and_a_newer_format_is_refused(tmp_path):
    sidecar = ckpt_format.new_sidecar(tmp_path / "checkpoint_1.0M_step_5.pt", 10**6, [], 5, 1_200_000, [10**6], [],
                                      {"train/loss": torch.tensor(0.5)}, 123, sharded=False)
    path = tmp_path / "checkpoint_1.0M_step_5.json"
    sidecar.write(path)
    data = json.loads(path.read_text())
    assert data["format"] == "dimba.progressive_checkpoint/2" and data["metadata"]["train/loss"] == 0.5
    assert data["milestone_str"] == "1.0M" and data["current_params_str"] == "1.2M"
    again = ckpt_format.Sidecar.read(path)
    assert again.global_step == 5 and again.reached_milestones == [] and again.size_bytes == 123
    data["format"] = "dimba.progressive_checkpoint/3"
    path.write_text(json.dumps(data))
    entry = ckpt_format.inspect(path)
    assert entry.status == "unreadable" and "format version 3; this dimba reads up to 2" in entry.error


def test_the_record_view_reads_every_writers_layout():
    weight = torch.ones(2)
    lightning = CheckpointRecord({"state_dict": {"model.w": weight}, "optimizer_states": [{"s": 1}],
                                              "dimba": {"architecture": {"d_model": 8}, "growth_history": [{"op": "depth"}]}})
    assert lightning.model_state == {"w": weight} and lightning.optimizer_state == {"s": 1}
    assert lightning.architecture == {"d_model": 8} and lightning.growth_history == [{"op": "depth"}]
    v1_simple = CheckpointRecord({"model_state_dict": {"w": weight}, "metadata": {"architecture": {"d_model": 4}}})
    assert v1_simple.is_milestone and v1_simple.architecture == {"d_model": 4} and v1_simple.growth_history == []
