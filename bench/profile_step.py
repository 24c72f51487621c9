"""Where a training step's time goes: by operator (torch.profiler) and by part of the model.

At bench/throughput.py's configs, for the current mixer or the frozen baseline
(`--variant baseline`, bench/baseline_mixer.py):

- operators: self CPU time per step of the top operators of forward + backward + AdamW,
  from `torch.profiler` over `--steps` steps (the profiler adds some overhead per call);
- parts: forward + backward of each part of one block at the step's shapes, timed alone,
  times the number of layers, plus the embedding/loss head and the optimizer step: what
  to attack first (isolated timings do not add up exactly to a step);
- sampling: the top operators of one DDIM sampling step (batch 8, no gradients).

One JSON object on stdout. Run from the repo root: `python bench/profile_step.py`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import types
from pathlib import Path
from typing import Any, Callable, Dict, List

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch.profiler import ProfilerActivity, profile  # noqa: E402

import baseline_mixer  # noqa: E402
from dimba.diffusion.sampling import sample_many  # noqa: E402
from dimba.model import DIMBA  # noqa: E402
from dimba.model.causal_conv import causal_conv  # noqa: E402
from dimba.model.ssd import ssd_scan  # noqa: E402
from throughput import CONFIGS  # noqa: E402


def top_operators(fn: Callable[[], Any], steps: int, rows: int) -> List[Dict[str, Any]]:
    """The operators with the most self CPU time, per call of fn."""
    fn()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            fn()
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events)
    return [{"op": e.key, "ms_per_step": e.self_cpu_time_total / 1e3 / steps, "share": e.self_cpu_time_total / total,
             "calls_per_step": e.count / steps} for e in events[:rows]]


def fwd_bwd_ms(fn: Callable[[], torch.Tensor], repeats: int) -> float:
    """Median ms of fn() and a backward from its sum."""
    for _ in range(2):
        fn().sum().backward()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn().sum().backward()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def parts(model: DIMBA, variant: str, batch: int, seq: int, repeats: int) -> Dict[str, float]:
    """ms per step of each part, forward + backward; a block's parts times n_layers."""
    cfg, block = model.config, model.blocks[0]
    mixer = block.mixer
    layers, directions = cfg.n_layers, len(mixer.convs)
    g = torch.Generator().manual_seed(0)
    h = torch.randn(batch, seq, cfg.d_model, generator=g, requires_grad=True)
    cond = torch.randn(batch, cfg.d_model, generator=g)
    conv_dim = mixer.d_inner + 2 * mixer.d_state
    xbc = torch.randn(batch, seq, conv_dim, generator=g, requires_grad=True)
    z = torch.randn(batch, seq, mixer.d_inner, generator=g)
    y = torch.randn(batch, seq, mixer.d_inner, generator=g, requires_grad=True)
    x = torch.randn(batch * directions, seq, mixer.n_heads, mixer.head_dim, generator=g, requires_grad=True)
    dt = (torch.rand(batch * directions, seq, mixer.n_heads, generator=g) * 0.1).requires_grad_()
    B = torch.randn(batch * directions, seq, mixer.d_state, generator=g, requires_grad=True)
    C = torch.randn(batch * directions, seq, mixer.d_state, generator=g, requires_grad=True)
    A = -torch.exp(mixer.A_log).detach()
    out: Dict[str, float] = {}

    def pre_norm() -> torch.Tensor:
        shift, scale = block.modulation(cond).unsqueeze(1).chunk(2, dim=-1)
        return block.norm(h) * (1 + scale) + shift

    if variant == "baseline":
        def conv() -> torch.Tensor:
            return sum(F.silu(c((xbc.flip(1) if d else xbc).transpose(1, 2))[..., :seq].transpose(1, 2)).sum()
                       for d, c in enumerate(mixer.convs))

        def scan() -> torch.Tensor:
            rows = x.unflatten(0, (batch, directions)), dt.unflatten(0, (batch, directions))
            Bs, Cs = B.unflatten(0, (batch, directions)), C.unflatten(0, (batch, directions))
            D = mixer.D.detach()
            return sum((baseline_mixer.einsum_ssd_scan(rows[0][:, d], rows[1][:, d], A[d], Bs[:, d], Cs[:, d],
                                                       mixer.chunk_size) + rows[0][:, d] * D[d][:, None]).sum()
                       for d in range(directions))
    else:
        def conv() -> torch.Tensor:
            return F.silu(causal_conv(xbc, [c.weight for c in mixer.convs], [c.bias for c in mixer.convs]))

        def scan() -> torch.Tensor:
            return ssd_scan(x, dt, A.repeat(batch, 1), B, C, mixer.chunk_size, D=mixer.D.detach().repeat(batch, 1))

    out["block: norm + timestep modulation"] = fwd_bwd_ms(pre_norm, repeats) * layers
    out["mixer: in_proj"] = fwd_bwd_ms(lambda: mixer.in_proj(h), repeats) * layers
    out["mixer: depthwise conv + SiLU, all directions"] = fwd_bwd_ms(conv, repeats) * layers
    out["mixer: SSD scan (+ D skip), all directions"] = fwd_bwd_ms(scan, repeats) * layers
    if variant == "baseline":
        def gate() -> torch.Tensor:
            return mixer.out_proj(mixer.norm(y * F.silu(z)))
    else:
        def gate() -> torch.Tensor:
            return mixer.out_proj(mixer.norm.gated(y, z))

    out["mixer: gate + grouped norm + out_proj"] = fwd_bwd_ms(gate, repeats) * layers
    out["mixer: whole"] = fwd_bwd_ms(lambda: mixer(h), repeats) * layers
    tokens = torch.randint(0, cfg.vocab_size, (batch, seq), generator=g)
    t = torch.full((batch,), cfg.diffusion_steps // 2)
    noise = torch.randn(batch, seq, cfg.d_embed, generator=g)
    out["whole model: loss forward + backward"] = fwd_bwd_ms(lambda: model.loss(tokens, t=t, noise=noise)["loss"],
                                                             repeats)
    optimizer = torch.optim.AdamW(model.parameters())
    model.loss(tokens, t=t, noise=noise)["loss"].backward()
    optimizer.step()
    start = time.perf_counter()
    for _ in range(repeats):
        optimizer.step()
    out["optimizer: AdamW step"] = (time.perf_counter() - start) / repeats * 1e3
    optimizer.zero_grad()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", choices=sorted(CONFIGS), default="reference")
    parser.add_argument("--variant", choices=("fp32", "baseline"), default="fp32")
    parser.add_argument("--steps", type=int, default=3, help="profiled steps (default: 3)")
    parser.add_argument("--rows", type=int, default=15, help="operators to list (default: 15)")
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats per part (default: 5)")
    args = parser.parse_args()
    torch.set_num_threads(2)
    config, seq, batch = CONFIGS[args.config]
    torch.manual_seed(0)
    model = DIMBA(config).train()
    if args.variant == "baseline":
        for block in model.blocks:
            block.mixer.forward = types.MethodType(baseline_mixer.mixer_forward, block.mixer)
    optimizer = torch.optim.AdamW(model.parameters())
    tokens = torch.randint(0, config.vocab_size, (batch, seq))

    def step() -> None:
        model.loss(tokens)["loss"].backward()
        optimizer.step()
        optimizer.zero_grad()

    start = time.perf_counter()
    for _ in range(3):
        step()
    step_ms = (time.perf_counter() - start) / 3 * 1e3
    operators = top_operators(step, args.steps, args.rows)
    by_part = parts(model, args.variant, batch, seq, args.repeats)
    model.eval()
    prompt = torch.randint(0, config.vocab_size, (4,))
    sampling = top_operators(lambda: sample_many(model, prompt, seq, 1, list(range(batch))), args.steps, args.rows)
    print(json.dumps({"config": args.config, "variant": args.variant, "batch": batch, "seq_len": seq,
                      "unprofiled_step_ms": step_ms, "operators": operators, "parts_ms_per_step": by_part,
                      "sampling_step_operators": sampling, "torch_version": torch.__version__}, indent=2))


if __name__ == "__main__":
    main()
