"""The `dimba` command line.

    dimba checkpoints list [PATH]                 milestone checkpoints under PATH (default: outputs)
    dimba checkpoints show CKPT                   metadata, architecture and growth history
    dimba checkpoints plot RUN_DIR [--out PNG]    parameters and loss against step, as a PNG
    dimba checkpoints export CKPT OUT             OUT/model.safetensors + OUT/config.json
    dimba generate CKPT [--prompt TEXT] --steps N --seed S [--length L] [--num-samples N] [--no-clamp] [--sampler ddim|ancestral]
                   [--temperature T] [--top-p P]
    dimba eval CKPT_OR_RUN_DIR [--data FILE_OR_DIR...] [--samples K] [--seq-len N] [--json]
    dimba data prepare INPUT... --out DIR [--tokenizer bytes|bpe|PATH] ...   token shards for data=shards

A user error (a missing path, a file that is not a checkpoint, a corrupt file, a run without
metrics) prints one line `dimba: error: ...` on stderr and exits with status 2.

This module imports no torch: `list` (and `show` of a checkpoint with a sidecar) stays
instant; the commands that need a model import it when they run.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import List, Optional, Sequence

from dimba.cli.checkpoints import CLIError, cmd_list, one_line
from dimba.cli.data import add_data_parser
from dimba.errors import CheckpointLoadError

USER_ERROR = 2
INTERNAL_ERROR = 1


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: `dimba: error: ... (see 'dimba checkpoints list --help')`."""

    def error(self, message: str):  # type: ignore[override]
        raise CLIError(f"{message} (see '{self.prog} --help')")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="dimba", description="DIMBA: inspect, plot and export milestone checkpoints; generate text.")
    from dimba.version import __version__

    parser.add_argument("--version", action="version", version=f"dimba {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    commands.required = True

    checkpoints = commands.add_parser("checkpoints", help="list, show, plot or export milestone checkpoints")
    actions = checkpoints.add_subparsers(dest="action", metavar="ACTION", parser_class=_Parser)
    actions.required = True

    p = actions.add_parser("list", help="every milestone checkpoint under PATH (single runs and multiruns)",
                           description="List every milestone checkpoint under PATH, read from the JSON sidecars "
                                       "only (no torch, no checkpoint loaded).")
    p.add_argument("path", nargs="?", default="outputs", metavar="PATH", help="a folder of runs (default: outputs)")

    p = actions.add_parser("show", help="metadata, architecture and growth history of one checkpoint")
    p.add_argument("checkpoint", metavar="CKPT", help="a milestone .pt (or its .json sidecar), a last.ckpt, "
                                                      "or an export directory")

    p = actions.add_parser("plot", help="parameter count and loss against step, as a PNG")
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run directory (outputs/<date>/<time>)")
    p.add_argument("--out", metavar="PNG", help="where to write the PNG (default: RUN_DIR/training.png)")

    p = actions.add_parser("export", help="weights as safetensors plus a config.json",
                           description="Write OUT/model.safetensors (every tensor of the model's state dict) "
                                       "and OUT/config.json (the architecture and format information).")
    p.add_argument("checkpoint", metavar="CKPT", help="any checkpoint dimba writes")
    p.add_argument("out", metavar="OUT", help="output directory (created if needed)")

    p = commands.add_parser("generate", help="generate text from a checkpoint (its objective's sampler)",
                            description="Generate text: the prompt's tokens fill the first positions, the rest is "
                                        "sampled as the checkpoint's objective does: DDIM in the embedding space "
                                        "(diffusion), unmasking in --steps steps (masked), or token by token (ar). "
                                        "The same seed gives the same text.")
    p.add_argument("checkpoint", metavar="CKPT", help="any checkpoint dimba writes, an export directory, or a run "
                                                      "directory (its newest checkpoint)")
    p.add_argument("--prompt", default="", metavar="TEXT",
                   help="text the output starts with (default: none, an unconditional sample)")
    p.add_argument("--steps", type=int, default=16, metavar="N",
                   help="denoising steps: DDIM steps, 1 .. the model's diffusion_steps, or unmasking steps "
                        "(default: 16; an ar model generates one token a step and ignores it)")
    p.add_argument("--seed", type=int, default=0, metavar="S", help="seed of the starting noise (default: 0)")
    p.add_argument("--length", type=int, metavar="L",
                   help="total length in tokens, prompt included (default: the prompt plus 64)")
    p.add_argument("--no-clamp", dest="clamp", action="store_false",
                   help="do not snap each prediction to the nearest token embedding")
    p.add_argument("--sampler", choices=("ddim", "ancestral"), default=None,
                   help="diffusion: deterministic DDIM (default) or ancestral steps, each a draw from the "
                        "posterior q(z_s | z_t, x0_hat)")
    p.add_argument("--num-samples", type=int, default=1, metavar="N",
                   help="samples to draw, seeds S, S+1, ..., as one batch (default: 1)")
    p.add_argument("--temperature", type=float, default=1.0, metavar="T",
                   help="masked and ar: divide the logits by T before drawing a token (0: the most likely; default: 1)")
    p.add_argument("--top-p", type=float, default=1.0, metavar="P",
                   help="masked and ar: draw from the smallest set of most likely tokens holding P of the "
                        "probability (default: 1, all)")
    p = commands.add_parser("eval", help="held-out bits per byte (exact for ar, a bound otherwise), with reference lines",
                            description="-log p(text) of a checkpoint in bits per byte (and per token): exact for "
                                        "an ar model; for diffusion and masked the variational bound, with its Monte "
                                        "Carlo standard error; beside a uniform, a unigram and a byte 4-gram model "
                                        "on the same text.")
    p.add_argument("checkpoint", metavar="CKPT_OR_RUN_DIR", help="a milestone .pt, a last.ckpt, an export directory, "
                                                                 "or a run directory (its newest checkpoint)")
    p.add_argument("--data", nargs="+", metavar="FILE_OR_DIR",
                   help="text files or directories of them, or a directory written by `dimba data prepare` (its "
                        "validation split); default: the run's own validation split")
    p.add_argument("--samples", type=int, default=16, metavar="K",
                   help="timestep samples per sequence, an even number >= 2 (default: 16)")
    p.add_argument("--seq-len", type=int, metavar="N", help="tokens per sequence (default: the run's data.seq_len)")
    p.add_argument("--seed", type=int, default=0, metavar="S", help="seed of the timesteps and noise (default: 0)")
    p.add_argument("--json", action="store_true", help="also print one JSON object on the last line of stdout")
    add_data_parser(commands)
    return parser


def run(args: argparse.Namespace) -> int:
    out = sys.stdout
    if args.command == "generate":
        return cmd_generate(args, out)
    if args.command == "eval":
        return cmd_eval(args, out)
    if args.command == "data":
        from dimba.cli.data import cmd_data

        return cmd_data(args, out)
    if args.action == "list":
        return cmd_list(args.path, out)
    if args.action == "show":
        from dimba.cli.show import cmd_show

        return cmd_show(args.checkpoint, out)
    if args.action == "plot":
        from dimba.plotting import plot_run

        print(plot_run(args.run_dir, args.out), file=out)
        return 0
    if args.action == "export":
        from dimba.io.export import export_checkpoint

        target = export_checkpoint(args.checkpoint, args.out)
        print(f"{target / 'model.safetensors'}\n{target / 'config.json'}", file=out)
        return 0
    raise CLIError(f"unknown command {args.command} {args.action}")


MAX_SAMPLES = 1024  # `dimba generate --num-samples`: all in one batch (noise alone: N x length x d_embed float64s)


def cmd_generate(args: argparse.Namespace, out) -> int:
    # Checked before the model loads, so a typo costs no load.
    if args.length is not None and args.length < 1:
        raise CLIError(f"--length must be a positive integer, got {args.length}")
    if args.steps < 1:
        raise CLIError(f"--steps must be at least 1, got {args.steps}")
    if not 1 <= args.num_samples <= MAX_SAMPLES:
        raise CLIError(f"--num-samples must be between 1 and {MAX_SAMPLES} (one batch; run again with another "
                       f"--seed for more), got {args.num_samples}")
    if not -2**63 <= args.seed <= 2**64 - args.num_samples:
        raise CLIError(f"--seed must lie in [-2**63, 2**64 - {args.num_samples}] (seeds S .. S + N - 1 are used), "
                       f"got {args.seed}")
    from dimba.io.load import load_model
    from dimba.model.denormals import flush_denormals
    from dimba.objectives import generate

    flush_denormals()
    model = load_model(checkpoint_of(args.checkpoint, "generating from"))
    prompt = model.tokenizer.encode(args.prompt)
    length = args.length if args.length is not None else len(prompt) + 64
    if length < len(prompt):
        raise CLIError(f"--length ({length}) must be at least the prompt's length ({len(prompt)} tokens)")
    seeds = [args.seed + i for i in range(args.num_samples)]
    try:
        ids = generate(model, prompt, length, args.steps, seeds, clamp=args.clamp, temperature=args.temperature,
                       top_p=args.top_p, sampler=args.sampler)["ids"]
    except ValueError as exc:
        raise CLIError(f"--steps/--length/--temperature/--top-p/--sampler: {one_line(exc)}") from None
    for seed, row in zip(seeds, ids.tolist()):
        if args.num_samples > 1:
            print(f"=== seed {seed} ===", file=out)
        print(model.tokenizer.decode(row), file=out)
    return 0


def cmd_eval(args: argparse.Namespace, out) -> int:
    import json

    from dimba.evaluate import EvalError, evaluate, format_report

    try:  # bad options are refused before the model loads
        report = evaluate(checkpoint_of(args.checkpoint, "evaluating"), args.data, args.samples, args.seq_len,
                          seed=args.seed)
    except EvalError as exc:
        raise CLIError(str(exc)) from None
    print(format_report(report), file=out)
    if args.json:
        print(json.dumps(report.as_json()), file=out)
    return 0


def checkpoint_of(path: str, doing: str = "generating from") -> str:
    """A checkpoint, an export, or a run directory: then the run's newest checkpoint (by step)."""
    from pathlib import Path

    from dimba.resume import newest_valid_checkpoint

    directory = Path(path)
    from dimba.checkpointing.layout import is_run_dir

    if not is_run_dir(directory):
        return path
    newest = newest_valid_checkpoint(directory)
    if newest is None:
        raise CLIError(f"{directory} is a run directory without a complete checkpoint (checkpoints/, progressive_checkpoints/)")
    print(f"dimba: {doing} {newest}", file=sys.stderr)
    return str(newest)


def _user_error_types() -> tuple:
    """Error types that mean 'bad input', known without importing torch."""
    types: List[type] = [CLIError, CheckpointLoadError]
    plotting = sys.modules.get("dimba.plotting")
    if plotting is not None:
        types.append(plotting.PlotError)
    return tuple(types)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the command line; returns the exit status (0 ok, 2 user error, 1 internal error)."""
    try:
        args = build_parser().parse_args(argv)
        return run(args)
    except SystemExit as exc:  # --help, --version
        return exc.code if isinstance(exc.code, int) else 0
    except KeyboardInterrupt:
        print("dimba: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `dimba checkpoints list | head`
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except Exception as exc:
        if isinstance(exc, _user_error_types()) or isinstance(exc, OSError):
            print(f"dimba: error: {one_line(exc)}", file=sys.stderr)
            return USER_ERROR
        if os.environ.get("DIMBA_DEBUG"):
            raise
        print(f"dimba: error: internal error ({type(exc).__name__}: {one_line(exc)}); "
              f"set DIMBA_DEBUG=1 for the traceback", file=sys.stderr)
        return INTERNAL_ERROR


if __name__ == "__main__":
    sys.exit(main())
