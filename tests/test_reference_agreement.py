"""The fast DIMBA computes what the plain reference implementation computes.

Outputs and parameter gradients of the whole model agree with `tests/reference_dimba.py`:
to round-off in float64, within 1e-4 relative in float32 (the chunked scan sums in a
different order), and within a bf16 tolerance under `model.dtype=bf16`.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

import reference_dimba
from dimba.model import DIMBA, DIMBAConfig

SHAPES = [
    dict(d_model=32, n_layers=2, d_state=8, head_dim=16, chunk_size=16),
    dict(d_model=48, n_layers=1, d_state=4, head_dim=32, chunk_size=8, bidirectional=False),
    dict(d_model=64, n_layers=2, d_state=16, head_dim=64, chunk_size=64, d_conv=3),
]


def build(shape: dict, dtype: torch.dtype) -> tuple[DIMBA, DIMBAConfig]:
    # the reference is the original DIMBA: free embeddings, x0 regressed
    cfg = DIMBAConfig(vocab_size=256, d_embed=16, d_time=16, diffusion_steps=100, embedding_norm=None,
                      x0_estimate="regression", **shape)
    torch.manual_seed(0)
    model = DIMBA(cfg).to(dtype)
    with torch.no_grad():  # modulation and out_proj start at zero; make every path count
        for name, param in model.named_parameters():
            if "modulation" in name or "out_proj" in name:
                param.normal_(0, 0.05)
    return model, cfg


def batch(cfg: DIMBAConfig, dtype: torch.dtype, length: int = 37):
    g = torch.Generator().manual_seed(1)
    tokens = torch.randint(0, 256, (3, length), generator=g)
    t = torch.tensor([1, 50, 100])
    noise = torch.randn(3, length, cfg.d_embed, generator=g, dtype=dtype)
    return tokens, t, noise


def fast_and_reference(model: DIMBA, cfg: DIMBAConfig, dtype: torch.dtype):
    tokens, t, noise = batch(cfg, dtype)
    params = dict(model.named_parameters())
    state = {**dict(model.named_buffers()), **params}
    fast = model.loss(tokens, t=t, noise=noise)["loss"]
    fast_grads = torch.autograd.grad(fast, list(params.values()))
    ref = reference_dimba.loss(state, cfg, tokens, t, noise, model.schedule.alpha_bar)
    ref_grads = torch.autograd.grad(ref, list(params.values()))
    return (fast, fast_grads), (ref, ref_grads), list(params)


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-30))


@pytest.mark.parametrize("shape", SHAPES, ids=["bidir", "unidir-short-chunks", "one-chunk"])
def test_float64_outputs_and_gradients_agree_to_roundoff(shape):
    model, cfg = build(shape, torch.float64)
    tokens, t, noise = batch(cfg, torch.float64)
    state = {**dict(model.named_buffers()), **dict(model.named_parameters())}
    x_t = model.schedule.add_noise(model.embedding(tokens), t, noise)
    torch.testing.assert_close(model.denoise(x_t, t), reference_dimba.denoise(state, cfg, x_t, t), rtol=1e-10, atol=1e-10)
    (fast, fast_grads), (ref, ref_grads), names = fast_and_reference(model, cfg, torch.float64)
    torch.testing.assert_close(fast, ref, rtol=1e-10, atol=1e-10)
    for name, a, b in zip(names, fast_grads, ref_grads):
        assert relative_error(a, b) < 1e-9, name


def test_float32_agrees_within_a_documented_tolerance():
    model, cfg = build(SHAPES[0], torch.float32)
    (fast, fast_grads), (ref, ref_grads), names = fast_and_reference(model, cfg, torch.float32)
    assert abs(fast.item() - ref.item()) <= 1e-5 * abs(ref.item())
    for name, a, b in zip(names, fast_grads, ref_grads):
        assert relative_error(a, b) < 1e-4, name


def test_bf16_autocast_stays_close_to_the_float32_reference():
    """model.dtype=bf16 computes matmuls in bfloat16 (8 bits of mantissa): the loss stays
    within 2% and gradients within 10% (relative norm) of the plain float32 computation."""
    model, cfg = build(SHAPES[0], torch.float32)
    (_, _), (ref, ref_grads), names = fast_and_reference(model, cfg, torch.float32)
    model.config = replace(cfg, dtype="bf16")
    (fast, fast_grads), _, _ = fast_and_reference(model, cfg, torch.float32)
    assert fast.dtype == torch.float32
    assert fast.item() != ref.item()  # bf16 really was used
    assert abs(fast.item() - ref.item()) <= 0.02 * abs(ref.item())
    for name, a, b in zip(names, fast_grads, ref_grads):
        assert a.dtype == torch.float32
        assert relative_error(a, b) < 0.1, name
