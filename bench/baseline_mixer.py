"""The mixer as it was before the speed work (2026-12-06), frozen for side-by-side timing.

`bench/throughput.py --variants baseline,...` swaps this forward into a model's mixers, so
every speedup is measured against the previous step in the same process, on the same
weights: autograd through an einsum-based chunked scan, one `nn.Conv1d` per direction on
transposed copies, each direction scanned on its own. Not used by dimba itself.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def einsum_ssd_scan(x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, chunk_size: int) -> Tensor:
    """y_t = sum_{s<=t} C_t . (prod_{s<r<=t} exp(dt_r A)) B_s dt_s x_s, per head.

    Shapes: x (batch, length, heads, head_dim); dt (batch, length, heads), positive;
    A (heads,), negative; B and C (batch, length, d_state), shared by all heads.
    Returns y with the shape of x (the D skip connection is the caller's).
    """
    batch, length, heads, head_dim = x.shape
    Q = min(chunk_size, length)
    pad = (-length) % Q
    if pad:  # dt = 0 on padding: no decay and no input, so padding changes nothing
        x = F.pad(x, (0, 0, 0, 0, 0, pad))
        dt = F.pad(dt, (0, 0, 0, pad))
        B = F.pad(B, (0, 0, 0, pad))
        C = F.pad(C, (0, 0, 0, pad))
    n_chunks = x.shape[1] // Q
    d_state = B.shape[-1]

    xdt = (x * dt.unsqueeze(-1)).view(batch, n_chunks, Q, heads, head_dim)
    log_decay = (dt * A).view(batch, n_chunks, Q, heads).permute(0, 3, 1, 2)  # (b, h, c, Q)
    B = B.view(batch, n_chunks, Q, d_state)
    C = C.view(batch, n_chunks, Q, d_state)
    cum = torch.cumsum(log_decay, dim=-1)

    # 1. Inside each chunk: y_l = sum_{s<=l} (C_l . B_s) exp(cum_l - cum_s) xdt_s.
    causal = torch.ones(Q, Q, dtype=torch.bool, device=x.device).tril()
    segment = (cum.unsqueeze(-1) - cum.unsqueeze(-2)).masked_fill(~causal, float("-inf")).exp()
    scores = torch.einsum("bcln,bcsn->bcls", C, B).unsqueeze(1) * segment  # (b, h, c, Q, Q)
    y = torch.einsum("bhcls,bcshp->bclhp", scores, xdt)

    # 2. Each chunk's own contribution to the state at its end.
    to_end = (cum[..., -1:] - cum).exp()  # (b, h, c, Q)
    chunk_states = torch.einsum("bcsn,bhcs,bcshp->bchpn", B, to_end, xdt)

    # 3. Carry the state across chunks: linear in the number of chunks.
    chunk_decay = cum[..., -1].exp()  # (b, h, c)
    state = x.new_zeros(batch, heads, head_dim, d_state)
    entering = []
    for k in range(n_chunks):
        entering.append(state)
        state = state * chunk_decay[:, :, k, None, None] + chunk_states[:, k]
    entering_states = torch.stack(entering, dim=1)  # (b, c, h, p, n)

    # 4. What the state entering a chunk contributes to each of its outputs.
    y = y + torch.einsum("bcln,bchpn,bhcl->bclhp", C, entering_states, cum.exp())
    return y.reshape(batch, n_chunks * Q, heads, head_dim)[:, :length]


def mixer_forward(self, u: Tensor) -> Tensor:
    """The previous `Mamba2Mixer.forward` (bound to a mixer with `types.MethodType`)."""
    batch, length, _ = u.shape
    z, xbc, dt = torch.split(
        self.in_proj(u), [self.d_inner, self.d_inner + 2 * self.d_state, self.n_heads], dim=-1
    )
    y = 0
    scan = einsum_ssd_scan
    for direction, conv in enumerate(self.convs):
        reverse = direction == 1
        seq, dt_dir = (xbc.flip(1), dt.flip(1)) if reverse else (xbc, dt)
        seq = F.silu(conv(seq.transpose(1, 2))[..., :length].transpose(1, 2))
        x, B, C = torch.split(seq, [self.d_inner, self.d_state, self.d_state], dim=-1)
        x = x.reshape(batch, length, self.n_heads, self.head_dim)
        step = F.softplus(dt_dir + self.dt_bias[direction])
        A = -torch.exp(self.A_log[direction])
        out = scan(x, step, A, B, C, self.chunk_size) + x * self.D[direction][:, None]
        y = y + (out.flip(1) if reverse else out)
    y = y.reshape(batch, length, self.d_inner)
    return self.out_proj(self.norm(y * F.silu(z)))
