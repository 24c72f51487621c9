"""CPU training throughput of DIMBA, and what the milestone check costs per step.

Progressive checkpointing runs `ProgressiveCheckpointCallback.on_train_batch_end` after
every optimizer step. It is only worth having if that check is free in practice: the
goal is under 0.1% of a training step. This script times a reference training step
(forward + backward + AdamW) and the exact hook call, and prints one JSON object on
stdout (logs go to stderr). Run from the repo root: `python bench/throughput.py`.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable, Dict, List

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from dimba.checkpointing.manager import count_trainable_parameters  # noqa: E402
from dimba.model import DIMBA, DIMBAConfig  # noqa: E402
from dimba.training import DIMBALightningModule  # noqa: E402

log = logging.getLogger("bench.throughput")

REFERENCE = DIMBAConfig(vocab_size=256, d_model=256, n_layers=4, d_state=16, expand=2,
                        head_dim=64, d_conv=4, bidirectional=True)
SEQ_LEN, BATCH, THREADS, GOAL_FRACTION = 256, 8, 2, 0.001


def time_training_steps(steps: int, warmup: int) -> List[float]:
    """Seconds per training step (fp32, random byte tokens), warmup steps excluded."""
    torch.manual_seed(0)
    model = DIMBA(REFERENCE).train()
    optimizer = torch.optim.AdamW(model.parameters())
    tokens = torch.randint(0, REFERENCE.vocab_size, (BATCH, SEQ_LEN))
    times: List[float] = []
    for i in range(warmup + steps):
        start = time.perf_counter()
        model.loss(tokens)["loss"].backward()
        optimizer.step()
        optimizer.zero_grad()
        if i >= warmup:
            times.append(time.perf_counter() - start)
            log.info("step %d/%d: %.3f s", i - warmup + 1, steps, times[-1])
    return times


def per_call_seconds(fn: Callable[[], Any], calls: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls


def time_milestone_hook(calls: int) -> Dict[str, float]:
    """Per-call cost of the real hook with no milestone crossed, and of an uncached count."""
    with tempfile.TemporaryDirectory() as save_dir:
        module = DIMBALightningModule(model_config=REFERENCE, enable_progressive_checkpoints=True,
                                      progressive_milestones=[10**15], progressive_save_dir=save_dir)
        callback = module.progressive_checkpoint
        assert callback is not None
        trainer = SimpleNamespace(global_step=0)

        def hook() -> None:  # a new global_step each call, so the check really runs
            trainer.global_step += 1
            callback.on_train_batch_end(trainer, module, None, None, 0)  # type: ignore[arg-type]

        hook_s = per_call_seconds(hook, calls)
        assert not callback.manager.tracker.reached and not any(Path(save_dir).iterdir())
        uncached_s = per_call_seconds(lambda: count_trainable_parameters(module), max(calls // 100, 100))
    return {"per_call_s": hook_s, "uncached_count_per_call_s": uncached_s}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20, help="timed training steps")
    parser.add_argument("--warmup", type=int, default=3, help="untimed warmup steps")
    parser.add_argument("--hook-calls", type=int, default=100_000, help="milestone hook calls to time")
    args = parser.parse_args()
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(message)s")
    torch.set_num_threads(THREADS)

    times = time_training_steps(args.steps, args.warmup)
    median = statistics.median(times)
    hook = time_milestone_hook(args.hook_calls)
    overhead = hook["per_call_s"] / median
    result: Dict[str, Any] = {
        "config": asdict(REFERENCE),
        "seq_len": SEQ_LEN, "batch": BATCH, "dtype": "float32",
        "torch_version": torch.__version__, "num_threads": torch.get_num_threads(),
        "train": {
            "steps": args.steps, "warmup": args.warmup,
            "median_step_s": median, "mean_step_s": statistics.mean(times),
            "tokens_per_s": BATCH * SEQ_LEN / median,
        },
        "milestone_check": {
            "calls": args.hook_calls, **hook,
            "overhead_fraction": overhead, "uncached_overhead_fraction": hook["uncached_count_per_call_s"] / median,
            "goal_fraction": GOAL_FRACTION, "meets_goal": overhead < GOAL_FRACTION,
        },
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
