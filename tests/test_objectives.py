"""Masked diffusion and the autoregressive yardstick: their likelihoods where the truth is
known, their samplers, growth, and the config that chooses them."""

from __future__ import annotations

import math

import pytest
import torch

from dimba.errors import ConfigError
from dimba.growth import DepthMode, grow_depth, grow_width
from dimba.model import DIMBA, DIMBAConfig
from dimba.objective import ObjectiveConfig
from dimba.objectives import autoregressive, generate, masked, sequence_bound
from dimba.training.steps import training_loss

SMALL = dict(vocab_size=8, d_model=32, n_layers=2, d_state=8, head_dim=16, chunk_size=8, d_embed=16, d_time=16)


def build(objective: str, **overrides) -> DIMBA:
    torch.manual_seed(0)
    return DIMBA(ObjectiveConfig(name=objective).network(DIMBAConfig(**{**SMALL, **overrides})))


def trained(model: DIMBA, objective: str, steps: int = 4) -> DIMBA:
    """A few steps, so no weight is still at its (often zero) initial value."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for step in range(steps):
        tokens = torch.randint(0, model.config.vocab_size, (4, 24), generator=torch.Generator().manual_seed(step))
        training_loss(model, tokens, ObjectiveConfig(name=objective), 0, step)["loss"].backward()
        optimizer.step()
        optimizer.zero_grad()
    return model


def oracle(objective: str, probs: torch.Tensor) -> DIMBA:
    """A model whose every prediction is `probs`, whatever it reads: the exact model of an
    i.i.d. source. The output projection is zero, so the logits are bias . E^T; the bias is
    solved so that they equal log(probs) (d_embed > vocab_size makes that exact)."""
    model = build(objective)
    with torch.no_grad():
        model.out_proj.weight.zero_()
        table = model.embedding.weight[: model.config.vocab_size].double()
        bias = torch.linalg.lstsq(table, probs.double().log()[:, None]).solution[:, 0]
        model.out_proj.bias.copy_(bias.float())
    return model.eval()


SOURCE = torch.tensor([0.4, 0.2, 0.1, 0.1, 0.08, 0.06, 0.04, 0.02])


@pytest.mark.parametrize("objective", ["masked", "ar"])
def test_on_an_iid_source_the_exact_model_scores_the_true_log_likelihood(objective):
    """For an i.i.d. source every conditional is the marginal, so the masked bound's weights
    (1/m for m masked positions, m uniform in 1..L) must add up to -log p(x) in expectation
    (the bound is tight for the exact model), and the autoregressive likelihood is -log p(x)
    exactly."""
    model = oracle(objective, SOURCE)
    tokens = torch.multinomial(SOURCE, 20 * 40, replacement=True, generator=torch.Generator().manual_seed(1)).view(20, 40)
    truth = -SOURCE.double().log()[tokens].sum(1)
    bound = sequence_bound(model, tokens, 256, torch.Generator().manual_seed(2))
    if objective == "ar":
        torch.testing.assert_close(bound.nats, truth, rtol=1e-5, atol=1e-4)
        assert bound.mc_var.max() == 0
    else:  # unbiased: the total is within 4 Monte Carlo standard errors, and within 1%
        error = float((bound.nats - truth).sum())
        assert abs(error) < 4 * float(bound.mc_var.sum()) ** 0.5 and abs(error) < 0.01 * float(truth.sum())
        assert float(bound.mc_var.sum()) > 0


def test_an_untrained_discrete_model_starts_at_the_uniform_distribution():
    for objective in ("masked", "ar"):
        model = build(objective)
        tokens = torch.randint(0, 8, (3, 16))
        bound = sequence_bound(model, tokens, 4, torch.Generator().manual_seed(0))
        torch.testing.assert_close(bound.nats, torch.full((3,), 16 * math.log(8), dtype=torch.float64))


def test_the_masked_training_loss_estimates_the_bound_per_token():
    """The loss is the bound per token: averaged over many batches, the masked loss of a
    trained model agrees with `sequence_bound` / L on the same sequences."""
    model = trained(build("masked"), "masked", steps=6).eval()
    tokens = torch.randint(0, 8, (8, 24), generator=torch.Generator().manual_seed(9))
    bound = sequence_bound(model, tokens, 64, torch.Generator().manual_seed(0))
    with torch.no_grad():
        losses = [float(masked.loss(model, tokens, torch.Generator().manual_seed(s))["loss"]) for s in range(200)]
    per_token = float(bound.nats.mean()) / 24
    standard_error = float(torch.tensor(losses).std()) / math.sqrt(len(losses))
    assert abs(sum(losses) / len(losses) - per_token) < 4 * standard_error + 0.02 * per_token


def test_the_causal_model_carries_its_state_token_by_token_to_the_same_logits():
    model = trained(build("ar"), "ar").eval()
    ids = torch.randint(0, 8, (3, 21))
    inputs = autoregressive.shifted_inputs(model, ids)
    with torch.no_grad():
        full = model.token_logits(inputs)
        states = model.empty_states(3)
        stepped = torch.stack([model.step_logits(inputs[:, i], states) for i in range(21)], dim=1)
    torch.testing.assert_close(stepped, full, rtol=1e-4, atol=1e-4)


def test_the_causal_model_reads_no_future():
    model = trained(build("ar"), "ar").eval()
    ids = torch.randint(0, 8, (1, 20))
    changed = ids.clone()
    changed[0, 12:] = (changed[0, 12:] + 1) % 8
    with torch.no_grad():
        a, b = model.token_logits(ids), model.token_logits(changed)
    torch.testing.assert_close(a[:, :12], b[:, :12])  # the output at i reads the inputs up to i
    assert not torch.allclose(a[:, 12:], b[:, 12:])


@pytest.mark.parametrize("objective", ["masked", "ar"])
@pytest.mark.parametrize("growth", ["width", "depth"])
def test_growth_preserves_the_function_of_the_discrete_models(objective, growth):
    model = trained(build(objective), objective).double().eval()
    ids = torch.randint(0, 9, (3, 19))  # the mask / beginning-of-sequence token included
    with torch.no_grad():
        before = model.token_logits(ids)
        if growth == "width":
            grow_width(model, 64, seed=3)
        else:
            grow_depth(model, 4, DepthMode.IDENTITY, seed=3)
        after = model.token_logits(ids)
    torch.testing.assert_close(after, before, rtol=1e-10, atol=1e-10)
    assert model.config.objective == objective and not hasattr(model, "time_mlp")


def test_masked_sampling_unmasks_everything_keeps_the_prompt_and_skips_idle_steps():
    certain = torch.zeros(8)
    certain[5] = 1.0
    model = oracle("masked", certain.clamp(min=1e-6) / certain.clamp(min=1e-6).sum())
    out = generate(model, torch.tensor([1, 2]), 10, 1000, [0, 1])
    assert out["ids"].tolist() == [[1, 2] + [5] * 8] * 2
    assert out["forwards"] <= 16  # one forward after each of the (at most 2 x 8) steps that unmasked something
    assert generate(model, torch.tensor([1, 2]), 10, 1000, [0])["forwards"] <= 8


def test_masked_and_ar_samples_follow_the_seed_and_the_temperature():
    for objective in ("masked", "ar"):
        model = trained(build(objective), objective).eval()
        a = generate(model, torch.tensor([3]), 16, 4, [7, 8])["ids"]
        b = generate(model, torch.tensor([3]), 16, 4, [7, 8])["ids"]
        assert torch.equal(a, b) and a[:, 0].tolist() == [3, 3] and int(a.max()) < 8
        greedy = generate(model, torch.tensor([3]), 16, 4, [1, 2], temperature=0.0)["ids"]
        nucleus = generate(model, torch.tensor([3]), 16, 4, [1, 2], top_p=1e-6)["ids"]
        if objective == "ar":  # left to right, the most likely token each time: no seed matters
            assert torch.equal(greedy[0], greedy[1]) and torch.equal(greedy, nucleus)


def test_ar_generation_matches_rerunning_the_prefix():
    model = trained(build("ar"), "ar").eval()
    ids = generate(model, torch.tensor([2, 4]), 12, 1, [0], temperature=0.0)["ids"][0]
    with torch.no_grad():
        for position in range(2, 12):
            logits = model.token_logits(autoregressive.shifted_inputs(model, ids[None, : position + 1]))[0, position]
            assert int(logits.argmax()) == int(ids[position])


@pytest.mark.parametrize("request_, message", [
    (dict(temperature=0.5), "temperature and top_p apply to objective=masked"),
    (dict(clamp=False, objective="ar"), "clamp"),
    (dict(top_p=0.0, objective="masked"), "top_p in (0, 1]"),
    (dict(length=1, prompt=[1, 2]), "length must be"),
])
def test_generation_refuses_what_does_not_apply(request_, message):
    model = build(request_.pop("objective", "diffusion"))
    prompt = torch.tensor(request_.pop("prompt", [1]))
    length = request_.pop("length", 8)
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        generate(model, prompt, length, 4, [0], **request_)


def test_the_objective_builds_its_network():
    ar = ObjectiveConfig(name="ar").network(DIMBAConfig())
    assert (ar.objective, ar.bidirectional, ar.time_conditioned, ar.embedding_rows) == ("ar", False, False, 257)
    mdm = ObjectiveConfig(name="masked").network(DIMBAConfig())
    assert (mdm.objective, mdm.bidirectional, mdm.time_conditioned, mdm.embedding_rows) == ("masked", True, False, 257)
    assert ObjectiveConfig().network(DIMBAConfig()) == DIMBAConfig()


@pytest.mark.parametrize("make, key", [
    (lambda: ObjectiveConfig(name="autoregressive"), "objective.name"),
    (lambda: ObjectiveConfig(name="ar", use_consistency_training=True), "objective.use_consistency_training"),
    (lambda: ObjectiveConfig(name="masked", mse_weight=0.5), "objective.mse_weight"),
    (lambda: ObjectiveConfig(name="ar").network(DIMBAConfig(objective="masked")), "model.objective"),
    (lambda: DIMBAConfig(objective="ar", bidirectional=True), "model.bidirectional"),
])
def test_options_that_do_not_apply_to_an_objective_are_refused_in_one_line(make, key):
    with pytest.raises(ConfigError) as caught:
        make()
    assert str(caught.value).startswith(key) and "\n" not in str(caught.value)


def test_model_loss_is_each_objectives_own_loss():
    for objective in ("masked", "ar"):
        model = build(objective)
        tokens = torch.randint(0, 8, (2, 12))
        assert model.loss(tokens)["loss"].item() == pytest.approx(math.log(8), rel=1e-5)  # uniform at the start
        with pytest.raises(ValueError, match="belong to continuous diffusion"):
            model.loss(tokens, t=torch.tensor([1, 2]))
