"""Growing a DIMBA while it trains: operators, optimizer-state transfer, schedule, plan.

Light to import: the schedule is plain data; the operators load torch when asked for.
"""

__all__ = ["DepthMode", "GrowableAdamW", "Remap", "grow_depth", "grow_width", "transfer_optimizer_state"]


def __getattr__(name: str):
    if name in ("DepthMode", "Remap", "grow_depth", "grow_width"):
        from dimba.growth import operators

        return getattr(operators, name)
    if name in ("GrowableAdamW", "transfer_optimizer_state"):
        from dimba.growth import optim

        return getattr(optim, name)
    raise AttributeError(name)
