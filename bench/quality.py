"""Is DIMBA any good? The three objectives at equal training FLOPs, in bits per byte, with
their samples' quality and sampling speed.

Each run trains exactly as `python train.py objective=NAME growth=early` does (the default
run's model, optimizer, LR schedule, clipping, data order; `growth=early` is the growth the
default run had when these tables were measured, and stays pinned so they keep comparing one
thing), through dimba's `SimpleTrainer`
in process, so the step count can be set to equalise FLOPs: the budget is the FLOPs of the
default run (`objective=diffusion`, 240 steps) times `--budgets`; an objective whose step
costs less (ar: one scan direction, no timestep MLP) gets proportionally more steps, its
growth events at the same fractions of them.

Held-out text: the corpus's validation split (dimba's last 5%), cut in two: the learning
rate of each objective is chosen on `select` (seed 0, a grid around `optim.lr`), and the
figures are read on `report` (seeds 0..n-1 at the chosen rate). The figure is each
objective's own likelihood in bits per byte: the continuous bound, the masked bound (both
`dimba eval`'s estimators) or ar's exact log-likelihood.

Samples (seed 0, chosen rate) are scored by their bits per byte under the best ar model of
the largest budget on that corpus (the judge), their unigram entropy (bits per byte),
their share of distinct 4-grams of bytes, and the share of their words in an English word
list; held-out text gets the same scores, as the line to compare with. Sampling time is per
1,000 generated tokens, one batch of `SAMPLES` sequences.

Corpora: dimba's built-in text (CPython's documentation) and English prose from Debian's
`fortunes` package (fortune-mod's cookie files, BSD licence; /usr/share/games/fortunes);
the word list is Debian's `wamerican` (/usr/share/dict/american-english, SCOWL's licence).
Install both with `apt-get install fortunes wamerican`; nothing is downloaded here.

    python bench/quality.py run [--corpora builtin,english] [--objectives ar,masked,diffusion] [--budgets 1,4] [--seeds 3]
    python bench/quality.py timing      # sampling time per 1,000 tokens, on an idle machine
    python bench/quality.py report      # JSON on stdout, bench/results/quality.{json,md} and plots

Arms (`--objectives`): `ar`, `masked` and `diffusion` as `train.py objective=NAME` trains them
today, and `diffusion[original]`, the continuous recipe before bench/recipe.py changed its
default. Every run is appended to bench/results/quality_runs.jsonl; a restart skips finished
runs, and a run bench/recipe.py already trained with the same resolved config is adopted.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import logging
import re
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Dict, List, Sequence

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import torch  # noqa: E402

from dimba.model.denormals import flush_denormals  # noqa: E402

flush_denormals()  # before torch starts its threads (as the trainers do)

from dimba.checkpointing.atomic_io import write_atomic  # noqa: E402
from dimba.config.schema import Config  # noqa: E402
from dimba.diffusion.bound import bits_per_byte  # noqa: E402
from dimba.growth.schedule import GrowthEvent  # noqa: E402
from dimba.model import DIMBA  # noqa: E402
from dimba.objectives import generate, sequence_bound  # noqa: E402
from dimba.training import steps  # noqa: E402

from flops import count_flops  # noqa: E402

log = logging.getLogger("bench.quality")

OBJECTIVES = ("ar", "masked", "diffusion")  # ar first: the judge comes from it
RESULTS = ROOT / "bench" / "results"
RUNS = RESULTS / "quality_runs.jsonl"
CACHE = ROOT / "bench" / ".cache" / "quality"
FORTUNES = Path("/usr/share/games/fortunes")
LR_GRID = (0.5, 1.0, 2.0)  # times optim.lr
BOUND_SAMPLES = 16  # draws per sequence of the continuous and masked bounds (dimba eval's default)
SAMPLES, SAMPLE_LEN = 16, 128
HELD_OUT_WINDOWS = 96  # per half of the validation split
SAMPLER_STEPS = {"diffusion": (16, 64, 256), "masked": (16, 64, 128), "ar": (1,)}
VERSION = "v1"
ORIGINAL_RECIPE = ("model.embedding_norm=null", "model.x0_estimate=regression")
"""The budget is the FLOPs of the default run as it first was (240 steps of the original continuous
recipe), whatever today's defaults cost: every run of `quality.py` and `recipe.py` compares to it."""
BENCH_GROWTH = "growth=early"
"""The growth of every run here and in bench/recipe.py: the default run's before
bench/frontier_recipes.py chose growing at the end, so the tables stay one measurement."""
ARMS: Dict[str, tuple] = {"ar": ("ar", ()), "masked": ("masked", ()), "diffusion": ("diffusion", ()),
                          "diffusion[original]": ("diffusion", ORIGINAL_RECIPE),
                          "ar[growth=default]": ("ar", ("growth=default",))}
