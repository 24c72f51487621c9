"""The DIMBA network: the SSD scan against a step-by-step recurrence, and the loss."""

from __future__ import annotations

import pytest
import torch

from dimba.errors import ConfigError
from dimba.model import DIMBA, DIMBAConfig
from dimba.model import layers
from dimba.model.causal_conv import causal_conv
from dimba.model.gated_norm import gated_rms_norm
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


def assert_same_values_and_gradients(fast, slow, tensors, upstream, rtol: float, grad_rtol: float) -> None:
    """fast(*tensors) equals slow(*tensors), and so do the gradients of (out * upstream).sum()
    with respect to every tensor: how a hand-written backward is checked."""
    results = []
    for fn in (fast, slow):
        leaves = [t.clone().requires_grad_() for t in tensors]
        out = fn(*leaves)
        (out * upstream).sum().backward()
        results.append((out, [leaf.grad for leaf in leaves]))
    (fast_out, fast_grads), (slow_out, slow_grads) = results
    torch.testing.assert_close(fast_out, slow_out, rtol=rtol, atol=rtol)
    for a, b in zip(fast_grads, slow_grads):
        torch.testing.assert_close(a, b, rtol=grad_rtol, atol=grad_rtol)


@pytest.mark.parametrize("per_row, skip", [(False, False), (True, True), (False, True)])
@pytest.mark.parametrize("length, chunk", [(5, 8), (37, 8), (64, 16)])
def test_scan_with_a_per_row_decay_and_skip_matches_the_recurrence_in_value_and_gradient(per_row, skip, length, chunk):
    """Both directions of a layer run as one batch: A and D may differ per batch row. The
    scan's backward is written by hand, so every input's gradient is checked, in float64."""
    g = torch.Generator().manual_seed(length + chunk)
    kw = dict(generator=g, dtype=torch.float64)
    batch, heads = 3, 2
    shape = (batch, heads) if per_row else (heads,)
    tensors = [torch.randn(batch, length, heads, 4, **kw), torch.rand(batch, length, heads, **kw) * 0.5 + 1e-3,
               -torch.rand(shape, **kw) * 4, torch.randn(batch, length, 5, **kw), torch.randn(batch, length, 5, **kw)]
    tensors += [torch.randn(shape, **kw)] if skip else []
    assert_same_values_and_gradients(lambda x, dt, A, B, C, D=None: ssd_scan(x, dt, A, B, C, chunk, D=D),
                                     ssd_reference, tensors, torch.randn(batch, length, heads, 4, **kw), 1e-10, 1e-9)


def test_the_scan_leaves_the_incoming_gradient_alone_and_takes_any_layout():
    """Autograd hands the same gradient to every consumer of a tensor: the hand-written
    backward must not write into it (with one head, its head-major view is the tensor itself).
    Inputs in any memory layout, and a second backward through a retained graph, work."""
    g = torch.Generator().manual_seed(5)
    kw = dict(generator=g, dtype=torch.float64)
    x = torch.randn(2, 12, 1, 3, **kw).requires_grad_()
    dt = (torch.rand(2, 12, 1, **kw) * 0.5).requires_grad_()
    A, D = -torch.rand(1, **kw), torch.randn(1, **kw).requires_grad_()
    B = torch.randn(2, 4, 12, **kw).transpose(1, 2).requires_grad_()  # length-minor
    C = torch.randn(2, 12, 4, **kw).requires_grad_()
    other = torch.randn(2, 12, 1, 3, **kw).requires_grad_()
    weight = torch.randn(2, 12, 1, 3, **kw)
    total = ((ssd_scan(x, dt, A, B, C, 4, D=D) + other * 1.0) * weight).sum()
    first = torch.autograd.grad(total, [x, dt, B, C, D, other], retain_graph=True)
    second = torch.autograd.grad(total, [x, dt, B, C, D, other])
    torch.testing.assert_close(first[-1], weight, rtol=0, atol=0)  # the other consumer's gradient, untouched
    for a, b in zip(first, second):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    reference = torch.autograd.grad(((ssd_reference(x, dt, A, B, C, D) + other) * weight).sum(), [x, dt, B, C, D])
    for a, b in zip(first, reference):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("length", [1, 3, 4, 29])
@pytest.mark.parametrize("directions", [1, 2])
def test_causal_conv_matches_conv1d_in_value_and_gradient(length, directions):
    """The mixer's convolution (both directions, a channels-last 2-D convolution on the
    activations as they lie) against nn.Conv1d on each direction's transposed copy, the way
    the model used to run it."""
    g = torch.Generator().manual_seed(length * 10 + directions)
    kw = dict(generator=g, dtype=torch.float64)
    channels, K = 6, 4
    seq, weight, bias = torch.randn(2, length, channels, **kw), torch.randn(directions, channels, K, **kw), \
        torch.randn(directions, channels, **kw)
    upstream = torch.randn(2, directions, length, channels, **kw)

    def fast(s, w, b):
        return causal_conv(s, [w[d, :, None] for d in range(directions)], list(b))

    def plain(s, w, b):
        return torch.stack([
            torch.nn.functional.conv1d((s.flip(1) if d else s).transpose(1, 2), w[d, :, None], b[d], padding=K - 1,
                                       groups=channels)[..., :length].transpose(1, 2)
            for d in range(directions)], dim=1)

    assert_same_values_and_gradients(fast, plain, (seq, weight, bias), upstream, 1e-12, 1e-12)


def test_the_gated_norm_matches_its_plain_composition_in_value_and_gradient():
    g = torch.Generator().manual_seed(3)
    kw = dict(generator=g, dtype=torch.float64)
    y, z, weight = torch.randn(2, 7, 12, **kw), torch.randn(2, 7, 12, **kw), torch.randn(12, **kw)
    eps, upstream = torch.tensor(1e-5, dtype=torch.float64), torch.randn(2, 7, 12, **kw)

    def plain(a, b, w):
        gated = (a * torch.nn.functional.silu(b)).view(2, 7, 3, 4)
        return (gated * torch.rsqrt(gated.square().mean(-1, keepdim=True) + eps)).view(2, 7, 12) * w

    assert_same_values_and_gradients(lambda a, b, w: gated_rms_norm(a, b, w, eps, group=4), plain, (y, z, weight),
                                     upstream, 1e-12, 1e-10)


def test_a_kernel_taking_one_direction_at_a_time_gives_the_same_mixer(tiny_model_config, monkeypatch):
    """mamba-ssm's kernel takes one A for the whole batch, so the mixer calls it once per
    direction; that path (CUDA-only in practice) must compute what the batched one does."""
    torch.manual_seed(0)
    mixer = Mamba2Mixer(tiny_model_config).double()
    u = torch.randn(2, 19, tiny_model_config.d_model, dtype=torch.float64, requires_grad=True)
    batched = mixer(u)
    (grad_batched,) = torch.autograd.grad(batched.square().sum(), u)
    calls = []

    def one_direction(x, dt, A, B, C, chunk_size, D=None):
        assert A.dim() == 1 and D.dim() == 1  # what mamba-ssm accepts
        calls.append(x.shape[0])
        return ssd_scan(x, dt, A, B, C, chunk_size, D=D)

    monkeypatch.setattr(layers, "select_scan", lambda choice, x: one_direction)
    split = mixer(u)
    (grad_split,) = torch.autograd.grad(split.square().sum(), u)
    assert calls == [2, 2]
    torch.testing.assert_close(split, batched, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(grad_split, grad_batched, rtol=1e-12, atol=1e-12)


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
