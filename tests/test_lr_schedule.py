"""Learning-rate schedules that know about growth: shapes, re-warm, restart, the rate per
width, validation, and exact resume of LambdaLR across a re-warm, a restart and a width
growth."""

from __future__ import annotations

import math

import pytest
import torch

from dimba.errors import ConfigError
from dimba.growth.optim import GrowableAdamW
from dimba.config.lr import check_growth_lr, validate_lr_options
from dimba.growth.schedule import as_events
from dimba.training.lr_schedule import (
    GrowthAwareLR,
    WarmupCosine,
    base_multiplier,
    build_lr_multiplier,
    growth_event_lrs,
    upgrade_scheduler_state,
    width_lr_scales,
)

DEFAULT_GROWTH = as_events([{"step": 60, "op": "depth", "n_layers": 8}, {"step": 120, "op": "width", "d_model": 192},
                            {"step": 180, "op": "width", "d_model": 256}])


def cosine(step: int, start: int, end: int, min_ratio: float) -> float:
    """Cosine from the peak at `start` to `min_ratio` at `end`, written out independently."""
    progress = min((step - start) / (end - start), 1.0)
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


# ----------------------------------------------------------------------------- shapes
def test_warmup_cosine_keeps_its_values():
    schedule = WarmupCosine(20, 240, 0.1)
    assert schedule(0) == pytest.approx(1 / 21)
    assert schedule(19) == pytest.approx(20 / 21)
    assert schedule(20) == pytest.approx(1.0)
    assert schedule(130) == pytest.approx(0.55)  # half way through the decay
    assert schedule(240) == pytest.approx(0.1)
    assert schedule(10_000) == pytest.approx(0.1)


def test_cosine_without_growth_is_warmup_cosine_exactly():
    old, new = WarmupCosine(20, 240, 0.1), build_lr_multiplier("cosine", 20, 240, 0.1, growth_steps=[])
    assert [new(s) for s in range(300)] == [old(s) for s in range(300)]


def test_wsd_warms_up_stays_at_the_peak_then_decays_linearly_over_the_last_fraction():
    wsd = build_lr_multiplier("wsd", 10, 100, 0.1, decay_fraction=0.2)
    assert wsd(0) == pytest.approx(1 / 11)
    assert all(wsd(s) == 1.0 for s in range(10, 81))
    assert wsd(90) == pytest.approx(0.55)
    assert wsd(100) == pytest.approx(0.1)
    assert wsd(500) == pytest.approx(0.1)
    decay = [wsd(s) for s in range(80, 101)]
    assert all(b < a for a, b in zip(decay, decay[1:]))


def test_constant_is_the_peak_after_warmup():
    constant = build_lr_multiplier("constant", 5, 100, 0.1)
    assert constant(0) == pytest.approx(1 / 6)
    assert all(constant(s) == 1.0 for s in range(5, 200))


# ----------------------------------------------------------------------------- growth
def test_rewarm_ramps_from_near_zero_back_onto_the_schedule():
    plain = build_lr_multiplier("cosine", 20, 240, 0.1)
    rewarm = build_lr_multiplier("cosine", 20, 240, 0.1, growth_steps=[60, 120], rewarm_steps=10)
    assert rewarm(59) == plain(59)  # untouched before the growth
    assert rewarm(60) == pytest.approx(plain(60) / 11)  # the grown model's first step
    assert rewarm(65) == pytest.approx(plain(65) * 6 / 11)
    assert [rewarm(s) for s in range(70, 120)] == [plain(s) for s in range(70, 120)]  # back on the schedule
    ramp = [rewarm(s) / plain(s) for s in range(120, 131)]
    assert ramp == pytest.approx([(k + 1) / 11 for k in range(10)] + [1.0])


def test_restart_rewinds_cosine_to_its_peak_over_the_remaining_steps():
    restart = build_lr_multiplier("cosine", 20, 240, 0.1, growth_steps=[60, 120], lr_restart=True)
    plain = build_lr_multiplier("cosine", 20, 240, 0.1)
    assert [restart(s) for s in range(60)] == [plain(s) for s in range(60)]
    assert restart(60) == 1.0 and restart(120) == 1.0
    assert restart(119) == pytest.approx(cosine(119, 60, 240, 0.1))
    assert restart(180) == pytest.approx(cosine(180, 120, 240, 0.1))
    assert restart(240) == pytest.approx(0.1)


def test_restart_of_wsd_resumes_the_stable_phase_and_decays_over_the_remaining_fraction():
    restart = build_lr_multiplier("wsd", 10, 200, 0.1, growth_steps=[100], lr_restart=True, decay_fraction=0.2)
    assert all(restart(s) == 1.0 for s in range(10, 180))  # decay of the remaining 100 steps: the last 20
    assert restart(190) == pytest.approx(0.55)
    late = build_lr_multiplier("wsd", 10, 200, 0.1, growth_steps=[170], lr_restart=True, decay_fraction=0.2)
    assert late(169) < 1.0 and late(170) == 1.0  # grown during the decay: back to the peak


