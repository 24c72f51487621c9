from dimba.diffusion.schedule import CosineSchedule

__all__ = ["CosineSchedule"]
