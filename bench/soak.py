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

SHAPES = [("depth", "n_layers", 4), ("width", "d_model", 128), ("depth", "n_layers", 6),
          ("width", "d_model", 192), ("depth", "n_layers", 8)]


def schedule(max_steps: int) -> List[Dict[str, Any]]:
    """Five growth events spread over the run: a milestone per stage."""
    return [{"step": max_steps * (i + 1) // 6, "op": op, key: value} for i, (op, key, value) in enumerate(SHAPES)]


def overrides(max_steps: int) -> List[str]:
    # Lightning's last.ckpt after every step: a save is under way much of the time, so
    # random kills land in saves too.
    events = ",".join("{" + ",".join(f"{k}:{v}" for k, v in e.items()) + "}" for e in schedule(max_steps))
    return [
        "model.d_model=64", "model.n_layers=2", "model.head_dim=32", "data.seq_len=64", "data.batch_size=4",
        f"trainer.max_steps={max_steps}", "trainer.limit_val_batches=0", "trainer.enable_progress_bar=false",
        "trainer.enable_model_summary=false", "last_checkpoint_every_n_steps=1", "optim.warmup_steps=5",
        f"growth.schedule=[{events}]",
    ]


def crossed_milestones(max_steps: int) -> List[int]:
    """One milestone per stage: the parameter count of each stage."""
    from dimba.growth.plan import build_plan
    from dimba.growth.schedule import as_events
    from dimba.model import DIMBAConfig

    plan = build_plan(DIMBAConfig(d_model=64, n_layers=2, head_dim=32), as_events(schedule(max_steps)), [], max_steps)
    return [stage.params for stage in plan.stages]


def temporaries(run_dir: Path) -> List[Path]:
    return [p for p in run_dir.rglob(".*.tmp")]


def soak(workdir: Path, kills: int, seed: int = 0, async_save: bool = False) -> Dict[str, Any]:
    import torch

    from dimba.utils.checkpointing import ProgressiveCheckpointManager

    max_steps = 5 * kills  # each attempt trains only a few steps before its kill
    milestones = crossed_milestones(max_steps)
    run_dir = workdir / "run"
    last = run_dir / "checkpoints" / "last.ckpt"
    command = [sys.executable, str(ROOT / "train.py"), *overrides(max_steps), f"hydra.run.dir={run_dir}", "resume=auto",
               "progressive_checkpoints.milestones=[" + ",".join(map(str, milestones)) + "]",
               f"progressive_checkpoints.async_save={str(async_save).lower()}"]
    rng = random.Random(seed)
    killed, during_save, finished_early = 0, 0, 0
    started = time.monotonic()
    for attempt in range(kills):
        launched = time.time()
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        # Wait until this attempt has trained a step (its last.ckpt is newer than its start)...
        deadline = time.monotonic() + 120
        while process.poll() is None and time.monotonic() < deadline:
            if last.exists() and last.stat().st_mtime > launched:
                break
            time.sleep(0.01)
        # ...then kill at a random moment, or (every other attempt) as soon as a save is under way.
        hunt_saves = attempt % 2 == 1
        deadline = time.monotonic() + (2.0 if hunt_saves else rng.uniform(0.0, 0.6))
        while process.poll() is None and time.monotonic() < deadline:
            if hunt_saves and temporaries(run_dir):
                break
            time.sleep(0.002)
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
    last_step = torch.load(last, weights_only=True, mmap=True)["global_step"]
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
        "max_steps": max_steps,
        "ok": sorted(saved) == milestones and all(c == 1 for c in saved.values()) and last_step == max_steps
        and all(e["status"] == "ok" for e in entries) and not temporaries(run_dir),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--kills", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--async-save", action="store_true", help="milestones written in the background")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as workdir:
        print(json.dumps({"async_save": args.async_save, **soak(Path(workdir), args.kills, args.seed, args.async_save)}, indent=2))


if __name__ == "__main__":
    main()
