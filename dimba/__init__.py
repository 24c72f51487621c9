"""DIMBA: diffusion language model with a Mamba-2 denoiser, grown through milestone checkpoints."""

__version__ = "0.1.0"
