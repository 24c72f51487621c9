"""A 2-process FSDP run on CPU (gloo) that crosses milestones (driven by test_fsdp_cpu.py).

Lightning's FSDPStrategy is meant for GPUs, but dimba's subclass of it also runs on CPU
processes with the gloo backend: parameters really are sharded across the two ranks, and
milestone checkpoints are written as Distributed Checkpoint directories by both. Each rank
writes what it counted and how many elements it holds to OUT/rank<k>.txt.
"""

from __future__ import annotations

import sys
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from conftest import TINY_MODEL  # noqa: E402
from dimba.training import DIMBALightningModule  # noqa: E402
from dimba.training.fsdp import FSDPStrategy, block_wrap_policy  # noqa: E402


def main(out: Path) -> None:
    L.seed_everything(0, verbose=False)
    module = DIMBALightningModule(
        model_config={**TINY_MODEL, "n_layers": 2},
        warmup_steps=0,
        enable_progressive_checkpoints=True,
        progressive_milestones=["1K", "20K", "10T"],
        progressive_save_dir=str(out / "milestones"),
    )
    data = torch.randint(0, 256, (64, 32), generator=torch.Generator().manual_seed(0))
    strategy = FSDPStrategy(state_dict_type="sharded", auto_wrap_policy=block_wrap_policy())
    trainer = L.Trainer(
        accelerator="cpu", devices=2, strategy=strategy, max_steps=3, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, default_root_dir=str(out),
    )
    trainer.fit(module, DataLoader(data, batch_size=4))
    local = sum(p.numel() for p in module.parameters())
    (out / f"rank{trainer.global_rank}.txt").write_text(f"{module.parameter_count()} {local} {trainer.global_step}\n")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
