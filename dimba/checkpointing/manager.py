"""ProgressiveCheckpointManager: the seed document's API for milestone checkpoints.

It owns the on-disk layout (file names, JSON sidecars, listing, lookup) and the milestone
state. Two writers share it: `save_checkpoint` (plain PyTorch, e.g. SimpleTrainer or user
code) and the Lightning callback, which lets `trainer.save_checkpoint` serialize and then
hands the file to `commit_milestones`.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from dimba.checkpointing import atomic_io
from dimba.checkpointing.sidecars import inspect_sidecar
from dimba.checkpointing.milestones import (
    MilestoneTracker,
    format_param_count,
    milestone_label,
    parse_milestones,
)

log = logging.getLogger(__name__)

SIDECAR_FORMAT = "dimba.progressive_checkpoint/1"
CHECKPOINT_FORMAT_FILE, CHECKPOINT_FORMAT_DCP = "torch_save", "torch_dcp"
PathLike = Union[str, os.PathLike]


class CheckpointLoadError(RuntimeError):
    """A checkpoint file that cannot be read; the message names the file."""


def ensure_console_logging() -> None:
    """Show dimba's INFO lines (the 🎯 line) in plain scripts where nobody configured logging.

    Under Hydra the root logger already has handlers and nothing is added, so the lines
    reach the run's log file through the normal propagation.
    """
    package_logger = logging.getLogger("dimba")
    if logging.getLogger().handlers or package_logger.handlers:
        return
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(message)s"))
    package_logger.addHandler(handler)
    package_logger.setLevel(logging.INFO)


def count_trainable_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def checkpoint_name(milestone: int, global_step: int) -> str:
    return f"checkpoint_{milestone_label(milestone)}_step_{int(global_step)}.pt"


class ProgressiveCheckpointManager:
    """Milestone state plus the files that record it, as in the seed document."""

    def __init__(
        self,
        milestones: Sequence[Any],
        save_dir: PathLike = "./progressive_checkpoints",
        enabled: bool = True,
    ) -> None:
        self.enabled = bool(enabled)
        self.tracker = MilestoneTracker(parse_milestones(list(milestones)) if milestones else [])
        self.save_dir = Path(save_dir)
        ensure_console_logging()

    # ----------------------------------------------------------------- state
    @property
    def milestones(self) -> List[int]:
        return list(self.tracker.milestones)

    @property
    def reached_milestones(self) -> List[int]:
        return list(self.tracker.reached)

    def get_next_milestone(self) -> Optional[int]:
        return self.tracker.next_milestone()

    def state_dict(self) -> Dict[str, List[int]]:
        return self.tracker.state_dict()

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.tracker.load_state_dict(state)

    @staticmethod
    def format_param_count(count: int) -> str:
        return format_param_count(count)

    @staticmethod
    def count_parameters(model: nn.Module) -> int:
        """Trainable parameters, as the seed document counts them."""
        return count_trainable_parameters(model)

    def should_save_checkpoint(self, model: nn.Module) -> Tuple[bool, Optional[int]]:
        """(True, smallest unsaved milestone the model has reached) or (False, None)."""
        if not self.enabled:
            return False, None
        crossed = self.tracker.crossed(self.count_parameters(model))
        return (True, crossed[0]) if crossed else (False, None)

    # ----------------------------------------------------------------- writing
    def prepare_save_dir(self) -> None:
        """Create the directory and drop leftovers of interrupted writes: temporary files,
        and sidecars of ours whose checkpoint never got its final name. A checkpoint file
        is never deleted: one without a sidecar is simply not a milestone checkpoint."""
        self.save_dir.mkdir(parents=True, exist_ok=True)
        leftovers = list(atomic_io.remove_stale_temporaries(self.save_dir))
        for sidecar in self.save_dir.glob("checkpoint_*_step_*.json"):
            if not sidecar.with_suffix(".pt").exists() and _is_our_sidecar(sidecar):
                sidecar.unlink(missing_ok=True)
                leftovers.append(sidecar)
        for path in leftovers:
            log.warning("Removed an incomplete checkpoint write: %s", path)

    def checkpoint_path(self, milestone: int, global_step: int) -> Path:
        return self.save_dir / checkpoint_name(milestone, global_step)

    def build_checkpoint(
        self,
        model: nn.Module,
        optimizer: Optional[torch.optim.Optimizer],
        global_step: int,
        milestones: Sequence[int],
        current_params: int,
        metadata: Optional[Dict[str, Any]] = None,
    ) -> Dict[str, Any]:
        """The seed document's checkpoint dict, for the plain-PyTorch writer."""
        checkpoint: Dict[str, Any] = {"model_state_dict": model.state_dict()}
        if optimizer is not None:
            checkpoint["optimizer_state_dict"] = optimizer.state_dict()
            checkpoint["optimizer_param_names"] = optimizer_param_names(optimizer, model)
        checkpoint.update(self.milestone_entries(global_step, milestones, current_params, metadata))
        return checkpoint

    def milestone_entries(
        self,
        global_step: int,
        milestones: Sequence[int],
        current_params: int,
        metadata: Optional[Dict[str, Any]] = None,
    ) -> Dict[str, Any]:
        """The seed's scalar keys. With several milestones in one save, the file's
        `target_milestone` is the largest; each sidecar names its own milestone."""
        return {
            "global_step": int(global_step),
            "current_params": int(current_params),
            "target_milestone": int(max(milestones)),
            "milestones": self.milestones,
            "reached_milestones": sorted(set(self.tracker.reached) | {int(m) for m in milestones}),
            "metadata": dict(metadata or {}),
        }

    def save_checkpoint(
        self,
        model: nn.Module,
        optimizer: Optional[torch.optim.Optimizer] = None,
        global_step: int = 0,
        milestone: Optional[int] = None,
        metadata: Optional[Dict[str, Any]] = None,
    ) -> str:
        """Save one checkpoint for `milestone`, or for every milestone the model has crossed.

        Returns the path of the largest milestone's checkpoint. The weights are serialized
        once even when several milestones are saved together.
        """
        current = self.count_parameters(model)
        milestones = [int(milestone)] if milestone is not None else self.tracker.crossed(current)
        if not milestones:
            raise ValueError(
                f"No milestone to save: the model has {format_param_count(current)} trainable "
                f"parameters and the next milestone is {self._next_str()}"
            )
        self.prepare_save_dir()
        checkpoint = self.build_checkpoint(model, optimizer, global_step, milestones, current, metadata)
        largest = self.checkpoint_path(max(milestones), global_step)
        tmp = atomic_io.temporary_path(largest, tag=".data")
        try:
            torch.save(checkpoint, tmp)
        except BaseException:
            atomic_io.discard(tmp)
            raise
        paths = self.commit_milestones(tmp, milestones, global_step, current, metadata)
        return str(paths[max(milestones)])

    def commit_milestones(
        self,
        written: Path,
        milestones: Sequence[int],
        global_step: int,
        current_params: int,
        metadata: Optional[Dict[str, Any]] = None,
    ) -> Dict[int, Path]:
        """Publish a fully written temporary checkpoint under each milestone's name.

        Order matters for crash safety: the bytes are durable first; then, per milestone,
        its sidecar and only then the checkpoint's final name (a hard link to the same
        bytes). A checkpoint under its final name therefore always has its sidecar, and
        the milestones count as reached only after all files are in place.
        """
        written = Path(written)
        milestones = sorted({int(m) for m in milestones})
        paths = {m: self.checkpoint_path(m, global_step) for m in milestones}
        reached = sorted(set(self.tracker.reached) | set(milestones))
        try:
            atomic_io.fsync_path(written)
            size = atomic_io.size_on_disk(written)
            for m in milestones:
                sidecar = {
                    "format": SIDECAR_FORMAT,
                    "checkpoint": paths[m].name,
                    # torch_save: one file; torch_dcp: a directory of shards written by every
                    # rank (FSDP), readable with read_checkpoint / dimba.load_model too.
                    "checkpoint_format": CHECKPOINT_FORMAT_DCP if written.is_dir() else CHECKPOINT_FORMAT_FILE,
                    "global_step": int(global_step),
                    "current_params": int(current_params),
                    "current_params_str": format_param_count(current_params),
                    "target_milestone": m,
                    "milestone_str": milestone_label(m),
                    "milestones": self.milestones,
                    "reached_milestones": reached,
                    "saved_together_with": [paths[o].name for o in milestones if o != m],
                    "size_bytes": size,
                    "created_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                    "metadata": _jsonable(metadata or {}),
                }
                atomic_io.write_json_atomic(paths[m].with_suffix(".json"), sidecar)
                atomic_io.link_or_copy_atomic(written, paths[m])
        finally:
            atomic_io.discard(written)
        self.tracker.mark_reached(milestones)
        for m in milestones:
            log.info(
                "🎯 Progressive checkpoint saved: %s (current: %s) at step %d\n   Path: %s",
                milestone_label(m),
                format_param_count(current_params),
                global_step,
                paths[m],
            )
        return paths

    # ----------------------------------------------------------------- reading
    def list_checkpoints(self) -> List[Dict[str, Any]]:
        """Milestone checkpoints in `save_dir`, sorted by milestone then step, from the
        sidecars alone (no torch load). Each entry has `status`: "ok", or "unreadable" with
        an `error` (a sidecar that does not parse, a checkpoint of the wrong size). A
        checkpoint without its sidecar is an interrupted write and is not listed."""
        if not self.save_dir.is_dir():
            return []
        entries = []
        for sidecar in sorted(self.save_dir.glob("checkpoint_*_step_*.json")):
            info = inspect_sidecar(sidecar)
            if info["status"] == "missing":
                continue
            if info["status"] == "unreadable":
                log.warning("Unreadable milestone checkpoint %s: %s", info["path"], info["error"])
            entries.append(info)
        return sorted(entries, key=lambda e: (e["target_milestone"], e["global_step"]))

    def valid_checkpoints(self) -> List[Dict[str, Any]]:
        return [e for e in self.list_checkpoints() if e["status"] == "ok"]

    def get_checkpoint_path_for_milestone(self, milestone: Any) -> Optional[str]:
        """The newest complete checkpoint saved for exactly this milestone, if any."""
        target = parse_milestones([milestone])[0]
        matches = [e for e in self.valid_checkpoints() if e["target_milestone"] == target]
        return matches[-1]["path"] if matches else None

    def forget_unsaved_milestones(self) -> List[int]:
        """A milestone counts as reached only if its checkpoint is in `save_dir`.

        A crash between the files of milestones saved together leaves one the restored
        state calls reached but no file holds: it is saved again, never skipped.
        """
        saved = set(self.saved_milestones())
        missing = [m for m in self.tracker.reached if m not in saved]
        if missing:
            log.warning("Milestones without a checkpoint in %s will be saved again: %s",
                        self.save_dir, ", ".join(milestone_label(m) for m in missing))
            self.tracker.reached = [m for m in self.tracker.reached if m in saved]
        return missing

    def saved_milestones(self) -> List[int]:
        return sorted({e["target_milestone"] for e in self.valid_checkpoints()})

    def load_checkpoint(
        self,
        filepath: PathLike,
        model: Optional[nn.Module] = None,
        optimizer: Optional[torch.optim.Optimizer] = None,
        map_location: Any = "cpu",
        strict: bool = True,
    ) -> Dict[str, Any]:
        """Load weights (and optimizer state) and restore which milestones were reached.

        A DIMBA smaller than the checkpoint is first grown to the recorded shape, and the
        optimizer pointed at the grown parameters. Always `weights_only=True`: a
        checkpoint is data, never code.
        """
        checkpoint = load_checkpoint_file(filepath, map_location=map_location)
        if model is not None:
            grow_to_checkpoint(model, optimizer, checkpoint, filepath)
            model.load_state_dict(checkpoint["model_state_dict"], strict=strict)
        if optimizer is not None and "optimizer_state_dict" in checkpoint:
            load_optimizer_state(optimizer, checkpoint["optimizer_state_dict"], filepath, model,
                                 checkpoint.get("optimizer_param_names"))
        self.tracker.mark_reached(checkpoint.get("reached_milestones", []))
        self.forget_unsaved_milestones()
        info = {k: v for k, v in checkpoint.items() if k not in _BULKY_KEYS}
        info["path"] = str(filepath)
        return info

    def _next_str(self) -> str:
        nxt = self.get_next_milestone()
        return "none (all reached)" if nxt is None else milestone_label(nxt)


