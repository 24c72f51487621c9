"""The likelihood bound's estimator on a real checkpoint: its figure and Monte Carlo standard
error under each timestep proposal and sample count, and what a validation costs.

    python bench/bound_estimator.py CKPT [--samples 4,8,16] [--sequences N]
    python bench/bound_estimator.py CKPT --regions 2-10,11-100,101-1000

Evaluates the run's validation split (or its first N windows) and prints one JSON object:
per (proposal, samples): bpb, its standard error, seconds. With --regions: the diffusion term
of each range of timesteps alone (the proposal restricted to it), 8 samples per window.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from dimba.diffusion.bound import bits_per_byte, sequence_bound, timestep_proposal
from dimba.evaluate import data_module_of, text_to_evaluate, training_record
from dimba.io.load import load_model

PROPOSALS = {
    "weight+uniform (default)": (0.5, 0.0, 0.5),
    "uniform in t": (0.0, 0.0, 1.0),
    "log-SNR+uniform": (0.0, 0.5, 0.5),
    "uniform in log-SNR": (0.0, 1.0, 0.0),
}


def regions(model, windows: torch.Tensor, spec: str) -> list:
    """The diffusion term of each range of timesteps alone, in bits per byte."""
    from dimba.diffusion.bound import LN2, diffusion_weights, sequence_bound

    weights = diffusion_weights(model.schedule.alpha_bar)
    out = []
    for part in spec.split(","):
        low, high = (int(x) for x in part.split("-"))
        inside = torch.zeros_like(weights, dtype=torch.bool)
        inside[max(2, low):high + 1] = True
        proposal = torch.zeros_like(weights)
        proposal[inside] = 0.5 * weights[inside] / weights[inside].sum() + 0.5 / int(inside.sum())
        bound = sequence_bound(model, windows, 8, torch.Generator().manual_seed(0), proposal=proposal)
        size = windows.numel()
        out.append({"timesteps": part, "diffusion_bpb": round(float(bound.diffusion.sum()) / LN2 / size, 4),
                    "se": round(float(bound.mc_var.sum()) ** 0.5 / LN2 / size, 4)})
        print(json.dumps(out[-1]), flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--samples", default="4,8,16")
    parser.add_argument("--sequences", type=int, default=0, help="the first N windows (0: all)")
    parser.add_argument("--regions", help="ranges of timesteps, e.g. 2-10,11-100,101-1000")
    args = parser.parse_args()
    model = load_model(args.checkpoint)
    record = training_record(model, Path(args.checkpoint))
    text = text_to_evaluate(model, None, data_module_of(record), int(record["data"]["seq_len"]))
    windows = torch.stack([w for w in text.windows if w.numel() == text.windows[0].numel()])
    if args.sequences:
        windows = windows[:args.sequences]
    n, length = windows.shape
    if args.regions:
        print(json.dumps({"checkpoint": args.checkpoint, "sequences": n, "regions": regions(model, windows, args.regions)}))
        return
    results = []
    for name, mix in PROPOSALS.items():
        proposal = timestep_proposal(model.schedule.alpha_bar, mix)
        for samples in (int(s) for s in args.samples.split(",")):
            started = time.perf_counter()
            bound = sequence_bound(model, windows, samples, torch.Generator().manual_seed(0), proposal=proposal)
            seconds = time.perf_counter() - started
            result = bits_per_byte(bound, torch.full((n,), length), torch.full((n,), length))
            results.append({"proposal": name, "mix": mix, "samples": samples, "bpb": round(result.bpb, 4),
                            "bpb_se": round(result.bpb_se, 4), "seconds": round(seconds, 2)})
            print(json.dumps(results[-1]), flush=True)
    print(json.dumps({"checkpoint": args.checkpoint, "sequences": n, "seq_len": length,
                      "threads": torch.get_num_threads(), "results": results}))


if __name__ == "__main__":
    main()
