"""Growth operators: the grown network computes the same function and trains on."""

from __future__ import annotations

import math

import pytest
import torch

from dimba.growth import DepthMode, GrowableAdamW, grow_depth, grow_width, transfer_optimizer_state
from dimba.growth.operators import grow_to
from dimba.growth.optim import entry_steps
from dimba.model import DIMBA, DIMBAConfig

SHAPES = [
    dict(d_model=32, n_layers=1, d_state=8, head_dim=16, bidirectional=True),
    dict(d_model=48, n_layers=3, d_state=4, head_dim=32, expand=2, bidirectional=True),
    dict(d_model=32, n_layers=2, d_state=16, head_dim=8, expand=1, bidirectional=False),
]
COMMON = dict(d_embed=16, d_time=16, chunk_size=8, diffusion_steps=100)


def trained_model(shape: dict, dtype: torch.dtype, seed: int = 0) -> DIMBA:
    """A model after a few steps, so no weight is still at its (often zero) initial value."""
    torch.manual_seed(seed)
    model = DIMBA(DIMBAConfig(**shape, **COMMON)).to(dtype)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(3):
        model.loss(torch.randint(0, 256, (2, 20)))["loss"].backward()
        optimizer.step()
        optimizer.zero_grad()
    return model


def outputs(model: DIMBA, dtype: torch.dtype, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(3, 21, model.config.d_embed, generator=g).to(dtype)
    t = torch.tensor([1, 37, 99])
    tokens = torch.randint(0, 256, (3, 21), generator=g)
    noise = torch.randn(3, 21, model.config.d_embed, generator=g).to(dtype)
    with torch.no_grad():
        return model(x, t), model.loss(tokens, t=t, noise=noise)["loss"]


GROWTHS = {
    "width": lambda m: grow_width(m, m.config.d_model + 2 * m.config.head_dim, seed=5),
    "width_x2": lambda m: grow_width(m, 2 * m.config.d_model, seed=5),
    "depth_identity": lambda m: grow_depth(m, 2 * m.config.n_layers + 1, DepthMode.IDENTITY, seed=5),
    "width_then_depth": lambda m: (grow_width(m, 2 * m.config.d_model, seed=5), grow_depth(m, m.config.n_layers + 2, seed=6)),
}


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"d{s['d_model']}L{s['n_layers']}h{s['head_dim']}")
@pytest.mark.parametrize("growth", sorted(GROWTHS))
@pytest.mark.parametrize("dtype, tolerance", [(torch.float64, 1e-10), (torch.float32, 1e-5)], ids=["fp64", "fp32"])
def test_function_preserving_growth(shape, growth, dtype, tolerance):
    model = trained_model(shape, dtype)
    logits_before, loss_before = outputs(model, dtype)
    GROWTHS[growth](model)
    logits_after, loss_after = outputs(model, dtype)
    # relative to the logits' size: at t = 1 the Bayes estimate's likelihood term makes them ~1e6
    assert (logits_after - logits_before).abs().max().item() <= tolerance * max(1.0, logits_before.abs().max().item())
    assert abs(loss_after.item() - loss_before.item()) <= tolerance * max(1.0, abs(loss_before.item()))


def test_width_growth_shapes_and_norm_rescaling():
    model = trained_model(SHAPES[0], torch.float64)
    gain = model.blocks[0].norm.weight.detach().clone()
    grow_width(model, 64)
    cfg = model.config
    assert (cfg.d_model, cfg.d_inner, cfg.n_heads) == (64, 128, 8)
    assert model.blocks[0].mixer.in_proj.weight.shape == (2 * 128 + 2 * 8 + 8, 64)
    scale = math.sqrt(32 / 64)
    torch.testing.assert_close(model.blocks[0].norm.weight[:32], gain * scale)
    assert model.blocks[0].norm.eps.item() == pytest.approx(1e-5 * 32 / 64)
    # Nothing writes into the new residual dimensions yet...
    assert model.blocks[0].mixer.out_proj.weight[32:].abs().sum() == 0
    assert model.in_proj.weight[32:].abs().sum() == 0
    # ...but they are read, so they receive gradients from the first step.
    assert model.blocks[0].mixer.in_proj.weight[:, 32:].abs().sum() > 0