"""What the table compares, by label: each objective as `train.py objective=NAME` trains it
today (grown as `growth=early`), continuous diffusion's original recipe (the default before
bench/recipe.py chose normalised rows and the Bayes estimate) as the line it moved from, and
`ar` grown as the default run grows it (after its last step: d128x4 for every step), the
default run's own recipe since `ar` became the default objective."""


def arm_of(record: Dict[str, Any]) -> str:
    """The label a run is keyed and tabled by (its variant where it has one)."""
    return record.get("variant", record["objective"])


# ---------------------------------------------------------------------- the runs as train.py composes them
def compose(overrides: Sequence[str]) -> Config:
    """The run `python train.py OVERRIDES` would train, as typed, validated config."""
    from hydra import compose as hydra_compose, initialize_config_dir

    from dimba.config.store import register_configs, validate

    register_configs()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return validate(hydra_compose("config", overrides=list(overrides)))


def english_corpus() -> Path:
    """The fortunes, one blank line between cookies (their `%` separators dropped)."""
    target = CACHE / "fortunes.txt"
    if target.is_file():
        return target
    if not FORTUNES.is_dir():
        raise SystemExit(f"{FORTUNES} is missing: apt-get install fortunes")
    cookies = []
    for path in sorted(p for p in FORTUNES.iterdir() if p.is_file() and not p.is_symlink() and not p.suffix):
        text = path.read_text(encoding="utf-8", errors="replace")
        cookies += [c.strip("\n") for c in re.split(r"^%$", text, flags=re.M) if c.strip()]
    CACHE.mkdir(parents=True, exist_ok=True)
    write_atomic(target, lambda tmp: tmp.write_text("\n\n".join(cookies) + "\n", encoding="utf-8"))
    return target


def corpus_overrides(corpus: str) -> List[str]:
    return [] if corpus == "builtin" else ["data=text_files", f"data.files=[{english_corpus()}]"]


