"""The likelihood bound is a bound: tested where the truth is known.

A source of known entropy gives the floor no model can go below (in expectation): uniform
text over 64 characters carries exactly 6 bits per byte, an i.i.d. or Markov source its
entropy rate. A Bayes-optimal denoiser for an i.i.d. source shows the bound is also tight
where it should be, so a wrong weighting (a factor of two, a missing term) cannot hide.
"""

from __future__ import annotations

import math

import pytest
import torch

from dimba.diffusion.bound import (
    bits_per_byte, diffusion_weights, sequence_bound, stratified_timesteps, timestep_proposal,
)
from dimba.model import DIMBA, DIMBAConfig

# The original recipe (free rows, regression x0): the bound's own estimate is then the rounding
# mean of the output, which the Bayes-optimal denoiser below supplies exactly.
ORIGINAL = dict(embedding_norm=None, x0_estimate="regression")
SMALL = dict(d_model=32, n_layers=1, d_state=8, head_dim=16, chunk_size=16, d_embed=16, d_time=16,
             diffusion_steps=200, **ORIGINAL)


def bpb(model, tokens, samples=8, seed=0, **options):
    bound = sequence_bound(model, tokens, samples, torch.Generator().manual_seed(seed), **options)
    n, length = tokens.shape
    return bits_per_byte(bound, torch.full((n,), length), torch.full((n,), length)), bound


