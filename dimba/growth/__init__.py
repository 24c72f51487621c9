"""Growing a DIMBA while it trains: operators, optimizer-state transfer, schedule, plan."""

from dimba.growth.operators import DepthMode, Remap, grow_depth, grow_width
from dimba.growth.optim import GrowableAdamW, transfer_optimizer_state

__all__ = ["DepthMode", "GrowableAdamW", "Remap", "grow_depth", "grow_width", "transfer_optimizer_state"]
