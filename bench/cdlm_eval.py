"""CDLM vs. plain diffusion: sample quality against the number of DDIM steps, at equal compute.

CDLM consistency training (`objective=cdlm`) should let the model sample in fewer steps. This
trains two models on the default corpus with the same architecture (the default
`model=small`: d_model 128, 4 layers; no growth), data order, seed, optimizer and LR schedule
shape: (a) `objective=diffusion` and (b) `objective=cdlm` (the shipped conf/objective/cdlm.yaml
values). Then it denoises held-out validation sequences with the project's DDIM sampler
(`dimba.diffusion.sampling.denoise`, clamped, eta 0) in 1, 4, 16 and 64 steps and scores them.

Equal compute means equal training FLOPs: `FlopCounterMode` counts one training step of each
objective (forward + backward, plus CDLM's no-grad target forward), and (b) gets
floor(steps * flops_a / flops_b) steps, so it trains fewer steps than (a). torch's formula for
a convolution's backward ignores `groups` and counts the weight gradient of the blocks'
depthwise convolution once per channel (11 GFLOPs instead of ~0.08 per step here), which
would hide most of CDLM's extra forward; this bench counts it per group instead.

Evaluation tasks (the same validation sequences and the same starting noise for every model
and step count):

- inpaint: the first half of each sequence is known (kept on its forward-noised trajectory,
  as `dimba generate` treats a prompt), the second half starts from pure noise x_T.
- reconstruct: every position is noised to t_start (default 0.9 T) with fixed noise and the
  whole sequence is denoised from there. (From 0.5 T almost every byte comes back whatever
  the step count; from 0.75 T accuracy did not move with steps in a short pilot.)

Metrics, on the positions the model had to produce:

- accuracy: share of tokens equal to the original.
- model_bpb: bits per byte of the original tokens under the final step's logits
  (cross-entropy of the true bytes under the last x0 prediction / ln 2).
- ngram_bpb: bits per byte of the *generated* bytes under a byte 4-gram model (Witten-Bell
  smoothing) fitted on the training split: how text-like the output is, whatever the original
  was (a "generative perplexity" without a large reference LM). `ngram_bpb_reference` is the
  same score of the original bytes; degenerate output (e.g. all spaces) can score low, so
  `distinct_4grams` (distinct 4-grams / 4-grams in the output) is reported beside it.

The primary metric is inpaint accuracy: the task closest to what sampling is for (text from
pure noise, conditioned on a prompt), scored against the real continuation. Per-token
metrics favour few steps in principle (one step's argmax is the per-token Bayes choice for
a perfect model). In a 30-step pilot of the baseline, inpaint and reconstruct-from-0.9T
accuracy rose slightly with steps; after full training, inpaint accuracy *falls* with more
steps (the results say so: `steps_help_baseline`). model_bpb rises steeply with steps (the
last step's logits come from small t on a trajectory the sampler committed to, so they are
overconfident: a calibration measure, not a quality-vs-steps one).

Held out means held out: the built-in corpus repeats itself, so validation sequences whose
second half (the inpainted part) occurs verbatim in the training text are skipped; the JSON
says how many.

The goal checked: CDLM with a quarter of the steps is at least as good as the baseline with
the full steps (cdlm@1 vs base@4, cdlm@4 vs base@16, cdlm@16 vs base@64), on the primary
metric and, for the record, on every metric. Each check also says whether the baseline at a
quarter of its own steps passes it (`baseline_quarter_steps_passes_too`): where it does, the
metric does not reward more steps and the check says nothing about CDLM. `meets_goal` is
true only when every primary check is met *and* the baseline needs the extra steps
(`steps_help_baseline`). `equal_steps` compares the two models at the same step count. Prints one JSON object on stdout (logs on
stderr) and writes it to bench/results/cdlm_eval.json. Run from the repo root:
`python bench/cdlm_eval.py [--steps N] [--threads T] [--seed S]`.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Dict, Iterable, List, Sequence, Tuple

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from dimba.data import TextDataModule  # noqa: E402
from dimba.diffusion.sampling import denoise  # noqa: E402
from dimba.model import DIMBA, DIMBAConfig  # noqa: E402
from dimba.objective import ObjectiveConfig  # noqa: E402
from dimba.training import SimpleTrainer  # noqa: E402
from dimba.training.steps import training_loss  # noqa: E402

from flops import count_flops  # noqa: E402  (the depthwise convolution's backward per group)

log = logging.getLogger("bench.cdlm_eval")

MODEL = DIMBAConfig(d_model=128, n_layers=4)  # conf/model/small.yaml
SEQ_LEN, BATCH = 128, 16  # conf/data/builtin.yaml with the DataConfig defaults
BASELINE = ObjectiveConfig()  # conf/objective/diffusion.yaml
CDLM = ObjectiveConfig(use_consistency_training=True, consistency_loss_weight=1.0,
                       consistency_delta_min=16, consistency_delta_max=250)  # conf/objective/cdlm.yaml
SAMPLING_STEPS = (1, 4, 16, 64)
NGRAM_ORDER = 4
PRIMARY = ("inpaint", "accuracy")  # (task, metric) the goal is judged on; see docs/results/cdlm.md
HIGHER_IS_BETTER = {"accuracy": True, "model_bpb": False, "ngram_bpb": False, "distinct_4grams": True}
RESULTS = Path(__file__).resolve().parent / "results"
LN2 = math.log(2.0)


# ----------------------------------------------------------------------------- n-gram scorer
class ByteNgram:
    """An interpolated Witten-Bell byte n-gram model: a cheap, fixed judge of "text-likeness"."""

    def __init__(self, data: bytes, order: int = NGRAM_ORDER) -> None:
        self.order = order
        self.counts: Dict[bytes, int] = defaultdict(int)  # context + next byte
        self.totals: Dict[bytes, int] = defaultdict(int)  # context
        self.types: Dict[bytes, int] = defaultdict(int)  # distinct next bytes after context
        for k in range(order):  # context length k
            for i in range(k, len(data)):
                key = data[i - k : i + 1]
                if self.counts[key] == 0:
                    self.types[key[:-1]] += 1
                self.counts[key] += 1
                self.totals[key[:-1]] += 1

    def prob(self, context: bytes, byte: int) -> float:
        p = 1.0 / 256
        for k in range(0, self.order):
            if k > len(context):
                break
            ctx = context[len(context) - k :] if k else b""
            total = self.totals.get(ctx, 0)
            if total == 0:
                break  # longer contexts were never seen either
            types = self.types[ctx]
            p = (self.counts.get(ctx + bytes([byte]), 0) + types * p) / (total + types)
        return p

    def bits(self, context: bytes, text: bytes) -> float:
        """Total bits of `text` following `context`."""
        history, total = bytes(context[-(self.order - 1) :]) if self.order > 1 else b"", 0.0
        for byte in text:
            total -= math.log2(self.prob(history, byte))
            history = (history + bytes([byte]))[-(self.order - 1) :] if self.order > 1 else b""
        return total


# ----------------------------------------------------------------------------- training
def flops_per_step(objective: ObjectiveConfig, seed: int) -> int:
    """Forward + backward FLOPs (matmuls and convolutions) of one training batch."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model, tokens = DIMBA(MODEL), torch.randint(0, MODEL.vocab_size, (BATCH, SEQ_LEN))
        return count_flops(lambda: training_loss(model, tokens, objective, seed, step=0)["loss"].backward())


