"""Growth inside Trainer.fit: milestones per stage, checkpoints that know their shape,
resume after growth, manual loading through the ProgressiveCheckpointManager API, and DDP."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch

import dimba
from dimba.errors import CheckpointLoadError
from dimba.growth.plan import build_plan
from dimba.growth.schedule import as_events
from dimba.model import DIMBA, DIMBAConfig
from dimba.training import DIMBALightningModule
from dimba.utils.checkpointing import ProgressiveCheckpointManager
from conftest import HANG_GUARD_S

SCHEDULE = [{"step": 2, "op": "depth", "n_layers": 2}, {"step": 4, "op": "width", "d_model": 64}]


def sizes(config: DIMBAConfig) -> list[int]:
    plan = build_plan(config, as_events(SCHEDULE), [], 10)
    return [stage.params for stage in plan.stages]


def growing_module(config: DIMBAConfig, save_dir: Path, milestones) -> DIMBALightningModule:
    return DIMBALightningModule(
        model_config=config, warmup_steps=0, growth_schedule=SCHEDULE,
        enable_progressive_checkpoints=True, progressive_milestones=milestones, progressive_save_dir=str(save_dir),
    )


@pytest.fixture
def grown_run(tmp_path, tiny_model_config, token_loader, quiet_trainer_kwargs):
    """Train 6 steps through two growth events; one milestone per stage."""
    start, deeper, wider = sizes(tiny_model_config)
    save_dir = tmp_path / "milestones"
    module = growing_module(tiny_model_config, save_dir, [start, deeper, wider])
    trainer = L.Trainer(max_steps=6, **quiet_trainer_kwargs)
    trainer.fit(module, token_loader())
    return module, trainer, save_dir, (start, deeper, wider)


def test_each_stage_saves_its_milestone_with_its_shape(grown_run):
    module, trainer, save_dir, (start, deeper, wider) = grown_run
    assert (module.model.config.n_layers, module.model.config.d_model) == (2, 64)
    assert sum(p.numel() for p in module.parameters()) == wider
    listed = ProgressiveCheckpointManager([1], save_dir).list_checkpoints()
    assert [(e["target_milestone"], e["global_step"], e["current_params"]) for e in listed] == [
        (start, 1, start), (deeper, 2, deeper), (wider, 4, wider)
    ]
    # The optimizer follows the grown model: every parameter, nothing stale.
    optimizer = trainer.optimizers[0]
    assert {id(p) for g in optimizer.param_groups for p in g["params"]} == {id(p) for p in module.parameters()}
    last = listed[-1]
    assert last["metadata"]["architecture"]["d_model"] == 64
    history = last["metadata"]["growth_history"]
    assert [(h["op"], h["applied_at_step"], h["params"]) for h in history] == [("depth", 2, deeper), ("width", 4, wider)]
    for entry in listed:
        model = dimba.load_model(entry["path"])
        assert sum(p.numel() for p in model.parameters()) == entry["current_params"]
        checkpoint = torch.load(entry["path"], weights_only=True)
        torch.testing.assert_close(model.state_dict(), checkpoint["model_state_dict"])


def test_growth_does_not_change_what_the_model_computes_at_the_step_it_happens(tiny_model_config, token_loader, quiet_trainer_kwargs, tmp_path):
    seen = {}

    class Probe(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, *args):
            x = torch.randn(2, 16, tiny_model_config.d_embed, generator=torch.Generator().manual_seed(0))
            with torch.no_grad():
                seen[(trainer.global_step, pl_module.model.config.d_model, pl_module.model.config.n_layers)] = pl_module.model(x, torch.tensor([3, 70]))

    module = growing_module(tiny_model_config, tmp_path, ["1T"])
    # The probe runs before the module's own callbacks (growth) and again after, via a second probe.
    from dimba.training.growth_callback import GrowthCallback

    module.configure_callbacks = lambda: [Probe(), GrowthCallback(module.recipe.schedule), Probe()]
    L.Trainer(max_steps=4, **quiet_trainer_kwargs).fit(module, token_loader())
    before = seen[(4, 32, 2)]
    after = seen[(4, 64, 2)]
    assert (after - before).abs().max().item() < 1e-5 * max(1.0, before.abs().max().item())  # (Bayes logits: large)


def test_lightning_resume_regrows_before_loading_and_continues_the_schedule(grown_run, tiny_model_config, token_loader, quiet_trainer_kwargs):
    _, _, save_dir, (start, deeper, wider) = grown_run
    middle = save_dir / "checkpoint_{}_step_2.pt".format(dimba.checkpointing.milestone_label(deeper))
    resumed = growing_module(tiny_model_config, save_dir, [start, deeper, wider])
    assert resumed.model.config.n_layers == 1  # built small, as the config says
    trainer = L.Trainer(max_steps=6, **quiet_trainer_kwargs)
    trainer.fit(resumed, token_loader(), ckpt_path=str(middle))
    assert trainer.global_step == 6
    assert (resumed.model.config.n_layers, resumed.model.config.d_model) == (2, 64)  # step-4 growth ran once
    assert [h["applied_at_step"] for h in resumed.growth_history] == [2, 4]
    steps = sorted(e["global_step"] for e in ProgressiveCheckpointManager([1], save_dir).list_checkpoints())
    assert steps == [1, 2, 4]  # the resumed run saved nothing twice


def test_seed_manual_resume_grows_a_small_model_to_the_checkpoint(grown_run, tiny_model_config):
    _, _, save_dir, milestones = grown_run
    path = ProgressiveCheckpointManager(milestones, save_dir).get_checkpoint_path_for_milestone(milestones[-1])
    model = DIMBA(tiny_model_config)  # the starting size
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    manager = ProgressiveCheckpointManager(milestones=list(milestones), save_dir=str(save_dir))
    info = manager.load_checkpoint(filepath=path, model=model, optimizer=optimizer)
    assert info["global_step"] == 4 and manager.get_next_milestone() is None
    assert (model.config.n_layers, model.config.d_model) == (2, 64)
    torch.testing.assert_close(model.state_dict(), dimba.load_model(path).state_dict())
    assert {id(p) for g in optimizer.param_groups for p in g["params"]} == {id(p) for p in model.parameters()}
    model.loss(torch.randint(0, 256, (2, 16)))["loss"].backward()
    optimizer.step()  # the loaded state (moments of the right shapes) trains on


def test_loading_into_a_larger_model_says_how_to_load_it(grown_run, tiny_model_config):
    _, _, save_dir, milestones = grown_run
    path = ProgressiveCheckpointManager(milestones, save_dir).get_checkpoint_path_for_milestone(milestones[0])
    larger = DIMBA(DIMBAConfig(**{**tiny_model_config.to_dict(), "n_layers": 3}))
    with pytest.raises(CheckpointLoadError, match=r"dimba.load_model"):
        ProgressiveCheckpointManager(milestones, save_dir).load_checkpoint(path, larger)


def test_growth_is_refused_before_training_under_unsupported_strategies():
    from dimba.training.growth_callback import GrowthCallback

    class FSDPLike:  # what Trainer(strategy="fsdp") would hold; FSDP itself needs a GPU
        pass

    class TrainerWithFSDP:
        strategy = FSDPLike()

    with pytest.raises(ValueError, match="growth.schedule: growing the model is supported .* not with FSDPLike"):
        GrowthCallback(as_events(SCHEDULE)).setup(TrainerWithFSDP(), None, "fit")


@pytest.mark.slow
@pytest.mark.parametrize("async_save", [False, True], ids=["sync", "async"])
def test_ddp_growth_keeps_ranks_identical_and_writes_once(tmp_path, async_save):
    env = {**os.environ, "DIMBA_TEST_ASYNC_SAVE": "1" if async_save else "0"}
    result = subprocess.run([sys.executable, str(Path(__file__).with_name("ddp_growth_job.py")), str(tmp_path)],
                            capture_output=True, text=True, timeout=HANG_GUARD_S, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    digests = [(tmp_path / f"rank{r}.txt").read_text().split() for r in (0, 1)]
    assert digests[0] == digests[1]
    assert digests[0][1:] == ["64", "2", "7"]  # grown on both ranks, trained on to step 7
    files = sorted(p.name for p in (tmp_path / "milestones").iterdir())
    assert files == [  # one set, no temporaries: only rank 0 wrote
        "checkpoint_1.0K_step_1.json", "checkpoint_1.0K_step_1.pt",
        "checkpoint_20.0K_step_2.json", "checkpoint_20.0K_step_2.pt",
        "checkpoint_80.0K_step_4.json", "checkpoint_80.0K_step_4.pt",
    ]
    assert result.stderr.count("🎯 Progressive checkpoint saved") == 3
    assert dimba.load_model(tmp_path / "milestones" / "checkpoint_80.0K_step_4.pt").config.d_model == 64
