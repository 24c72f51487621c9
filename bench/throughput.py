"""Training throughput of DIMBA (tokens/s, MFU on GPU), and what the milestone check costs.

Reference config (issue 7): vocab 256, d_model 256, 4 bidirectional layers, d_state 16,
expand 2, head dim 64, conv 4, seq 256, batch 8, fp32, 2 threads, fwd + bwd + AdamW.
`--dtype bf16` (autocast), `--compile` (torch.compile), `--implementation reference` (the
plain step-by-step implementation kept in tests/, the baseline), `--config 100m` and
`--device cuda` (adds model FLOP utilisation against `--peak-tflops`).

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
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from dimba.model.params import count_parameters  # noqa: E402
from dimba.model import DIMBA, DIMBAConfig  # noqa: E402
from dimba.training import DIMBALightningModule  # noqa: E402

log = logging.getLogger("bench.throughput")

REFERENCE = DIMBAConfig(vocab_size=256, d_model=256, n_layers=4, d_state=16, expand=2,
                        head_dim=64, d_conv=4, bidirectional=True)
CONFIGS = {
    "reference": (REFERENCE, 256, 8),  # (architecture, seq_len, batch)
    # ~100M parameters: the GPU config of issue 7.
    "100m": (DIMBAConfig(vocab_size=256, d_model=1024, n_layers=24, d_state=64, expand=2, head_dim=64,
                         d_conv=4, chunk_size=128), 2048, 8),
}
THREADS, GOAL_FRACTION = 2, 0.001


class PlainDIMBA(torch.nn.Module):
    """The plain implementation of tests/reference_dimba.py behind DIMBA's `loss` interface."""

    def __init__(self, model: DIMBA) -> None:
        super().__init__()
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
        import reference_dimba

        self.model, self.reference = model, reference_dimba

    def loss(self, tokens: torch.Tensor) -> Dict[str, torch.Tensor]:
        model = self.model
        t = model.schedule.sample_timesteps(tokens.shape[0], tokens.device)
        noise = torch.randn(*tokens.shape, model.config.d_embed, device=tokens.device)
        state = {**dict(model.named_buffers()), **dict(model.named_parameters())}
        return {"loss": self.reference.loss(state, model.config, tokens, t, noise, model.schedule.alpha_bar)}


def build(args: argparse.Namespace) -> tuple[Any, torch.nn.Module, DIMBAConfig, int, int]:
    config, seq_len, batch = CONFIGS[args.config]
    config = DIMBAConfig(**{**config.to_dict(), "dtype": args.dtype, "scan": args.scan})
    seq_len, batch = args.seq or seq_len, args.batch or batch
    torch.manual_seed(0)
    model = DIMBA(config).to(args.device).train()
    if args.compile:
        model.compile_denoiser()
    runner: Any = PlainDIMBA(model) if args.implementation == "reference" else model
    return runner, model, config, seq_len, batch


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_training_steps(args: argparse.Namespace) -> Dict[str, Any]:
    """Seconds per training step (random byte tokens), warmup steps excluded; FLOPs per step."""
    runner, model, config, seq_len, batch = build(args)
    optimizer = torch.optim.AdamW(model.parameters(), fused=args.device.startswith("cuda") or None)
    tokens = torch.randint(0, config.vocab_size, (batch, seq_len), device=args.device)
    times: List[float] = []
    first_call_s = 0.0
    for i in range(args.warmup + args.steps):
        synchronize(args.device)
        start = time.perf_counter()
        runner.loss(tokens)["loss"].backward()
        optimizer.step()
        optimizer.zero_grad()
        synchronize(args.device)
        elapsed = time.perf_counter() - start
        if i == 0:
            first_call_s = elapsed  # includes compilation under --compile
        if i >= args.warmup:
            times.append(elapsed)
            log.info("step %d/%d: %.3f s", i - args.warmup + 1, args.steps, elapsed)
    with FlopCounterMode(display=False) as counter:  # eager: the model's FLOPs, not the kernels'
        DIMBA(config).to(args.device).loss(tokens)["loss"].backward()
    median = statistics.median(times)
    return {
        "params": count_parameters(model), "seq_len": seq_len, "batch": batch,
        "steps": args.steps, "warmup": args.warmup, "first_step_s": first_call_s,
        "median_step_s": median, "mean_step_s": statistics.mean(times),
        "tokens_per_s": batch * seq_len / median, "flops_per_step": counter.get_total_flops(),
    }


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
        uncached_s = per_call_seconds(lambda: count_parameters(module), max(calls // 100, 100))
    return {"per_call_s": hook_s, "uncached_count_per_call_s": uncached_s}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", choices=sorted(CONFIGS), default="reference")
    parser.add_argument("--implementation", choices=("fast", "reference"), default="fast")
    parser.add_argument("--dtype", choices=("fp32", "bf16"), default="fp32")
    parser.add_argument("--scan", choices=("auto", "torch", "mamba_ssm"), default="auto")
    parser.add_argument("--compile", action="store_true", help="torch.compile the denoiser")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seq", type=int, default=None, help="sequence length (default: the config's)")
    parser.add_argument("--batch", type=int, default=None, help="batch size (default: the config's)")
    parser.add_argument("--peak-tflops", type=float, default=None,
                        help="accelerator peak for MFU (default on CUDA: 989 bf16 / 494 tf32, an H100/H200's dense figures)")
    parser.add_argument("--steps", type=int, default=20, help="timed training steps")
    parser.add_argument("--warmup", type=int, default=3, help="untimed warmup steps")
    parser.add_argument("--hook-calls", type=int, default=100_000, help="milestone hook calls to time (0: skip)")
    args = parser.parse_args()
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(message)s")
    torch.set_num_threads(THREADS)
    if args.device.startswith("cuda"):
        torch.backends.cuda.matmul.allow_tf32 = True

    train = time_training_steps(args)
    median = train["median_step_s"]
    if args.device.startswith("cuda"):
        peak = args.peak_tflops or (989.0 if args.dtype == "bf16" else 494.0)
        train["peak_tflops"] = peak
        train["mfu"] = train["flops_per_step"] / median / (peak * 1e12)
        train["gpu"] = torch.cuda.get_device_name()
    config = CONFIGS[args.config][0]
    result: Dict[str, Any] = {
        "config": {**asdict(config), "dtype": args.dtype, "scan": args.scan},
        "implementation": args.implementation, "compile": args.compile, "device": args.device,
        "torch_version": torch.__version__, "num_threads": torch.get_num_threads(),
        "train": train,
    }
    if args.hook_calls:
        hook = time_milestone_hook(args.hook_calls)
        overhead = hook["per_call_s"] / median
        result["milestone_check"] = {
            "calls": args.hook_calls, **hook,
            "overhead_fraction": overhead, "uncached_overhead_fraction": hook["uncached_count_per_call_s"] / median,
            "goal_fraction": GOAL_FRACTION, "meets_goal": overhead < GOAL_FRACTION,
        }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
