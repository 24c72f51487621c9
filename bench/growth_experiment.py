"""Growth vs. scratch, fairly: FLOPs for a grown run to reach the final size's scratch loss.

Per seed, scratch (the final architecture, cosine schedule, `scratch_steps` steps) trains to
its budget B and sets the target: its final validation loss on each held-out split. Every
other run trains until it is at or below the target on both splits, or until it has used
B training FLOPs, whichever comes first. FLOPs-to-target = its training FLOPs at the first
evaluation at or below the target, divided by B. Evaluations lie on a FLOP grid (B/25,
B/100 once within 3% of a target, plus before/after each growth and 4 and 16 steps after
it); their FLOPs and time are counted apart from training. After reaching the target a run
trains 0.03 B further, to show whether it stays there (`smoothed_flops_to_target`).

Splits: dimba's validation split cut in two halves, `select` (the grid is ranked on it) and
`report` (the confirmation's figures). Recipes are defined in `growth_recipes.py`.

Phases (each run appends one JSON line to bench/results/growth_experiment_runs.jsonl and a
restart skips finished runs; `pack` folds those files into growth_experiment_runs.jsonl.xz,
the one file of per-run curves the repository keeps):

    python bench/growth_experiment.py grid --seeds 10                # every grid recipe
    python bench/growth_experiment.py grid --seeds 11 --recipes top:6  # the best 6 on a 2nd seed
    python bench/growth_experiment.py confirm --seeds 0,1,2 --recipes 'NAME'   # scratch (cosine, wsd), the winner
    python bench/growth_experiment.py confirm --scale grid ...        # the same on fresh seeds at the grid's sizes
    python bench/growth_experiment.py report                          # summary JSON + plots from the runs
    python bench/growth_experiment.py pack                            # loose runs files -> the .xz archive

`--scratch-lrs 0.002,0.008,...` makes a phase of its own (`grid+lr`, `confirm@grid+lr`):
scratch trains on cosine and on wsd at each peak rate, and the target (`split@best`) is the
lowest final loss among them, so growth is measured against a scratch baseline whose rate
was tuned as well as the grown run's (a recipe sets its own with `+lr0.008`). Baselines an
earlier phase of the same sizes and seed already trained are taken from it, not run again.

Run from the repo root, one thread (OMP_NUM_THREADS=1). Prints one JSON object on stdout for
`report`; logs go to stderr.
"""

from __future__ import annotations

import argparse
import json
import logging
import lzma
import math
import os
import sys
import time
from dataclasses import asdict, replace
from fnmatch import fnmatch
from pathlib import Path
from typing import Any, Dict, List, Tuple

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

from dimba.checkpointing.atomic_io import write_atomic  # noqa: E402
from dimba.config.lr import SCHEDULE_KINDS  # noqa: E402
from dimba.data.datamodule import TextDataModule  # noqa: E402
from dimba.model import DIMBA, DIMBAConfig  # noqa: E402

from flops import count_flops, training_step_flops  # noqa: E402
from growth_eval import build_evalsets, evaluate  # noqa: E402
from growth_recipes import (SCALES, SCRATCH, Recipe, Scale, grid_recipes, parse_recipe, plan_steps,  # noqa: E402
                            scratch_baselines, with_horizon)
from growth_runner import Plan, Runner, finish_points  # noqa: E402

log = logging.getLogger("bench.growth_experiment")

SEQ_LEN, BATCH, VERSION = 128, 16, "v1"
RESULTS = Path(__file__).resolve().parent / "results"
RUNS = RESULTS / "growth_experiment_runs.jsonl"
RUNS_GLOB = "growth_experiment_runs*.jsonl"  # every loose runs file the experiment reads
ARCHIVE = RESULTS / "growth_experiment_runs.jsonl.xz"  # the finished runs, packed (`pack`)
COARSE, FINE, FINE_MARGIN, AFTER_CROSSING = 25, 100, 0.03, 0.03
SCRATCH_WSD = Recipe("scratch", schedule="wsd")
TUNED = "+lr"  # phase suffix: scratch at several peak rates, the target the best of them
BASELINES = {"grid": [SCRATCH], "confirm": [SCRATCH, SCRATCH_WSD]}  # trained to the full budget, no target