def grow_to_checkpoint(model: nn.Module, optimizer: Optional[torch.optim.Optimizer], checkpoint: Dict[str, Any], path: PathLike) -> None:
    """Grow a DIMBA (in place) to the architecture the checkpoint records, if it is smaller."""
    from dimba.growth.operators import grow_to
    from dimba.growth.optim import transfer_optimizer_state
    from dimba.loading import recorded_architecture
    from dimba.model import DIMBA

    target = recorded_architecture(checkpoint)
    if target is None or not isinstance(model, DIMBA) or model.config == target:
        return
    try:
        remaps = grow_to(model, target)
    except ValueError as exc:
        raise CheckpointLoadError(
            f"{path} holds a model of a different shape ({exc}); build one of its size with "
            f"dimba.load_model('{path}') or DIMBA(DIMBAConfig(**checkpoint['metadata']['architecture']))"
        ) from None
    if optimizer is not None:
        groups = len(optimizer.param_groups)
        transfer_optimizer_state(optimizer, remaps, model, lambda p: 0 if groups == 1 or p.dim() >= 2 else 1)


def optimizer_param_names(optimizer: torch.optim.Optimizer, model: nn.Module) -> List[List[str]]:
    """The model-relative name of every parameter in each optimizer group, in order.

    Stored beside the optimizer state so that it loads into an optimizer whose groups are
    laid out differently (the seed's plain `AdamW(model.parameters())`, say).
    """
    names = {id(p): n for n, p in model.named_parameters()}
    return [[names.get(id(p), "") for p in group["params"]] for group in optimizer.param_groups]


