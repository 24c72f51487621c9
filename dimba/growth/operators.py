"""Growth operators: make a DIMBA deeper or wider while it trains (the public names).

The work is split by job: `rules` (what each grown tensor is made of), `unsharded`
(whole models, in place), `sharded` (FSDP2 models, tensor by tensor), `remap` (where old
entries go), `apply` (an event on a model and its optimizer). This module gathers the
names callers import.
"""

from dimba.growth.apply import apply_growth, apply_sharded_growth
from dimba.growth.remap import Remap
from dimba.growth.rules import DepthMode
from dimba.growth.unsharded import adopt_architecture, grow_depth, grow_to, grow_width

__all__ = ["DepthMode", "Remap", "adopt_architecture", "apply_growth", "apply_sharded_growth",
           "grow_depth", "grow_to", "grow_width"]
