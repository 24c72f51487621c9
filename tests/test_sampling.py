"""DDIM sampling: deterministic for a seed, keeps the prompt, refuses unusable arguments."""

from __future__ import annotations

import pytest
import torch

from dimba.diffusion.sampling import ddim_timesteps, denoise, sample
from dimba.model import DIMBA


@pytest.fixture
def model(tiny_model_config):
    torch.manual_seed(0)
    return DIMBA(tiny_model_config)


PROMPT = torch.tensor([72, 101, 108, 108, 111])  # "Hello"


def test_same_seed_same_output_and_different_seed_differs(model):
    a = sample(model, PROMPT, length=24, steps=5, seed=1)
    b = sample(model, PROMPT, length=24, steps=5, seed=1)
    c = sample(model, PROMPT, length=24, steps=5, seed=2)
    assert torch.equal(a, b)
    assert not torch.equal(a[5:], c[5:])


def test_prompt_preserved_length_and_dtype(model):
    out = sample(model, PROMPT, length=20, steps=4, seed=0)
    assert out.shape == (20,) and out.dtype == torch.long
    assert torch.equal(out[:5], PROMPT)
    assert int(out.min()) >= 0 and int(out.max()) < 256


def test_one_step_no_clamp_empty_prompt_and_prompt_filling_everything(model):
    assert sample(model, PROMPT, length=8, steps=1, seed=0).shape == (8,)
    assert sample(model, PROMPT, length=8, steps=3, seed=0, clamp=False).shape == (8,)
    assert sample(model, torch.tensor([], dtype=torch.long), length=6, steps=2, seed=0).shape == (6,)
    assert torch.equal(sample(model, PROMPT, length=5, steps=2, seed=0), PROMPT)


def test_restores_training_mode_and_leaves_weights_alone(model):
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    sample(model, PROMPT, length=10, steps=2, seed=0)
    assert model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_timesteps_are_evenly_spaced_distinct_and_end_at_zero():
    assert ddim_timesteps(100, 1) == [100, 0]
    assert ddim_timesteps(100, 4) == [100, 75, 50, 25, 0]
    ts = ddim_timesteps(100, 100)
    assert ts == list(range(100, -1, -1))
    ts = ddim_timesteps(1000, 7)
    assert ts[0] == 1000 and ts[-1] == 0 and all(a > b for a, b in zip(ts, ts[1:]))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(steps=0), "steps must be an integer between 1 and the model's diffusion_steps (100), got 0"),
        (dict(steps=101), "steps must be an integer between 1 and the model's diffusion_steps (100), got 101"),
        (dict(steps=2.5), "steps must be an integer between 1"),
        (dict(length=0), "length must be an integer >= max(1, the prompt's 5 tokens), got 0"),
        (dict(length=3), "length must be an integer >= max(1, the prompt's 5 tokens), got 3"),
    ],
)
def test_invalid_arguments_raise_value_error_with_a_clear_message(model, kwargs, message):
    args = dict(prompt_ids=PROMPT, length=10, steps=2, seed=0) | kwargs
    with pytest.raises(ValueError) as info:
        sample(model, **args)
    assert message in str(info.value)


def test_invalid_prompts_raise_value_error(model):
    with pytest.raises(ValueError, match="1-D"):
        sample(model, PROMPT[None], length=10, steps=2, seed=0)
    with pytest.raises(ValueError, match=r"\[0, 256\)"):
        sample(model, torch.tensor([300]), length=10, steps=2, seed=0)


def test_denoise_from_a_given_x_t_is_the_sampler_on_a_batch(model):
    """`sample` with a prompt is `denoise` from the same x_T with the prompt as known positions."""
    d = model.config.d_embed
    noise = torch.randn(1, 12, d, generator=torch.Generator().manual_seed(4), dtype=torch.float64).float()
    known = torch.zeros(1, 12, d)
    known[:, :5] = model.embed(PROMPT).detach()
    mask = torch.zeros(1, 12, dtype=torch.bool)
    mask[:, :5] = True
    ab = model.schedule.alpha_bar[100].item()
    x_t = torch.where(mask[..., None], ab**0.5 * known + (1 - ab) ** 0.5 * noise, noise)
    tokens, logits = denoise(model, x_t, t_start=100, steps=4, known=known, known_mask=mask)
    expected = sample(model, PROMPT, length=12, steps=4, seed=4)
    assert torch.equal(tokens[0, 5:], expected[5:]) and logits.shape == (1, 12, 256)


def test_denoise_treats_each_sequence_of_a_batch_on_its_own_from_any_start(model):
    x_t = torch.randn(3, 16, model.config.d_embed, generator=torch.Generator().manual_seed(0))
    tokens, logits = denoise(model, x_t, t_start=40, steps=3, clamp=False)
    alone_tokens, alone_logits = denoise(model, x_t[1:2], t_start=40, steps=3, clamp=False)
    torch.testing.assert_close(logits[1:2], alone_logits, rtol=1e-4, atol=1e-4)
    assert tokens.shape == (3, 16) and model.training


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(t_start=0), "t_start must be an integer between 1 and the model's diffusion_steps (100), got 0"),
        (dict(t_start=20, steps=21), "steps must be an integer between 1 and t_start (20), got 21"),
        (dict(known=torch.zeros(1, 4, 16)), "known and known_mask go together"),
    ],
)
def test_denoise_refuses_unusable_arguments(model, kwargs, message):
    args = dict(x_t=torch.zeros(1, 4, 16), t_start=50, steps=2) | kwargs
    with pytest.raises(ValueError) as info:
        denoise(model, **args)
    assert message in str(info.value)
