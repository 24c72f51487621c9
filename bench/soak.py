"""Kill soak: SIGKILL a training run at random moments (and in the middle of saves), resume
it with `resume=auto`, and check that nothing was lost or saved twice.

Afterwards every listed milestone checkpoint must load with `weights_only=True`, no
temporary file may remain, the run must have reached its last step, and the milestones
saved must equal the milestones the growth plan crosses, each exactly once. Prints one
JSON object. `python bench/soak.py --kills 100` is the long version of the CI test.

Every attempt is `train.py` run as `__main__` in a process of its own, forked from one that
imported torch, Lightning and Hydra once (`Attempts`): a kill is a real SIGKILL of a whole
training process, and the soak no longer spends most of its time importing.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import random
import runpy
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections import Counter
from pathlib import Path
from typing import Any, Dict, List, Optional

ROOT = Path(__file__).resolve().parents[1]
TRAIN = str(ROOT / "train.py")
sys.path.insert(0, str(ROOT))
# What train.py imports on the way to training: the zygote imports it once for every attempt.
PRELOAD = ("torch", "lightning", "hydra", "omegaconf", "dimba.config", "dimba.command_line", "dimba.planning",
           "dimba.preflight", "dimba.run")

SHAPES = [("depth", "n_layers", 4), ("width", "d_model", 128), ("depth", "n_layers", 6),
          ("width", "d_model", 192), ("depth", "n_layers", 8)]


def schedule(max_steps: int) -> List[Dict[str, Any]]:
    """Five growth events spread over the run: a milestone per stage."""
    return [{"step": max_steps * (i + 1) // 6, "op": op, key: value} for i, (op, key, value) in enumerate(SHAPES)]


def overrides(max_steps: int) -> List[str]:
    # Lightning's last.ckpt after every step: a save is under way much of the time, so
    # random kills land in saves too.
    events = ",".join("{" + ",".join(f"{k}:{v}" for k, v in e.items()) + "}" for e in schedule(max_steps))
    return [  # objective=diffusion: the network the plan below is built for (DIMBAConfig's)
        "objective=diffusion",
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


class Attempts:
    """Starts `python train.py ARGS` attempts as forks of one zygote process that has already
    imported what train.py imports. Each fork runs train.py as `__main__`, command-line check
    first, exactly as a new process would, but without paying the imports again (about 5 s
    an attempt here, most of the soak's time). The zygote runs no torch op before it forks."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.zygote = subprocess.Popen([sys.executable, __file__, "--zygote"], stdin=subprocess.PIPE,
                                       stdout=subprocess.PIPE, text=True)
        if self.zygote.stdout.readline().strip() != "ready":
            raise RuntimeError("the soak's zygote process did not start")
        self.count = 0

    def start(self, args: List[str]) -> int:
        """Forks the next attempt (one runs at a time); its pid."""
        self.count += 1
        self.log, self.status = (self.workdir / f"attempt{self.count}.{kind}" for kind in ("log", "status"))
        request = {"args": args, "log": str(self.log), "status": str(self.status)}
        self.zygote.stdin.write(json.dumps(request) + "\n")
        self.zygote.stdin.flush()
        return int(self.zygote.stdout.readline())

    @staticmethod
    def alive(pid: int) -> bool:
        try:
            os.kill(pid, 0)  # the zygote reaps its children at once: a finished one is gone
        except ProcessLookupError:
            return False
        return True

    def wait(self, pid: int) -> Optional[int]:
        """The attempt's exit status; None if it was killed (it wrote none)."""
        while self.alive(pid):
            time.sleep(0.05)
        return int(self.status.read_text()) if self.status.exists() else None

    def output(self) -> str:
        return self.log.read_text()

    def close(self) -> None:
        self.zygote.stdin.close()
        self.zygote.wait(timeout=30)


def zygote() -> None:
    """Imports once, then forks one `train.py` per request line: {"args", "log", "status"}."""
    for name in PRELOAD:
        importlib.import_module(name)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # children are reaped by the kernel; exit status in a file
    print("ready", flush=True)
    while line := sys.stdin.readline():
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                out = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
                null = os.open(os.devnull, os.O_RDONLY)
                os.dup2(null, 0), os.dup2(out, 1), os.dup2(out, 2)
                sys.argv = [TRAIN, *request["args"]]
                runpy.run_path(TRAIN, run_name="__main__")
                code = 0
            except SystemExit as exit_:
                code = exit_.code if isinstance(exit_.code, int) else int(exit_.code is not None)
            except BaseException:
                traceback.print_exc()
            finally:
                try:
                    sys.stdout.flush(), sys.stderr.flush()
                    Path(request["status"]).write_text(str(code))
                finally:
                    os._exit(code)
        print(pid, flush=True)


def soak(workdir: Path, kills: int, seed: int = 0, async_save: bool = False) -> Dict[str, Any]:
    import torch

    from dimba.utils.checkpointing import ProgressiveCheckpointManager

    max_steps = 5 * kills  # each attempt trains only a few steps before its kill
    milestones = crossed_milestones(max_steps)
    run_dir = workdir / "run"
    last = run_dir / "checkpoints" / "last.ckpt"
    args = [*overrides(max_steps), f"hydra.run.dir={run_dir}", "resume=auto",
               "progressive_checkpoints.milestones=[" + ",".join(map(str, milestones)) + "]",
               f"progressive_checkpoints.async_save={str(async_save).lower()}"]
    rng = random.Random(seed)
    killed, during_save, finished_early = 0, 0, 0
    started = time.monotonic()
    logs = workdir / "attempts"
    logs.mkdir(parents=True, exist_ok=True)
    attempts = Attempts(logs)
    try:
        for attempt in range(kills):
            launched = time.time()
            pid = attempts.start(args)
            # Wait until this attempt has trained a step (its last.ckpt is newer than its start)...
            deadline = time.monotonic() + 120
            while attempts.alive(pid) and time.monotonic() < deadline:
                if last.exists() and last.stat().st_mtime > launched:
                    break
                time.sleep(0.01)
            # ...then kill at a random moment, or (every other attempt) as soon as a save is under way.
            hunt_saves = attempt % 2 == 1
            deadline = time.monotonic() + (2.0 if hunt_saves else rng.uniform(0.0, 0.6))
            while attempts.alive(pid) and time.monotonic() < deadline:
                if hunt_saves and temporaries(run_dir):
                    break
                time.sleep(0.002)
            if not attempts.alive(pid):
                finished_early += 1
                break
            os.kill(pid, signal.SIGKILL)
            attempts.wait(pid)
            killed += 1
            during_save += bool(temporaries(run_dir))
        status = attempts.wait(attempts.start(args))
        if status != 0:
            raise RuntimeError(f"the final resumed run failed (exit status {status}):\n{attempts.output()[-3000:]}")
    finally:
        attempts.close()

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
    parser.add_argument("--zygote", action="store_true", help=argparse.SUPPRESS)  # Attempts' own process
    args = parser.parse_args()
    if args.zygote:
        return zygote()
    with tempfile.TemporaryDirectory() as workdir:
        print(json.dumps({"async_save": args.async_save, **soak(Path(workdir), args.kills, args.seed, args.async_save)}, indent=2))


if __name__ == "__main__":
    main()