class Flops:
    """Training-step and per-sample evaluation FLOPs per architecture, counted once."""

    def __init__(self) -> None:
        self.train: Dict[str, int] = {}
        self.eval: Dict[str, int] = {}

    @staticmethod
    def key(config: DIMBAConfig) -> str:
        return f"d{config.d_model}xL{config.n_layers}"

    def _count(self, config: DIMBAConfig) -> None:
        with torch.random.fork_rng():
            torch.manual_seed(0)
            model = DIMBA(config)
            tokens = torch.randint(0, config.vocab_size, (BATCH, SEQ_LEN))
            t, noise = torch.randint(1, config.diffusion_steps + 1, (BATCH,)), torch.randn(BATCH, SEQ_LEN, config.d_embed)
            self.train[self.key(config)] = training_step_flops(model, tokens, t, noise)
            probe = build_evalsets(tokens, 1, config.diffusion_steps, config.d_embed)[0]
            self.eval[self.key(config)] = count_flops(lambda: evaluate(model, probe)) // probe.tokens.shape[0]

    def step(self, config: DIMBAConfig) -> int:
        if self.key(config) not in self.train:
            self._count(config)
        return self.train[self.key(config)]

    def per_eval_sample(self, config: DIMBAConfig) -> int:
        self.step(config)
        return self.eval[self.key(config)]


def runs_texts() -> List[str]:
    """The packed archive first, then every loose runs file (one per concurrent process, `--runs`)."""
    texts = [lzma.open(ARCHIVE, "rt", encoding="utf-8").read()] if ARCHIVE.exists() else []
    return texts + [path.read_text() for path in sorted(RESULTS.glob(RUNS_GLOB))]


def load_runs() -> Dict[str, Dict[str, Any]]:
    """Every run in the archive and every runs file (a later line of a key replaces an earlier one)."""
    runs = {}
    for text in runs_texts():
        for line in text.splitlines():
            if line.strip():
                record = json.loads(line)
                runs[record["key"]] = record
    return runs


def pack() -> Path:
    """Fold the loose runs files into the one compressed archive, in reading order, and remove them."""
    loose = sorted(RESULTS.glob(RUNS_GLOB))
    text = "".join(t if t.endswith("\n") else t + "\n" for t in runs_texts() if t.strip())

    def write(tmp: Path) -> None:
        with lzma.open(tmp, "wt", encoding="utf-8", preset=9) as out:
            out.write(text)

    write_atomic(ARCHIVE, write)
    for path in loose:
        path.unlink()
    return ARCHIVE


def append_run(record: Dict[str, Any], path: Path = RUNS) -> None:
    """Rewrite the whole file atomically: a crash never leaves half a line."""
    lines = path.read_text().splitlines() if path.exists() else []
    lines.append(json.dumps(record, separators=(",", ":")))
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, lambda tmp: tmp.write_text("\n".join(lines) + "\n"))


def run_key(phase: str, scale: Scale, recipe: Recipe, seed: int) -> str:
    return f"{VERSION}|{phase}|{scale.name}:{scale.scratch_steps}|{recipe.name}|seed{seed}"


def train_one(phase: str, scale: Scale, recipe: Recipe, seed: int, draws: int, flops: Flops,
              targets: Dict[str, float] | None) -> Dict[str, Any]:
    data = TextDataModule(seq_len=SEQ_LEN, batch_size=BATCH, seed=seed)
    data.setup()
    val = torch.stack([data.val_set[i] for i in range(len(data.val_set))])
    evalsets = build_evalsets(val, draws, scale.final.diffusion_steps, scale.final.d_embed)
    start, events, total = plan_steps(recipe, scale, flops.step)
    budget = scale.scratch_steps * flops.step(scale.final)
    plan = Plan(start, events, recipe.schedule, total, recipe.decay_fraction, recipe.rewarm_steps, recipe.lr_restart,
                recipe.lr_width_exponent, recipe.lr, budget, budget / COARSE, budget / FINE, FINE_MARGIN, targets, AFTER_CROSSING * budget)
    log.info("%s %s seed %d: start d%d x %d, events %s, schedule over %d steps, budget %.3e FLOPs",
             phase, recipe.name, seed, start.d_model, start.n_layers,
             [(e.step, e.op, e.size, e.mode) for e in events], total, budget)
    runner = Runner(plan, seed, data.train_dataloader(), evalsets, flops.step, flops.per_eval_sample)
    trace, train_wall = runner.run()
    crossing = {name: {**c, "ratio": c["flops"] / budget, "previous_ratio": c["previous_eval_flops"] / budget}
                for name, c in trace.crossing.items()}
    last = trace.points[-1]
    return {
        "key": run_key(phase, scale, recipe, seed), "phase": phase, "scale": asdict(scale), "recipe": recipe.to_dict(),
        "seed": seed, "draws": draws, "sequences_per_split": evalsets[0].sequences,
        "plan": {"start": {"d_model": start.d_model, "n_layers": start.n_layers}, "events": [asdict(e) for e in events],
                 "total_steps": total, "budget_flops": budget},
        "targets": targets, "points": finish_points(trace, keep_final_samples=targets is None),
        "train_loss": trace.train_loss, "lr": trace.lr, "growth": trace.growth, "crossing": crossing,
        "final": {"step": last["step"], "flops": last["flops"], "loss": last["loss"]},
        "train_flops": runner.flops, "eval_flops": trace.eval_flops,
        "wall_train_s": round(train_wall, 1), "wall_eval_s": round(trace.eval_wall_s, 1),
        "flops_per_step": dict(flops.train), "eval_flops_per_sample": dict(flops.eval),
        "num_threads": torch.get_num_threads(), "torch": torch.__version__, "finished_at": time.time(),
    }