def load_optimizer_state(
    optimizer: torch.optim.Optimizer,
    state: Dict[str, Any],
    path: PathLike,
    model: Optional[nn.Module] = None,
    saved_names: Optional[List[List[str]]] = None,
) -> None:
    """Load optimizer state, by parameter name where the group layouts differ.

    An optimizer without per-entry step counts gets each tensor's largest count.
    """
    from dimba.growth.optim import GrowableAdamW

    if not isinstance(optimizer, GrowableAdamW):
        flattened = False
        for entry in state.get("state", {}).values():
            step = entry.get("step")
            if isinstance(step, torch.Tensor) and step.dim() > 0:
                entry["step"] = step.max().reshape(())
                flattened = True
        if flattened:
            log.warning("%s: per-entry Adam step counts (from growth) became one count per tensor for %s; "
                        "dimba.growth.GrowableAdamW keeps them", path, type(optimizer).__name__)
    layout = [len(g["params"]) for g in optimizer.param_groups]
    saved_layout = [len(g["params"]) for g in state.get("param_groups", [])]
    if layout != saved_layout and model is not None and saved_names:
        state = _regroup_by_name(optimizer, state, model, saved_names)
    try:
        optimizer.load_state_dict(state)
    except ValueError as exc:
        raise CheckpointLoadError(f"{path}: the optimizer does not match the checkpoint's ({exc})") from None


