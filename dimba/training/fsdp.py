"""How FSDP cuts DIMBA into units: one per Mamba-2 block (each gathers, computes, frees)."""

from __future__ import annotations

from typing import Set, Type

from torch import nn

from dimba.model.layers import DIMBABlock


def block_wrap_policy() -> Set[Type[nn.Module]]:
    """Lightning's FSDPStrategy takes a set of module classes as `auto_wrap_policy`."""
    return {DIMBABlock}
