"""Which parts of the continuous recipe matter for a Mamba-2 denoiser? Each option of
`objective=diffusion` alone against the original recipe (uniform t, MSE + CE, free rows,
regression x0: the default until this bench chose normalised rows and the Bayes estimate),
and the best combination, in held-out bits per byte at equal training FLOPs.

Every run is a `bench/quality.py` run (the default run's model, growth at the same
fractions, optimizer, clipping and data; the budget is the default run's FLOPs times
`--budgets`, so an option that costs more per step, self-conditioning's extra no-gradient
pass, gets fewer steps) with the variant's Hydra overrides added. The learning rate is the
one `bench/quality.py` chose for the original recipe on the built-in data (its grid,
seed 0, `select` half), for every variant: `--tune` runs the grid for the named variants
too. Figures are read on the `report` half of the validation split.

    python bench/recipe.py run [--variants original,bound,...] [--seeds 3] [--budgets 1] [--samples original,bayes]
    python bench/recipe.py report     # JSON on stdout, bench/results/recipe.{json,md}

Runs are appended to bench/results/recipe_runs.jsonl; a restart skips finished runs. The
samples (seed 0 of the variants in `--samples`, DDIM and ancestral, the step counts of
`bench/quality.py`) are scored by `bench/quality_report.py`'s judge and word list.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any, Dict, List

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

import quality  # noqa: E402


log = logging.getLogger("bench.recipe")

RESULTS = ROOT / "bench" / "results"
RUNS = RESULTS / "recipe_runs.jsonl"
VARIANTS: Dict[str, List[str]] = {
    "original": [],
    "bound": ["objective.weighting=bound"],
    "min_snr": ["objective.weighting=min_snr"],
    "zero_snr": ["model.noise_schedule=cosine_zero_snr"],
    "norm": ["model.embedding_norm=8.0"],
    "softmax": ["model.x0_estimate=softmax"],
    "self_cond": ["model.self_condition=true"],
    "learned": ["objective.weighting=bound", "model.noise_schedule=learned"],
    "bayes": ["model.embedding_norm=8.0", "model.x0_estimate=bayes"],
}
"""Each change alone (`learned` trains through the bound, so it is `bound` plus the schedule;
`bayes` needs rows of one norm, so it is `norm` plus the estimate). `norm` rescales every row to sqrt(d_embed) = 8: one per dimension,
the scale the embeddings start at and the cosine schedule assumes."""
SAMPLERS = ("ddim", "ancestral")


ORIGINAL = {"objective.weighting": "uniform", "model.noise_schedule": "cosine", "model.embedding_norm": "null",
            "model.x0_estimate": "regression", "model.self_condition": "false"}
"""The original recipe, pinned under every variant: `original` means it whatever the defaults are."""


def own_overrides(variant: str) -> List[str]:
    """A variant's own overrides: a name of VARIANTS, or several joined by `+` (a combination)."""
    out: List[str] = []
    for part in variant.split("+"):
        if part not in VARIANTS:
            raise SystemExit(f"unknown variant {part!r}: {', '.join(VARIANTS)} (combine with +)")
        out += VARIANTS[part]
    return out


def overrides_of(variant: str) -> List[str]:
    """The run's overrides: the original recipe, with the variant's own options in its place."""
    values = dict(ORIGINAL)
    values.update(item.split("=", 1) for item in own_overrides(variant))
    return [f"{key}={value}" for key, value in values.items()]


def load_runs() -> Dict[str, Dict[str, Any]]:
    return quality.load_runs(RUNS)


def ensure(variant: str, budget: float, lr: float, seed: int, with_samples: bool, tuned: bool) -> Dict[str, Any]:
    key = quality.run_key("builtin", f"diffusion[{variant}]", budget, lr, seed)
    runs = load_runs()
    if key in runs and (runs[key].get("samples") or not with_samples):
        return runs[key]
    record = quality.one_run("builtin", "diffusion", budget, lr, seed, with_samples, extra=overrides_of(variant),
                             label=f"diffusion[{variant}]", samplers=SAMPLERS,
                             halves=("select", "report") if tuned else ("report",))
    quality.append_run(record, RUNS)
    return record


def base_lr() -> float:
    """The rate bench/quality.py chose for the original recipe (`diffusion[original]`) on the built-in data."""
    return quality.chosen_lr("builtin", "diffusion[original]")


def chosen_rate(variant: str, lr: float) -> float:
    """The rate with the lowest `select` figure among a tuned variant's seed-0 runs (else `lr`)."""
    grid = [r for r in load_runs().values() if r.get("variant") == f"diffusion[{variant}]" and r["seed"] == 0
            and r["budget"] == 1.0 and "select" in r["heldout"]]
    return min(grid, key=lambda r: r["heldout"]["select"]["bpb"])["lr"] if len(grid) > 1 else lr


def cmd_run(args: argparse.Namespace) -> None:
    for variant in args.variants:
        own_overrides(variant)  # an unknown name stops here, before any training
    stray = [v for v in [*(args.samples or []), *args.tune] if v not in args.variants]
    if stray:
        raise SystemExit(f"--samples/--tune name {', '.join(stray)}, not among --variants ({', '.join(args.variants)})")
    samples = ["original"] if args.samples is None else args.samples
    lr = base_lr()
    for budget in args.budgets:
        for seed in (args.only_seeds or range(args.seeds)):
            for variant in args.variants:
                tuned = variant in args.tune
                rates = [lr * m for m in quality.LR_GRID] if (tuned and seed == 0) else [chosen_rate(variant, lr)]
                for rate in rates:
                    ensure(variant, budget, rate, seed, with_samples=seed == 0 and variant in samples, tuned=tuned)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run")
    run.add_argument("--variants", default=",".join(VARIANTS), type=lambda s: s.split(","))
    run.add_argument("--budgets", default="1", type=lambda s: [float(x) for x in s.split(",")])
    run.add_argument("--seeds", type=int, default=3)
    run.add_argument("--only-seeds", default="", type=lambda s: [int(x) for x in s.split(",") if x],
                     help="run these seeds only (a second process sharing the work)")
    run.add_argument("--samples", default=None, type=lambda s: [x for x in s.split(",") if x and x != "none"],
                     help="variants to draw samples of (default: original; none for no samples)")
    run.add_argument("--tune", default="", type=lambda s: [x for x in s.split(",") if x],
                     help="variants whose rate is tuned on the grid (seed 0)")
    sub.add_parser("report")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    if args.command == "run":
        cmd_run(args)
    else:
        import recipe_report

        recipe_report.cmd_report(args)


if __name__ == "__main__":
    main()
