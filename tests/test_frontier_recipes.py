"""The growth recipes `bench/frontier_recipes.py` measures against the fixed-size frontier: each
one is a run `python train.py` accepts, and each still writes the default run's milestones."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import frontier_recipes  # noqa: E402
import quality  # noqa: E402


@pytest.mark.parametrize("name", list(frontier_recipes.RECIPES))
def test_every_candidate_recipe_grows_through_the_default_milestones(name):
    from dimba.growth.schedule import validate_schedule
    from dimba.model.params import architecture_parameters

    config = quality.compose(["objective=diffusion", quality.BENCH_GROWTH, *frontier_recipes.RECIPES[name]])
    stages = [config.model, *validate_schedule(config.model, list(config.growth.schedule))]
    counts = [architecture_parameters(stage) for stage in stages]
    milestones = list(config.progressive_checkpoints.milestones)
    assert counts[0] < milestones[0] and counts[-1] >= milestones[-1], (name, counts)
    assert all(0 < e.step < config.trainer.max_steps for e in config.growth.schedule)


def test_a_candidate_is_trained_at_its_own_events_scaled_to_the_budget():
    config = quality.compose(["objective=diffusion", quality.BENCH_GROWTH, *frontier_recipes.RECIPES["late"]])
    steps, events = quality.scaled_plan(config, 2 * quality.run_flops(config, 240, list(config.growth.schedule)))
    assert [round(e.step / steps, 2) for e in events] == [0.8, 0.9, 0.95]


def test_the_rate_is_the_grids_best_on_select_of_seed_0():
    base = frontier_recipes.base_lr()
    runs = {frontier_recipes.run_key("late", 1.0, base * m, 0): {"lr": base * m, "heldout": {"select": {"bpb": b}}}
            for m, b in zip(frontier_recipes.RATE_GRID, (4.0, 3.5))}
    assert frontier_recipes.recipe_rate("late", runs) == base * frontier_recipes.RATE_GRID[1]
    assert frontier_recipes.recipe_rate("single", runs) is None


def test_the_default_growth_is_the_recipe_the_frontier_measured_best():
    default = quality.compose(["objective=diffusion"])
    measured = quality.compose(["objective=diffusion", quality.BENCH_GROWTH,
                                *frontier_recipes.RECIPES[frontier_recipes.DEFAULT_RECIPE]])
    assert default.growth == measured.growth


def test_a_recipe_is_paired_per_seed_with_that_seeds_frontier():
    import frontier_report

    levels = {"1": {"flops": 100.0, "per_seed": [{"seed": 0, "frontier": 3.0}, {"seed": 1, "frontier": 4.0}]}}
    runs = {frontier_recipes.run_key("late", 1.0, 0.002, seed): {"heldout": {"report": {"bpb": bpb}}, "flops": 100.0,
                                                                 "steps": 10, "growth_steps": [9]}
            for seed, bpb in ((0, 3.5), (1, 3.9))}
    result = frontier_report.against_frontier("late", 0.002, runs, levels, targets={}, budget=100.0)
    level = result["levels"]["1"]
    assert [row["difference"] for row in level["per_seed"]] == pytest.approx([0.5, -0.1])
    assert level["difference"]["mean"] == pytest.approx(0.2) and level["below_on_every_seed"] is False
