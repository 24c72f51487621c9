"""Growing a DIMBA while it trains: operators, optimizer-state transfer, schedule, plan, memory."""

_EXPORTS = {
    "DepthMode": "dimba.growth.rules",
    "Remap": "dimba.growth.remap",
    "grow_depth": "dimba.growth.unsharded",
    "grow_width": "dimba.growth.unsharded",
    "GrowableAdamW": "dimba.growth.optim",
    "transfer_optimizer_state": "dimba.growth.optim",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):  # keep `import dimba.growth.memory` and the schedule free of torch
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(name)
