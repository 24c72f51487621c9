"""Training throughput of DIMBA against the matrix-multiply peak of the same process.

Configs (`--config`): `reference` is the speed work's reference config (vocab 256, d_model 256, 4 bidirectional
layers, d_state 16, expand 2, head dim 64, conv 4, seq 256, batch 8); `d1024` is the same
with d_model 1024; `100m` the GPU config. Each step is forward + backward + AdamW on random
byte tokens, `--threads` threads (2: this machine's cores).

Variants (`--variants`, run one after another in this process, each on the same weights):
  fp32          dimba as it runs by default
  bf16          `model.dtype=bf16` (autocast)
  compile       `compile=true` (torch.compile of the denoiser; first step includes compiling)
  bf16+compile  both
  baseline      the mixer before the speed work (bench/baseline_mixer.py): the side-by-side
  reference     the plain step-by-step implementation of tests/reference_dimba.py

FLOPs per step are counted once, by `FlopCounterMode` on the fp32 eager step (matmuls; the
depthwise convolution per group, bench/flops.py): the model's FLOPs, the same for every
variant. On a CPU the peak is a 2048^3 fp32 `torch.mm` timed in this process before and
after the variants (the larger is used, so the fraction errs low); on CUDA it is
`--peak-tflops`. The milestone hook's cost against a step is measured too (the goal:
under 0.1%). One JSON object on stdout, logs on stderr. Run from the repo root.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import tempfile
import time
import types
from dataclasses import asdict
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable, Dict, List

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

import baseline_mixer  # noqa: E402
from dimba.model import DIMBA, DIMBAConfig  # noqa: E402
from dimba.model.params import count_parameters  # noqa: E402
from dimba.training import DIMBALightningModule  # noqa: E402
from flops import training_step_flops  # noqa: E402

log = logging.getLogger("bench.throughput")

REFERENCE = DIMBAConfig(vocab_size=256, d_model=256, n_layers=4, d_state=16, expand=2,
                        head_dim=64, d_conv=4, bidirectional=True)
CONFIGS = {
    "reference": (REFERENCE, 256, 8),  # (architecture, seq_len, batch)
    "d1024": (DIMBAConfig(**{**REFERENCE.to_dict(), "d_model": 1024}), 256, 8),
    # ~100M parameters: the GPU reference config.
    "100m": (DIMBAConfig(vocab_size=256, d_model=1024, n_layers=24, d_state=64, expand=2, head_dim=64,
                         d_conv=4, chunk_size=128), 2048, 8),
}
VARIANTS = ("fp32", "bf16", "compile", "bf16+compile", "baseline", "reference")
GOALS = {"reference": 0.35, "d1024": 0.50}  # fraction of the matmul peak, fp32 (docs/results/speed.md)
HOOK_GOAL_FRACTION = 0.001


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


def build(variant: str, config: DIMBAConfig, device: str) -> tuple[Any, DIMBA]:
    """A fresh model (same seed, so the same weights for every variant) and what runs its loss."""
    dtype = "bf16" if variant.startswith("bf16") else "fp32"
    torch.manual_seed(0)
    model = DIMBA(DIMBAConfig(**{**config.to_dict(), "dtype": dtype})).to(device).train()
    if variant.endswith("compile"):
        model.compile_denoiser()
    if variant == "baseline":
        for block in model.blocks:
            block.mixer.forward = types.MethodType(baseline_mixer.mixer_forward, block.mixer)
    return (PlainDIMBA(model) if variant == "reference" else model), model


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def matmul_peak_gflops(device: str, size: int = 2048, repeats: int = 10) -> float:
    """The best of `repeats` fp32 size^3 matmuls, in GFLOP/s."""
    a, b = torch.randn(size, size, device=device), torch.randn(size, size, device=device)
    for _ in range(3):
        a @ b
    best = float("inf")
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        a @ b
        synchronize(device)
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best / 1e9


def time_training_steps(runner: Any, model: DIMBA, tokens: torch.Tensor, steps: int, warmup: int,
                        device: str) -> Dict[str, Any]:
    """Seconds per training step, warmup steps excluded (the first includes any compiling)."""
    optimizer = torch.optim.AdamW(model.parameters(), fused=device.startswith("cuda") or None)
    times: List[float] = []
    first_step_s = 0.0
    for i in range(warmup + steps):
        synchronize(device)
        start = time.perf_counter()
        runner.loss(tokens)["loss"].backward()
        optimizer.step()
        optimizer.zero_grad()
        synchronize(device)
        elapsed = time.perf_counter() - start
        if i == 0:
            first_step_s = elapsed
        if i >= warmup:
            times.append(elapsed)
    median = statistics.median(times)
    return {"first_step_s": first_step_s, "median_step_s": median, "mean_step_s": statistics.mean(times),
            "tokens_per_s": tokens.numel() / median}


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
    parser.add_argument("--variants", default="fp32", help=f"comma-separated, of: {', '.join(VARIANTS)} (default: fp32)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2, help="torch threads on a CPU (default: 2)")
    parser.add_argument("--seq", type=int, default=None, help="sequence length (default: the config's)")
    parser.add_argument("--batch", type=int, default=None, help="batch size (default: the config's)")
    parser.add_argument("--peak-tflops", type=float, default=None,
                        help="CUDA peak for MFU (default: 989 bf16 / 494 tf32, an H100/H200's dense figures)")
    parser.add_argument("--steps", type=int, default=10, help="timed training steps per variant (default: 10)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed warmup steps (default: 3)")
    parser.add_argument("--hook-calls", type=int, default=100_000, help="milestone hook calls to time (0: skip)")
    args = parser.parse_args()
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown or not variants:
        parser.error(f"--variants: unknown {unknown or args.variants!r}; choose from {', '.join(VARIANTS)}")
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(message)s")
    torch.set_num_threads(args.threads)
    cuda = args.device.startswith("cuda")
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = True

    config, seq_len, batch = CONFIGS[args.config]
    seq_len, batch = args.seq or seq_len, args.batch or batch
    torch.manual_seed(0)
    tokens = torch.randint(0, config.vocab_size, (batch, seq_len), device=args.device)
    _, counted = build("fp32", config, args.device)
    t = torch.full((batch,), counted.config.diffusion_steps // 2, device=args.device)
    flops = training_step_flops(counted, tokens, t, torch.randn(batch, seq_len, config.d_embed, device=args.device))
    peaks = [matmul_peak_gflops(args.device)] if not cuda else []
    log.info("%s: %.2f GFLOP per step%s", args.config, flops / 1e9,
             f"; matmul peak {peaks[0]:.0f} GFLOP/s" if peaks else "")

    results: Dict[str, Dict[str, Any]] = {}
    for variant in variants:
        runner, model = build(variant, config, args.device)
        results[variant] = time_training_steps(runner, model, tokens, args.steps, args.warmup, args.device)
        results[variant]["gflops_per_s"] = flops / results[variant]["median_step_s"] / 1e9
        log.info("%-13s %.3f s/step, %.0f tokens/s, %.1f GFLOP/s", variant, results[variant]["median_step_s"],
                 results[variant]["tokens_per_s"], results[variant]["gflops_per_s"])
    if not cuda:
        peaks.append(matmul_peak_gflops(args.device))
    peak_gflops = max(peaks) if peaks else None
    for variant, row in results.items():
        if cuda:  # the accelerator's dense peak for the variant's matmul dtype
            row["peak_gflops_per_s"] = (args.peak_tflops or (989.0 if variant.startswith("bf16") else 494.0)) * 1e3
        row["fraction_of_peak"] = row["gflops_per_s"] / (peak_gflops or row["peak_gflops_per_s"])
        if "baseline" in results and variant != "baseline":
            row["speedup_vs_baseline"] = results["baseline"]["median_step_s"] / row["median_step_s"]

    result: Dict[str, Any] = {
        "config": {"name": args.config, **asdict(config), "seq_len": seq_len, "batch": batch},
        "params": count_parameters(counted), "device": args.device, "torch_version": torch.__version__,
        "num_threads": torch.get_num_threads(), "flops_per_step": flops,
        "peak_gflops_per_s": {"measured": peaks, "used": peak_gflops,
                              "how": "best of 10 fp32 2048^3 torch.mm, before and after the variants (bf16 "
                                     "variants too are measured against it)"
                              if not cuda else "per variant: --peak-tflops, or an H100/H200's dense bf16/tf32 figure"},
        "variants": results,
    }
    if args.config in GOALS and "fp32" in results:
        reached = results["fp32"]["fraction_of_peak"]
        result["goal"] = {"fp32_fraction_of_peak": GOALS[args.config], "reached": reached,
                          "met": reached >= GOALS[args.config]}
    if args.hook_calls:
        hook = time_milestone_hook(args.hook_calls)
        step_s = results[variants[0]]["median_step_s"]
        result["milestone_check"] = {
            "calls": args.hook_calls, **hook, "overhead_fraction": hook["per_call_s"] / step_s,
            "uncached_overhead_fraction": hook["uncached_count_per_call_s"] / step_s,
            "goal_fraction": HOOK_GOAL_FRACTION, "meets_goal": hook["per_call_s"] / step_s < HOOK_GOAL_FRACTION,
        }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
