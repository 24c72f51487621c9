"""Kill soak: SIGKILL a training run at random moments (and in the middle of saves), resume
it with `resume=auto`, and check that nothing was lost or saved twice.

Afterwards every listed milestone checkpoint must load with `weights_only=True`, no
temporary file may remain, the run must have reached its last step, and the milestones
saved must equal the milestones the growth plan crosses, each exactly once. Prints one
JSON object. `python bench/soak.py --kills 100` is the long version of the CI test.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any, Dict, List

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MAX_STEPS = 60
# Growth every 10 steps, a milestone per stage, Lightning's last.ckpt after every step:
# a save is under way much of the time, so random kills land in saves too.
OVERRIDES = [
    "model.d_model=64", "model.n_layers=2", "model.head_dim=32", "data.seq_len=64", "data.batch_size=4",
    f"trainer.max_steps={MAX_STEPS}", "trainer.limit_val_batches=0", "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false", "last_checkpoint_every_n_steps=1", "optim.warmup_steps=5",
    "growth.schedule=[{step:10,op:depth,n_layers:4},{step:20,op:width,d_model:128},{step:30,op:depth,n_layers:6},"
    "{step:40,op:width,d_model:192},{step:50,op:depth,n_layers:8}]",
]


def crossed_milestones() -> List[int]:
    """One milestone per stage: the parameter count of each stage."""
    from dimba.growth.plan import build_plan
    from dimba.growth.schedule import GrowthEvent
    from dimba.model import DIMBAConfig

    schedule = [GrowthEvent(10, "depth", n_layers=4), GrowthEvent(20, "width", d_model=128),
                GrowthEvent(30, "depth", n_layers=6), GrowthEvent(40, "width", d_model=192),
                GrowthEvent(50, "depth", n_layers=8)]
    plan = build_plan(DIMBAConfig(d_model=64, n_layers=2, head_dim=32), schedule, [], MAX_STEPS)
    return [stage.params for stage in plan.stages]


def temporaries(run_dir: Path) -> List[Path]:
    return [p for p in run_dir.rglob(".*.tmp")]


def soak(workdir: Path, kills: int, seed: int = 0) -> Dict[str, Any]:
    import torch

    from dimba.utils.checkpointing import ProgressiveCheckpointManager

    milestones = crossed_milestones()
    run_dir = workdir / "run"
    command = [sys.executable, str(ROOT / "train.py"), *OVERRIDES, f"hydra.run.dir={run_dir}", "resume=auto",
               "progressive_checkpoints.milestones=[" + ",".join(map(str, milestones)) + "]"]
    rng = random.Random(seed)
    killed, during_save, finished_early = 0, 0, 0
    started = time.monotonic()
    for attempt in range(kills):
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        hunt_saves = attempt % 2 == 1  # every other kill waits for a save to be under way
        deadline = time.monotonic() + rng.uniform(4.0, 12.0)
        while process.poll() is None and time.monotonic() < deadline:
            if hunt_saves and temporaries(run_dir):
                break
            time.sleep(0.002 if hunt_saves else 0.05)
        if process.poll() is not None:
            finished_early += 1
            break
        process.kill()
        process.wait()
        killed += 1
        during_save += bool(temporaries(run_dir))
    final = subprocess.run(command, capture_output=True, text=True)
    if final.returncode != 0:
        raise RuntimeError(f"the final resumed run failed:\n{final.stderr[-3000:]}")

    entries = ProgressiveCheckpointManager([1], run_dir / "progressive_checkpoints").list_checkpoints()
    for entry in entries:
        torch.load(entry["path"], weights_only=True)  # raises if any listed checkpoint is unreadable
    saved = Counter(e["target_milestone"] for e in entries)
    last_step = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True, mmap=True)["global_step"]
    return {
        "kills": killed,
        "kills_during_a_save": during_save,
        "finished_before_all_kills": bool(finished_early),
        "wall_s": round(time.monotonic() - started, 1),
        "milestones_crossed": milestones,
        "milestones_saved": sorted(saved),
        "each_saved_once": all(count == 1 for count in saved.values()),
        "all_statuses_ok": all(e["status"] == "ok" for e in entries),
        "temporaries_left": [str(p) for p in temporaries(run_dir)],
        "last_step": last_step,
        "ok": sorted(saved) == milestones and all(c == 1 for c in saved.values()) and last_step == MAX_STEPS
        and all(e["status"] == "ok" for e in entries) and not temporaries(run_dir),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--kills", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as workdir:
        print(json.dumps(soak(Path(workdir), args.kills, args.seed), indent=2))


if __name__ == "__main__":
    main()
