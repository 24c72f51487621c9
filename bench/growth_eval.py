"""Held-out evaluation sets with fixed, stratified timesteps and fixed noise.

dimba's validation split (the last 5% of the corpus) is cut into two disjoint halves:
`select` (the grid chooses the recipe on it) and `report` (the figures are read off it).
Every sequence is scored `draws` times, each with its own timestep and noise; the
timesteps are stratified over 1..T (one per equal-width bin, in a fixed random order), so
the diffusion loss, whose value depends strongly on t, is averaged with far less noise
than independent draws would give. Sets are built once from fixed seeds: every model, run
and training seed is scored on exactly the same (sequence, t, noise) triples.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from dimba.model import DIMBA

EVAL_BATCH = 32
SPLIT_SEEDS = {"select": 7_001, "report": 7_002}


@dataclass
class EvalSet:
    name: str
    tokens: torch.Tensor  # (n * draws, seq_len): each sequence `draws` times
    t: torch.Tensor
    noise: torch.Tensor
    sequences: int
    draws: int


def build_evalsets(val_tokens: torch.Tensor, draws: int, diffusion_steps: int, d_embed: int) -> list[EvalSet]:
    """`select` = the first half of the validation sequences, `report` = the second half."""
    half = val_tokens.shape[0] // 2
    sets = []
    for name, part in (("select", val_tokens[:half]), ("report", val_tokens[half: 2 * half])):
        generator = torch.Generator().manual_seed(SPLIT_SEEDS[name])
        tokens = part.repeat(draws, 1)
        n = tokens.shape[0]
        strata = 1 + ((torch.arange(n, dtype=torch.float64) + 0.5) * diffusion_steps / n).long()
        t = strata[torch.randperm(n, generator=generator)].clamp(1, diffusion_steps)
        noise = torch.randn(n, tokens.shape[1], d_embed, generator=generator)
        sets.append(EvalSet(name, tokens, t, noise, part.shape[0], draws))
    return sets


@torch.no_grad()
def evaluate(model: DIMBA, evalset: EvalSet) -> torch.Tensor:
    """Per-(sequence, draw) loss, `DIMBA.loss`'s x0 MSE + CE; their mean is checked against
    the batch value `DIMBA.loss` returns, so this is the loss dimba trains on."""
    was_training = model.training
    model.eval()
    losses = []
    for start in range(0, evalset.tokens.shape[0], EVAL_BATCH):
        sl = slice(start, start + EVAL_BATCH)
        tokens = evalset.tokens[sl]
        out = model.loss(tokens, t=evalset.t[sl], noise=evalset.noise[sl], return_prediction=True)
        x0, x0_hat = model.embedding(tokens), out["x0_hat"]
        mse = (x0_hat - x0).pow(2).mean(dim=(1, 2))
        ce = F.cross_entropy(model.logits(x0_hat).flatten(0, 1).float(), tokens.flatten(), reduction="none")
        per_sample = mse + ce.view(tokens.shape).mean(dim=1)
        if not torch.allclose(per_sample.mean(), out["loss"], rtol=1e-4, atol=1e-5):
            raise AssertionError(f"per-sample loss {float(per_sample.mean())} != DIMBA.loss {float(out['loss'])}")
        losses.append(per_sample)
    model.train(was_training)
    return torch.cat(losses)
