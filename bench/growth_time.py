"""Wall time of a growth event, against one training step of the grown model.

A growth event (the operator plus carrying the AdamW state over) pauses training. Growth
is meant to be a cheap, in-place step, so the goal is that one event costs less than a
single training step of the grown model: then growing during training is practically free.
This times every event of the default schedule (and a width and a depth growth at the
reference size d_model=256, n_layers=4) on a GrowableAdamW with real state, and prints one
JSON object on stdout (logs go to stderr). Run from the repo root: `python bench/growth_time.py`.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Tuple

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from torch import nn  # noqa: E402

from dimba.growth.operators import Remap, grow_depth, grow_width  # noqa: E402
from dimba.growth.optim import GrowableAdamW, transfer_optimizer_state  # noqa: E402
from dimba.model import DIMBA, DIMBAConfig  # noqa: E402

log = logging.getLogger("bench.growth_time")

SEQ_LEN, BATCH, THREADS = 128, 16, 2
LR, BETAS, WEIGHT_DECAY = 2e-3, (0.9, 0.99), 0.01
GOAL = "growth time < one training step"


@dataclass
class Event:
    description: str
    before: DIMBAConfig
    grow: Callable[[DIMBA], Dict[nn.Parameter, Remap]]


EVENTS: List[Event] = [
    Event("default: depth 4 -> 8 (identity) at d_model 128", DIMBAConfig(d_model=128, n_layers=4),
          lambda m: grow_depth(m, 8, "identity", seed=60)),
    Event("default: width 128 -> 192 at 8 layers", DIMBAConfig(d_model=128, n_layers=8),
          lambda m: grow_width(m, 192, seed=120)),
    Event("default: width 192 -> 256 at 8 layers", DIMBAConfig(d_model=192, n_layers=8),
          lambda m: grow_width(m, 256, seed=180)),
    Event("reference: width 256 -> 384 at 4 layers", DIMBAConfig(d_model=256, n_layers=4),
          lambda m: grow_width(m, 384, seed=1)),
    Event("reference: depth 4 -> 8 (identity) at d_model 256", DIMBAConfig(d_model=256, n_layers=4),
          lambda m: grow_depth(m, 8, "identity", seed=2)),
]


def group_for(param: nn.Parameter) -> int:
    """As DIMBALightningModule: weight decay on matrices, none on vectors."""
    return 0 if param.dim() >= 2 else 1


def make_optimizer(model: DIMBA) -> GrowableAdamW:
    params = [p for p in model.parameters() if p.requires_grad]
    return GrowableAdamW([{"params": [p for p in params if group_for(p) == 0], "weight_decay": WEIGHT_DECAY},
                          {"params": [p for p in params if group_for(p) == 1], "weight_decay": 0.0}],
                         lr=LR, betas=BETAS)


def train_step(model: DIMBA, optimizer: torch.optim.Optimizer, tokens: torch.Tensor) -> float:
    start = time.perf_counter()
    model.loss(tokens)["loss"].backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return time.perf_counter() - start


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def prepared(config: DIMBAConfig, tokens: torch.Tensor) -> Tuple[DIMBA, GrowableAdamW]:
    """A model of `config` and its optimizer after two real steps (so it holds moments)."""
    torch.manual_seed(0)
    model = DIMBA(config).train()
    optimizer = make_optimizer(model)
    for _ in range(2):
        train_step(model, optimizer, tokens)
    return model, optimizer


def measure(event: Event, reps: int, steps: int, tokens: torch.Tensor) -> Dict[str, Any]:
    growth_times: List[float] = []
    for rep in range(reps):
        model, optimizer = prepared(event.before, tokens)  # rebuilt every repetition, not timed
        params_before = n_params(model)
        gc.collect()  # no collector pause inside the timed region
        start = time.perf_counter()
        remaps = event.grow(model)
        transfer_optimizer_state(optimizer, remaps, model, group_for)
        growth_times.append(time.perf_counter() - start)
        log.info("%s: rep %d/%d growth %.4f s", event.description, rep + 1, reps, growth_times[-1])
    # One training step of the grown model, with its carried-over (per-entry step) state.
    train_step(model, optimizer, tokens)  # warmup
    step_times = [train_step(model, optimizer, tokens) for _ in range(steps)]
    growth_s, step_s = statistics.median(growth_times), statistics.median(step_times)
    log.info("%s: growth %.4f s, step %.4f s", event.description, growth_s, step_s)
    return {
        "description": event.description,
        "before": {"d_model": event.before.d_model, "n_layers": event.before.n_layers},
        "after": {"d_model": model.config.d_model, "n_layers": model.config.n_layers},
        "params_before": params_before, "params_after": n_params(model),
        "growth_s": growth_s, "growth_s_min": min(growth_times), "growth_s_max": max(growth_times),
        "step_s": step_s, "ratio": growth_s / step_s, "meets_goal": growth_s < step_s,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=7, help="timed growth events per case (median)")
    parser.add_argument("--steps", type=int, default=5, help="timed training steps of the grown model (median)")
    args = parser.parse_args()
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(message)s")
    torch.set_num_threads(THREADS)
    tokens = torch.randint(0, 256, (BATCH, SEQ_LEN), generator=torch.Generator().manual_seed(0))
    events = [measure(e, args.reps, args.steps, tokens) for e in EVENTS]
    result: Dict[str, Any] = {
        "seq_len": SEQ_LEN, "batch": BATCH, "dtype": "float32", "num_threads": torch.get_num_threads(),
        "torch_version": torch.__version__, "reps": args.reps, "steps": args.steps,
        "growth_s": "median wall time of the operator call + transfer_optimizer_state (state from 2 AdamW steps)",
        "step_s": "median forward + backward + GrowableAdamW step of the grown model, random byte tokens",
        "events": events,
        "max_ratio": max(e["ratio"] for e in events),
        "goal": GOAL, "meets_goal": all(e["meets_goal"] for e in events),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