def scratch_targets(runs: Dict[str, Dict[str, Any]], phase: str, scale: Scale, seed: int) -> Dict[str, float]:
    """Scratch's (cosine, optim.lr's default) final loss per split; with other scratch runs
    trained to the full budget (wsd, other peak rates), also `split@best`: the lowest of them
    all, the strongest scratch baseline this seed has."""
    targets = dict(runs[run_key(phase, scale, SCRATCH, seed)]["final"]["loss"])
    full = [r for r in runs.values() if (r["phase"], r["seed"], r["scale"], r["recipe"]["ops"], r["targets"])
            == (phase, seed, asdict(scale), "scratch", None)]
    if len(full) > 1:  # a rate that diverged (a non-finite loss) sets no target
        targets.update({f"{split}@best": min(v for r in full if math.isfinite(v := r["final"]["loss"][split]))
                        for split in list(targets)})
    return targets


def choose(spec: str, runs: Dict[str, Dict[str, Any]], label: str = "grid") -> List[Recipe]:
    """Recipes from `spec`, items joined by ';': `all` (stage 1 of the grid), `top:K` (the K
    best recipes so far of this phase's grid on the select split), `top:K@h1,h2` (those K at
    other horizons), or a recipe name (growth_recipes.parse_recipe)."""
    from growth_analysis import grid_of, headline_key, rank_grid

    chosen: List[Recipe] = []
    for item in spec.split(";"):
        if item == "all":
            chosen += grid_recipes()
        elif item.startswith("top:"):
            count, _, horizons = item[4:].partition("@")
            grid = grid_of(label)
            growing = [n for n in rank_grid(runs.values(), headline_key(runs.values(), grid), grid)
                       if not n.startswith(("scratch", "small"))][: int(count)]
            best = [parse_recipe(n) for n in growing]
            chosen += [with_horizon(r, float(h)) for r in best for h in horizons.split(",")] if horizons else best
        else:
            chosen.append(parse_recipe(item))
    return list(dict.fromkeys(chosen))


