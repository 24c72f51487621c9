"""A 2-process FSDP2 run on CPU (gloo) that grows and crosses milestones (driven by
test_fsdp_cpu.py).

dimba's FSDP strategy (Lightning's ModelParallelStrategy with one FSDP2 unit per block) runs
on CPU processes too: parameters really are sharded across the two ranks, the model grows
shard by shard, and milestone checkpoints are Distributed Checkpoint directories written by
both. Each rank writes to OUT/rank<k>.json what it counted, what it held at each stage, and
how much the logits moved at each growth event.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from conftest import TINY_MODEL  # noqa: E402
from dimba.training import DIMBALightningModule  # noqa: E402
from dimba.training.fsdp import FSDPStrategy  # noqa: E402

GROWTH = [{"step": 2, "op": "depth", "n_layers": 3}, {"step": 3, "op": "width", "d_model": 48}]


class Probe(L.Callback):
    """Logits of a fixed input before and after each optimizer step's growth (the module's
    callbacks run between the two probes)."""

    def __init__(self, report: dict, after: bool) -> None:
        self.report, self.after = report, after

    def on_train_batch_end(self, trainer, pl_module, *args) -> None:
        x = torch.randn(2, 8, TINY_MODEL["d_embed"], generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            logits = pl_module.model(x, torch.tensor([3, 70]))
        stage = self.report.setdefault(str(trainer.global_step), {})
        stage["after" if self.after else "before"] = logits
        if self.after:
            before = stage.pop("before")  # relative to the logits' size (the Bayes estimate's are large)
            stage["delta"] = float((stage.pop("after") - before).abs().max() / max(1.0, float(before.abs().max())))
            stage["local"] = sum(p.to_local().numel() for p in pl_module.model.parameters())
            stage["global"] = pl_module.parameter_count()


def main(out: Path, max_steps: int, async_save: bool) -> None:
    L.seed_everything(0, verbose=False)
    module = DIMBALightningModule(model_config={**TINY_MODEL, "n_layers": 2}, warmup_steps=0, growth_schedule=GROWTH,
                                  enable_progressive_checkpoints=True, progressive_milestones=["1K", "40K", "10T"],
                                  progressive_save_dir=str(out / "milestones"), progressive_async_save=async_save)
    report: dict = {}
    growth, milestones = module.configure_callbacks()
    module.configure_callbacks = lambda: [Probe(report, after=False), growth, Probe(report, after=True), milestones]
    data = torch.randint(0, 256, (64, 32), generator=torch.Generator().manual_seed(0))
    trainer = L.Trainer(accelerator="cpu", devices=2, strategy=FSDPStrategy(), max_steps=max_steps, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        default_root_dir=str(out), gradient_clip_val=1.0)
    trainer.fit(module, DataLoader(data, batch_size=4))
    (out / f"rank{trainer.global_rank}.json").write_text(json.dumps({"stages": report, "step": trainer.global_step}))
    torch.distributed.destroy_process_group()
    if trainer.global_rank == 0:  # the other rank is a child process: wait for its report
        deadline = time.monotonic() + 60
        while not (out / "rank1.json").exists() and time.monotonic() < deadline:
            time.sleep(0.05)


if __name__ == "__main__":
    main(Path(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 4, os.environ.get("DIMBA_TEST_ASYNC") == "1")
    # After Distributed Checkpoint saves over gloo, a C++ thread left behind by torch sometimes
    # aborts the interpreter's own shutdown (exit 134) once everything is written and the
    # process group is destroyed: outside what this job checks, so it leaves without it.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
