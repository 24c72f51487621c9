"""The speed options change how fast DIMBA computes, never what it computes."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch

from dimba.errors import ConfigError
from dimba.growth.operators import DepthMode, grow_depth, grow_width
from dimba.model import DIMBA, DIMBAConfig
from dimba.model.kernels import fused_chunk_scan, select_scan
from dimba.model.ssd import ssd_scan


@pytest.mark.slow
def test_compiled_denoiser_matches_eager_before_and_after_growth(tiny_model_config):
    torch.manual_seed(0)
    model = DIMBA(tiny_model_config)
    eager = DIMBA(tiny_model_config)
    eager.load_state_dict(model.state_dict())
    model.compile_denoiser()
    x_t, t = torch.randn(2, 24, tiny_model_config.d_embed), torch.tensor([3, 70])
    torch.testing.assert_close(model.denoise(x_t, t), eager.denoise(x_t, t), rtol=1e-5, atol=1e-5)
    grow_width(model, 64, seed=1)
    grow_depth(model, 2, DepthMode.IDENTITY, seed=2)
    grown = DIMBA(model.config)
    grown.load_state_dict(model.state_dict())
    out = model.denoise(x_t, t)
    torch.testing.assert_close(out, grown.denoise(x_t, t), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out, eager.denoise(x_t, t), rtol=1e-4, atol=1e-4)  # growth preserved the function
    loss = model.loss(torch.randint(0, 256, (2, 24)))["loss"]
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())


def test_the_compute_dtype_is_not_part_of_the_architecture(tiny_model_config):
    bf16 = replace(tiny_model_config, dtype="bf16")
    assert bf16 == tiny_model_config  # a bf16 run resumes an fp32 checkpoint without re-growing
    assert bf16.to_dict()["dtype"] == "bf16"
    model = DIMBA(bf16)
    assert all(p.dtype == torch.float32 for p in model.parameters())  # weights stay float32


@pytest.mark.parametrize("key, value", [("dtype", "fp16"), ("scan", "triton")])
def test_unknown_speed_options_are_refused(tiny_model_config, key, value):
    with pytest.raises(ConfigError, match=f"model.{key}"):
        DIMBAConfig(**{**tiny_model_config.to_dict(), key: value})


def test_cpu_tensors_take_the_pytorch_scan():
    x = torch.zeros(1, 4, 1, 2)
    assert select_scan("auto", x) is ssd_scan and select_scan("torch", x) is ssd_scan


@pytest.mark.skipif(fused_chunk_scan() is not None, reason="mamba-ssm is installed here")
def test_asking_for_mamba_ssm_without_it_is_refused_before_training_but_checkpoints_still_load(
        tiny_model_config, tmp_path):
    from hydra import compose, initialize_config_dir

    import dimba
    from dimba.config import register_configs, validate

    register_configs()
    with initialize_config_dir(config_dir=str(Path(__file__).resolve().parents[1] / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=["model.scan=mamba_ssm"])
    with pytest.raises(ConfigError, match=r"model.scan: 'mamba_ssm' is invalid; accepted: auto \| torch"):
        validate(cfg)
    # A checkpoint written on a GPU machine with the fused kernel loads here, on the PyTorch scan.
    recorded = DIMBAConfig(**{**tiny_model_config.to_dict(), "scan": "mamba_ssm"})
    model = DIMBA(tiny_model_config)
    torch.save({"model_state_dict": model.state_dict(), "metadata": {"architecture": recorded.to_dict()}},
               tmp_path / "gpu.pt")
    loaded = dimba.load_model(tmp_path / "gpu.pt")
    assert loaded.config.scan == "auto"
    loaded.denoise(torch.randn(1, 8, tiny_model_config.d_embed), torch.tensor([3]))


def test_fp32_leaves_an_outer_autocast_alone_and_bf16_turns_it_on(tiny_model_config):
    """trainer.precision=bf16-mixed is an outer autocast: model.dtype=fp32 must not switch it off."""
    torch.manual_seed(0)
    x_t, t = torch.randn(1, 8, tiny_model_config.d_embed), torch.tensor([5])
    seen = []
    model = DIMBA(tiny_model_config)
    model.blocks[0].mixer.in_proj.register_forward_hook(lambda m, i, out: seen.append(out.dtype))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        model.denoise(x_t, t)
    model.denoise(x_t, t)
    model.config = replace(tiny_model_config, dtype="bf16")
    model.denoise(x_t, t)
    assert seen == [torch.bfloat16, torch.float32, torch.bfloat16]
