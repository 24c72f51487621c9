"""The architecture of a DIMBA model, as data: what a checkpoint records to rebuild it."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, Dict, Mapping, Optional

from dimba.errors import ConfigError
DTYPES = ("fp32", "bf16")
OBJECTIVES = ("diffusion", "masked", "ar")
"""The network each objective trains (see `DIMBAConfig.objective`)."""
SCANS = ("auto", "torch", "mamba_ssm")  # see dimba.model.kernels
NOISE_SCHEDULES = ("cosine", "cosine_zero_snr", "learned")
"""alpha_bar(t) of continuous diffusion (see `dimba.diffusion.schedule`)."""
X0_ESTIMATES = ("regression", "softmax", "bayes")
"""How a continuous model's output becomes its estimate of x0 (see `DIMBAConfig.x0_estimate`)."""
ORIGINAL_RECIPE = {"noise_schedule": "cosine", "embedding_norm": None, "x0_estimate": "regression",
                   "self_condition": False}
"""The architecture options of continuous diffusion at the original recipe's values: what a
checkpoint that does not record them was trained with, and what `masked` and `ar` models
have (any other value is refused for them)."""


def mamba_ssm_installed() -> bool:
    """Whether the mamba-ssm package is importable here (checked without importing it or torch)."""
    import importlib.util

    return importlib.util.find_spec("mamba_ssm") is not None


