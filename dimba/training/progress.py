"""A progress bar that shows the model's size and the next milestone as training grows it.

It draws on stderr, as tqdm does by default (Lightning's draws on stdout): a run's stdout
holds only its plan and its table of milestones, so it can be piped and parsed.
"""

from __future__ import annotations

import contextlib
import functools
import sys
from typing import Any, Callable, Dict, Optional

import lightning as L
from lightning.pytorch.callbacks import TQDMProgressBar

from dimba.checkpointing.milestones import format_param_count, milestone_label
from dimba.training.callbacks import milestone_callback


def _on_stderr(init: Callable[[TQDMProgressBar], Any]) -> Callable[[TQDMProgressBar], Any]:
    """Lightning builds its bars with file=sys.stdout, read when called: point it at stderr."""
    @functools.wraps(init)
    def build(self: TQDMProgressBar) -> Any:
        with contextlib.redirect_stdout(sys.stderr):
            return init(self)
    return build


class DIMBAProgressBar(TQDMProgressBar):
    init_sanity_tqdm = _on_stderr(TQDMProgressBar.init_sanity_tqdm)
    init_train_tqdm = _on_stderr(TQDMProgressBar.init_train_tqdm)
    init_validation_tqdm = _on_stderr(TQDMProgressBar.init_validation_tqdm)
    init_predict_tqdm = _on_stderr(TQDMProgressBar.init_predict_tqdm)
    init_test_tqdm = _on_stderr(TQDMProgressBar.init_test_tqdm)

    def get_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> Dict[str, Any]:
        metrics = super().get_metrics(trainer, pl_module)
        metrics.pop("v_num", None)
        progressive = milestone_callback(trainer)
        if progressive is not None and progressive.enabled:
            metrics["params"] = format_param_count(progressive.parameter_count(pl_module))
            upcoming: Optional[int] = progressive.manager.get_next_milestone()
            metrics["next"] = milestone_label(upcoming) if upcoming is not None else "all reached"
        return metrics
