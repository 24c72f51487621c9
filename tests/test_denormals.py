"""Training and evaluating on the CPU flush subnormal floats to zero: the default model's
rounding softmax underflows into them, and x86 computes with them many times slower."""

from __future__ import annotations

import pytest
import torch

from dimba.model.denormals import flush_denormals
from dimba.training.simple import SimpleTrainer


def subnormal_survives() -> bool:
    """Whether a product below float32's smallest normal number (1.2e-38) is kept."""
    return bool((torch.tensor([1e-20]) * torch.tensor([1e-20])).item() != 0.0)


@pytest.fixture
def ieee_arithmetic():
    """Subnormals kept at the start (IEEE's default), and again after the test."""
    torch.set_flush_denormal(False)
    yield
    torch.set_flush_denormal(False)


def test_the_flag_flushes_subnormals(ieee_arithmetic):
    assert subnormal_survives()
    assert flush_denormals() is True  # x86 with SSE3: this machine and every CI runner
    assert not subnormal_survives()
    assert (torch.tensor([1.0]) * torch.tensor([1e-30])).item() == pytest.approx(1e-30)  # normal numbers untouched


def test_both_trainers_turn_it_on(ieee_arithmetic, tiny_model_config):
    from dimba.training.module import DIMBALightningModule

    SimpleTrainer(train_loader=[], model_config=tiny_model_config, device="cpu")
    assert not subnormal_survives()
    torch.set_flush_denormal(False)
    DIMBALightningModule(model_config=tiny_model_config)
    assert not subnormal_survives()


def test_the_default_models_rounding_softmax_underflows():
    """Why: with rows of norm 8, the rounding distribution at a clean token reaches below
    float32's smallest normal number, 1.2e-38 (computed in float64, which holds it exactly,
    whatever the threads' flag)."""
    from dimba.model import DIMBA, DIMBAConfig

    torch.manual_seed(0)
    model = DIMBA(DIMBAConfig(vocab_size=256, d_model=32, n_layers=1, embedding_norm=8.0, x0_estimate="bayes"))
    rows = model._table().detach().double()
    probs = torch.softmax(rows[:4] @ rows.t(), dim=-1)  # x0_hat at a clean token: what training reaches
    assert float(probs.min()) < torch.finfo(torch.float32).tiny