def test_stack_copies_blocks_in_order_and_changes_the_function():
    model = trained_model(SHAPES[1], torch.float64)
    originals = [b.mixer.in_proj.weight.detach().clone() for b in model.blocks]
    before, _ = outputs(model, torch.float64)
    grow_depth(model, 6, DepthMode.STACK)
    assert model.config.n_layers == 6
    for i, block in enumerate(model.blocks):
        torch.testing.assert_close(block.mixer.in_proj.weight, originals[i % 3])
    assert model.blocks[3].mixer.in_proj.weight is not model.blocks[0].mixer.in_proj.weight
    after, _ = outputs(model, torch.float64)
    assert (after - before).abs().max() > 1e-3


def test_identity_blocks_are_spread_between_the_old_ones():
    model = trained_model(SHAPES[1], torch.float64)
    old = [b.mixer.in_proj.weight for b in model.blocks]
    grow_depth(model, 6)
    moved = [any(b.mixer.in_proj.weight is w for w in old) for b in model.blocks]  # old tensors move, uncopied
    assert moved == [True, False, True, False, True, False]


def test_growth_is_refused_when_it_would_shrink_or_misalign():
    model = trained_model(SHAPES[0], torch.float32)
    with pytest.raises(ValueError, match="d_model > 32"):
        grow_width(model, 32)
    with pytest.raises(ValueError, match="n_layers > 1"):
        grow_depth(model, 1)
    with pytest.raises(Exception, match="head_dim"):
        grow_width(model, 36)  # inner width 72 is not a multiple of head_dim 16