@dataclass
class DIMBAConfig:
    """Hyperparameters of the denoiser. Every field is validated on construction."""

    vocab_size: int = 256
    """Tokens in the vocabulary (256 for the byte-level tokenizer)."""
    d_model: int = 256
    """Width of the residual stream."""
    n_layers: int = 4
    """Number of Mamba-2 blocks."""
    d_state: int = 16
    """SSM state size per head."""
    expand: int = 2
    """Inner width of a block is expand * d_model."""
    head_dim: int = 64
    """Channels per SSM head; expand * d_model must be a multiple of it."""
    d_conv: int = 4
    """Width of the depthwise causal convolution."""
    chunk_size: int = 64
    """Sequence chunk length of the SSD scan (a speed knob; the result is the same)."""
    d_embed: int = 64
    """Dimension of the continuous token embedding space the diffusion runs in. Kept apart
    from d_model so that widening the network leaves the diffusion space untouched."""
    d_time: int = 128
    """Sinusoidal features of the diffusion timestep."""
    diffusion_steps: int = 1000
    """Number of discrete diffusion timesteps of the noise schedule."""
    noise_schedule: str = "cosine"
    """alpha_bar(t) of continuous diffusion: `cosine` (Nichol & Dhariwal), `cosine_zero_snr`
    (the same, rescaled so that the last timestep is pure noise: Lin et al., 2024), or
    `learned` (the cosine under a learned monotone time warping, trained through the bound:
    `objective.weighting=bound`)."""
    embedding_norm: Optional[float] = 8.0
    """Every token embedding row rescaled to this L2 norm on use (Plaid), so the diffusion's
    signal-to-noise ratio means the same all through training; null leaves the rows free
    (the original recipe). 8 = sqrt(d_embed) at the default d_embed of 64: one per dimension,
    the scale the cosine schedule assumes (set it to sqrt(d_embed) with another d_embed)."""
    x0_estimate: str = "bayes"
    """A continuous model's estimate of x0: `regression` (the network's output itself),
    `softmax` (the mean embedding under its rounding distribution, softmax(out . E^T) . E:
    Plaid's categorical reparameterisation, always a mixture of real embeddings) or `bayes`
    (the same, with each position's own Gaussian likelihood log q(z_t,i | token) added to the
    network's logits: the exact posterior where the network's logits are the context's
    prediction, certain at low noise; needs `embedding_norm`)."""
    self_condition: bool = False
    """The denoiser also reads its own previous estimate of x0 (Analog Bits): a second input
    beside x_t, zeros when there is none; training feeds it half the time."""
    bidirectional: bool = True
    """Scan each sequence in both directions (a denoiser sees the whole sequence)."""
    norm_eps: float = 1e-5
    """RMSNorm epsilon."""
    objective: str = "diffusion"
    """The objective the network is built for, taken from the `objective` group: `diffusion`
    (continuous embeddings, timestep-conditioned, bidirectional), `masked` (token ids with a
    mask token added to the vocabulary, no timestep input, bidirectional) or `ar` (token ids
    with a beginning-of-sequence token added, no timestep input, causal: `bidirectional`
    false). Recorded in every checkpoint, so a model is only ever loaded as what it is."""
    dtype: str = field(default="fp32", compare=False)
    """Compute precision of the denoiser: `fp32`, or `bf16` (autocast: matmuls and the scan's
    products in bfloat16; weights, optimizer state, norms, decays and the loss stay float32).
    A speed knob, not part of the architecture: checkpoints load under either."""
    scan: str = field(default="auto", compare=False)
    """SSD scan implementation: `auto` (mamba-ssm's fused kernel on CUDA when installed,
    else PyTorch), `torch`, or `mamba_ssm`. Same recurrence, same weights."""

    def __post_init__(self) -> None:
        for name in ("vocab_size", "d_model", "n_layers", "d_state", "expand", "head_dim",
                     "d_conv", "chunk_size", "d_embed", "d_time", "diffusion_steps"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"model.{name}", value, "a positive integer")
        if self.d_time % 2:
            raise ConfigError("model.d_time", self.d_time, "an even positive integer")
        if (self.expand * self.d_model) % self.head_dim:
            raise ConfigError(
                "model.head_dim", self.head_dim,
                f"a divisor of expand * d_model = {self.expand * self.d_model}",
            )
        if not isinstance(self.bidirectional, bool):
            raise ConfigError("model.bidirectional", self.bidirectional, "true or false")
        if self.objective not in OBJECTIVES:
            raise ConfigError("model.objective", self.objective, " | ".join(OBJECTIVES))
        if self.objective == "ar" and self.bidirectional:
            raise ConfigError("model.bidirectional", True, "false with model.objective=ar (a causal model reads no "
                                                           "future; choose the objective with objective=ar, which sets both)")
        if self.noise_schedule not in NOISE_SCHEDULES:
            raise ConfigError("model.noise_schedule", self.noise_schedule, " | ".join(NOISE_SCHEDULES))
        norm = self.embedding_norm
        if norm is not None and (isinstance(norm, bool) or not isinstance(norm, (int, float))
                                 or not math.isfinite(norm) or norm <= 0):
            raise ConfigError("model.embedding_norm", norm, "a positive number, or null for free embeddings")
        if self.x0_estimate not in X0_ESTIMATES:
            raise ConfigError("model.x0_estimate", self.x0_estimate, " | ".join(X0_ESTIMATES))
        if self.x0_estimate == "bayes" and self.embedding_norm is None:
            raise ConfigError("model.x0_estimate", "bayes", "regression | softmax with model.embedding_norm=null "
                                                            "(the Bayes estimate needs rows of one norm: set "
                                                            "model.embedding_norm, e.g. 8)")
        if not isinstance(self.self_condition, bool):
            raise ConfigError("model.self_condition", self.self_condition, "true or false")
        if self.objective != "diffusion":
            defaults = {f.name: f.default for f in fields(self)}
            for name, original in ORIGINAL_RECIPE.items():
                value = getattr(self, name)
                if value == defaults[name]:  # left at the default: the option does not apply, so it is off
                    object.__setattr__(self, name, original)
                elif value != original:
                    raise ConfigError(f"model.{name}", value,
                                      f"{'null' if original is None else original} with objective={self.objective}"
                                      f": it applies to continuous diffusion only")
        if self.dtype not in DTYPES:
            raise ConfigError("model.dtype", self.dtype, " | ".join(DTYPES))
        if self.scan not in SCANS:
            raise ConfigError("model.scan", self.scan, " | ".join(SCANS))
        if isinstance(self.norm_eps, bool) or not isinstance(self.norm_eps, (int, float)) or not 0 < self.norm_eps < 1:
            raise ConfigError("model.norm_eps", self.norm_eps, "a number between 0 and 1")

    @property
    def d_inner(self) -> int:
        return self.expand * self.d_model

    @property
    def n_heads(self) -> int:
        return self.d_inner // self.head_dim

    @property
    def time_conditioned(self) -> bool:
        """Only continuous diffusion takes the timestep: a masked model reads the noise level
        off its mask tokens (MDLM), an autoregressive one has none."""
        return self.objective == "diffusion"

    @property
    def embedding_rows(self) -> int:
        """vocab_size, plus the mask token (`masked`) or the beginning-of-sequence token (`ar`),
        which is row `vocab_size`: an input the network reads, never a token it predicts."""
        return self.vocab_size + (self.objective != "diffusion")

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)

    def fixed_difference(self, trained: "DIMBAConfig") -> Optional[str]:
        """How `trained` (a checkpoint's architecture) differs from this one in what growth
        never changes (the objective and the continuous recipe's options), as
        "model.FIELD=TRAINED, not THIS"; None when they agree. A run keeps these."""
        for name in ("objective", *ORIGINAL_RECIPE):
            mine, theirs = getattr(self, name), getattr(trained, name)
            if mine != theirs:
                shown = lambda v: "null" if v is None else str(v).lower() if isinstance(v, bool) else str(v)  # noqa: E731
                return f"model.{name}={shown(theirs)}, not {shown(mine)}"
        return None

    def with_runtime_of(self, other: "DIMBAConfig") -> "DIMBAConfig":
        """This architecture with `other`'s compute options (dtype, scan): a checkpoint decides
        the shape, the run that loads it decides how to compute."""
        return replace(self, dtype=other.dtype, scan=other.scan)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "DIMBAConfig":
        """Build from a mapping (a user's options, a DictConfig); unknown keys are an error and
        missing ones take the defaults."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError("model", unknown, f"known model keys: {', '.join(sorted(known))}")
        return cls(**{k: data[k] for k in data})

    @classmethod
    def from_record(cls, data: Mapping[str, Any]) -> "DIMBAConfig":
        """The architecture a checkpoint (or a past run's config) records: a recipe option it
        lacks takes its original value (`ORIGINAL_RECIPE`), what it was trained with before the
        option existed, not today's default."""
        return cls.from_dict({**ORIGINAL_RECIPE, **data})
