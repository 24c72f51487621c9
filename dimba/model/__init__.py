from dimba.model.config import DIMBAConfig
from dimba.model.dimba import DIMBA

__all__ = ["DIMBA", "DIMBAConfig"]
