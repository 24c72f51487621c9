"""Growth vs. scratch: does growing the model reach the same loss for fewer training FLOPs?

Growing only pays off if a model trained while it grows reaches the loss of the final-size
model trained from scratch for less compute. On the built-in corpus this trains (a) the
final architecture (d_model=256, n_layers=8) from scratch and (b) the growth schedule
(d_model=128, n_layers=4; depth -> 8 identity at 1/4, width -> 192 at 1/2, width -> 256 at
3/4 of the steps) with the same optimizer, LR schedule, data order and diffusion noise,
counts training FLOPs, and evaluates a fixed validation loss. The goal: (b) needs at most
50% of (a)'s FLOPs to reach (a)'s final validation loss. Prints one JSON object on stdout
(logs go to stderr), writes it and a plot to bench/results/. Run from the repo root:
`python bench/growth_experiment.py [--steps N] [--eval-every K]`.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from dimba.data.datamodule import TextDataModule  # noqa: E402
from dimba.growth.operators import grow_depth, grow_width  # noqa: E402
from dimba.growth.optim import GrowableAdamW, transfer_optimizer_state  # noqa: E402
from dimba.model import DIMBA, DIMBAConfig  # noqa: E402
from dimba.training.lr_schedule import WarmupCosine  # noqa: E402

log = logging.getLogger("bench.growth_experiment")

SEQ_LEN, BATCH, THREADS, SEED, GOAL_RATIO = 128, 16, 2, 0, 0.5
LR, BETAS, WEIGHT_DECAY, WARMUP, MIN_LR_RATIO, CLIP = 2e-3, (0.9, 0.99), 0.01, 20, 0.1, 1.0
FINAL = DIMBAConfig(d_model=256, n_layers=8)
START = replace(FINAL, d_model=128, n_layers=4)
RESULTS = Path(__file__).resolve().parent / "results"
Event = Tuple[int, str, int]  # (after optimizer step, "depth" | "width", target size)


def group_for(param: torch.nn.Parameter) -> int:
    return 0 if param.dim() >= 2 else 1  # as DIMBALightningModule: decay on matrices only


_FLOPS: Dict[str, int] = {}


def flops_per_step(config: DIMBAConfig) -> int:
    """Forward + backward FLOPs of one training batch (matmuls/convs, as FlopCounterMode counts)."""
    key = f"d{config.d_model}xL{config.n_layers}"  # the only fields that differ between stages
    if key not in _FLOPS:
        with torch.random.fork_rng():
            model, tokens = DIMBA(config), torch.randint(0, config.vocab_size, (BATCH, SEQ_LEN))
            with FlopCounterMode(display=False) as counter:
                model.loss(tokens)["loss"].backward()
        _FLOPS[key] = counter.get_total_flops()
        log.info("d_model=%d n_layers=%d: %.3e FLOPs per step", config.d_model, config.n_layers, _FLOPS[key])
    return _FLOPS[key]


def batches(data: TextDataModule) -> Iterator[torch.Tensor]:
    """Training batches forever, in a seeded order (the same for every run)."""
    loader = DataLoader(data.train_set, batch_size=BATCH, shuffle=True, drop_last=True,
                        generator=torch.Generator().manual_seed(SEED))
    while True:
        yield from loader


@torch.no_grad()
def evaluate(model: DIMBA, val_batches: List[torch.Tensor]) -> float:
    """Mean validation loss with fixed t and noise per batch, as validation_step draws them."""
    model.eval()
    losses = []
    for idx, batch in enumerate(val_batches):
        gen = torch.Generator().manual_seed(idx)
        t = model.schedule.sample_timesteps(batch.shape[0], torch.device("cpu"), gen)
        noise = torch.randn(*batch.shape, model.config.d_embed, generator=gen)
        losses.append(float(model.loss(batch, t=t, noise=noise)["loss"]))
    model.train()
    return sum(losses) / len(losses)


def train(name: str, events: List[Event], steps: int, eval_every: int, data: TextDataModule,
          val_batches: List[torch.Tensor]) -> Dict[str, Any]:
    torch.manual_seed(SEED)
    model = DIMBA(START if events else FINAL).train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = GrowableAdamW([{"params": [p for p in params if group_for(p) == 0], "weight_decay": WEIGHT_DECAY},
                               {"params": [p for p in params if group_for(p) == 1], "weight_decay": 0.0}],
                              lr=LR, betas=BETAS)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, WarmupCosine(WARMUP, steps, MIN_LR_RATIO))
    noise_gen = torch.Generator().manual_seed(SEED + 1)  # same training t/noise in both runs
    curve: Dict[str, List[float]] = {"steps": [0], "flops": [0], "val_loss": [evaluate(model, val_batches)]}
    growth: List[Dict[str, Any]] = []
    flops, start, batch_iter = 0, time.perf_counter(), batches(data)
    for step in range(1, steps + 1):
        tokens = next(batch_iter)
        t = model.schedule.sample_timesteps(tokens.shape[0], torch.device("cpu"), noise_gen)
        noise = torch.randn(*tokens.shape, model.config.d_embed, generator=noise_gen)
        model.loss(tokens, t=t, noise=noise)["loss"].backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), CLIP)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        scheduler.step()
        flops += flops_per_step(model.config)
        for at, op, size in events:  # after the optimizer step, as GrowthCallback does
            if at == step:
                remaps = grow_depth(model, size, "identity", seed=at) if op == "depth" else grow_width(model, size, seed=at)
                transfer_optimizer_state(optimizer, remaps, model, group_for)
                growth.append({"step": step, "flops": flops, "op": op, "size": size,
                               "params": sum(p.numel() for p in model.parameters())})
        if step % eval_every == 0 or step == steps:
            curve["steps"].append(step)
            curve["flops"].append(flops)
            curve["val_loss"].append(evaluate(model, val_batches))
            log.info("%s step %d/%d: val %.4f, %.3e FLOPs, %.0f s", name, step, steps, curve["val_loss"][-1],
                     flops, time.perf_counter() - start)
    return {"curve": curve, "growth_events": growth, "final_val_loss": curve["val_loss"][-1],
            "total_flops": flops, "final_params": sum(p.numel() for p in model.parameters()),
            "wall_s": time.perf_counter() - start}


def flops_to_reach(curve: Dict[str, List[float]], target: float) -> Tuple[Optional[float], Optional[float]]:
    """FLOPs at which the val curve first reaches `target`: (linearly interpolated, at eval resolution)."""
    f, loss = curve["flops"], curve["val_loss"]
    for i, value in enumerate(loss):
        if value <= target:
            if i == 0:
                return float(f[0]), float(f[0])
            frac = (loss[i - 1] - target) / (loss[i - 1] - value)
            return f[i - 1] + frac * (f[i] - f[i - 1]), float(f[i])
    return None, None


def loss_at(curve: Dict[str, List[float]], flops: float) -> float:
    """Validation loss linearly interpolated at `flops` (clamped to the curve's ends)."""
    return float(np.interp(flops, curve["flops"], curve["val_loss"]))


def plot(scratch: Dict[str, Any], grown: Dict[str, Any], target: float, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    ax.plot(scratch["curve"]["flops"], scratch["curve"]["val_loss"], "o-", ms=3, label="(a) scratch, d256 x 8")
    ax.plot(grown["curve"]["flops"], grown["curve"]["val_loss"], "o-", ms=3, label="(b) growth d128x4 -> d256x8")
    later = [v for run in (scratch, grown) for v in run["curve"]["val_loss"][1:]]  # step 0 (~15) is off scale
    ax.set_ylim(min(later + [target]) * 0.95, max(later) * 1.05)
    for i, event in enumerate(grown["growth_events"]):
        ax.axvline(event["flops"], color="C1", ls=":", lw=1, label="(b) growth events" if i == 0 else None)
        ax.annotate(f"{event['op']}->{event['size']}", (event["flops"], ax.get_ylim()[1]), rotation=90,
                    va="top", ha="right", fontsize=8, color="C1")
    ax.axhline(target, color="gray", ls="--", lw=1, label=f"(a) final val loss {target:.3f}")
    ax.set(xlabel="training FLOPs (forward + backward)", ylabel="validation loss (fixed t/noise)",
           title="DIMBA: growth vs. training the final size from scratch (step-0 loss off scale)")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=400, help="training steps of each run")
    parser.add_argument("--eval-every", type=int, default=20, help="steps between validation evaluations")
    parser.add_argument("--val-batches", type=int, default=8, help="first N validation batches, fixed")
    args = parser.parse_args()
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(message)s")
    torch.set_num_threads(THREADS)
    begin = time.perf_counter()
    data = TextDataModule(seq_len=SEQ_LEN, batch_size=BATCH)
    data.setup()
    val_batches = [b for _, b in zip(range(args.val_batches), data.val_dataloader())]
    q = args.steps // 4
    events: List[Event] = [(q, "depth", 8), (2 * q, "width", 192), (3 * q, "width", 256)]
    for config in (START, replace(START, n_layers=8), replace(FINAL, d_model=192), FINAL):
        flops_per_step(config)  # counted up front, outside the runs' wall time
    scratch = train("(a) scratch", [], args.steps, args.eval_every, data, val_batches)
    grown = train("(b) growth", events, args.steps, args.eval_every, data, val_batches)
    target = scratch["final_val_loss"]
    a_interp, a_eval = flops_to_reach(scratch["curve"], target)
    b_interp, b_eval = flops_to_reach(grown["curve"], target)
    ratio = None if a_interp is None or b_interp is None else b_interp / a_interp
    result: Dict[str, Any] = {
        "steps": args.steps, "eval_every": args.eval_every, "val_batches": args.val_batches,
        "seq_len": SEQ_LEN, "batch": BATCH, "num_threads": torch.get_num_threads(), "torch_version": torch.__version__,
        "optim": {"lr": LR, "betas": list(BETAS), "weight_decay": WEIGHT_DECAY, "warmup": WARMUP,
                  "min_lr_ratio": MIN_LR_RATIO, "grad_clip_norm": CLIP},
        "flops_note": "FlopCounterMode on one forward+backward per architecture (matmul/conv FLOPs; "
                      "optimizer and elementwise ops not counted; evaluation not counted)",
        "flops_per_step": dict(_FLOPS),
        "scratch": scratch, "growth": grown, "target_val_loss": target,
        "flops_to_target": {"scratch": a_interp, "growth": b_interp,
                            "method": "linear interpolation between evaluations, first crossing"},
        "flops_to_target_eval_resolution": {"scratch": a_eval, "growth": b_eval},
        "ratio": ratio,
        "ratio_eval_resolution": None if a_eval is None or b_eval is None else b_eval / a_eval,
        "equal_flops": {"flops": grown["total_flops"], "growth_final_val_loss": grown["final_val_loss"],
                        "scratch_val_loss_interpolated": loss_at(scratch["curve"], grown["total_flops"]),
                        "growth_total_flops_over_scratch": grown["total_flops"] / scratch["total_flops"]},
        "goal": "(b) needs at most 50% of (a)'s FLOPs", "meets_goal": ratio is not None and ratio <= GOAL_RATIO,
        "wall_s": time.perf_counter() - begin,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    plot(scratch, grown, target, RESULTS / "growth_experiment.png")
    (RESULTS / "growth_experiment.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