def step_flops(config: Config, model_config) -> int:
    """FLOPs of one training step (forward and backward) of `objective` at `model_config`; for a
    self-conditioned model, the expectation over its steps with and without the extra pass."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = DIMBA(model_config)
        batch = torch.randint(0, model_config.vocab_size, (config.data.batch_size, config.data.seq_len))

        def at(step: int) -> int:
            return count_flops(lambda: steps.training_loss(model, batch, config.objective, 0, step)["loss"].backward())

        if not model_config.self_condition:
            return at(0)
        decisions = {}
        for step in range(64):
            decisions.setdefault(steps.self_conditions(model, config.objective, 0, step), step)
        rate = config.objective.self_condition_rate
        return round(rate * at(decisions.get(True, 0)) + (1 - rate) * at(decisions.get(False, 0)))


_FLOPS: Dict[tuple, int] = {}


def run_flops(config: Config, total_steps: int, events: Sequence[GrowthEvent]) -> int:
    """Training FLOPs of `total_steps` steps growing at `events` (a step after an event runs grown)."""
    from dimba.growth.schedule import validate_schedule

    stages = [config.model] + list(validate_schedule(config.model, events))
    bounds = [0] + [e.step for e in events] + [total_steps]
    total = 0
    for stage, (begin, end) in zip(stages, zip(bounds[:-1], bounds[1:])):
        key = (json.dumps(config.objective.to_dict(), sort_keys=True), json.dumps(stage.to_dict(), sort_keys=True))
        if key not in _FLOPS:
            _FLOPS[key] = step_flops(config, stage)
        total += _FLOPS[key] * max(0, end - begin)
    return total


def scaled_plan(config: Config, budget: int) -> tuple:
    """(steps, events) of the default schedule stretched so the run uses `budget` FLOPs."""
    base_steps, base_events = config.trainer.max_steps, list(config.growth.schedule)
    factor = budget / run_flops(config, base_steps, base_events)
    events = [replace(e, step=max(1, round(e.step * factor))) for e in base_events]
    return max(1, round(base_steps * factor)), events


# ---------------------------------------------------------------------- one run
def trainer_for(config: Config, lr: float, total_steps: int, loader, events: Sequence[GrowthEvent] | None = None):
    """dimba's own `SimpleTrainer` for `config` at rate `lr`, planned to `total_steps` (growing at
    `events`, default the config's schedule), with no milestones."""
    from dimba.config.recipe import Recipe
    from dimba.config.training import ProgressiveCheckpointsConfig
    from dimba.training.simple import SimpleTrainer

    growth = config.growth if events is None else replace(config.growth, schedule=list(events))
    recipe = replace(Recipe.from_config(config), optim=replace(config.optim, lr=lr), growth=growth,
                     total_steps=total_steps, progressive_checkpoints=ProgressiveCheckpointsConfig(enabled=False))
    return SimpleTrainer(train_loader=loader, recipe=recipe, max_steps=total_steps,
                         gradient_clip_val=config.trainer.gradient_clip_val, device="cpu", log_every_n_steps=50)


def train(config: Config, lr: float, total_steps: int, events: Sequence[GrowthEvent]) -> tuple:
    """Train through `trainer_for`; returns (model, data module, wall seconds)."""
    from dimba.run import build_data

    data = build_data(config)
    trainer = trainer_for(config, lr, total_steps, data.train_dataloader(), events)
    started = time.perf_counter()
    trainer.train()
    return trainer.model, data, time.perf_counter() - started


def held_out(data) -> Dict[str, tuple]:
    """(windows, byte counts) of the two halves of the validation split, at most
    `HELD_OUT_WINDOWS` of each, evenly spaced (the continuous and masked bounds cost 18
    forwards a window)."""
    windows = torch.stack([data.val_set[i] for i in range(len(data.val_set))])
    half = windows.shape[0] // 2
    tokenizer = data.tokenizer

    def spread(part: torch.Tensor) -> torch.Tensor:
        picks = torch.linspace(0, part.shape[0] - 1, min(HELD_OUT_WINDOWS, part.shape[0])).round().long().unique()
        return part[picks]

    parts = {"select": spread(windows[:half]), "report": spread(windows[half:2 * half])}
    return {name: (w, torch.tensor([tokenizer.byte_length(r.tolist()) for r in w], dtype=torch.float64))
            for name, w in parts.items()}


def bpb(model, windows: torch.Tensor, byte_counts: torch.Tensor) -> Dict[str, float]:
    bound = sequence_bound(model, windows, BOUND_SAMPLES, torch.Generator().manual_seed(0))
    result = bits_per_byte(bound, torch.full((windows.shape[0],), windows.shape[1]), byte_counts, sampled=True)
    return {"bpb": result.bpb, "se": result.bpb_se, "windows": windows.shape[0]}


