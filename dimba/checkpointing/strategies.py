"""What a Lightning strategy means for counting and saving, asked in one place."""

from __future__ import annotations

from typing import Any, Mapping

# Strategies that shard parameters across ranks: a rank's tensors are not the model's size.
PARAMETER_SHARDING = ("FSDPStrategy", "ModelParallelStrategy", "DeepSpeedStrategy")
# How a `trainer.strategy` config value (a name, or a `_target_` mapping) is called in messages.
TARGET_NAMES = {"FSDPStrategy": "fsdp", "DDPStrategy": "ddp", "SingleDeviceStrategy": "single_device",
                "DeepSpeedStrategy": "deepspeed", "ModelParallelStrategy": "model_parallel"}


def shards_parameters(strategy: Any) -> bool:
    return type(strategy).__name__ in PARAMETER_SHARDING


def writes_sharded_checkpoints(strategy: Any) -> bool:
    """True where `strategy.save_checkpoint` writes a directory of per-rank shards."""
    return getattr(strategy, "_state_dict_type", None) == "sharded"


def strategy_name(value: Any) -> str:
    """`fsdp` for "fsdp", "fsdp_cpu_offload" or {_target_: ...FSDPStrategy, ...}; else the name."""
    if isinstance(value, Mapping):
        target = str(value.get("_target_", ""))
        return TARGET_NAMES.get(target.rsplit(".", 1)[-1], target)
    name = str(value)
    return "fsdp" if name.startswith("fsdp") else name