def train(model, draw, steps=150, lr=3e-3):
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    for step in range(steps):
        loss = model.loss(draw(step))["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


def uniform_text(n, length, seed):
    """Bytes drawn uniformly from 64 printable characters: 6 bits per byte, exactly."""
    alphabet = torch.tensor(list(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"))
    return alphabet[torch.randint(0, 64, (n, length), generator=torch.Generator().manual_seed(seed))]


@pytest.mark.parametrize("trained", [False, True])
def test_uniform_text_over_64_characters_costs_at_least_6_bits_per_byte(trained):
    torch.manual_seed(0)
    model = DIMBA(DIMBAConfig(vocab_size=256, **SMALL))
    if trained:
        train(model, lambda step: uniform_text(16, 32, 100 + step))
    result, _ = bpb(model, uniform_text(32, 32, seed=1), samples=8)
    assert result.bpb >= 6.0 - 3 * result.bpb_se, result
    assert result.bytes == 32 * 32 and result.tokens == 32 * 32


def markov_source(n, length, seed):
    """A Markov chain over 4 symbols that stays with probability 0.7 and moves to each other
    symbol with 0.1: entropy rate H(0.7, 0.1, 0.1, 0.1) bits per symbol, one byte each."""
    generator = torch.Generator().manual_seed(seed)
    out = torch.empty(n, length, dtype=torch.long)
    state = torch.randint(0, 4, (n,), generator=generator)
    for i in range(length):
        move = torch.rand(n, generator=generator) >= 0.7
        state = torch.where(move, (state + torch.randint(1, 4, (n,), generator=generator)) % 4, state)
        out[:, i] = state
    return out + ord("a")


def test_a_trained_model_stays_above_a_markov_sources_entropy_rate():
    rate = -(0.7 * math.log2(0.7) + 3 * 0.1 * math.log2(0.1))  # 1.357 bits per byte
    torch.manual_seed(0)
    model = train(DIMBA(DIMBAConfig(vocab_size=256, **SMALL)), lambda step: markov_source(16, 32, 100 + step))
    result, _ = bpb(model, markov_source(32, 32, seed=1), samples=8)
    assert result.bpb >= rate - 3 * result.bpb_se, result


class BayesDenoiser(DIMBA):
    """The exact posterior mean E[e | z_t] for i.i.d. tokens drawn from `probs`: the best
    denoiser there is, so its bound sits just above the source's entropy."""

    probs: torch.Tensor

    def denoise(self, x_t, t):
        ab = self.schedule.alpha_bar.to(x_t.dtype)[t].view(-1, 1, 1, 1)
        table = self.embedding.weight
        distance = ((x_t[:, :, None, :] - ab.sqrt() * table) ** 2).sum(-1)
        log_post = self.probs.log() - distance / (2 * (1 - ab[..., 0]))
        return log_post.softmax(-1) @ table


def bayes_model(probs, steps=1000):
    model = BayesDenoiser(DIMBAConfig(vocab_size=len(probs), d_model=32, n_layers=1, head_dim=16, d_embed=16,
                                      diffusion_steps=steps, **ORIGINAL))
    model.probs = probs
    with torch.no_grad():  # rows of one norm: the rounding logits x0_hat . E^T then pick the nearest row
        weight = torch.randn(len(probs), 16, generator=torch.Generator().manual_seed(3))
        model.embedding.weight.copy_(weight / weight.norm(dim=1, keepdim=True) * 4.0)
    return model.eval()


PROBS = torch.tensor([0.4, 0.2, 0.1, 0.1, 0.08, 0.06, 0.04, 0.02], dtype=torch.float64)
ENTROPY = float(-(PROBS * PROBS.log2()).sum())  # 2.49 bits per symbol


def iid_tokens(n, length, seed):
    return torch.multinomial(PROBS, n * length, replacement=True,
                             generator=torch.Generator().manual_seed(seed)).view(n, length)


def test_the_bayes_optimal_denoiser_comes_within_a_few_percent_of_the_entropy():
    model = bayes_model(PROBS.float())
    tokens = iid_tokens(64, 32, seed=0)
    empirical = float(-PROBS.log2()[tokens].mean())  # the sample's own code length under the truth
    result, bound = bpb(model, tokens, samples=16, decoder="regression")
    assert result.bpb >= empirical - 3 * result.bpb_se
    assert result.bpb <= empirical * 1.05 + 3 * result.bpb_se, (result.bpb, empirical)
    assert float(bound.prior.sum()) / math.log(2) / tokens.numel() < 1e-3  # z_T carries nothing
    assert ENTROPY == pytest.approx(empirical, abs=0.1)


def test_a_denoiser_off_by_a_constant_pays_for_it_in_bits():
    """The diffusion term is 1/2 sum (SNR(t-1) - SNR(t)) ||e - e_hat||^2: adding a fixed error
    to the Bayes denoiser must add that weighted error, no more and no less."""
    model = bayes_model(PROBS.float())
    tokens = iid_tokens(16, 32, seed=1)
    exact, _ = bpb(model, tokens, samples=16, decoder="regression")
    shift = 0.05
    original = BayesDenoiser.denoise

    class Shifted(BayesDenoiser):
        def denoise(self, x_t, t):
            return original(self, x_t, t) + shift

    model.__class__ = Shifted
    worse, _ = bpb(model, tokens, samples=16, decoder="regression")
    weights = diffusion_weights(model.schedule.alpha_bar)
    # E||e - e_hat - s||^2 = E||e - e_hat||^2 + d s^2 (the Bayes error is mean-zero given z_t)
    extra_bits = float(weights.sum()) * 16 * shift ** 2 / math.log(2)  # per token, t = 2..T
    difference = worse.bpb - exact.bpb
    assert difference == pytest.approx(extra_bits, rel=0.2, abs=3 * (worse.bpb_se + exact.bpb_se))


def test_importance_sampled_and_uniform_estimators_agree_within_their_errors():
    model = bayes_model(PROBS.float(), steps=200)
    tokens = iid_tokens(32, 16, seed=2)
    alpha_bar = model.schedule.alpha_bar
    mixes = ((0.5, 0.0, 0.5), (0.0, 0.0, 1.0), (0.0, 0.5, 0.5))  # the default, uniform in t, half in log-SNR
    estimates = [bpb(model, tokens, samples=16, seed=seed, decoder="regression",
                     proposal=timestep_proposal(alpha_bar, mix))[0] for seed, mix in enumerate(mixes)]
    for a in estimates:
        for b in estimates:
            assert abs(a.bpb - b.bpb) <= 4 * math.hypot(a.bpb_se, b.bpb_se), (a, b)


def test_stratified_timesteps_follow_the_proposal_one_draw_per_slice():
    alpha_bar = bayes_model(PROBS.float(), steps=100).schedule.alpha_bar
    proposal = timestep_proposal(alpha_bar)
    t = stratified_timesteps(proposal, 500, 8, torch.Generator().manual_seed(0))
    assert t.shape == (500, 2, 8) and int(t.min()) >= 2 and int(t.max()) <= 100
    assert bool((t.diff(dim=-1) >= 0).all())  # the k-th draw comes from the k-th slice of the CDF
    cdf = proposal.cumsum(0)
    for tau in (5, 20, 50, 80, 99):
        assert float((t <= tau).double().mean()) == pytest.approx(float(cdf[tau]), abs=0.02)
    assert float(proposal.sum()) == pytest.approx(1.0) and float(proposal[2:].min()) > 0


def test_the_same_generator_state_gives_the_same_bound():
    model = DIMBA(DIMBAConfig(vocab_size=256, **SMALL)).eval()
    tokens = uniform_text(4, 16, seed=0)
    first, _ = bpb(model, tokens, seed=5)
    again, _ = bpb(model, tokens, seed=5)
    assert first == again


@pytest.mark.parametrize("samples", [0, 1, 3, True])
def test_an_odd_or_missing_sample_count_is_refused(samples):
    model = DIMBA(DIMBAConfig(vocab_size=256, **SMALL))
    with pytest.raises(ValueError, match="even number"):
        sequence_bound(model, uniform_text(2, 8, 0), samples, torch.Generator())


def test_the_rounding_mean_is_the_softmax_weighted_embedding():
    model = DIMBA(DIMBAConfig(vocab_size=256, **SMALL))
    x0_hat = torch.randn(2, 5, 16)
    table = model.embedding.weight
    expected = torch.softmax(x0_hat @ table.t(), dim=-1) @ table
    assert torch.allclose(model.rounding_mean(x0_hat), expected, atol=1e-6)


def test_the_prior_term_is_the_gaussian_kl_of_the_last_step():
    from torch.distributions import Normal, kl_divergence

    from dimba.diffusion.bound import prior_nats

    x0 = torch.randn(3, 4, 5)
    ab = 0.3  # a schedule that ends with signal left, so the term is not ~0
    expected = kl_divergence(Normal(ab ** 0.5 * x0.double(), (1 - ab) ** 0.5), Normal(0.0, 1.0)).sum(dim=(1, 2))
    assert torch.allclose(prior_nats(x0, ab), expected, rtol=1e-9)


def test_the_standard_error_matches_the_spread_of_repeated_estimates():
    """The reported Monte Carlo error is calibrated: over 24 seeds, the estimates scatter by
    about what each one claims."""
    model = bayes_model(PROBS.float(), steps=200)
    tokens = iid_tokens(8, 16, seed=4)
    runs = [bpb(model, tokens, samples=4, seed=seed, decoder="regression")[0] for seed in range(24)]
    spread = torch.tensor([r.bpb for r in runs]).std().item()
    claimed = math.sqrt(sum(r.bpb_se ** 2 for r in runs) / len(runs))
    assert 0.6 < spread / claimed < 1.6, (spread, claimed)


def test_a_subsets_error_covers_the_spread_between_sequences():
    """sampled=True: the ratio estimator's error over sequences (sampling plus Monte Carlo)."""
    from dimba.diffusion.bound import LN2, SequenceBound

    nats = torch.tensor([10.0, 30.0, 20.0, 40.0], dtype=torch.float64) * LN2  # 10..40 bits
    zeros = torch.zeros(4, dtype=torch.float64)
    bound = SequenceBound(nats=nats, mc_var=zeros, prior=zeros, diffusion=nats, reconstruction=zeros)
    tokens = torch.full((4,), 10)
    whole = bits_per_byte(bound, tokens, tokens)
    sampled = bits_per_byte(bound, tokens, tokens, sampled=True)
    assert whole.bpb == sampled.bpb == pytest.approx(2.5)  # 100 bits over 40 bytes
    assert whole.bpb_se == 0.0  # no Monte Carlo noise: the whole text is known exactly
    per_sequence = torch.tensor([1.0, 3.0, 2.0, 4.0], dtype=torch.float64)  # bits per byte of each
    assert sampled.bpb_se == pytest.approx(float(per_sequence.std() / 2))  # s / sqrt(n), equal sizes


def test_the_byte_4gram_is_a_distribution_in_every_context():
    import numpy as np

    from dimba.data.reference_models import ByteNgram, _keys

    model = ByteNgram(b"the cat sat on the mat; the end\n" * 20)
    for context in (b"the", b" ca", b"zzz", b"\x00\x00\x00"):
        keys = np.array([int.from_bytes(context + bytes([b]), "big") for b in range(256)])
        assert float(model._probs(keys, 4).sum()) == pytest.approx(1.0)
    # The first bytes of a text are scored with the shorter contexts they have: the chain rule.
    two = model.bits(b"th")
    first = -math.log2(float(model._probs(_keys(np.frombuffer(b"t", np.uint8), 1), 1)[0]))
    second = -math.log2(float(model._probs(_keys(np.frombuffer(b"th", np.uint8), 2), 2)[0]))
    assert two == pytest.approx(first + second)
    assert model.bits(b"the cat") < ByteNgram(b"xyz" * 50).bits(b"the cat")  # it learned something
