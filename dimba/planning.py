"""The run's plan before it starts: the growth stages, the step of each milestone, and the
memory each stage needs per rank for the configured strategy and world size.

`dry_run=true` prints it; a real run logs it and stops, in one line, when a stage cannot fit
in the device memory (`trainer_memory_gb`, else detected: the GPU's, or the host's shared
by its processes), naming the smallest world size that would fit.
"""

from __future__ import annotations

import logging
import os
from typing import Dict, List, Optional, Tuple

from dimba.checkpointing.milestones import format_param_count, milestone_label
from dimba.config import Config
from dimba.errors import ConfigError
from dimba.growth.memory import MemoryRow, MemorySetting, format_memory_table, memory_table
from dimba.growth.plan import GrowthPlan, build_plan
from dimba.growth.schedule import validate_schedule
from dimba.training import steps
from dimba.training.lr_schedule import growth_event_lrs

log = logging.getLogger("dimba.run")
GB = 10**9


def growth_plan(config: Config) -> GrowthPlan:
    progressive = config.progressive_checkpoints
    milestones = progressive.milestones if progressive.enabled else []
    return build_plan(config.model, config.growth.schedule, milestones, config.trainer.max_steps)


def unreached_warning(plan: GrowthPlan) -> Optional[str]:
    if not plan.unreached:
        return None
    return (f"Milestones this configuration never reaches: {', '.join(milestone_label(m) for m in plan.unreached)} "
            f"(the model ends at {format_param_count(plan.final.params)} parameters). Grow further (growth.schedule), "
            "start larger (model.*), train longer (trainer.max_steps) or lower progressive_checkpoints.milestones.")


def check_milestones_ahead(config: Config, plan: GrowthPlan) -> None:
    """A fresh run whose model starts at or above every milestone would save them all at its
    first step: almost always `[1,5,10,30]` meant as billions. Refused, naming the start."""
    progressive = config.progressive_checkpoints
    if not progressive.enabled or config.ckpt_path is not None or config.resume is not None:
        return
    start = plan.stages[0].params
    if all(m <= start for m in progressive.milestones):
        meant = "[" + ",".join(f"{m}B" for m in progressive.milestones) + "]" if all(
            m < 1000 for m in progressive.milestones) else "[1B,5B,10B,30B]"
        raise ConfigError("progressive_checkpoints.milestones", list(progressive.milestones),
                          f"parameter counts above the model's starting size ({format_param_count(start)}: it has "
                          f"passed all of them at step 0), such as {meant} for billions")


def world_size(config: Config) -> int:
    devices = config.trainer.devices
    if isinstance(devices, (list, tuple)):
        count = len(devices)
    elif devices == "auto":
        count = _detected_devices(config.trainer.accelerator)
    else:
        count = int(devices)
    return count * int(config.trainer.num_nodes)


def _detected_devices(accelerator: str) -> int:
    if accelerator in ("gpu", "cuda", "auto"):
        import torch

        if torch.cuda.is_available():
            return torch.cuda.device_count()
    return 1


