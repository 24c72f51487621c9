"""The DIMBA network: the SSD scan against a step-by-step recurrence, and the loss."""

from __future__ import annotations

import pytest
import torch

from dimba.errors import ConfigError
from dimba.model import DIMBA, DIMBAConfig
from dimba.model.layers import Mamba2Mixer
from dimba.model.ssd import ssd_reference, ssd_scan


@pytest.mark.parametrize("length, chunk", [(1, 4), (17, 4), (32, 8), (40, 64), (64, 64), (33, 1)])
@pytest.mark.parametrize("heads, head_dim, d_state", [(1, 2, 3), (3, 4, 5)])
def test_chunked_scan_equals_the_recurrence(length, chunk, heads, head_dim, d_state):
    g = torch.Generator().manual_seed(length * 31 + chunk)
    kw = dict(generator=g, dtype=torch.float64)
    x = torch.randn(2, length, heads, head_dim, **kw)
    dt = torch.rand(2, length, heads, **kw) * 0.5 + 1e-3
    A = -torch.rand(heads, **kw) * 4
    B, C = torch.randn(2, length, d_state, **kw), torch.randn(2, length, d_state, **kw)
    torch.testing.assert_close(ssd_scan(x, dt, A, B, C, chunk), ssd_reference(x, dt, A, B, C), rtol=1e-10, atol=1e-10)


def test_scan_gradients_match_the_recurrence():
    g = torch.Generator().manual_seed(0)
    tensors = [torch.randn(1, 20, 2, 3, generator=g, dtype=torch.float64), torch.rand(1, 20, 2, generator=g, dtype=torch.float64),
               -torch.rand(2, generator=g, dtype=torch.float64), torch.randn(1, 20, 4, generator=g, dtype=torch.float64),
               torch.randn(1, 20, 4, generator=g, dtype=torch.float64)]
    grads = []
    for fn in (lambda *t: ssd_scan(*t, chunk_size=8), ssd_reference):
        leaves = [t.clone().requires_grad_() for t in tensors]
        fn(*leaves).square().sum().backward()
        grads.append([leaf.grad for leaf in leaves])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)


def test_bidirectional_mixer_sees_the_future_and_unidirectional_does_not(tiny_model_config):
    torch.manual_seed(0)
    for bidirectional, future_matters in ((True, True), (False, False)):
        cfg = DIMBAConfig(**{**tiny_model_config.to_dict(), "bidirectional": bidirectional})
        mixer = Mamba2Mixer(cfg).double()
        u = torch.randn(1, 24, cfg.d_model, dtype=torch.float64)
        changed = u.clone()
        changed[:, 20:] += 1.0
        delta = (mixer(u)[:, :10] - mixer(changed)[:, :10]).abs().max().item()
        assert (delta > 1e-6) == future_matters


def test_loss_is_deterministic_given_t_and_noise_and_trains(tiny_model_config):
    torch.manual_seed(0)
    model = DIMBA(tiny_model_config)
    tokens = torch.randint(0, 256, (4, 32))
    t = torch.full((4,), 50)
    noise = torch.randn(4, 32, tiny_model_config.d_embed)
    first = model.loss(tokens, t=t, noise=noise)
    assert torch.equal(first["loss"], model.loss(tokens, t=t, noise=noise)["loss"])
    assert set(first) == {"loss", "mse", "ce"}
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(30):
        optimizer.zero_grad()
        model.loss(tokens, t=t, noise=noise)["loss"].backward()
        optimizer.step()
    assert model.loss(tokens, t=t, noise=noise)["loss"] < 0.5 * first["loss"]


def test_logits_cover_the_vocabulary(tiny_model_config):
    model = DIMBA(tiny_model_config)
    x_t = torch.randn(2, 10, tiny_model_config.d_embed)
    assert model(x_t, torch.tensor([1, 99])).shape == (2, 10, 256)


@pytest.mark.parametrize(
    "override, key",
    [({"d_model": 0}, "model.d_model"), ({"n_layers": -1}, "model.n_layers"), ({"head_dim": 48}, "model.head_dim"),
     ({"d_time": 15}, "model.d_time"), ({"norm_eps": 0.0}, "model.norm_eps"), ({"d_state": 2.5}, "model.d_state")],
)
def test_bad_architectures_name_the_key(override, key):
    with pytest.raises(ConfigError, match=key):
        DIMBAConfig(**override)
