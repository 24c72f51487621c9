"""The fixed-size frontier of `bench/frontier.py`: one warmup-stable-decay run per size serves
every FLOPs level, because a decay branched off the stable phase is the run planned to that
level, bit for bit."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import frontier  # noqa: E402
import quality  # noqa: E402

TINY = ["objective=diffusion", "growth=none", "model.d_model=32", "model.n_layers=1", "model.head_dim=16",
        "model.d_state=8", "model.d_embed=16", "model.d_time=16", "data.seq_len=32", "data.batch_size=2",
        "optim.warmup_steps=2"]


def test_each_branch_is_the_run_planned_to_its_length():
    from dimba.run import build_data

    config = quality.compose(TINY)
    loader = build_data(config).train_dataloader()
    branched = {}
    frontier.branch_runs(config, 0.002, {"short": 6, "long": 11}, loader,
                         lambda name, trainer: branched.update({name: (trainer.global_step, trainer.model.state_dict())}))
    for name, total in (("short", 6), ("long", 11)):
        alone = quality.trainer_for(config, 0.002, total, loader)
        alone.train()
        step, state = branched[name]
        assert step == total
        for key, value in alone.model.state_dict().items():
            assert torch.equal(value, state[key]), (name, key)


def test_a_level_gets_the_steps_its_flops_allow():
    assert frontier.level_steps(per_step=100, budget=1000) == {0.25: 2, 0.5: 5, 1.0: 10}


def test_branching_refuses_a_schedule_that_decays_from_the_start():
    config = quality.compose(TINY + ["optim.schedule=cosine"])
    with pytest.raises(SystemExit, match="optim.schedule=cosine: branching needs wsd"):
        frontier.branch_runs(config, 0.002, {"a": 4}, [], lambda name, trainer: None)


def test_flops_to_target_interpolates_in_log_flops_between_the_levels_around_the_crossing():
    import frontier_report

    curve = [(100.0, 5.0), (200.0, 4.0), (400.0, 3.0)]
    assert frontier_report.crossing(curve, 6.0) == 100.0  # already there at the first level
    assert frontier_report.crossing(curve, 3.5) == pytest.approx(200.0 * 2 ** 0.5)  # half way, in log FLOPs
    assert frontier_report.crossing(curve, 2.0) is None  # not reached by the last level