def _regroup_by_name(optimizer: torch.optim.Optimizer, state: Dict[str, Any], model: nn.Module, saved_names: List[List[str]]) -> Dict[str, Any]:
    """The saved per-parameter state rearranged into `optimizer`'s own groups."""
    by_name: Dict[str, Any] = {}
    for group, names in zip(state["param_groups"], saved_names):
        for index, name in zip(group["params"], names):
            if index in state["state"]:
                by_name[name] = state["state"][index]
    current = optimizer_param_names(optimizer, model)
    new_state, groups, index = {}, [], 0
    for group, names in zip(optimizer.state_dict()["param_groups"], current):
        ids = []
        for name in names:
            if name in by_name:
                new_state[index] = by_name[name]
            ids.append(index)
            index += 1
        groups.append({**group, "params": ids})
    return {"state": new_state, "param_groups": groups}


_BULKY_KEYS = {"model_state_dict", "optimizer_state_dict", "state_dict", "optimizer_states", "lr_schedulers"}


def read_checkpoint(filepath: PathLike, map_location: Any = "cpu") -> Dict[str, Any]:
    """`torch.load(weights_only=True)` with an error that names the file; a sharded
    (Distributed Checkpoint) directory is gathered into the same dictionary."""
    path = Path(filepath)
    if atomic_io.is_sharded_checkpoint(path):
        return read_distributed_checkpoint(path)
    if not path.is_file():
        raise CheckpointLoadError(f"Checkpoint not found: {path}")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # corrupt zip, truncated file, refused pickle
        raise CheckpointLoadError(f"Cannot load checkpoint {path}: {exc}") from exc
    if not isinstance(checkpoint, dict):
        raise CheckpointLoadError(f"{path} is not a checkpoint (it holds a {type(checkpoint).__name__})")
    return checkpoint


