"""The table of milestones a run reached, at its end: printed on stdout (what the user asked
the run for), and written to the run's log file."""

from __future__ import annotations

import logging
from pathlib import Path

from dimba.checkpointing import format as ckpt_format
from dimba.checkpointing.milestones import milestone_label

# conf/config.yaml sends this logger to train.log only: the console gets the printed copy.
printed = logging.getLogger("dimba.printed")


def summary_table(save_dir: Path) -> str:
    entries = [e.sidecar for e in ckpt_format.entries_in(save_dir) if e.ok]
    if not entries:
        return "No milestone was reached in this run."
    rows = [f"  {'milestone':<10} {'step':>7} {'params':>12} {'val bpb':>20}  path"]
    rows += [f"  {milestone_label(e.target_milestone):<10} {e.global_step:>7} {e.current_params:>12,} "
             f"{ckpt_format.bound_text(e.metadata) or '-':>20}  {Path(save_dir) / e.checkpoint}" for e in entries]
    return "Milestones reached:\n" + "\n".join(rows)


def print_summary(save_dir: Path) -> None:
    table = summary_table(save_dir)
    print(table, flush=True)
    printed.info("%s", table)