def train(name: str, objective: ObjectiveConfig, steps: int, seed: int) -> Tuple[DIMBA, Dict[str, Any]]:
    data = TextDataModule(seq_len=SEQ_LEN, batch_size=BATCH, seed=seed)
    data.setup()
    trainer = SimpleTrainer(train_loader=data.train_dataloader(), model_config=MODEL, max_steps=steps, device="cpu",
                            seed=seed, log_every_n_steps=50, **objective.to_dict())
    log.info("%s: training %d steps", name, steps)
    start = time.perf_counter()
    losses = trainer.train()
    wall = time.perf_counter() - start
    tail = max(1, min(20, len(losses)))
    summary: Dict[str, Any] = {"steps": steps, "wall_s": round(wall, 1), "s_per_step": round(wall / steps, 4),
                               "final_loss_mean_last_20": sum(losses[-tail:]) / tail}
    if trainer.consistency_losses:
        summary["final_consistency_loss_mean_last_20"] = sum(trainer.consistency_losses[-tail:]) / tail
    log.info("%s: %.0f s, final loss %.4f", name, wall, summary["final_loss_mean_last_20"])
    return trainer.model.eval(), summary


# ----------------------------------------------------------------------------- evaluation
def distinct_ngrams(rows: Iterable[bytes], n: int = 4) -> float:
    grams = [row[i : i + n] for row in rows for i in range(len(row) - n + 1)]
    return len(set(grams)) / max(1, len(grams))


def start_noise(val: torch.Tensor, d_embed: int, seed: int) -> torch.Tensor:
    """The same starting noise for every model and step count."""
    generator = torch.Generator().manual_seed(seed * 7919 + 17)
    return torch.randn(*val.shape, d_embed, generator=generator)