def adam_state(model, optimizer, steps=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        optimizer.zero_grad()
        model.loss(torch.randint(0, 256, (2, 20), generator=g))["loss"].backward()
        optimizer.step()


def test_optimizer_state_carries_over_into_grown_tensors():
    torch.manual_seed(0)
    model = DIMBA(DIMBAConfig(**SHAPES[0], **COMMON)).double()
    optimizer = GrowableAdamW(model.parameters(), lr=1e-3)
    adam_state(model, optimizer)
    in_proj = model.blocks[0].mixer.in_proj.weight
    gain = model.blocks[0].norm.weight
    old_in = {k: v.clone() for k, v in optimizer.state[in_proj].items()}
    old_gain = {k: v.clone() for k, v in optimizer.state[gain].items()}

    remaps = grow_width(model, 64)
    transfer_optimizer_state(optimizer, remaps, model, lambda p: 0)
    new_in = model.blocks[0].mixer.in_proj.weight
    state = optimizer.state[new_in]
    rows = remaps[in_proj].index[0]
    torch.testing.assert_close(state["exp_avg"][rows][:, :32], old_in["exp_avg"])
    assert state["exp_avg"][:, 32:].abs().sum() == 0  # new entries start at zero
    steps = entry_steps(optimizer, new_in)
    assert steps.shape == new_in.shape
    assert steps[rows][:, :32].eq(3).all() and steps[:, 32:].eq(0).all()

    s = math.sqrt(32 / 64)  # the gain was multiplied by s: its moments follow the new gradients
    new_gain_state = optimizer.state[model.blocks[0].norm.weight]
    torch.testing.assert_close(new_gain_state["exp_avg"][:32], old_gain["exp_avg"] / s)
    torch.testing.assert_close(new_gain_state["exp_avg_sq"][:32], old_gain["exp_avg_sq"] / s**2)

    assert {id(p) for g in optimizer.param_groups for p in g["params"]} == {id(p) for p in model.parameters()}
    adam_state(model, optimizer, steps=1, seed=1)  # and it keeps training
    assert entry_steps(optimizer, new_in)[:, 32:].eq(1).all()


def test_new_entries_get_a_normal_sized_first_update():
    """With their own step count, new entries move by about lr on their first update,
    not by sqrt(1/(1-beta2)) times more as a copied step count would make them."""
    torch.manual_seed(0)  # the regression estimate: its gradient reaches every new entry at once
    model = DIMBA(DIMBAConfig(**SHAPES[0], **COMMON, embedding_norm=None, x0_estimate="regression")).double()
    lr = 1e-3
    optimizer = GrowableAdamW(model.parameters(), lr=lr, weight_decay=0.0)
    adam_state(model, optimizer, steps=20)
    old_weight = model.blocks[0].mixer.out_proj.weight  # writes the new residual dims: gradients at once
    remaps = grow_width(model, 64)
    transfer_optimizer_state(optimizer, remaps, model, lambda p: 0)
    weight = model.blocks[0].mixer.out_proj.weight
    is_new = remaps[old_weight].new_entries()
    before = weight.detach().clone()
    adam_state(model, optimizer, steps=1, seed=3)
    moved = (weight.detach() - before)[is_new].abs()
    assert (moved > 0).sum() > is_new.sum() // 2
    assert moved.max().item() <= lr * 1.001
    assert moved.max().item() >= lr * 0.9  # a whole first step (Adam's first update is about lr)


def test_new_blocks_join_the_optimizer():
    torch.manual_seed(0)
    model = DIMBA(DIMBAConfig(**SHAPES[0], **COMMON))
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    optimizer = GrowableAdamW([{"params": decay}, {"params": no_decay, "weight_decay": 0.0}])
    adam_state(model, optimizer, steps=1)
    remaps = grow_depth(model, 3)
    transfer_optimizer_state(optimizer, remaps, model, lambda p: 0 if p.dim() >= 2 else 1)
    assert all(p.dim() >= 2 for p in optimizer.param_groups[0]["params"])
    assert all(p.dim() < 2 for p in optimizer.param_groups[1]["params"])
    assert sum(len(g["params"]) for g in optimizer.param_groups) == len(list(model.parameters()))


def test_growable_adamw_matches_torch_adamw_without_growth():
    torch.manual_seed(0)
    a = DIMBA(DIMBAConfig(**SHAPES[0], **COMMON)).double()
    b = DIMBA(DIMBAConfig(**SHAPES[0], **COMMON)).double()
    b.load_state_dict(a.state_dict())
    torch.manual_seed(1)  # the same timesteps and noise for both
    adam_state(a, GrowableAdamW(a.parameters(), lr=1e-3, weight_decay=0.1), steps=5)
    torch.manual_seed(1)
    adam_state(b, torch.optim.AdamW(b.parameters(), lr=1e-3, weight_decay=0.1), steps=5)
    for p, q in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-10, atol=1e-12)


def test_grow_to_a_recorded_architecture():
    model = trained_model(SHAPES[0], torch.float64)
    grow_to(model, DIMBAConfig(**{**SHAPES[0], "d_model": 64, "n_layers": 3}, **COMMON))
    assert (model.config.d_model, model.config.n_layers) == (64, 3)
    with pytest.raises(ValueError, match="larger than the checkpoint"):
        grow_to(model, DIMBAConfig(**SHAPES[0], **COMMON))


def test_per_entry_bias_correction_is_computed_in_float32_for_bf16_weights():
    """0.999**t is exactly 1.0 in bf16; computed there, the correction would divide by zero."""
    param = torch.nn.Parameter(torch.zeros(4, dtype=torch.bfloat16))
    optimizer = GrowableAdamW([param], lr=1e-2, weight_decay=0.0)
    optimizer.state[param] = {"step": torch.tensor([5.0, 0.0, 5.0, 0.0]),
                              "exp_avg": torch.zeros(4, dtype=torch.bfloat16),
                              "exp_avg_sq": torch.zeros(4, dtype=torch.bfloat16)}
    param.grad = torch.tensor([1.0, 0.0, -1.0, 1.0], dtype=torch.bfloat16)
    optimizer.step()
    assert torch.isfinite(param).all()
    assert param[3].item() == pytest.approx(-1e-2, rel=0.02)  # a new entry's first step: about lr
    assert param[1].item() == 0.0  # no gradient, no move
