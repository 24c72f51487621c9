from dimba.training.module import DIMBALightningModule
from dimba.training.simple import SimpleTrainer

__all__ = ["DIMBALightningModule", "SimpleTrainer"]
