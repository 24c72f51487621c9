"""What `bench/quality.py` compares: every arm is a config `python train.py` accepts, grown as
the comparison says, and the default run's own recipe is among them."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import quality  # noqa: E402


def arm_config(arm: str):
    objective, extra = quality.ARMS[arm]
    return quality.compose([f"objective={objective}", quality.BENCH_GROWTH, *extra])


def test_every_arm_composes_as_its_objective_grown_early_unless_it_says_otherwise():
    early = quality.compose(["objective=ar", quality.BENCH_GROWTH]).growth
    for arm, (objective, extra) in quality.ARMS.items():
        config = arm_config(arm)
        assert config.objective.name == objective
        assert (config.growth.schedule == early.schedule) == (not any(o.startswith("growth=") for o in extra)), arm


def test_the_default_run_is_an_arm():
    """`python train.py` (objective=ar, growth after the last step) is measured beside the rest."""
    default = quality.compose([])
    config = arm_config("ar[growth=default]")
    assert (config.objective, config.growth, config.model) == (default.objective, default.growth, default.model)
