"""What a milestone save records, and which milestones a resumed run finds already saved.

The two facts the milestone callback reads from the world around it: the metrics and model
record of the moment (for the checkpoint's `metadata` and its sidecar), and the save
directory of the run a checkpoint came from (a new run started from another run's
checkpoint does not save that run's milestones again).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional

import lightning as L

from dimba.checkpointing.format import VAL_BPB, VAL_BPB_SE, parse_name
from dimba.checkpointing.layout import milestone_dir, run_of
from dimba.io.manager import ProgressiveCheckpointManager
from dimba.training.loggers import log_event


def milestone_metadata(trainer: L.Trainer, pl_module: L.LightningModule) -> Dict[str, Any]:
    """The epoch, the latest train/* (this step's) and val/* metrics (`val_step`: the step
    they were computed at), the learning rate, and the module's record (architecture...)."""
    metadata: Dict[str, Any] = {"epoch": trainer.current_epoch}
    for key, value in trainer.callback_metrics.items():
        if key.startswith("train/") or key.startswith("val/"):
            metadata[key] = float(value)
    if any(key.startswith("val/") for key in metadata):
        metadata["val_step"] = getattr(pl_module, "last_validation_step", None)
    if trainer.optimizers:
        metadata["lr"] = float(trainer.optimizers[0].param_groups[0]["lr"])
    measure = getattr(pl_module, "validation_bpb", None)
    bound = measure() if callable(measure) else None
    if bound is not None:  # the saved model's own bound (the latest validation may be older)
        metadata.update({VAL_BPB: bound.bpb, VAL_BPB_SE: bound.bpb_se, "val_bits_per_token": bound.bits_per_token})
        log_event(trainer, {"val/bpb": bound.bpb, "val/bpb_se": bound.bpb_se}, trainer.global_step)
    describe = getattr(pl_module, "checkpoint_record", None)
    if callable(describe):
        metadata.update(describe())
    return metadata


def held_elsewhere(restored_save_dir: Optional[str], ckpt_path: Any, save_dir: Path) -> List[int]:
    """Milestones saved in the resumed checkpoint's own save directory, if that is not ours.
    Checkpoints without that record (format 1): a milestone file's directory is its save
    directory; a run's `checkpoints/last.ckpt` has its milestones beside, as train.py lays out."""
    source = restored_save_dir
    path = Path(str(ckpt_path))
    if source is None and parse_name(path.name) is not None:
        source = str(path.parent)
    elif source is None and milestone_dir(run_of(path)).is_dir():
        source = str(milestone_dir(run_of(path)))
    if source is None or Path(source).resolve() == Path(save_dir).resolve():
        return []
    return ProgressiveCheckpointManager([], source, enabled=False).saved_milestones()
