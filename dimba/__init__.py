"""DIMBA: diffusion language model with a Mamba-2 denoiser, grown through milestone checkpoints."""

__version__ = "0.1.0"
__all__ = ["load_model"]


def __getattr__(name: str):  # keep `import dimba` free of torch until a model is asked for
    if name == "load_model":
        from dimba.loading import load_model

        return load_model
    raise AttributeError(name)