def detected_memory(config: Config) -> Tuple[Optional[int], str]:
    """Bytes each rank has on this machine, and where the figure comes from: the GPU's, or
    the host's memory shared by the ranks this node runs (None where it cannot be known)."""
    if config.trainer.accelerator in ("gpu", "cuda", "auto"):
        import torch

        if torch.cuda.is_available():
            return int(torch.cuda.get_device_properties(0).total_memory), "each GPU here"
        if config.trainer.accelerator != "auto":
            return None, "no GPU here"
    try:
        host = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        return None, "this host's memory is unknown"
    ranks = max(1, world_size(config) // int(config.trainer.num_nodes))
    return host // ranks, f"this host's {host / GB:.1f} GB shared by its {ranks} rank(s)"


def device_memory(config: Config) -> Optional[int]:
    """Bytes one rank may use: `trainer_memory_gb`, else what `detected_memory` finds."""
    if config.trainer_memory_gb is not None:
        return int(config.trainer_memory_gb * GB)
    return detected_memory(config)[0]


def _unverified_memory(config: Config) -> Optional[Tuple[Optional[int], str]]:
    """What this machine's ranks have (bytes or None, and where the figure comes from) where a
    configured `trainer_memory_gb` is more than that or cannot be checked; None where it fits
    or none is configured."""
    if config.trainer_memory_gb is None:
        return None
    detected, source = detected_memory(config)
    return None if detected is not None and config.trainer_memory_gb * GB <= detected else (detected, source)


def unchecked_memory_note(config: Config) -> Optional[str]:
    """Where `trainer_memory_gb` promises more than this machine's ranks have (a plan for
    other hardware, which only `dry_run=true` may make): a note saying so, else None."""
    unverified = _unverified_memory(config)
    if unverified is None:
        return None
    detected, source = unverified
    here = f"{detected / GB:.1f} GB per rank, {source}" if detected is not None else source
    return (f"planned for trainer_memory_gb={config.trainer_memory_gb:g} GB per rank as configured, not checked "
            f"against this machine ({here})")


def check_memory_setting(config: Config) -> None:
    """A real run may not plan with more memory per rank than its ranks have: a preset's
    `trainer_memory_gb` (141 GB, an H200) on smaller GPUs or CPU processes would say every
    stage fits and die hours in. Refused in one line (`dry_run=true` may plan elsewhere)."""
    unverified = _unverified_memory(config)
    if unverified is not None and unverified[0] is not None:
        detected, source = unverified
        raise ConfigError("trainer_memory_gb", config.trainer_memory_gb,
                          f"at most {detected / GB:.1f}, the GB per rank of {source} (null: detect it; "
                          "dry_run=true plans for other hardware)")


def memory_setting(config: Config) -> MemorySetting:
    name = config.trainer.strategy_name
    world = world_size(config)
    strategy = "fsdp" if name == "fsdp" else ("single" if world == 1 and name in ("auto", "single_device") else "ddp")
    return MemorySetting(strategy=strategy, world_size=world, precision=str(config.trainer.precision),
                         micro_batch=config.data.batch_size, seq_len=config.data.seq_len,
                         device_bytes=device_memory(config))


def memory_rows(config: Config) -> Tuple[List[MemoryRow], MemorySetting]:
    """Per-rank memory of every stage the run reaches (from the architecture: no torch)."""
    setting = memory_setting(config)
    events = [e for e in config.growth.schedule if e.step <= config.trainer.max_steps]
    stages = [("start", config.model)] + [(e.describe(), c) for e, c in zip(events, validate_schedule(config.model, events))]
    return memory_table(stages, setting), setting


def lr_table(config: Config) -> str:
    """The learning rate around each growth event the run reaches: on the last step before
    it, on the grown model's first step, and where a re-warm ends."""
    optim, growth = config.optim, config.growth
    multiplier = steps.lr_multiplier(optim, growth, optim.total_steps or config.trainer.max_steps, config.model.d_model)
    head = (f"Learning rate at growth (optim.schedule={optim.schedule}, optim.lr={optim.lr:g}, "
            f"growth.rewarm_steps={growth.rewarm_steps}, growth.lr_restart={str(growth.lr_restart).lower()}, "
            f"growth.lr_width_exponent={growth.lr_width_exponent:g}):")
    rows = [row for row in growth_event_lrs(multiplier, optim.lr) if row.step <= config.trainer.max_steps]
    rows = list({row.step: row for row in rows}.values())  # events of one step share one row
    if not rows:
        return f"{head}\n  no growth event within trainer.max_steps"
    events: Dict[int, List[str]] = {}
    for event in growth.schedule:
        events.setdefault(event.step, []).append(event.describe())
    lines = [head, f"  {'step':>7}  {'event':<30} {'before':>9} {'after':>9} {'rejoined':>9}"]
    for row in rows:
        last = row.step >= config.trainer.max_steps  # grown after the last step: no step runs at the grown size
        after, rejoined = ("–", "–") if last else (f"{row.lr_after:.3g}", f"{row.lr_rejoined:.3g}")
        lines.append(f"  {row.step:>7}  {' + '.join(events[row.step]):<30} {row.lr_before:>9.3g} {after:>9} "
                     f"{rejoined:>9}")
    return "\n".join(lines)


def check_memory(rows: List[MemoryRow], setting: MemorySetting) -> None:
    """Refuse, in one line, a run with a stage that cannot fit on its ranks."""
    for row in rows:
        if row.fits is False:
            fix = (f"a world size of at least {row.smallest_world_size} (trainer.devices x trainer.num_nodes)"
                   if row.smallest_world_size else "a smaller data.batch_size or data.seq_len (no world size fits it)")
            raise ConfigError("trainer.devices", setting.world_size, fix, line=(
                f"trainer.devices x trainer.num_nodes: stage '{row.label}' ({format_param_count(row.params)} "
                f"parameters) needs {row.peak / GB:.1f} GB per rank on {setting.world_size} rank(s) of "
                f"{setting.device_bytes / GB:.1f} GB; accepted: {fix}"))


def plan_text(config: Config) -> str:
    """The plan as `dry_run=true` prints it (on stdout)."""
    plan = growth_plan(config)
    rows, setting = memory_rows(config)
    text = (f"Growth plan (trainer.max_steps={config.trainer.max_steps}):\n{plan.table()}\n\n"
            f"{lr_table(config)}\n\n{format_memory_table(rows, setting)}")
    warning, note = unreached_warning(plan), unchecked_memory_note(config)
    return text + (f"\nWarning: {warning}" if warning else "") + (f"\nNote: {note}" if note else "")


def log_plan(config: Config) -> GrowthPlan:
    """At the start of a run: log the plan, warn about milestones it never reaches, and stop
    if a stage cannot fit in memory."""
    plan = growth_plan(config)
    rows, setting = memory_rows(config)
    log.info("Growth plan (trainer.max_steps=%d):\n%s\n%s\n%s", config.trainer.max_steps, plan.table(),
             lr_table(config), format_memory_table(rows, setting))
    warning = unreached_warning(plan)
    if warning:
        log.warning("%s", warning)
    check_memory(rows, setting)
    return plan
