"""A 2-process CPU DDP run that grows mid-training (driven by test_growth_training.py).

DIMBA_TEST_ASYNC_SAVE=1 turns on async milestone saves. Each rank writes a digest of its final parameters to OUT/rank<k>.txt, so the test can
check that every rank ends with the same weights.
"""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from conftest import TINY_MODEL  # noqa: E402
from dimba.training import DIMBALightningModule  # noqa: E402


def main(out: Path, save_dir: Path | None = None) -> None:
    L.seed_everything(0, verbose=False)
    module = DIMBALightningModule(
        model_config=TINY_MODEL,
        warmup_steps=0,
        enable_progressive_checkpoints=True,
        progressive_milestones=["1K", "20K", "80K"],
        progressive_save_dir=str(save_dir or out / "milestones"),
        progressive_async_save=os.environ.get("DIMBA_TEST_ASYNC_SAVE") == "1",
        growth_schedule=[{"step": 2, "op": "depth", "n_layers": 2}, {"step": 4, "op": "width", "d_model": 64}],
    )
    data = torch.randint(0, 256, (64, 32), generator=torch.Generator().manual_seed(0))
    trainer = L.Trainer(
        accelerator="cpu", devices=2, strategy="ddp", max_steps=7, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, default_root_dir=str(out),
    )
    trainer.fit(module, DataLoader(data, batch_size=4))
    digest = hashlib.sha256()
    for name, tensor in sorted(module.model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().double().numpy().tobytes())
    shapes = f"{module.model.config.d_model} {module.model.config.n_layers}"
    (out / f"rank{trainer.global_rank}.txt").write_text(f"{digest.hexdigest()} {shapes} {trainer.global_step}\n")
    torch.distributed.destroy_process_group()  # a gloo group alive at exit can abort the process


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]) if len(sys.argv) > 2 else None)
