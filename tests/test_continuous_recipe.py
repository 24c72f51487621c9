"""The continuous recipe's options: the bound as the training loss, min-SNR weighting, the
zero-terminal-SNR schedule, normalised embeddings, the softmax x0 estimate,
self-conditioning and the ancestral sampler. Each is checked where its truth is known."""

from __future__ import annotations

import math

import pytest
import torch

from dimba.diffusion import bound as bound_module
from dimba.diffusion.bound import diffusion_weights, prior_nats, snr
from dimba.diffusion.schedule import CosineSchedule
from dimba.errors import ConfigError
from dimba.growth import DepthMode, grow_depth, grow_width
from dimba.model import DIMBA, DIMBAConfig
from dimba.model.shapes import parameter_count
from dimba.objective import ObjectiveConfig
from dimba.objectives import continuous, generate, sequence_bound
from dimba.training.steps import self_conditions, step_noise, training_loss

SMALL = dict(vocab_size=8, d_model=32, n_layers=2, d_state=8, head_dim=16, chunk_size=8, d_embed=16, d_time=16,
             diffusion_steps=50)
EVERYTHING = dict(noise_schedule="cosine_zero_snr", embedding_norm=4.0, x0_estimate="bayes", self_condition=True)


ORIGINAL = dict(embedding_norm=None, x0_estimate="regression")  # each option is tested from the original recipe


def build(**options) -> DIMBA:
    torch.manual_seed(0)
    return DIMBA(DIMBAConfig(**{**SMALL, **ORIGINAL, **options}))


def trained(model: DIMBA, objective: ObjectiveConfig = ObjectiveConfig(), steps: int = 4) -> DIMBA:
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for step in range(steps):
        tokens = torch.randint(0, model.config.vocab_size, (4, 12), generator=torch.Generator().manual_seed(step))
        training_loss(model, tokens, objective, 0, step)["loss"].backward()
        optimizer.step()
        optimizer.zero_grad()
    return model


