"""`dimba data prepare INPUT... --out DIR`: text to token shards plus a manifest.

Argument parsing and printing only; the work is `dimba.data.prepare.prepare`. Nothing
here imports torch.
"""

from __future__ import annotations

import argparse
import os
from typing import Any, TextIO

from dimba.cli.checkpoints import CLIError

DESCRIPTION = (
    "Tokenize text files, .jsonl (one JSON object a line, field 'text' or --field), .parquet (column 'text' or "
    "--field), directories (their .txt/.text/.md/.rst/.jsonl/.parquet files, recursively, sorted) and globs into "
    "token shards plus manifest.json, in parallel worker processes. The last --val-fraction of the token stream is "
    "the validation split. Train on the result with `python train.py data=shards data.path=DIR`. Preparing again "
    "with the same inputs does nothing; with other inputs it refuses unless --overwrite."
)


def add_data_parser(commands: Any) -> None:
    data = commands.add_parser("data", help="prepare text for training: token shards plus a manifest")
    actions = data.add_subparsers(dest="action", metavar="ACTION", parser_class=type(data))
    actions.required = True
    p = actions.add_parser("prepare", help="tokenize text, .jsonl and .parquet files into token shards",
                           description=DESCRIPTION)
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="files, directories or globs (quote globs)")
    p.add_argument("--out", required=True, metavar="DIR", help="where the prepared data goes")
    p.add_argument("--tokenizer", default="bytes", metavar="bytes|bpe|PATH",
                   help="bytes (default, vocabulary 256), bpe (trained here on the inputs, saved as "
                        "DIR/tokenizer.json) or the path of a local tokenizer.json or Hugging Face tokenizer directory")
    p.add_argument("--vocab-size", metavar="N", help="bpe vocabulary (default 32000; at least 256)")
    p.add_argument("--sample-mb", default="256", metavar="MB",
                   help="bpe trains on an evenly spread sample of at most this many MB of the inputs (default 256)")
    p.add_argument("--val-fraction", default="0.05", metavar="F", help="validation share, in (0, 0.5) (default 0.05)")
    p.add_argument("--workers", default=str(min(4, os.cpu_count() or 1)), metavar="N",
                   help="tokenizer processes (default: the CPU count, at most 4; 0 tokenizes in this process)")
    p.add_argument("--field", default="text", metavar="NAME", help="the .jsonl field or .parquet column (default text)")
    p.add_argument("--overwrite", action="store_true", help="replace data prepared there from other inputs")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _number(option: str, text: str, kind: type, accepted: str, check) -> Any:
    try:
        value = kind(text)
    except ValueError:
        raise CLIError(f"{option}: {text!r} is invalid; accepted: {accepted}") from None
    if not check(value):
        raise CLIError(f"{option}: {text!r} is invalid; accepted: {accepted}")
    return value


def tokenizer_config(args: argparse.Namespace):
    from dimba.data.config import TokenizerConfig, pretrained_file
    from dimba.data.tokenizer import checked_vocab_size

    name = args.tokenizer
    vocab = None if args.vocab_size is None else checked_vocab_size(args.vocab_size, "--vocab-size")
    sample = _number("--sample-mb", args.sample_mb, int, "a positive whole number of megabytes", lambda v: v >= 1)
    if name == "bytes":
        if vocab is not None and vocab != 256:
            raise CLIError(f"--vocab-size: {args.vocab_size!r} is invalid; accepted: nothing with --tokenizer bytes "
                           f"(vocabulary 256), or --tokenizer bpe")
        return TokenizerConfig()
    if name == "bpe":
        return TokenizerConfig(name="bpe", vocab_size=vocab, sample_mb=sample)
    pretrained_file(name, key="--tokenizer")
    return TokenizerConfig(name="pretrained", path=name, vocab_size=vocab)


def cmd_data(args: argparse.Namespace, out: TextIO) -> int:
    from dimba.data.prepare import prepare
    from dimba.errors import ConfigError

    try:
        tokenizer = tokenizer_config(args)
        val_fraction = _number("--val-fraction", args.val_fraction, float, "a number between 0 and 0.5",
                               lambda v: 0 < v < 0.5)
        workers = _number("--workers", args.workers, int, "a whole number >= 0", lambda v: v >= 0)
        result = prepare(args.inputs, args.out, tokenizer, val_fraction=val_fraction, workers=workers,
                         field=args.field, overwrite=args.overwrite, progress=not args.quiet)
    except ConfigError as exc:
        raise CLIError(str(exc)) from None
    print(result.summary(), file=out)
    return 0
