"""The table of milestones a run reached, logged at its end."""

from __future__ import annotations

import logging
from pathlib import Path

from dimba.checkpointing import format as ckpt_format
from dimba.checkpointing.milestones import milestone_label

log = logging.getLogger("dimba.run")


def log_summary(save_dir: Path) -> None:
    entries = [e.sidecar for e in ckpt_format.entries_in(save_dir) if e.ok]
    if not entries:
        log.info("No milestone was reached in this run.")
        return
    rows = [f"  {'milestone':<10} {'step':>7} {'params':>12}  path"]
    rows += [f"  {milestone_label(e.target_milestone):<10} {e.global_step:>7} {e.current_params:>12,}  "
             f"{Path(save_dir) / e.checkpoint}" for e in entries]
    log.info("Milestones reached:\n%s", "\n".join(rows))
