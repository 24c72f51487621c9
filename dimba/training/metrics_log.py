"""metrics.csv that survives a resume.

Lightning's CSVLogger deletes `metrics.csv` when its directory already has files, so a run
continued in its own directory (`resume=auto`, a requeued SLURM job) would lose every row
before the resume. This logger keeps the rows of the steps before the checkpoint it
resumes from (the steps after it are trained, and logged, again) and appends.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.logger import rank_zero_experiment

from dimba import internals


def rows_before(path: Path, step: int) -> Tuple[List[str], List[Dict[str, Any]]]:
    """The header and the rows of `path` logged before `step` (none if it is unreadable)."""
    try:
        with open(path, newline="") as handle:
            reader = csv.DictReader(handle)
            rows = [row for row in reader if row.get("step") not in (None, "") and float(row["step"]) < step]
            return list(reader.fieldnames or []), rows
    except (OSError, ValueError, csv.Error):
        return [], []


class ContinuingCSVLogger(CSVLogger):
    def __init__(self, *args: Any, resume_step: Optional[int] = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._resume_step = resume_step

    @property
    @rank_zero_experiment
    def experiment(self) -> Any:
        existing = internals.csv_experiment(self)
        if existing is not None:
            return existing
        if self._resume_step is None:
            return super().experiment
        path = Path(self.log_dir) / internals.csv_metrics_name()
        _, rows = rows_before(path, self._resume_step)
        writer = internals.continuing_csv_writer(self.log_dir, rows)
        internals.set_csv_experiment(self, writer)
        writer.save()  # the kept rows, at once: a crash before the next save loses nothing
        return writer