def test_restart_with_rewarm_warms_the_restarted_schedule_up():
    both = build_lr_multiplier("cosine", 20, 240, 0.1, growth_steps=[100], rewarm_steps=4, lr_restart=True)
    assert [both(s) for s in range(100, 104)] == pytest.approx([1 / 5, 2 / 5, 3 / 5, 4 / 5])
    assert both(104) == 1.0
    assert both(172) == pytest.approx(cosine(172, 104, 240, 0.1))


def test_the_plan_shows_the_lr_at_each_growth_event():
    rows = growth_event_lrs(build_lr_multiplier("cosine", 20, 240, 0.1, [60, 180], rewarm_steps=10), base_lr=2e-3)
    assert [r.step for r in rows] == [60, 180]
    assert rows[0].lr_before == pytest.approx(2e-3 * cosine(59, 20, 240, 0.1))
    assert rows[0].lr_after == pytest.approx(2e-3 * cosine(60, 20, 240, 0.1) / 11)
    assert rows[0].lr_rejoined == pytest.approx(2e-3 * cosine(70, 20, 240, 0.1))
    assert rows[1].lr_before == pytest.approx(2e-3 * 0.1 + 2e-3 * 0.9 * 0.5 * (1 + math.cos(math.pi * 159 / 220)))


# ----------------------------------------------------------------------------- rate per width
def test_each_width_runs_at_final_width_over_width_to_the_exponent():
    assert width_lr_scales(128, DEFAULT_GROWTH, 1.0) == [(0, 2.0), (120, pytest.approx(256 / 192)), (180, 1.0)]
    assert width_lr_scales(128, DEFAULT_GROWTH, 0.5) == [(0, pytest.approx(2 ** 0.5)), (120, pytest.approx((256 / 192) ** 0.5)),
                                                         (180, 1.0)]
    assert width_lr_scales(128, DEFAULT_GROWTH, 0.0) == []  # one rate for every width
    assert width_lr_scales(128, DEFAULT_GROWTH[:1], 1.0) == []  # depth only: every stage has the final width


def test_the_width_scale_multiplies_the_schedule_from_each_width_growth_on():
    scales = width_lr_scales(128, DEFAULT_GROWTH, 1.0)
    scaled = build_lr_multiplier("wsd", 20, 240, 0.1, growth_steps=[60, 120, 180], rewarm_steps=4, width_scales=scales)
    plain = build_lr_multiplier("wsd", 20, 240, 0.1, growth_steps=[60, 120, 180], rewarm_steps=4)
    for step in range(240):
        factor = 2.0 if step < 120 else (256 / 192 if step < 180 else 1.0)
        assert scaled(step) == pytest.approx(plain(step) * factor)
    assert scaled(239) == pytest.approx(plain(239))  # the final width ends at the schedule's own rate


# ----------------------------------------------------------------------------- validation
@pytest.mark.parametrize(
    "options, key",
    [
        (dict(schedule="linear"), "optim.schedule"),
        (dict(schedule=None), "optim.schedule"),
        (dict(schedule="wsd", decay_fraction=0.0), "optim.decay_fraction"),
        (dict(schedule="wsd", decay_fraction=1.5), "optim.decay_fraction"),
        (dict(schedule="wsd", decay_fraction=float("nan")), "optim.decay_fraction"),
        (dict(schedule="cosine", rewarm_steps=-1), "growth.rewarm_steps"),
        (dict(schedule="cosine", rewarm_steps=2.5), "growth.rewarm_steps"),
        (dict(schedule="cosine", rewarm_steps=True), "growth.rewarm_steps"),
        (dict(schedule="cosine", lr_restart="yes"), "growth.lr_restart"),
        (dict(schedule="constant", lr_restart=True), "growth.lr_restart"),
    ],
)
def test_bad_options_name_the_key_the_value_and_what_is_accepted(options, key):
    with pytest.raises(ConfigError) as caught:
        validate_lr_options(**options)
    assert caught.value.key == key
    assert key in str(caught.value) and "accepted" in str(caught.value) and "\n" not in str(caught.value)


@pytest.mark.parametrize("exponent", [-1, 2.5, float("nan"), True, "one"])
def test_a_bad_width_exponent_names_its_key(exponent):
    with pytest.raises(ConfigError) as caught:
        check_growth_lr(lr_width_exponent=exponent)
    assert caught.value.key == "growth.lr_width_exponent" and "[0, 2]" in str(caught.value)


def test_the_constructor_validates_too():
    with pytest.raises(ConfigError, match="optim.schedule"):
        build_lr_multiplier("cosine_with_restarts", 20, 240, 0.1)
    validate_lr_options("constant", rewarm_steps=10)  # a re-warm on a constant schedule is meaningful
    validate_lr_options("wsd", 1, 0, True)


