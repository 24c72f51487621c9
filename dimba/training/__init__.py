from dimba.training.module import DIMBALightningModule

__all__ = ["DIMBALightningModule"]
