"""DIMBA: a diffusion language model whose denoiser is a Mamba-2 stack.

Under `objective=diffusion` tokens live as vectors in a learned embedding space; the model
sees a noised version x_t of a sequence's embeddings and the timestep t, and predicts the
clean embeddings x0. Logits come from the prediction's similarity to every token's embedding
(the "rounding" step of Diffusion-LM), which ties the two loss terms together and keeps the
embeddings from collapsing under the MSE term.

The same stack serves the discrete objectives (`DIMBAConfig.objective`): it reads the
embeddings of token ids, the mask token's or the beginning-of-sequence token's included,
with no timestep, and `token_logits` gives the vocabulary's logits at every position
(bidirectional for `masked`, causal for `ar`, whose `step_logits` carries the scan's state
from one token to the next).
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any, Dict, List, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dimba import internals
from dimba.diffusion.schedule import build_schedule
from dimba.model.config import DIMBAConfig
from dimba.model.layers import DIMBABlock, MixerState, RMSNorm, timestep_features


class DIMBA(nn.Module):
    def __init__(self, config: DIMBAConfig) -> None:
        super().__init__()
        self.config = config
        self.embedding = nn.Embedding(config.embedding_rows, config.d_embed)
        nn.init.normal_(self.embedding.weight, std=1.0)  # unit scale per dim, like the noise
        # A self-conditioned denoiser reads [x_t, previous x0 estimate] (Analog Bits).
        self.in_proj = nn.Linear(config.d_embed * (2 if config.self_condition else 1), config.d_model)
        if config.time_conditioned:
            self.time_mlp = nn.Sequential(
                nn.Linear(config.d_time, config.d_model), nn.SiLU(), nn.Linear(config.d_model, config.d_model)
            )
        self.blocks = nn.ModuleList(DIMBABlock(config) for _ in range(config.n_layers))
        self.norm_f = RMSNorm(config.d_model, config.norm_eps)
        self.out_proj = nn.Linear(config.d_model, config.d_embed)
        if not config.time_conditioned:  # a discrete model starts at uniform logits, not at ~13 nats a token
            nn.init.zeros_(self.out_proj.weight)
            nn.init.zeros_(self.out_proj.bias)
        self.schedule = build_schedule(config.diffusion_steps, config.noise_schedule)

    def denoise(self, x_t: Tensor, t: Optional[Tensor] = None, previous: Optional[Tensor] = None) -> Tensor:
        """The network's output (batch, length, d_embed) at x_t and integer timesteps t (batch,);
        t is None for the models that take no timestep (`masked`, `ar`). For continuous
        diffusion the output is x0_hat (`x0_estimate=regression`) or the query of its rounding
        distribution (`softmax`; `x0_hat` turns either into the estimate). `previous`: a
        self-conditioned model's last x0 estimate (zeros when None).

        Under `dtype="bf16"` the network runs in autocast; the prediction comes back in
        x_t's dtype, so losses and sampling arithmetic stay in full precision.
        """
        compiled = self.__dict__.get("_compiled_denoise")
        return compiled(x_t, t, previous) if compiled is not None else self._denoise(x_t, t, previous)

    def compile_denoiser(self, **options: Any) -> None:
        """Run the denoiser through `torch.compile` from now on (`compile=true`).

        Growth changes the module's structure; Dynamo's guards notice and compile the grown
        model on its first call. Every stage needs a graph with and one without gradients
        (validation, CDLM's no-grad target), so the recompile limit is raised: at Dynamo's
        default of 8 a run with a few growth events would quietly fall back to eager.
        """
        internals.raise_recompile_limit(64)
        self._compiled_denoise = torch.compile(self._denoise, **options)

    def _precision(self, device: torch.device):
        # enabled=False would also switch off an outer autocast (Lightning's bf16-mixed).
        return torch.autocast(device.type, dtype=torch.bfloat16) if self.config.dtype == "bf16" else nullcontext()

    def _denoise(self, x_t: Tensor, t: Optional[Tensor], previous: Optional[Tensor] = None) -> Tensor:
        with self._precision(x_t.device):
            cond = None
            if self.config.time_conditioned:
                cond = self.time_mlp(timestep_features(t, self.config.d_time).to(x_t.dtype))
            inputs = x_t
            if self.config.self_condition:
                inputs = torch.cat([x_t, torch.zeros_like(x_t) if previous is None else previous.to(x_t.dtype)], dim=-1)
            h = self.in_proj(inputs)
            for block in self.blocks:
                h = block(h, cond)
            out = self.out_proj(self.norm_f(h))
        out = out.to(x_t.dtype)
        if self.config.x0_estimate == "bayes":  # + each position's likelihood: q . e_v = log q(z_t | v) + const
            ab = self.schedule.alpha_bar.to(x_t.device)[t]
            out = out + (ab.sqrt() / (1 - ab)).to(x_t.dtype).view(-1, 1, 1) * x_t
        return out

    def estimate(self, x_t: Tensor, t: Tensor, previous: Optional[Tensor] = None) -> Tensor:
        """`denoise` as inference runs it: a self-conditioned model with no `previous` (a
        sampler's last estimate) first estimates x0 from zeros, then reads that estimate. Two
        forwards, a deterministic function of (x_t, t): the bound stays a bound."""
        if self.config.self_condition and previous is None:
            previous = self.x0_hat(self.denoise(x_t, t))
        return self.denoise(x_t, t) if previous is None else self.denoise(x_t, t, previous)

    def x0_hat(self, out: Tensor) -> Tensor:
        """A continuous model's estimate of x0 from its output (`model.x0_estimate`)."""
        return out if self.config.x0_estimate == "regression" else self.rounding_mean(out)

    def _table(self) -> Tensor:
        """The embedding rows as used: rescaled to `embedding_norm` when it is set (Plaid)."""
        weight = self.embedding.weight
        if self.config.embedding_norm is None:
            return weight
        return weight * (self.config.embedding_norm / weight.norm(dim=-1, keepdim=True).clamp(min=1e-12))

    def logits(self, x0_hat: Tensor) -> Tensor:
        """Logits over the vocabulary (never over the mask or beginning-of-sequence row)."""
        weight = self._table()
        return x0_hat @ (weight if weight.shape[0] == self.config.vocab_size else weight[: self.config.vocab_size]).t()

    def token_logits(self, ids: Tensor) -> Tensor:
        """(batch, length, vocab) logits of a discrete model (`masked`, `ar`) reading token ids."""
        return self.logits(self.denoise(self.embed(ids)))

    def empty_states(self, batch: int) -> List[MixerState]:
        """Every block's state before the first token of a causal model (`step_logits`)."""
        weight = self.in_proj.weight
        return [block.mixer.empty_state(batch, weight.device, weight.dtype) for block in self.blocks]

    def step_logits(self, ids: Tensor, states: List[MixerState]) -> Tensor:
        """(batch, vocab) logits of the next token of a causal model after reading `ids` (batch,),
        carrying `states` (updated in place): what `token_logits` gives at that position."""
        with self._precision(ids.device):
            h = self.in_proj(self.embed(ids))
            for block, state in zip(self.blocks, states):
                h = block.step(h, state)
            out = self.out_proj(self.norm_f(h))
        return self.logits(out.float().to(self.embedding.weight.dtype))

    def embed(self, tokens: Tensor) -> Tensor:
        """The clean embeddings x0 of token ids (a method, so FSDP2 gathers the table for it)."""
        if self.config.embedding_norm is None:
            return self.embedding(tokens)
        return F.embedding(tokens, self._table())

    def rounding_mean(self, x0_hat: Tensor) -> Tensor:
        """The mean embedding under the rounding distribution softmax(x0_hat . E^T): what the
        likelihood bound's reverse process uses as its estimate of x0."""
        weight = self._table()  # one gathered table for both products (under FSDP2 a nested
        logits = x0_hat @ weight.t()  # forward method would reshard it before the second)
        return torch.softmax(logits.float(), dim=-1).to(weight.dtype) @ weight

    def forward(self, x_t: Tensor, t: Tensor) -> Tensor:
        return self.logits(self.denoise(x_t, t))

    def loss(
        self,
        tokens: Tensor,
        t: Optional[Tensor] = None,
        noise: Optional[Tensor] = None,
        mse_weight: float = 1.0,
        ce_weight: float = 1.0,
        return_prediction: bool = False,
    ) -> Dict[str, Tensor]:
        """Diffusion loss on a batch of token ids: x0 MSE plus token cross-entropy.

        Pass `t` and `noise` to make the loss deterministic (tests, evaluation). With
        `return_prediction` the dict also holds "x0_hat", so a further term (the CDLM
        consistency loss) can reuse this forward instead of running another. A `masked` or
        `ar` model returns its own objective's loss (which takes none of these options).
        """
        from dimba.objective import ObjectiveConfig
        from dimba.objectives import loss

        return loss(self, tokens, ObjectiveConfig(mse_weight=mse_weight, ce_weight=ce_weight), None, t, noise,
                    return_prediction=return_prediction)
