"""mamba-ssm's fused scan and the PyTorch scan agree (runs only where mamba-ssm and CUDA are)."""

from __future__ import annotations

import pytest
import torch

from dimba.model import DIMBA, DIMBAConfig
from dimba.model.kernels import fused_chunk_scan, mamba_ssm_scan
from dimba.model.ssd import ssd_scan

pytestmark = pytest.mark.skipif(
    fused_chunk_scan() is None or not torch.cuda.is_available(),
    reason="needs mamba-ssm and a CUDA GPU (pip install mamba-ssm on a GPU machine)",
)


@pytest.mark.parametrize("length, chunk", [(64, 64), (100, 32), (256, 64)])
def test_fused_scan_matches_the_pytorch_scan(length, chunk):
    g = torch.Generator(device="cuda").manual_seed(length)
    kw = dict(device="cuda", generator=g)
    x = torch.randn(2, length, 4, 64, **kw)
    dt = torch.rand(2, length, 4, **kw) * 0.1 + 1e-3
    A = -torch.rand(4, **kw) * 4 - 0.5
    B, C = torch.randn(2, length, 16, **kw), torch.randn(2, length, 16, **kw)
    torch.testing.assert_close(mamba_ssm_scan(x, dt, A, B, C, chunk), ssd_scan(x, dt, A, B, C, chunk),
                               rtol=2e-3, atol=2e-3)


def test_whole_model_outputs_and_gradients_agree_across_scans():
    cfg = dict(vocab_size=256, d_model=128, n_layers=2, d_state=16, head_dim=64, chunk_size=64)
    torch.manual_seed(0)
    fused = DIMBA(DIMBAConfig(**cfg, scan="mamba_ssm")).cuda()
    plain = DIMBA(DIMBAConfig(**cfg, scan="torch")).cuda()
    plain.load_state_dict(fused.state_dict())
    tokens = torch.randint(0, 256, (2, 128), device="cuda")
    t, noise = torch.tensor([10, 900], device="cuda"), torch.randn(2, 128, 64, device="cuda")
    losses = [m.loss(tokens, t=t, noise=noise)["loss"] for m in (fused, plain)]
    torch.testing.assert_close(losses[0], losses[1], rtol=1e-3, atol=1e-3)
    for loss in losses:
        loss.backward()
    for (name, a), b in zip(fused.named_parameters(), plain.parameters()):
        rel = (a.grad - b.grad).norm() / b.grad.norm().clamp_min(1e-12)
        assert rel < 1e-2, name
