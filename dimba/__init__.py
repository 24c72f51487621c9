"""DIMBA: diffusion language model with a Mamba-2 denoiser, grown through milestone checkpoints."""

from dimba.version import __version__

__all__ = ["__version__", "load_model"]


def __getattr__(name: str):  # keep `import dimba` free of torch until a model is asked for
    if name == "load_model":
        from dimba.io.load import load_model

        return load_model
    raise AttributeError(name)
