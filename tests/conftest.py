"""Shared fixtures: a tiny DIMBA so Lightning tests take a second, and the repo paths."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# How long a test waits on a subprocess or thread before calling it hung. Not a speed check
# (benchmarks measure speed): far above what any of them takes on a loaded machine, so a
# slow machine only makes the suite slower; CI's own limit bounds the whole run.
HANG_GUARD_S = 1800
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

TINY_MODEL = dict(
    vocab_size=256, d_model=32, n_layers=1, d_state=8, expand=2, head_dim=16,
    d_conv=4, chunk_size=16, d_embed=16, d_time=16, diffusion_steps=100,
)


@pytest.fixture(autouse=True, scope="session")
def prepared_data_cache(tmp_path_factory):
    """The built-in corpus is prepared once into a cache: the test session's own, never ~/.cache
    (train.py subprocesses inherit the variable)."""
    import os

    os.environ["DIMBA_CACHE_DIR"] = str(tmp_path_factory.getbasetemp() / "dimba-cache")
    yield


@pytest.fixture
def tiny_model_config():
    from dimba.model import DIMBAConfig

    return DIMBAConfig(**TINY_MODEL)


@pytest.fixture
def token_loader():
    """Random byte sequences: enough batches for a few dozen steps."""
    import torch
    from torch.utils.data import DataLoader

    def make(n_batches: int = 64, batch_size: int = 4, seq_len: int = 32, seed: int = 0) -> DataLoader:
        generator = torch.Generator().manual_seed(seed)
        data = torch.randint(0, 256, (n_batches * batch_size, seq_len), generator=generator)
        return DataLoader(data, batch_size=batch_size, shuffle=False)

    return make


@pytest.fixture
def quiet_trainer_kwargs(tmp_path):
    return dict(
        accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, default_root_dir=str(tmp_path),
    )
