"""A progress bar that shows the model's size and the next milestone as training grows it."""

from __future__ import annotations

from typing import Any, Dict, Optional

import lightning as L
from lightning.pytorch.callbacks import TQDMProgressBar

from dimba.checkpointing.milestones import format_param_count, milestone_label
from dimba.training.callbacks import milestone_callback


class DIMBAProgressBar(TQDMProgressBar):
    def get_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> Dict[str, Any]:
        metrics = super().get_metrics(trainer, pl_module)
        metrics.pop("v_num", None)
        progressive = milestone_callback(trainer)
        if progressive is not None and progressive.enabled:
            metrics["params"] = format_param_count(progressive.parameter_count(pl_module))
            upcoming: Optional[int] = progressive.manager.get_next_milestone()
            metrics["next"] = milestone_label(upcoming) if upcoming is not None else "all reached"
        return metrics