def run_phase(phase: str, seeds: List[int], recipes_arg: str, draws: int, scratch_steps: int = 0,
              scale_name: str = "", runs_file: Path = RUNS, cosine_only: bool = False,
              scratch_lrs: List[float] | None = None, scratch_schedules: Tuple[str, ...] = ("cosine", "wsd")) -> None:
    scale, flops = SCALES[scale_name or phase], Flops()
    if scratch_steps:
        scale = replace(scale, scratch_steps=scratch_steps)
    baselines = [SCRATCH] if cosine_only else BASELINES[phase]
    label = phase if scale.name == phase else f"{phase}@{scale.name}"  # e.g. confirm@grid: fresh seeds, grid sizes
    if scratch_lrs:  # a phase of its own: every run of it is measured against the LR-tuned scratch
        baselines = [SCRATCH] + [r for r in scratch_baselines(scratch_lrs, scratch_schedules) if r != SCRATCH]
        label += TUNED
    recipes = baselines + [r for r in choose(recipes_arg, load_runs(), label) if r not in baselines]
    log.info("%s on seeds %s: %s", label, seeds, [r.name for r in recipes])
    for seed in seeds:
        for recipe in recipes:
            runs = load_runs()
            if run_key(label, scale, recipe, seed) in runs:
                log.info("done already: %s seed %d", recipe.name, seed)
                continue
            earlier = runs.get(run_key(label.removesuffix(TUNED), scale, recipe, seed))
            if recipe in baselines and label.endswith(TUNED) and earlier is not None and earlier["targets"] is None:
                # the same baseline, trained deterministically by the untuned phase: not run twice
                append_run({**earlier, "key": run_key(label, scale, recipe, seed), "phase": label,
                            "copied_from": earlier["key"]}, runs_file)
                log.info("taken from %s: %s seed %d", earlier["phase"], recipe.name, seed)
                continue
            targets = None if recipe in baselines else scratch_targets(runs, label, scale, seed)
            record = train_one(label, scale, recipe, seed, draws, flops, targets)
            append_run(record, runs_file)
            log.info("finished %s seed %d: crossing %s, train %.0f s, eval %.0f s", recipe.name, seed,
                     {k: round(v["ratio"], 4) for k, v in record["crossing"].items()},
                     record["wall_train_s"], record["wall_eval_s"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("phase", choices=["grid", "confirm", "report", "pack"])
    parser.add_argument("--seeds", default="10", help="comma-separated training seeds")
    parser.add_argument("--recipes", default="all", help="all | top:K | names joined by ';' (see growth_recipes.py)")
    parser.add_argument("--draws", type=int, default=2, help="(t, noise) draws per held-out sequence")
    parser.add_argument("--scale", default="", choices=["", *SCALES], help="model sizes (default: the phase's own)")
    parser.add_argument("--runs", default=RUNS.name, help=f"runs file under bench/results, named {RUNS_GLOB} "
                        "(one per concurrent process; every such file is read)")
    parser.add_argument("--cosine-scratch-only", action="store_true",
                        help="confirm against cosine scratch alone (no wsd scratch run: half the baseline time)")
    parser.add_argument("--scratch-steps", type=int, default=0, help="override the scale's scratch budget (smoke tests)")
    parser.add_argument("--scratch-lrs", default="", help="comma-separated peak rates: scratch runs on cosine and wsd at "
                        "each, and the target is the best of them (a phase of its own, named PHASE+lr)")
    parser.add_argument("--scratch-schedules", default="cosine,wsd", help="the schedules of --scratch-lrs' runs")
    args = parser.parse_args()
    if args.phase not in ("report", "pack"):  # every argument checked before anything is set up or trains
        lrs, schedules = checked_sweep(parser, args.scratch_lrs, args.scratch_schedules)
        checked_recipes(parser, args.recipes)
        seeds = checked_seeds(parser, args.seeds)
        if not fnmatch(args.runs, RUNS_GLOB):  # a file the next run would not read: its targets would be missing
            parser.error(f"--runs {args.runs!r}: accepted: a file name matching {RUNS_GLOB} (in bench/results)")
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    if args.phase == "pack":
        print(pack())
        return
    if args.phase == "report":
        from growth_analysis import write_report

        print(json.dumps(write_report(list(load_runs().values()), RESULTS), indent=2))
        return
    run_phase(args.phase, seeds, args.recipes, args.draws, args.scratch_steps,
              args.scale, RESULTS / args.runs, args.cosine_scratch_only, lrs, schedules)


def checked_recipes(parser: argparse.ArgumentParser, spec: str) -> None:
    """Every item of --recipes well-formed (`choose` reads them later, after the baselines train)."""
    for item in spec.split(";"):
        if item.startswith("top:"):
            count, at, horizons = item[4:].partition("@")
            # a horizon as a recipe name writes it (0.6, not 0.60): another spelling would name a run already done
            if not (count.isdigit() and int(count) >= 1 and (not at or all(
                    _is_number(h) and math.isfinite(float(h)) and float(h) > 0 and f"{float(h):g}" == h
                    for h in horizons.split(",")))):
                parser.error(f"--recipes item {item!r}: accepted: top:K or top:K@H,H,... "
                             "(K a positive count, H horizons > 0 written as in a recipe name, e.g. top:3@0.5,0.8)")
        elif item != "all":
            try:
                parse_recipe(item)
            except ValueError as error:
                parser.error(f"--recipes: {error}")


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def checked_seeds(parser: argparse.ArgumentParser, seeds: str) -> List[int]:
    """--seeds as integers, or one line naming the bad value."""
    items = seeds.split(",")
    if not all(item.isdigit() for item in items):
        parser.error(f"--seeds {seeds!r}: accepted: non-negative integers joined by ',', e.g. 0,1,2")
    return [int(item) for item in items]


def checked_sweep(parser: argparse.ArgumentParser, lrs: str, schedules: str) -> Tuple[List[float] | None, Tuple[str, ...]]:
    """--scratch-lrs and --scratch-schedules, or one line naming the bad value."""
    kinds = tuple(schedules.split(","))
    if any(kind not in SCHEDULE_KINDS for kind in kinds):
        parser.error(f"--scratch-schedules {schedules!r}: accepted: names from {', '.join(SCHEDULE_KINDS)}, joined by ','")
    if not lrs:
        return None, kinds
    try:
        rates = [float(v) for v in lrs.split(",")]
    except ValueError:
        rates = []
    if not rates or not all(math.isfinite(r) and r > 0 for r in rates):
        parser.error(f"--scratch-lrs {lrs!r}: accepted: positive numbers joined by ',', e.g. 0.002,0.008")
    return rates, kinds


if __name__ == "__main__":
    main()
