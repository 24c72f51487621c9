"""The DIMBA network. `DIMBAConfig` is plain data (no torch); `DIMBA` loads torch when asked for."""

from dimba.model.config import DIMBAConfig

__all__ = ["DIMBA", "DIMBAConfig"]


def __getattr__(name: str):
    if name == "DIMBA":
        from dimba.model.dimba import DIMBA

        return DIMBA
    raise AttributeError(name)
