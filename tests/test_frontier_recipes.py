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
    assert all(0 < e.step <= config.trainer.max_steps for e in config.growth.schedule)  # after the last step at the latest


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


def test_growing_after_the_last_step_ends_with_the_bound_of_the_model_that_never_grew():
    """Why `growth=default`'s figures are the fixed d128x4 run's: every step trains the small
    model as growth=none would, and the growth after the last one changes nothing it computes."""
    import torch

    from dimba.objectives import sequence_bound
    from dimba.run import build_data

    tiny = ["objective=diffusion", "model.d_model=32", "model.n_layers=1", "model.head_dim=16", "model.d_state=8",
            "model.d_embed=16", "model.d_time=16", "data.seq_len=32", "data.batch_size=2", "optim.warmup_steps=2",
            "growth.lr_width_exponent=0", "trainer.max_steps=6"]
    grown_config = quality.compose(tiny + ["growth.schedule=[{at:1.0,op:depth,n_layers:2,mode:identity},"
                                           "{at:1.0,op:width,d_model:64}]"])
    fixed_config = quality.compose(tiny + ["growth=none"])
    loader = build_data(fixed_config).train_dataloader()
    bounds = []
    for config in (grown_config, fixed_config):
        trainer = quality.trainer_for(config, 0.002, 6, loader)
        trainer.train()
        model = trainer.model.eval()
        windows = torch.randint(0, 256, (3, 32), generator=torch.Generator().manual_seed(1))
        bounds.append((sum(p.numel() for p in model.parameters()),
                       sequence_bound(model, windows, 4, torch.Generator().manual_seed(0)).nats))
    (grown_params, grown), (fixed_params, fixed) = bounds
    assert grown_params > 2 * fixed_params  # it did grow, after step 6 of 6
    assert torch.allclose(grown, fixed, rtol=1e-4, atol=1e-4)