def read_distributed_checkpoint(path: Path) -> Dict[str, Any]:
    """A checkpoint directory written by Lightning's FSDP strategy (state_dict_type
    "sharded"), as one full dictionary on the CPU, in a single process (no process group).

    Lightning keeps the module's state under "model" and optimizer states under
    "optimizer_<i>" in the shards, and everything else in `meta.pt`; this puts them back
    under the keys of a one-file checkpoint (`state_dict`, `optimizer_states`) and adds the
    seed's `model_state_dict`. Both parts load with `weights_only=True`.
    """
    from torch.distributed.checkpoint import FileSystemReader
    from torch.distributed.checkpoint.format_utils import _EmptyStateDictLoadPlanner
    from torch.distributed.checkpoint.state_dict_loader import _load_state_dict

    shards: Dict[str, Any] = {}
    try:
        _load_state_dict(shards, storage_reader=FileSystemReader(path), planner=_EmptyStateDictLoadPlanner(), no_dist=True)
        meta = path / "meta.pt"
        checkpoint = torch.load(meta, map_location="cpu", weights_only=True) if meta.is_file() else {}
    except Exception as exc:
        raise CheckpointLoadError(f"Cannot load checkpoint {path}: {exc}") from exc
    checkpoint["state_dict"] = shards.pop("model", {})
    optimizers = sorted(k for k in shards if k.startswith("optimizer_"))
    if optimizers:
        checkpoint["optimizer_states"] = [shards.pop(k) for k in optimizers]
    prefix = "model."
    state = checkpoint["state_dict"]
    checkpoint.setdefault("model_state_dict", {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)} or state)
    return checkpoint


def load_checkpoint_file(filepath: PathLike, map_location: Any = "cpu") -> Dict[str, Any]:
    """A milestone checkpoint (the seed's keys), or an error naming the file."""
    checkpoint = read_checkpoint(filepath, map_location)
    if "model_state_dict" not in checkpoint:
        raise CheckpointLoadError(f"{filepath} is not a dimba milestone checkpoint (no 'model_state_dict')")
    return checkpoint


def _is_our_sidecar(path: Path) -> bool:
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(info, dict) and info.get("format") == SIDECAR_FORMAT


def _jsonable(value: Any) -> Any:
    """Metadata for the sidecar: tensors become numbers, everything else must be JSON."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, torch.Tensor):
        return value.item() if value.numel() == 1 else value.tolist()
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)