def draw_samples(model, objective: str, samplers: Sequence[str] = ("ddim",)) -> List[Dict[str, Any]]:
    out = []
    for sampler in samplers if objective == "diffusion" else (None,):
        for n_steps in SAMPLER_STEPS[objective]:
            started = time.perf_counter()
            result = generate(model, torch.tensor([], dtype=torch.long), SAMPLE_LEN, n_steps, list(range(SAMPLES)),
                              sampler=sampler)
            seconds = time.perf_counter() - started
            out.append({"steps": n_steps, "forwards": result["forwards"], "seconds": seconds,
                        "s_per_1000_tokens": seconds / (SAMPLES * SAMPLE_LEN / 1000), "ids": result["ids"].tolist(),
                        **({"sampler": sampler} if sampler else {})})
    return out


def run_key(corpus: str, objective: str, budget: float, lr: float, seed: int) -> str:
    return f"{VERSION}|{corpus}|{objective}|x{budget:g}|lr{lr:g}|seed{seed}"


def one_run(corpus: str, objective: str, budget: float, lr: float, seed: int, with_samples: bool,
            extra: Sequence[str] = (), label: str = "", samplers: Sequence[str] = ("ddim",),
            halves: Sequence[str] = ("select", "report")) -> Dict[str, Any]:
    """One run of `objective` (plus the Hydra overrides `extra`, keyed as `label`) at `budget`
    times the default run's FLOPs, its bound read on the held-out `halves`."""
    overrides = [f"objective={objective}", f"seed={seed}", BENCH_GROWTH, *corpus_overrides(corpus), *extra]
    config = compose(overrides)
    default = compose(["objective=diffusion", BENCH_GROWTH, *ORIGINAL_RECIPE, *corpus_overrides(corpus)])
    flops_budget = int(budget * run_flops(default, default.trainer.max_steps, list(default.growth.schedule)))
    total_steps, events = scaled_plan(config, flops_budget)
    log.info("%s %s x%g lr %g seed %d: %d steps, growth at %s", corpus, objective, budget, lr, seed, total_steps,
             [e.step for e in events])
    model, data, wall = train(config, lr, total_steps, events)
    model.eval()
    record: Dict[str, Any] = {
        "key": run_key(corpus, label or objective, budget, lr, seed), "corpus": corpus, "objective": objective,
        **({"variant": label} if label else {}),
        "budget": budget, "lr": lr, "seed": seed, "steps": total_steps, "growth_steps": [e.step for e in events],
        "flops": run_flops(config, total_steps, events), "budget_flops": flops_budget, "train_wall_s": wall,
        "params": sum(p.numel() for p in model.parameters()), "overrides": overrides}
    started = time.perf_counter()
    record["heldout"] = {name: bpb(model, w, b) for name, (w, b) in held_out(data).items() if name in halves}
    record["eval_wall_s"] = time.perf_counter() - started
    if with_samples:
        record["samples"] = draw_samples(model, objective, samplers)
    if objective == "ar":  # a judge candidate
        CACHE.mkdir(parents=True, exist_ok=True)
        torch.save({"config": model.config.to_dict(), "state": model.state_dict()}, CACHE / f"{record['key'].replace('|', '_')}.pt")
    log.info("  -> %s", {k: round(v["bpb"], 4) for k, v in record["heldout"].items()})
    return record


def load_runs(path: Path = RUNS) -> Dict[str, Dict[str, Any]]:
    """The runs of a runs file by key (a later line of a key replaces an earlier one)."""
    if not path.exists():
        return {}
    return {r["key"]: r for r in (json.loads(line) for line in path.read_text().splitlines() if line.strip())}