def run_task(model: DIMBA, task: str, val: torch.Tensor, noise: torch.Tensor, t_start: int, steps: int,
             ngram: ByteNgram, batch: int = 32) -> Dict[str, float]:
    """Denoise the validation sequences once; score the positions the model had to produce."""
    T = model.config.diffusion_steps
    correct = total = 0
    nats = 0.0
    ngram_bits = 0.0
    outputs: List[bytes] = []
    for lo in range(0, len(val), batch):
        tokens, z = val[lo : lo + batch], noise[lo : lo + batch]
        with torch.no_grad():
            x0 = model.embedding(tokens)
        if task == "inpaint":
            start = T
            known_mask = torch.zeros(tokens.shape, dtype=torch.bool)
            known_mask[:, : tokens.shape[1] // 2] = True
            known = x0
        else:
            start, known_mask, known = t_start, None, None
        x_t = model.schedule.add_noise(x0, torch.full((len(tokens),), start), z)
        out, logits = denoise(model, x_t, start, steps, clamp=True, known=known, known_mask=known_mask)
        produce = ~known_mask if known_mask is not None else torch.ones(tokens.shape, dtype=torch.bool)
        correct += int((out == tokens)[produce].sum())
        total += int(produce.sum())
        nats += float(F.cross_entropy(logits[produce].float(), tokens[produce], reduction="sum"))
        for row, ids, mask in zip(tokens, out, produce):
            first = int(mask.nonzero()[0])
            context, generated = bytes(row[:first].tolist()), bytes(ids[first:].tolist())
            ngram_bits += ngram.bits(context, generated)
            outputs.append(generated)
    return {"accuracy": correct / total, "model_bpb": nats / total / LN2, "ngram_bpb": ngram_bits / total,
            "distinct_4grams": distinct_ngrams(outputs), "sample": outputs[0][:64].decode("latin-1")}


def reference_scores(task: str, val: torch.Tensor, ngram: ByteNgram) -> Dict[str, float]:
    half = val.shape[1] // 2 if task == "inpaint" else 0
    rows = [bytes(r.tolist()) for r in val]
    bits = sum(ngram.bits(r[:half], r[half:]) for r in rows)
    return {"ngram_bpb_reference": bits / (len(rows) * (val.shape[1] - half)),
            "distinct_4grams_reference": distinct_ngrams(r[half:] for r in rows)}


def goal_checks(results: Dict[str, Dict[str, Dict[str, Dict[str, float]]]], steps: Sequence[int]) -> List[Dict[str, Any]]:
    """cdlm@s vs baseline@4s for every task, metric and pair of step counts we measured."""
    checks = []
    for task, by_model in results.items():
        for metric, higher in HIGHER_IS_BETTER.items():
            for s in steps:
                if 4 * s not in steps:
                    continue
                c, b = by_model["cdlm"][str(s)][metric], by_model["baseline"][str(4 * s)][metric]
                control = by_model["baseline"][str(s)][metric]
                checks.append({"task": task, "metric": metric, "cdlm_steps": s, "baseline_steps": 4 * s,
                               "cdlm": c, "baseline": b, "met": at_least(c, b, higher),
                               "baseline_at_cdlm_steps": control,
                               "baseline_quarter_steps_passes_too": at_least(control, b, higher)})
    return checks


def at_least(value: float, reference: float, higher: bool) -> bool:
    return bool(value >= reference if higher else value <= reference)


def equal_steps(results: Dict[str, Dict[str, Dict[str, Dict[str, float]]]], steps: Sequence[int]) -> List[Dict[str, Any]]:
    """cdlm@s vs baseline@s: which model is better at the same sampling cost."""
    return [{"task": task, "metric": metric, "steps": s, "cdlm": by_model["cdlm"][str(s)][metric],
             "baseline": by_model["baseline"][str(s)][metric],
             "cdlm_at_least_as_good": at_least(by_model["cdlm"][str(s)][metric], by_model["baseline"][str(s)][metric], higher)}
            for task, by_model in results.items() for metric, higher in HIGHER_IS_BETTER.items() for s in steps]


def unseen_sequences(val_set, train_text: bytes, wanted: int) -> Tuple[torch.Tensor, int]:
    """The first `wanted` validation sequences whose second half is not in the training text."""
    kept, skipped = [], 0
    for i in range(len(val_set)):
        sequence = val_set[i]
        if bytes(sequence[len(sequence) // 2:].tolist()) in train_text:
            skipped += 1
            continue
        kept.append(sequence)
        if len(kept) == wanted:
            break
    return torch.stack(kept), skipped


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=400, help="training steps of the baseline (CDLM gets equal FLOPs)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--seed", type=int, default=0, help="seed of weights, data order, training noise, eval noise")
    parser.add_argument("--val-sequences", type=int, default=128, help="first N validation sequences")
    parser.add_argument("--t-start", type=float, default=0.9, help="reconstruct task: start at this fraction of T")
    parser.add_argument("--out", type=Path, default=RESULTS / "cdlm_eval.json")
    args = parser.parse_args()
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(message)s")
    torch.set_num_threads(args.threads)
    begin = time.perf_counter()

    data = TextDataModule(seq_len=SEQ_LEN, batch_size=BATCH, seed=args.seed)
    data.setup()
    train_text = bytes(data.train_set.tokens.tolist())
    val, skipped = unseen_sequences(data.val_set, train_text, args.val_sequences)
    log.info("%d validation sequences, %d skipped: their second half occurs verbatim in the training text",
             len(val), skipped)
    ngram = ByteNgram(train_text)
    t_start = int(round(args.t_start * MODEL.diffusion_steps))

    flops = {"baseline": flops_per_step(BASELINE, args.seed), "cdlm": flops_per_step(CDLM, args.seed)}
    cdlm_steps = int(args.steps * flops["baseline"] // flops["cdlm"])
    log.info("FLOPs per step: baseline %.3e, cdlm %.3e -> cdlm trains %d steps", flops["baseline"], flops["cdlm"], cdlm_steps)

    models, training = {}, {}
    for name, objective, steps in (("baseline", BASELINE, args.steps), ("cdlm", CDLM, cdlm_steps)):
        models[name], training[name] = train(name, objective, steps, args.seed)
        training[name]["total_flops"] = steps * flops[name]

    noise = start_noise(val, MODEL.d_embed, args.seed)
    results: Dict[str, Dict[str, Dict[str, Dict[str, float]]]] = {}
    for task in ("inpaint", "reconstruct"):
        results[task] = {}
        for name, model in models.items():
            results[task][name] = {}
            for steps in SAMPLING_STEPS:
                t0 = time.perf_counter()
                results[task][name][str(steps)] = run_task(model, task, val, noise, t_start, steps, ngram)
                log.info("%s %s %2d steps: %s (%.0f s)", task, name, steps,
                         {k: round(v, 4) for k, v in results[task][name][str(steps)].items() if k != "sample"},
                         time.perf_counter() - t0)

    task, metric = PRIMARY
    checks = goal_checks(results, SAMPLING_STEPS)
    primary_checks = [c for c in checks if (c["task"], c["metric"]) == PRIMARY]
    literal = bool(primary_checks) and all(c["met"] for c in primary_checks)
    steps_help = bool(primary_checks) and not any(c["baseline_quarter_steps_passes_too"] for c in primary_checks)
    result: Dict[str, Any] = {
        "seed": args.seed, "num_threads": torch.get_num_threads(), "torch_version": torch.__version__,
        "model": {"d_model": MODEL.d_model, "n_layers": MODEL.n_layers, "d_embed": MODEL.d_embed,
                  "diffusion_steps": MODEL.diffusion_steps, "seq_len": SEQ_LEN, "batch": BATCH},
        "objectives": {"baseline": BASELINE.to_dict(), "cdlm": CDLM.to_dict()},
        "equal_compute": {
            "definition": "equal training FLOPs: FlopCounterMode on one step (forward + backward, and CDLM's no-grad "
                          "target forward); cdlm steps = floor(baseline steps * flops_baseline / flops_cdlm); "
                          "evaluation not counted",
            "flops_per_step": flops, "steps": {"baseline": args.steps, "cdlm": cdlm_steps},
        },
        "training": training,
        "evaluation": {
            "val_sequences": len(val), "val_sequences_skipped_as_seen_in_training": skipped,
            "sampler": "dimba.diffusion.sampling.denoise (DDIM, eta 0, clamped)",
            "reconstruct_t_start": t_start, "inpaint_known": "first half of each sequence",
            "ngram": f"byte {NGRAM_ORDER}-gram, Witten-Bell, fitted on the training split",
            "reference": {task_: reference_scores(task_, val, ngram) for task_ in results},
        },
        "results": results,
        "primary": {"task": task, "metric": metric, "higher_is_better": HIGHER_IS_BETTER[metric]},
        "table": [{"steps": s, "baseline": results[task]["baseline"][str(s)][metric],
                   "cdlm": results[task]["cdlm"][str(s)][metric]} for s in SAMPLING_STEPS],
        "goal": "CDLM with a quarter of the steps at least as good as the baseline (cdlm@s >= baseline@4s)",
        "goal_checks_primary": primary_checks,
        "goal_checks_primary_all_met": literal,
        "steps_help_baseline": steps_help,
        "meets_goal": literal and steps_help,
        "goal_checks_all": checks,
        "equal_steps": equal_steps(results, SAMPLING_STEPS),
        "wall_s": round(time.perf_counter() - begin, 1),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
