"""The trainers: `DIMBALightningModule` (Lightning) and `SimpleTrainer` (plain PyTorch), and
what they share (the step recipe, callbacks, strategies, checkpoint IO)."""

__all__ = ["DIMBALightningModule", "SimpleTrainer"]


def __getattr__(name: str):
    if name == "DIMBALightningModule":
        from dimba.training.module import DIMBALightningModule

        return DIMBALightningModule
    if name == "SimpleTrainer":
        from dimba.training.simple import SimpleTrainer

        return SimpleTrainer
    raise AttributeError(name)