def append_run(record: Dict[str, Any], path: Path = RUNS) -> None:
    """Rewrite the runs file atomically with `record` appended, under a lock: several `run`
    processes may append at once."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        lines = path.read_text().splitlines() if path.exists() else []
        lines.append(json.dumps(record, separators=(",", ":")))
        write_atomic(path, lambda tmp: tmp.write_text("\n".join(lines) + "\n"))


def same_run_elsewhere(corpus: str, arm: str, budget: float, lr: float, seed: int,
                       halves: Sequence[str]) -> Dict[str, Any] | None:
    """A run of bench/recipe.py that trained exactly this config (its overrides resolve to the
    same `Config`), read on `halves`: one training, two tables."""
    objective, extra = ARMS[arm]
    wanted = None
    for record in load_runs(RESULTS / "recipe_runs.jsonl").values():
        if ((record["corpus"], record["budget"], record["lr"], record["seed"]) != (corpus, budget, lr, seed)
                or not all(h in record["heldout"] for h in halves)):
            continue
        if wanted is None:
            wanted = compose([f"objective={objective}", f"seed={seed}", BENCH_GROWTH, *corpus_overrides(corpus), *extra])
        if compose(record["overrides"]) == wanted:
            return record
    return None


def ensure(corpus: str, arm: str, budget: float, lr: float, seed: int, with_samples: bool) -> Dict[str, Any]:
    runs = load_runs()
    key = run_key(corpus, arm, budget, lr, seed)
    if key in runs and (runs[key].get("samples") or not with_samples):
        return runs[key]
    objective, extra = ARMS[arm]
    twin = None if with_samples else same_run_elsewhere(corpus, arm, budget, lr, seed, ("report",))
    if twin is not None:
        log.info("%s: the same config as %s (bench/recipe.py's runs): adopted", key, twin["key"])
        record = {**twin, "key": key, "adopted_from": twin["key"]}
        record.pop("variant", None)
        if arm != objective:
            record["variant"] = arm
        append_run(record)
        return record
    record = one_run(corpus, objective, budget, lr, seed, with_samples, extra=extra,
                     label=arm if arm != objective else "")
    append_run(record)
    return record


def chosen_lr(corpus: str, arm: str, train: bool = True) -> float | None:
    """The grid's rate with the lowest `select` figure on seed 0 at the 1x budget on `corpus`
    (the grid's missing runs trained first; with `train=False`, None if any is missing)."""
    base = compose([f"objective={ARMS[arm][0]}"]).optim.lr
    if train:
        runs = [ensure(corpus, arm, 1.0, base * m, 0, True) for m in LR_GRID]
    else:
        found = load_runs()
        runs = [found.get(run_key(corpus, arm, 1.0, base * m, 0)) for m in LR_GRID]
        if any(r is None for r in runs):
            return None
    return min(runs, key=lambda r: r["heldout"]["select"]["bpb"])["lr"]


def cmd_run(args: argparse.Namespace) -> None:
    unknown = [arm for arm in args.objectives if arm not in ARMS]
    if unknown:
        raise SystemExit(f"--objectives: unknown {', '.join(unknown)}; accepted: {', '.join(ARMS)}")
    for budget in args.budgets:
        for corpus in args.corpora:
            for arm in args.objectives:
                lr = chosen_lr(args.tune_on or corpus, arm)
                seeds = range(args.seeds if budget == min(args.budgets) else args.seeds_large)
                for seed in seeds:
                    ensure(corpus, arm, budget, lr, seed, with_samples=seed == 0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run")
    run.add_argument("--corpora", default="builtin,english", type=lambda s: s.split(","))
    run.add_argument("--budgets", default="1,4", type=lambda s: [float(x) for x in s.split(",")])
    run.add_argument("--objectives", default=",".join(ARMS), type=lambda s: s.split(","),
                     help="objectives, and diffusion[original] (the continuous recipe before its ablation)")
    run.add_argument("--seeds", type=int, default=3, help="seeds at the smallest budget")
    run.add_argument("--seeds-large", type=int, default=3, help="seeds at the larger budgets")
    run.add_argument("--tune-on", default=None, help="tune every corpus's rates on this corpus's grid (default: its own)")
    sub.add_parser("timing", help="sampling time per 1,000 tokens of each objective, on an idle machine")
    sub.add_parser("report")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    if args.command == "run":
        cmd_run(args)
    else:
        import quality_report

        (quality_report.cmd_timing if args.command == "timing" else quality_report.cmd_report)(args)


if __name__ == "__main__":
    main()