# ----------------------------------------------------------------------------- resume
def _optimizer_and_scheduler(multiplier):
    weight = torch.nn.Parameter(torch.ones(3, 3))
    gain = torch.nn.Parameter(torch.ones(3))
    optimizer = GrowableAdamW([{"params": [weight], "weight_decay": 0.01}, {"params": [gain], "weight_decay": 0.0}],
                              lr=2e-3)
    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, multiplier)


def _train(optimizer, scheduler, steps):
    """`steps` optimizer steps; the learning rate each one ran at."""
    lrs = []
    for _ in range(steps):
        lrs.append([g["lr"] for g in optimizer.param_groups])
        for group in optimizer.param_groups:
            for p in group["params"]:
                p.grad = torch.full_like(p, 0.1)
        optimizer.step()
        scheduler.step()
    return lrs


@pytest.mark.parametrize(
    "options, stop",
    [
        (dict(kind="cosine", rewarm_steps=12, lr_restart=False), 65),  # inside the re-warm after step 60
        (dict(kind="cosine", rewarm_steps=0, lr_restart=True), 61),  # right after the restart at 60
        (dict(kind="wsd", rewarm_steps=5, lr_restart=True), 122),  # inside a restart's warmup
        (dict(kind="wsd", rewarm_steps=0, lr_restart=False, width=True), 121),  # right after a width growth
    ],
)
def test_a_resumed_run_gets_exactly_the_learning_rates_of_the_uninterrupted_one(tmp_path, options, stop):
    def make():
        scales = width_lr_scales(128, DEFAULT_GROWTH[:2], 1.0) if options.get("width") else None
        return build_lr_multiplier(options["kind"], 20, 240, 0.1, growth_steps=[60, 120],
                                   rewarm_steps=options["rewarm_steps"], lr_restart=options["lr_restart"],
                                   width_scales=scales)

    uninterrupted = _train(*_optimizer_and_scheduler(make()), 240)

    optimizer, scheduler = _optimizer_and_scheduler(make())
    before = _train(optimizer, scheduler, stop)
    path = tmp_path / "state.pt"
    torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}, path)
    state = torch.load(path, weights_only=True)  # plain data only
    optimizer, scheduler = _optimizer_and_scheduler(make())
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    after = _train(optimizer, scheduler, 240 - stop)

    assert before + after == uninterrupted
    assert any(uninterrupted[s][0] != uninterrupted[s - 1][0] for s in (60, 120))  # the growth did change the rate


def test_the_scheduler_state_carries_the_schedule_itself(tmp_path):
    """Like WarmupCosine: the options live in LambdaLR's state, so a resume continues the
    recorded schedule even if the multiplier is rebuilt with different arguments."""
    optimizer, scheduler = _optimizer_and_scheduler(
        build_lr_multiplier("wsd", 20, 240, 0.1, growth_steps=[60], rewarm_steps=8, decay_fraction=0.3))
    _train(optimizer, scheduler, 62)
    torch.save(scheduler.state_dict(), tmp_path / "scheduler.pt")
    fresh_optimizer, fresh = _optimizer_and_scheduler(GrowthAwareLR())
    fresh.load_state_dict(torch.load(tmp_path / "scheduler.pt", weights_only=True))
    rebuilt = fresh.lr_lambdas[0]
    assert (rebuilt.kind, rebuilt.growth_steps, rebuilt.rewarm_steps, rebuilt.decay_fraction) == ("wsd", [60], 8, 0.3)
    assert [rebuilt(s) for s in range(240)] == [scheduler.lr_lambdas[0](s) for s in range(240)]


def test_a_state_saved_before_the_width_exponent_continues_at_one_rate(tmp_path):
    """Today's default scales the rate per width; a run saved before that option existed
    resumes with the rates it was trained with."""
    old = build_lr_multiplier("wsd", 20, 240, 0.1, growth_steps=[60, 120])
    optimizer, scheduler = _optimizer_and_scheduler(old)
    _train(optimizer, scheduler, 30)
    state = scheduler.state_dict()
    for saved in state["lr_lambdas"]:
        del saved["width_scales"]  # as written before growth.lr_width_exponent
    upgrade_scheduler_state(state)
    today = build_lr_multiplier("wsd", 20, 240, 0.1, growth_steps=[60, 120],
                                width_scales=width_lr_scales(128, DEFAULT_GROWTH[:2], 1.0))
    _, fresh = _optimizer_and_scheduler(today)
    fresh.load_state_dict(state)
    assert [fresh.lr_lambdas[0](s) for s in range(240)] == [old(s) for s in range(240)]


def test_base_multiplier_of_each_kind_ends_at_min_ratio_or_the_peak():
    assert base_multiplier("cosine", 100, 10, 100, 0.2, 0.2) == pytest.approx(0.2)
    assert base_multiplier("wsd", 100, 10, 100, 0.2, 0.2) == pytest.approx(0.2)
    assert base_multiplier("constant", 100, 10, 100, 0.2, 0.2) == 1.0
