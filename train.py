"""Train DIMBA: `python train.py [group=option ...] [key=value ...]` (see README)."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Optional

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from dimba.config import register_configs, validate
from dimba.errors import CheckpointWriteError, ConfigError
from dimba.preflight import check_accelerator, check_writable_dir, resolve_save_dir

log = logging.getLogger("dimba.train")
register_configs()


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> Optional[float]:
    """Returns the final validation loss, the value Hydra's optimizing sweepers minimize."""
    output_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        config = validate(cfg)
        if not config.dry_run:
            check_accelerator(config.trainer.accelerator)
        if config.progressive_checkpoints.enabled and not config.dry_run:
            save_dir = resolve_save_dir(config.progressive_checkpoints.save_dir, output_dir)
            check_writable_dir(save_dir, "progressive_checkpoints.save_dir")
    except ConfigError as exc:
        log.error("Invalid config: %s", exc)
        sys.exit(2)
    from dimba.run import plan, train  # torch and Lightning load only for a valid config

    plan(config)
    if config.dry_run:
        return None
    try:
        return train(config, output_dir).val_loss
    except CheckpointWriteError as exc:  # a full disk, say: every earlier checkpoint is intact
        log.error("%s", exc)
        sys.exit(1)


if __name__ == "__main__":
    main()
