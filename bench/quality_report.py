"""The report of `bench/quality.py`: the runs' figures per objective, their samples scored, the
tables (bench/results/quality.{json,md}) and the two plots.

Samples are scored by their bits per byte under the best ar model of the largest budget on
that corpus (the judge), their unigram entropy (bits per byte), their share of distinct
4-grams of bytes, and the share of their words in Debian's `wamerican` word list; held-out
text gets the same scores, as the line to compare with.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import time
from collections import Counter
from pathlib import Path
from typing import Any, Dict, List, Sequence

import torch

from dimba.checkpointing.atomic_io import write_atomic
from dimba.diffusion.bound import bits_per_byte
from dimba.model import DIMBA
from dimba.objectives import sequence_bound

from quality import (ARMS, BENCH_GROWTH, CACHE, LR_GRID, OBJECTIVES, RESULTS, SAMPLES, BOUND_SAMPLES, SAMPLE_LEN, compose,
                     arm_of, corpus_overrides, held_out, load_runs)

WORDS = Path("/usr/share/dict/american-english")
COMMAND = ("python bench/quality.py run --budgets 1,4 --seeds 3 --seeds-large 3 --tune-on builtin && "
           "python bench/quality.py timing && python bench/quality.py report")


# ---------------------------------------------------------------------- scoring samples
TIMING = RESULTS / "quality_timing.json"
TIMING_REPEATS = 1


def cmd_timing(args: argparse.Namespace) -> None:
    """Sampling seconds per 1,000 tokens of each objective's final-size network, on an idle
    machine: the median of `TIMING_REPEATS` batches of `SAMPLES` x `SAMPLE_LEN` tokens. The
    weights do not change the work (masked unmasking draws its reveals independently of the
    network, so it skips the same steps), so a freshly built network of the trained size
    times what the trained one would; the runs' own timings shared the machine with others."""
    from dimba.growth.schedule import validate_schedule
    from dimba.objectives import generate

    from quality import SAMPLER_STEPS

    timings: Dict[str, Dict[str, Any]] = {}
    for objective in OBJECTIVES:
        config = compose([f"objective={objective}", BENCH_GROWTH])  # the size the compared runs end at
        model = DIMBA(validate_schedule(config.model, config.growth.schedule)[-1]).eval()
        for steps in SAMPLER_STEPS[objective]:
            seconds, forwards = [], 0
            for repeat in range(TIMING_REPEATS):
                started = time.perf_counter()
                out = generate(model, torch.tensor([], dtype=torch.long), SAMPLE_LEN, steps, list(range(SAMPLES)))
                seconds.append(time.perf_counter() - started)
                forwards = out["forwards"]
            median = sorted(seconds)[len(seconds) // 2]
            timings.setdefault(objective, {})[str(steps)] = {
                "s_per_1000_tokens": median / (SAMPLES * SAMPLE_LEN / 1000), "forwards": forwards, "seconds": seconds}
    TIMING.write_text(json.dumps({"date": time.strftime("%Y-%m-%d"), "torch_threads": torch.get_num_threads(),
                                  "timings": timings}, indent=1) + "\n")
    print(json.dumps(timings, indent=1))


def sampling_seconds(objective: str, sampled: Dict[str, Any]) -> float:
    """The idle-machine timing where `timing` measured it, else the run's own."""
    if TIMING.exists():
        measured = json.loads(TIMING.read_text())["timings"].get(objective, {}).get(str(sampled["steps"]))
        if measured:
            return measured["s_per_1000_tokens"]
    return sampled["s_per_1000_tokens"]


def word_list() -> set:
    if not WORDS.is_file():
        raise SystemExit(f"{WORDS} is missing: apt-get install wamerican")
    return {w.strip().lower() for w in WORDS.read_text(encoding="utf-8", errors="replace").splitlines() if w.strip()}


def text_scores(texts: Sequence[bytes], words: set) -> Dict[str, float]:
    data = b"".join(texts)
    counts = Counter(data)
    total = sum(counts.values())
    entropy = -sum(c / total * math.log2(c / total) for c in counts.values())
    grams = [t[i:i + 4] for t in texts for i in range(len(t) - 3)]
    # Words of two letters or more (and "a", "i"): the list holds every single letter, so a
    # sample of scattered letters would otherwise pass for English.
    found = [w for w in re.findall(r"[a-z]+", data.decode("utf-8", errors="replace").lower()) if len(w) > 1 or w in "ai"]
    return {"unigram_entropy_bits": entropy, "distinct_4grams": len(set(grams)) / max(1, len(grams)),
            "real_word_share": sum(w in words for w in found) / max(1, len(found)), "words": len(found)}


def judge_of(corpus: str, runs: Dict[str, Dict[str, Any]]):
    candidates = [r for r in runs.values() if r["corpus"] == corpus and r["objective"] == "ar"]
    best = min(candidates, key=lambda r: (-r["budget"], r["heldout"]["select"]["bpb"]))
    from dimba.model import DIMBAConfig

    from dimba.growth.schedule import validate_schedule

    saved = torch.load(CACHE / f"{best['key'].replace('|', '_')}.pt", weights_only=True)
    start = DIMBAConfig.from_dict(saved["config"])
    config = compose(best["overrides"])  # as the judge trained
    final = validate_schedule(config.model, config.growth.schedule)[-1]  # the schedule's sizes at any step count
    model = DIMBA(final if start == config.model else start)
    model.load_state_dict(saved["state"])
    return model.eval(), best["key"]


def judge_bpb(judge, ids: torch.Tensor, tokenizer) -> float:
    byte_counts = torch.tensor([tokenizer.byte_length(r.tolist()) for r in ids], dtype=torch.float64)
    bound = sequence_bound(judge, ids, 2, torch.Generator().manual_seed(0))
    return bits_per_byte(bound, torch.full((ids.shape[0],), ids.shape[1]), byte_counts).bpb


def summarize(values: Sequence[float]) -> Dict[str, float]:
    mean = sum(values) / len(values)
    spread = (sum((v - mean) ** 2 for v in values) / (len(values) - 1)) ** 0.5 if len(values) > 1 else float("nan")
    return {"mean": mean, "sd": spread, "n": len(values), "min": min(values), "max": max(values)}


def cmd_report(args: argparse.Namespace) -> None:
    from dimba.run import build_data

    runs = load_runs()
    words = word_list()
    table: Dict[str, Any] = {}
    for corpus in sorted({r["corpus"] for r in runs.values()}):
        judge, judge_key = judge_of(corpus, runs)
        data = build_data(compose(corpus_overrides(corpus)))
        tokenizer = data.tokenizer
        report_windows = held_out(data)["report"][0][:SAMPLES]
        real = [tokenizer.decode(r.tolist()).encode("utf-8") for r in report_windows]
        entry: Dict[str, Any] = {"judge": judge_key, "heldout_text": {
            "judge_bpb": judge_bpb(judge, report_windows, tokenizer), **text_scores(real, words)}}
        for budget in sorted({r["budget"] for r in runs.values() if r["corpus"] == corpus}):
            rows: Dict[str, Any] = {}
            for arm, (objective, _) in ARMS.items():
                def grid_of(source: str) -> List[Dict[str, Any]]:
                    return [r for r in runs.values() if r["corpus"] == source and arm_of(r) == arm
                            and r["budget"] == 1.0 and r["seed"] == 0]

                tuned_on = corpus if len(grid_of(corpus)) >= len(LR_GRID) else "builtin"  # run --tune-on builtin
                grid = grid_of(tuned_on)
                if not grid:
                    continue
                lr = min(grid, key=lambda r: r["heldout"]["select"]["bpb"])["lr"]
                chosen = [r for r in runs.values() if r["corpus"] == corpus and arm_of(r) == arm
                          and r["budget"] == budget and r["lr"] == lr and r.get("samples")]
                if not chosen:
                    continue
                seeds = [r for r in runs.values() if r["corpus"] == corpus and arm_of(r) == arm
                         and r["budget"] == budget and r["lr"] == lr]
                row = {"lr": lr, "steps": chosen[0]["steps"], "flops": chosen[0]["flops"],
                       "params": chosen[0]["params"], "train_wall_s": chosen[0]["train_wall_s"],
                       "report_bpb": summarize([r["heldout"]["report"]["bpb"] for r in seeds]),
                       "per_seed": {r["seed"]: r["heldout"]["report"]["bpb"] for r in seeds},
                       "lr_tuned_on": tuned_on,
                       "lr_grid_select_bpb": {r["lr"]: r["heldout"]["select"]["bpb"] for r in grid},
                       "sampling": []}
                for sampled in chosen[0]["samples"]:
                    ids = torch.tensor(sampled["ids"])
                    texts = [tokenizer.decode(r.tolist()).encode("utf-8") for r in ids]
                    row["sampling"].append({"steps": sampled["steps"], "forwards": sampled["forwards"],
                                            "s_per_1000_tokens": sampling_seconds(objective, sampled),
                                            "judge_bpb": judge_bpb(judge, ids, tokenizer), **text_scores(texts, words),
                                            "example": texts[0].decode("utf-8", errors="replace")})
                rows[arm] = row
            if "ar" in rows:
                for row in rows.values():
                    row["ratio_to_ar"] = row["report_bpb"]["mean"] / rows["ar"]["report_bpb"]["mean"]
            entry[f"x{budget:g}"] = rows
        table[corpus] = entry
    result = {"date": time.strftime("%Y-%m-%d"), "command": COMMAND,
              "machine": "2-core Xeon (AVX-512, AMX), torch " + torch.__version__ + ", CPU", "bound_samples": BOUND_SAMPLES,
              "samples": SAMPLES, "sample_len": SAMPLE_LEN, "runs": len(runs),
              "run_hours": sum(r["train_wall_s"] + r["eval_wall_s"] + sum(x["seconds"] for x in r.get("samples", []))
                               for r in runs.values()) / 3600, "corpora": table}
    RESULTS.mkdir(parents=True, exist_ok=True)
    write_atomic(RESULTS / "quality.json", lambda tmp: tmp.write_text(json.dumps(result, indent=1) + "\n"))
    write_atomic(RESULTS / "quality.md", lambda tmp: tmp.write_text(markdown(result), encoding="utf-8"))
    plot(result)
    print(json.dumps(result, indent=1))


def markdown(result: Dict[str, Any]) -> str:
    """The tables and one sample of each objective, as the results page shows them."""
    lines = [f"Generated by `{result['command']}` on {result['date']} ({result['machine']}): {result['runs']} "
             f"training runs, {result['run_hours']:.1f} h of training and evaluation (sampling included).", ""]
    for corpus, entry in result["corpora"].items():
        text = entry["heldout_text"]
        lines += [f"### {corpus}", "",
                  "| budget | objective | lr | steps | params | held-out bpb (mean ± sd over seeds) | ratio to ar "
                  "| sampler steps | s / 1,000 tokens | samples' bpb under ar | unigram entropy | distinct 4-grams "
                  "| real words |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for budget in (key for key in entry if key.startswith("x")):
            for objective, row in entry[budget].items():
                bpb = row["report_bpb"]
                spread = "" if math.isnan(bpb["sd"]) else f" ± {bpb['sd']:.3f}"
                for i, sampled in enumerate(row["sampling"]):
                    head = (f"| {budget} | {objective} | {row['lr']:g} | {row['steps']} | {row['params']:,} | "
                            f"{bpb['mean']:.3f}{spread} (n={bpb['n']}) | {row.get('ratio_to_ar', float('nan')):.2f} |"
                            if i == 0 else "| | | | | | | |")
                    lines.append(f"{head} {sampled['steps']} | {sampled['s_per_1000_tokens']:.2f} | "
                                 f"{sampled['judge_bpb']:.2f} | {sampled['unigram_entropy_bits']:.2f} | "
                                 f"{sampled['distinct_4grams']:.2f} | {sampled['real_word_share']:.2f} |")
        lines += [f"| | held-out text | | | | | | | | {text['judge_bpb']:.2f} | {text['unigram_entropy_bits']:.2f} | "
                  f"{text['distinct_4grams']:.2f} | {text['real_word_share']:.2f} |", ""]
        first = next(key for key in entry if key.startswith("x"))
        for objective, row in entry[first].items():
            example = row["sampling"][-1]["example"]
            fence = "~~~"
            lines += [f"{objective} ({first}, {row['sampling'][-1]['steps']} sampler steps, seed 0):", "", fence,
                      example, fence, ""]
    return "\n".join(lines)


def plot(result: Dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = {"ar": "tab:green", "masked": "tab:blue", "diffusion": "tab:red", "diffusion[original]": "tab:orange"}
    corpora = list(result["corpora"])
    fig, axes = plt.subplots(1, len(corpora), figsize=(5.5 * len(corpora), 4), squeeze=False)
    fig2, axes2 = plt.subplots(1, len(corpora), figsize=(5.5 * len(corpora), 4), squeeze=False)
    for ax, ax2, corpus in zip(axes[0], axes2[0], corpora):
        entry = result["corpora"][corpus]
        for objective, colour in colours.items():
            points = [(row["flops"], row["report_bpb"]) for key, rows in entry.items() if key.startswith("x")
                      for name, row in rows.items() if name == objective]
            if points:
                ax.errorbar([p[0] for p in points], [p[1]["mean"] for p in points],
                            yerr=[0 if math.isnan(p[1]["sd"]) else p[1]["sd"] for p in points], marker="o",
                            color=colour, label=objective, capsize=3)
            for key, rows in entry.items():
                if key.startswith("x") and objective in rows:
                    sampling = rows[objective]["sampling"]
                    ax2.plot([s["s_per_1000_tokens"] for s in sampling], [s["judge_bpb"] for s in sampling],
                             marker="o", color=colour, alpha=1.0 if key == "x1" else 0.5,
                             label=f"{objective} ({key})")
        ax.axhline(8.0, color="grey", lw=0.8, ls=":")
        ax.set(xscale="log", yscale="log", xlabel="training FLOPs", ylabel="held-out bits per byte (report half)",
               title=corpus)
        ax.legend()
        ax2.axhline(entry["heldout_text"]["judge_bpb"], color="black", lw=0.8, ls="--", label="held-out text")
        ax2.set(xscale="log", yscale="log", xlabel="sampling seconds per 1,000 tokens (CPU)",
                ylabel="samples' bits per byte under the ar judge", title=corpus)
        ax2.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(RESULTS / "quality_bpb_flops.png", dpi=110)
    fig2.tight_layout()
    fig2.savefig(RESULTS / "quality_sampling.png", dpi=110)
