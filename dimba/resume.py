"""Which checkpoint a resumed run starts from: the highest step among its Lightning
checkpoints and complete milestone checkpoints, skipping what cannot be opened.

Milestone steps come from their sidecars; a Lightning checkpoint's step is read from the
file (memory-mapped, tensors untouched). Finding the run directory itself happens while
Hydra composes, without torch: `dimba.checkpointing.discovery`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import List, Optional, Tuple

from dimba.checkpointing import layout
from dimba.checkpointing.discovery import LIGHTNING_GLOB, complete_milestones
from dimba.checkpointing.files import looks_complete
from dimba.errors import CheckpointLoadError

log = logging.getLogger(__name__)


def checkpoint_step(path: Path) -> Optional[int]:
    """The global step a Lightning checkpoint holds, read without loading its tensors; None
    if unreadable. A sharded checkpoint is a directory whose `meta.pt` holds the step."""
    path = Path(path)
    if not looks_complete(path):
        log.warning("Skipping incomplete checkpoint %s", path)
        return None
    from dimba.io.read import open_checkpoint

    try:
        return int(open_checkpoint(path, tensors=False).data["global_step"])
    except Exception as exc:
        log.warning("Skipping unreadable checkpoint %s: %s", path, exc)
        return None


def resumable_step(path: Path) -> int:
    """The step of the Lightning checkpoint `ckpt_path=` names; a CheckpointLoadError naming
    the file if it cannot be resumed (the torch-free checks ran during validation)."""
    from dimba.io.read import open_checkpoint

    checkpoint = open_checkpoint(path, tensors=False).data
    if "global_step" not in checkpoint:
        raise CheckpointLoadError(f"{path} is not a training checkpoint (no global_step)")
    if "loops" not in checkpoint:
        raise CheckpointLoadError(f"{path} holds no Lightning training state (written by SimpleTrainer or by hand?): "
                                  "continue it with SimpleTrainer.resume, or load its weights with dimba.load_model")
    return int(checkpoint["global_step"])


def recorded_tokenizer(path: Path) -> Optional[dict]:
    """The tokenizer record of a checkpoint (None: trained on bytes, or not recorded)."""
    from dimba.io.read import open_checkpoint

    return open_checkpoint(path, tensors=False).tokenizer


def candidates(run_dir: Path, milestone_dir: Optional[Path] = None) -> List[Tuple[int, float, Path]]:
    """(step, mtime, path) of every checkpoint a run could continue from."""
    found = []
    for entry in complete_milestones(milestone_dir or layout.milestone_dir_of(run_dir)):
        found.append((entry.sidecar.global_step, entry.checkpoint_path.stat().st_mtime, entry.checkpoint_path))
    for path in layout.lightning_dir(run_dir).glob(LIGHTNING_GLOB):
        step = checkpoint_step(path)
        if step is not None:
            found.append((step, path.stat().st_mtime, path))
    return found


def newest_valid_checkpoint(run_dir: Path, milestone_dir: Optional[Path] = None) -> Optional[Path]:
    found = candidates(run_dir, milestone_dir)
    return max(found, key=lambda c: c[:2])[2] if found else None


def check_resume_before_running(config) -> None:
    """What `ckpt_path=` names must be resumable, and on data of its tokenizer where that can
    be told before the data is read (prepared data, or bytes): refused in one line before
    Hydra creates the run's directory. The run checks the tokenizer fully once the data is
    built (a BPE trained on the text is known only then)."""
    from dimba.errors import ConfigError

    if config.ckpt_path is None or config.resume is not None:
        return
    path = Path(config.ckpt_path)
    try:
        resumable_step(path)
    except CheckpointLoadError as exc:
        raise ConfigError("ckpt_path", str(path), "", line=f"ckpt_path: {exc}; accepted: a Lightning checkpoint "
                                                        "(last.ckpt, a milestone .pt, or a sharded directory) or null") from None
    from dimba.io.read import open_checkpoint

    record = open_checkpoint(path, tensors=False)  # read once: the objective and the tokenizer both come from it
    trained_with = str((record.architecture or {}).get("objective", "diffusion"))
    if trained_with != config.objective.name:
        raise ConfigError("objective", config.objective.name, "", line=(
            f"objective: {path} was trained with objective={trained_with}, not {config.objective.name}; resume it "
            f"with objective={trained_with} (a run keeps its objective)"))
    if record.architecture:
        from dataclasses import replace as replace_fields

        from dimba.model.config import ORIGINAL_RECIPE

        trained = replace_fields(config.model, **{k: record.architecture.get(k, original)  # older: the original
                                                  for k, original in ORIGINAL_RECIPE.items()})
        difference = config.model.fixed_difference(trained)
        if difference:
            field = difference.split("=", 1)[0]
            raise ConfigError(field, getattr(config.model, field.split(".", 1)[1]), "", line=(
                f"{field}: {path} was trained with {difference}; resume it with {difference.split(',')[0]} "
                f"(a run keeps its recipe)"))
    from dimba.data.config import ShardsDataConfig
    from dimba.data.records import check_resume_tokenizer

    if isinstance(config.data, ShardsDataConfig):
        from dimba.data.format import read_manifest

        data_record = read_manifest(Path(config.data.path).expanduser(), key="data.path")["tokenizer"]
        check_resume_tokenizer(record.tokenizer, data_record, config.data.path, key="data.path")
    elif config.tokenizer.name == "bytes":
        where = ", ".join(getattr(config.data, "files", None) or []) or "the built-in corpus"
        check_resume_tokenizer(record.tokenizer, None, where, key="tokenizer")
    else:  # bpe trained on the text, or a pretrained file: a tokenizer of another kind can be told now
        trained = (record.tokenizer or {}).get("name", "bytes")
        if trained != config.tokenizer.name:
            raise ConfigError("tokenizer", config.tokenizer.name, "", line=(
                f"tokenizer: {path} was trained with tokenizer={trained}, not {config.tokenizer.name}; resume it "
                f"with tokenizer={trained} (its embeddings mean that tokenizer's tokens)"))
