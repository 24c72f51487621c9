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
from dimba.errors import CheckpointLoadError, CheckpointWriteError, ConfigError

CONF = Path(__file__).resolve().parent / "conf"
log = logging.getLogger("dimba.train")
register_configs()


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> Optional[float]:
    """Returns the final validation loss, the value Hydra's optimizing sweepers minimize."""
    from dimba.preflight import prepare_run

    output_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        config = validate(cfg)
        claim = prepare_run(config, output_dir)  # accelerator, save_dir (writable, and ours alone)
    except ConfigError as exc:
        log.error("Invalid config: %s", exc)
        sys.exit(2)
    from dimba.planning import log_plan
    from dimba.run import train  # torch and Lightning load only for a valid config

    with claim:
        try:
            log_plan(config)  # a stage that cannot fit in memory stops the run here
            return train(config, output_dir).val_loss
        except ConfigError as exc:  # found once the data is read: a text too short once tokenized, say
            log.error("Invalid config: %s", exc)
            sys.exit(2)
        except CheckpointLoadError as exc:  # ckpt_path= a file that cannot be resumed
            log.error("Invalid config: ckpt_path: %s", exc)
            sys.exit(2)
        except CheckpointWriteError as exc:  # a full disk, say: every earlier checkpoint is intact
            log.error("%s", exc)
            sys.exit(1)


if __name__ == "__main__":
    from dimba.command_line import check_command_line

    from dimba.planning import plan_text

    status = check_command_line(sys.argv[1:], CONF, plan=plan_text)  # every job, before Hydra writes anything
    if status is not None:
        sys.exit(status)
    main()
