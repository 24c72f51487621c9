"""Training: the LightningModule, the simple loop, strategies (Lightning loads only when asked for)."""

__all__ = ["DIMBALightningModule", "SimpleTrainer"]


def __getattr__(name: str):  # `dimba.training.fsdp2` and friends import without Lightning
    if name == "DIMBALightningModule":
        from dimba.training.module import DIMBALightningModule

        return DIMBALightningModule
    if name == "SimpleTrainer":
        from dimba.training.simple import SimpleTrainer

        return SimpleTrainer
    raise AttributeError(name)
