"""The training recipe: everything that says how a DIMBA trains, in one value.

`python train.py` builds it from the composed config (`Recipe.from_config`); the Python
API's `DIMBALightningModule(...)` and `SimpleTrainer(...)` keyword arguments are turned
into it here, in one place (`Recipe.from_options`), so every default is the config
dataclasses' and the two trainers train exactly what `train.py` trains, but for the
objective: in Python the model config decides it (`DIMBAConfig()` is the continuous model),
where `train.py`'s defaults list picks `objective=ar`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Any, Dict, Mapping, Optional, Sequence, Union

from dimba.config.schema import Config
from dimba.config.training import (GrowthConfig, OptimConfig, ProgressiveCheckpointsConfig, ValidationConfig,
                                   check_lr_options)
from dimba.growth.schedule import GrowthEvent, as_events, resolve_steps, validate_schedule
from dimba.model.config import DIMBAConfig
from dimba.objective import ObjectiveConfig

# keyword argument -> (recipe field, field of that group); None: the recipe's own field.
OPTIONS: Dict[str, tuple] = {
    **{name: ("optim", name) for name in ("lr", "weight_decay", "betas", "warmup_steps", "min_lr_ratio")},
    "lr_schedule": ("optim", "schedule"),
    "decay_fraction": ("optim", "decay_fraction"),
    "rewarm_steps": ("growth", "rewarm_steps"),
    "lr_restart": ("growth", "lr_restart"),
    "lr_width_exponent": ("growth", "lr_width_exponent"),
    "objective": ("objective", "name"),
    **{f.name: ("objective", f.name) for f in fields(ObjectiveConfig) if f.name != "name"},
    "growth_schedule": ("growth", "schedule"),
    "enable_progressive_checkpoints": ("progressive_checkpoints", "enabled"),
    "progressive_milestones": ("progressive_checkpoints", "milestones"),
    "progressive_save_dir": ("progressive_checkpoints", "save_dir"),
    "progressive_async_save": ("progressive_checkpoints", "async_save"),
    "bpb_sequences": ("validation", "bpb_sequences"),
    "bpb_samples": ("validation", "bpb_samples"),
    "seed": (None, "seed"),
    "compile": (None, "compile"),
    "total_steps": (None, "total_steps"),
}


def _no_milestones() -> ProgressiveCheckpointsConfig:
    return ProgressiveCheckpointsConfig(enabled=False)


@dataclass
class Recipe:
    """How a DIMBA trains, whichever loop runs it."""

    model: DIMBAConfig = field(default_factory=DIMBAConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    growth: GrowthConfig = field(default_factory=GrowthConfig)
    progressive_checkpoints: ProgressiveCheckpointsConfig = field(default_factory=_no_milestones)
    validation: ValidationConfig = field(default_factory=ValidationConfig)
    seed: int = 0
    compile: bool = False
    total_steps: Optional[int] = None
    """Horizon of the LR schedule; None: the Trainer's max_steps."""

    def __post_init__(self) -> None:
        self.model = self.objective.network(self.model)  # the objective decides the network's variant
        self.growth.schedule = resolve_steps(as_events(self.growth.schedule), self.total_steps,
                                             key="growth_schedule", total_key="total_steps", strict=False)
        validate_schedule(self.model, self.growth.schedule)
        check_lr_options(self.optim, self.growth)
        self.objective.check_diffusion_steps(self.model.diffusion_steps)

    @classmethod
    def from_config(cls, config: Config, save_dir: Optional[str] = None) -> "Recipe":
        progressive = config.progressive_checkpoints
        if save_dir is not None:
            progressive = replace(progressive, save_dir=str(save_dir))
        return cls(model=config.model, optim=config.optim, objective=config.objective, growth=config.growth,
                   progressive_checkpoints=progressive, validation=config.validation, seed=config.seed, compile=config.compile,
                   total_steps=config.optim.total_steps or config.trainer.max_steps)

    @classmethod
    def from_options(cls, vocab_size: Optional[int] = None,
                     model_config: Union[DIMBAConfig, Mapping[str, Any], None] = None, **options: Any) -> "Recipe":
        """The Python API's keyword arguments (`enable_progressive_checkpoints=True`, `lr=...`, ...);
        an unknown one is a TypeError, as for any function."""
        unknown = sorted(set(options) - set(OPTIONS))
        if unknown:
            raise TypeError(f"unexpected keyword argument(s) {', '.join(unknown)}; known: {', '.join(sorted(OPTIONS))}")
        model = model_config if isinstance(model_config, DIMBAConfig) else DIMBAConfig.from_dict(dict(model_config or {}))
        if vocab_size is not None:
            model = replace(model, vocab_size=vocab_size)
        groups: Dict[str, Dict[str, Any]] = {}
        own: Dict[str, Any] = {}
        for name, value in options.items():
            group, key = OPTIONS[name]
            (own if group is None else groups.setdefault(group, {}))[key] = value
        if "schedule" in groups.get("growth", {}):
            groups["growth"]["schedule"] = as_events(groups["growth"]["schedule"] or [])
        if "progressive_checkpoints" in groups:  # off unless asked for, the Python API's default
            progressive = groups["progressive_checkpoints"]
            progressive.setdefault("enabled", _no_milestones().enabled)
            progressive["milestones"] = list(progressive.get("milestones") or [])
        built = {name: kind(**groups[name]) for name, kind in (
            ("optim", OptimConfig), ("objective", ObjectiveConfig), ("growth", GrowthConfig),
            ("progressive_checkpoints", ProgressiveCheckpointsConfig), ("validation", ValidationConfig)) if name in groups}
        return cls(model=model, **built, **own)

    def as_options(self) -> Dict[str, Any]:
        """The recipe as plain keyword arguments of `from_options` (Lightning's hyperparameters:
        `load_from_checkpoint` rebuilds the module from them; all loadable with weights_only)."""
        values: Dict[str, Any] = {"vocab_size": self.model.vocab_size, "model_config": self.model.to_dict()}
        for name, (group, key) in OPTIONS.items():
            value = getattr(self if group is None else getattr(self, group), key)
            if name == "growth_schedule":
                value = [e.to_dict() for e in value]
            elif name == "progressive_milestones":
                value = [int(m) for m in value]
            elif isinstance(value, (list, tuple)):
                value = list(value)
            values[name] = value
        return values

    @property
    def schedule(self) -> Sequence[GrowthEvent]:
        return self.growth.schedule