def test_training_on_the_bound_is_an_unbiased_estimate_of_the_bound_dimba_eval_reports():
    """For fixed noise, the training loss's expectation over its timestep proposal is, term by
    term, the bound's integrand: prior + reconstruction at t = 1 + sum_t w_t ||e - e_hat||^2."""
    model = trained(build(noise_schedule="cosine_zero_snr"), ObjectiveConfig(weighting="bound")).double().eval()
    tokens = torch.randint(0, 8, (3, 10), generator=torch.Generator().manual_seed(1))
    noise = torch.randn(3, 10, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    alpha_bar = model.schedule.alpha_bar
    proposal = continuous.training_proposal(alpha_bar)
    weights = diffusion_weights(alpha_bar)
    steps = alpha_bar.numel() - 1
    with torch.no_grad():
        expected_loss = sum(
            float(proposal[t]) * float(continuous.loss(model, tokens, torch.full((3,), t), noise, "bound")["loss"])
            for t in range(1, steps + 1))
        e = model.embed(tokens)
        by_hand = prior_nats(e, float(alpha_bar[-1]))
        for t in range(1, steps + 1):
            z = model.schedule.add_noise(e, torch.full((3,), t), noise)
            out = model.denoise(z, torch.full((3,), t))
            if t == 1:
                by_hand = by_hand + torch.nn.functional.cross_entropy(
                    model.logits(out).flatten(0, 1), tokens.flatten(), reduction="none").view(3, 10).sum(1)
            else:
                by_hand = by_hand + weights[t] * ((e - model.rounding_mean(out)) ** 2).sum(dim=(1, 2))
    assert float(alpha_bar[-1]) == 0.0 and float(proposal[0]) == 0.0 and abs(float(proposal.sum()) - 1) < 1e-12
    assert expected_loss == pytest.approx(float(by_hand.mean()) / 10, rel=1e-9)


def test_the_bound_trained_on_matches_the_bound_estimated_by_dimba_eval():
    model = trained(build(), ObjectiveConfig(weighting="bound")).double().eval()
    tokens = torch.randint(0, 8, (2, 10), generator=torch.Generator().manual_seed(1))
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        draws = []
        for i in range(400):
            t = continuous.sample_timesteps(model, "bound", 2, torch.device("cpu"), generator)
            noise = torch.randn(2, 10, 16, dtype=torch.float64, generator=generator)
            draws.append(float(continuous.loss(model, tokens, t, noise, "bound")["loss"]))
    draws = torch.tensor(draws)
    estimate = sequence_bound(model, tokens, 200, torch.Generator().manual_seed(3))
    evaluated = float(estimate.nats.mean()) / 10
    se = math.hypot(float(draws.std()) / math.sqrt(draws.numel()), math.sqrt(float(estimate.mc_var.sum())) / 2 / 10)
    assert abs(float(draws.mean()) - evaluated) < 4 * se


def test_min_snr_weighting_caps_the_squared_error_weight_at_gamma():
    model = build()
    tokens = torch.randint(0, 8, (4, 10))
    t = torch.tensor([1, 10, 30, 50])
    noise = torch.randn(4, 10, 16)
    with torch.no_grad():
        out = continuous.loss(model, tokens, t, noise, "min_snr", mse_weight=2.0, ce_weight=0.5, min_snr_gamma=3.0)
        x0 = model.embed(tokens)
        x0_hat = model.denoise(model.schedule.add_noise(x0, t, noise), t)
        weight = snr(model.schedule.alpha_bar)[t].clamp(max=3.0).float()
        by_hand = 2.0 * (weight * ((x0_hat - x0) ** 2).mean(dim=(1, 2))).mean() + 0.5 * out["ce"]
    assert float(weight[0]) == 3.0 and float(weight[-1]) < 3.0
    torch.testing.assert_close(out["loss"], by_hand)


def test_the_zero_terminal_snr_schedule_ends_in_pure_noise_and_keeps_its_start():
    plain, zero = CosineSchedule(1000).alpha_bar, CosineSchedule(1000, "cosine_zero_snr").alpha_bar
    assert float(zero[0]) == 1.0 and float(zero[-1]) == 0.0 and float(plain[-1]) > 0
    assert bool((zero[1:] <= zero[:-1]).all())
    assert float(prior_nats(torch.randn(2, 5, 4), float(zero[-1])).abs().max()) == 0.0
    assert bool(torch.isfinite(bound_module.timestep_proposal(zero, (0.4, 0.2, 0.4))).all())


def test_normalised_embeddings_have_the_chosen_norm_wherever_they_are_used():
    model = build(embedding_norm=4.0)
    with torch.no_grad():
        model.embedding.weight.mul_(torch.linspace(0.1, 9, 8)[:, None])  # rows of very different norms
        rows = model.embed(torch.arange(8))
        torch.testing.assert_close(rows.norm(dim=-1), torch.full((8,), 4.0))
        query = torch.randn(3, 16)
        torch.testing.assert_close(model.logits(query), query @ rows.t())
        torch.testing.assert_close(model.rounding_mean(query), torch.softmax(query @ rows.t(), -1) @ rows)


def test_the_softmax_estimate_is_the_rounding_mean_of_the_output():
    model = build(x0_estimate="softmax")
    out = torch.randn(2, 5, 16)
    torch.testing.assert_close(model.x0_hat(out), torch.softmax(model.logits(out), -1) @ model.embedding.weight)
    assert torch.equal(build().x0_hat(out), out)


def test_a_self_conditioned_model_reads_its_own_estimate_and_training_feeds_it_half_the_steps():
    model = build(self_condition=True).eval()
    assert tuple(model.in_proj.weight.shape) == (32, 32)
    assert parameter_count(model.config) == sum(p.numel() for p in model.parameters())
    x_t, t = torch.randn(2, 6, 16), torch.tensor([5, 40])
    with torch.no_grad():
        first = model.denoise(x_t, t)
        torch.testing.assert_close(model.estimate(x_t, t), model.denoise(x_t, t, model.x0_hat(first)))
        assert not torch.allclose(model.estimate(x_t, t), first)
    decisions = [self_conditions(model, ObjectiveConfig(), 0, step) for step in range(400)]
    assert decisions == [self_conditions(model, ObjectiveConfig(), 0, step) for step in range(400)]
    assert 0.42 < sum(decisions) / 400 < 0.58
    assert not any(self_conditions(model, ObjectiveConfig(self_condition_rate=0.0), 0, s) for s in range(50))
    assert not self_conditions(build(), ObjectiveConfig(self_condition_rate=1.0), 0, 0)
    # the self-conditioning pass changes the loss, and only the steps it is drawn on
    tokens = torch.randint(0, 8, (2, 6))
    with torch.no_grad():
        t_, noise = step_noise(model, tokens, 0, 7)
        on = continuous.loss(model, tokens, t_, noise, self_condition=True)["loss"]
        off = continuous.loss(model, tokens, t_, noise, self_condition=False)["loss"]
    assert float(on) != float(off)


@pytest.mark.parametrize("growth", ["width", "depth"])
@pytest.mark.parametrize("schedule", ["cosine_zero_snr", "learned"])
def test_growth_preserves_the_function_with_every_option_on(growth, schedule):
    objective = ObjectiveConfig(weighting="bound")
    model = trained(build(**{**EVERYTHING, "noise_schedule": schedule}), objective).double().eval()
    x_t, t = torch.randn(3, 9, 16, dtype=torch.float64), torch.tensor([1, 20, 50])
    with torch.no_grad():
        before = model.x0_hat(model.estimate(x_t, t))
        if growth == "width":
            grow_width(model, 64, seed=3)
        else:
            grow_depth(model, 4, DepthMode.IDENTITY, seed=3)
        after = model.x0_hat(model.estimate(x_t, t))
    torch.testing.assert_close(after, before, rtol=1e-10, atol=1e-10)
    assert model.config.self_condition and model.config.embedding_norm == 4.0


def test_the_ancestral_sampler_follows_its_seed_keeps_the_prompt_and_differs_from_ddim():
    model = trained(build(self_condition=True)).eval()
    prompt = torch.tensor([3, 1, 4])
    batch = generate(model, prompt, 12, 10, [5, 6], sampler="ancestral")
    alone = generate(model, prompt, 12, 10, [6], sampler="ancestral")
    assert torch.equal(batch["ids"][1], alone["ids"][0])  # a row does not depend on its batch
    assert torch.equal(batch["ids"][:, :3], prompt.expand(2, 3))
    assert torch.equal(batch["ids"], generate(model, prompt, 12, 10, [5, 6], sampler="ancestral")["ids"])
    ddim = generate(model, prompt, 12, 10, [5, 6])
    assert not torch.equal(ddim["ids"], batch["ids"])
    assert batch["forwards"] == 11  # a self-conditioned model's first estimate takes two forwards
    with pytest.raises(ValueError, match="sampler must be one of ddim, ancestral"):
        generate(model, prompt, 12, 10, [5], sampler="euler")


@pytest.mark.parametrize("make, key", [
    (lambda: DIMBAConfig(noise_schedule="linear"), "model.noise_schedule: 'linear'"),
    (lambda: DIMBAConfig(embedding_norm=0), "model.embedding_norm: 0"),
    (lambda: DIMBAConfig(x0_estimate="eps"), "model.x0_estimate: 'eps'"),
    (lambda: DIMBAConfig(self_condition="yes"), "model.self_condition: 'yes'"),
    (lambda: ObjectiveConfig(name="masked").network(DIMBAConfig(self_condition=True)), "model.self_condition: True"),
    (lambda: ObjectiveConfig(name="ar").network(DIMBAConfig(embedding_norm=4.0)), "model.embedding_norm: 4.0"),
    (lambda: ObjectiveConfig(weighting="elbo"), "objective.weighting: 'elbo'"),
    (lambda: ObjectiveConfig(weighting="bound", ce_weight=2.0), "objective.ce_weight: 2.0"),
    (lambda: ObjectiveConfig(min_snr_gamma=-1), "objective.min_snr_gamma: -1"),
    (lambda: ObjectiveConfig(self_condition_rate=1.5), "objective.self_condition_rate: 1.5"),
    (lambda: ObjectiveConfig(name="masked", weighting="bound"), "objective.weighting: 'bound'"),
])
def test_bad_recipe_options_are_refused_in_one_line_naming_the_field(make, key):
    with pytest.raises(ConfigError) as info:
        make()
    message = str(info.value)
    assert message.startswith(key) and "\n" not in message and "accepted" in message


def test_an_old_checkpoint_architecture_without_the_options_loads_as_the_original_recipe():
    record = {k: v for k, v in DIMBAConfig().to_dict().items() if k not in EVERYTHING}
    config = DIMBAConfig.from_record(record)
    assert (config.noise_schedule, config.embedding_norm, config.x0_estimate, config.self_condition) == \
        ("cosine", None, "regression", False)


def test_the_schedule_stays_exact_in_float64_whatever_the_model_is_cast_or_rebuilt_to():
    """Near t = 0, 1 - alpha_bar is 4e-5: in float32 the bound's weights lose digits, and a
    resumed run (rebuilt on the meta device) would train on other weights than the original."""
    exact = CosineSchedule(50, "cosine_zero_snr").alpha_bar
    model = build(noise_schedule="cosine_zero_snr").to(torch.bfloat16)
    assert model.schedule.alpha_bar.dtype == torch.float64 and torch.equal(model.schedule.alpha_bar, exact)
    with torch.device("meta"):
        rebuilt = DIMBA(DIMBAConfig(**{**SMALL, **ORIGINAL, "noise_schedule": "cosine_zero_snr"})).float()
    rebuilt.to_empty(device="cpu")
    assert torch.equal(rebuilt.schedule.alpha_bar, exact)


def test_the_learned_schedule_starts_as_the_cosine_and_trains_through_the_bound_keeping_its_ends():
    from dimba.diffusion.schedule import LearnedSchedule
    from dimba.model.shapes import LEARNED_SCHEDULE_SEGMENTS

    assert LearnedSchedule.SEGMENTS == LEARNED_SCHEDULE_SEGMENTS
    model = build(noise_schedule="learned")
    cosine = CosineSchedule(50).alpha_bar
    torch.testing.assert_close(model.schedule.alpha_bar, cosine, rtol=0, atol=1e-12)
    assert parameter_count(model.config) == sum(p.numel() for p in model.parameters())
    trained(model, ObjectiveConfig(weighting="bound"), steps=6)
    learned = model.schedule.alpha_bar.detach()
    assert float((learned - cosine).abs().max()) > 1e-6  # the warp moved
    assert float(learned[0]) == 1.0 and float(learned[-1]) == pytest.approx(float(cosine[-1]), abs=1e-15)
    assert bool((learned[1:] <= learned[:-1]).all())  # still monotone
    with pytest.raises(ConfigError, match="objective.weighting=bound"):
        ObjectiveConfig().network(DIMBAConfig(noise_schedule="learned"))
    ObjectiveConfig(weighting="bound").network(DIMBAConfig(noise_schedule="learned"))


def test_the_bayes_estimate_adds_each_positions_gaussian_likelihood_to_the_networks_logits():
    """log softmax(logits) differs from the network's own log-probabilities by exactly
    log q(z_t,i | v) = -||z_t,i - sqrt(ab_t) e_v||^2 / (2 (1 - ab_t)), up to a constant per position."""
    plain = build(embedding_norm=4.0, x0_estimate="softmax").double()
    bayes = build(embedding_norm=4.0, x0_estimate="bayes").double()
    bayes.load_state_dict(plain.state_dict())
    tokens = torch.randint(0, 8, (2, 7))
    t = torch.tensor([1, 30])
    with torch.no_grad():
        e = bayes.embed(tokens)
        z = bayes.schedule.add_noise(e, t, torch.randn(2, 7, 16, dtype=torch.float64))
        network = torch.log_softmax(plain.logits(plain.denoise(z, t)).double(), -1)
        posterior = torch.log_softmax(bayes.logits(bayes.denoise(z, t)).double(), -1)
        ab = bayes.schedule.alpha_bar[t].view(-1, 1, 1)
        rows = bayes.embed(torch.arange(8)).double()
        likelihood = -((z.double()[..., None, :] - ab.sqrt()[..., None] * rows) ** 2).sum(-1) / (2 * (1 - ab))
        gap = posterior - network - likelihood
        torch.testing.assert_close(gap, gap[..., :1].expand_as(gap), rtol=0, atol=1e-6)
        # at t = 1 the noisy embedding alone names its token: the estimate is the clean embedding
        noise = torch.randn(2, 7, 16, dtype=torch.float64)
        x0 = bayes.x0_hat(bayes.denoise(bayes.schedule.add_noise(e, torch.tensor([1, 1]), noise), torch.tensor([1, 1])))
    torch.testing.assert_close(x0, e, rtol=0, atol=1e-6)
    with pytest.raises(ConfigError, match="model.x0_estimate: 'bayes'"):
        DIMBAConfig(x0_estimate="bayes", embedding_norm=None)


def test_the_default_recipe_is_the_bayes_estimate_of_normalised_rows_and_a_partial_mapping_takes_it():
    config = DIMBAConfig.from_dict({"d_model": 64})  # a user's options: the rest are the defaults
    assert (config.embedding_norm, config.x0_estimate, config.noise_schedule, config.self_condition) == \
        (8.0, "bayes", "cosine", False)
    masked = ObjectiveConfig(name="masked").network(DIMBAConfig())  # left at the defaults: off for masked
    assert (masked.embedding_norm, masked.x0_estimate) == (None, "regression")
