"""The Mamba-2 state-space-duality (SSD) scan in pure PyTorch.

Within a chunk of Q steps the scan is a masked matmul (quadratic in Q, fast on matmul
units); across chunks the state is carried by a sequential recurrence, so the cost is
linear in the number of chunks.

On a CPU the matmuls are the cheap part: every pass over a (batch, heads, chunks, Q, Q)
tensor costs about as much as one of them, and autograd's generic backward makes a dozen
such passes plus copies. `ChunkedScan` is therefore an autograd function with its
backward written out: both passes work in one head-major layout, fold the per-step decays
into the small (Q, d_state) operands instead of the (Q, head_dim) ones, and touch each
(Q, Q) tensor a minimal number of times (profile in docs/results/speed.md).
"""

from __future__ import annotations

from typing import Any, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor


def ssd_scan(x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, chunk_size: int,
             D: Optional[Tensor] = None) -> Tensor:
    """y_t = sum_{s<=t} C_t . (prod_{s<r<=t} exp(dt_r A)) B_s dt_s x_s (+ D x_t), per head.

    Shapes: x (batch, length, heads, head_dim); dt (batch, length, heads), positive;
    A (heads,) or (batch, heads), negative (per batch row, so both directions of a
    bidirectional layer can run as one batch); B and C (batch, length, d_state), shared by
    all heads; D, the skip connection, None or shaped like A. Returns y shaped like x.
    """
    length = x.shape[1]
    Q = min(chunk_size, length)
    pad = (-length) % Q
    if pad:  # dt = 0 on padding: no decay and no input, so padding changes nothing
        x = F.pad(x, (0, 0, 0, 0, 0, pad))
        dt = F.pad(dt, (0, 0, 0, pad))
        B = F.pad(B, (0, 0, 0, pad))
        C = F.pad(C, (0, 0, 0, pad))
    y = _apply_scan(x, dt, A, B, C, D, Q)
    return y[:, :length] if pad else y


@torch.compiler.disable  # Dynamo mis-traces its in-place views, and compiling it measured no faster
def _apply_scan(*args: Any) -> Tensor:
    return ChunkedScan.apply(*args)


def _head_major(t: Tensor, Q: int) -> Tensor:
    """A view of (batch, length, heads, ...) as (batch, heads, chunks, Q, ...)."""
    t = t.unflatten(1, (t.shape[1] // Q, Q))
    return t.permute(0, 3, 1, 2, *range(4, t.dim()))


def _per_row(v: Tensor) -> Tensor:
    """A per-head parameter, (heads,) or (batch, heads), broadcastable to (batch, heads, chunks, Q)."""
    return v[None, :, None, None] if v.dim() == 1 else v[:, :, None, None]


def _reduce_like(grad: Tensor, v: Tensor) -> Tensor:
    """Sum a (batch, heads, ...) gradient down to the shape of the parameter v it belongs to."""
    grad = grad.sum(tuple(range(2, grad.dim())), dtype=torch.promote_types(grad.dtype, torch.float32))
    return (grad.sum(0) if v.dim() == 1 else grad).to(v.dtype)


class ChunkedScan(torch.autograd.Function):
    """The chunked SSD scan with a hand-written backward (see the module docstring).

    Per (batch, head, chunk), with X = dt x (Q, p), a the cumulative log decay dt A inside
    the chunk, G = C B^T and L[l, s] = exp(a_l - a_s) for s <= l:
        Y = (G * L) X + diag(e^a) C H_k + D x,   H_{k+1} = e^{a_Q} H_k + B^T diag(e^{a_Q - a}) X,
    with H_0 = 0 the state entering the first chunk. The cumulative decays, the state
    carried between chunks and every sum that feeds the decays' gradients are in at least
    float32 whatever the input dtype; the matmuls in the inputs' dtype, with autocast off.
    Differentiable once (no double backward).
    """

    @staticmethod
    def forward(ctx: Any, x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Optional[Tensor],
                Q: int) -> Tensor:
        with torch.autocast(x.device.type, enabled=False):
            dtype = torch.promote_types(x.dtype, B.dtype)
            ddt = torch.promote_types(dt.dtype, torch.float32)
            batch, length, heads, p = x.shape
            n, chunks = B.shape[-1], length // Q
            xh = _head_major(x.to(dtype), Q).contiguous()  # (b, h, c, Q, p)
            dth = _head_major(dt.to(ddt), Q)  # (b, h, c, Q), a view
            X = xh * dth.to(dtype).unsqueeze(-1)
            cum = (dth * _per_row(A.to(ddt))).cumsum(-1)  # (b, h, c, Q)
            Bc, Cc = B.to(dtype).reshape(batch, 1, chunks, Q, n), C.to(dtype).reshape(batch, 1, chunks, Q, n)

            seg = (cum.unsqueeze(-1) - cum.unsqueeze(-2)).exp_().tril_().to(dtype)  # (b, h, c, Q, Q); > 1 only where zeroed
            G = Cc @ Bc.transpose(-1, -2)  # (b, 1, c, Q, Q)
            M = seg * G
            to_end = (cum[..., -1:] - cum).exp().to(dtype)  # (b, h, c, Q)
            Bw = Bc * to_end.unsqueeze(-1)  # (b, h, c, Q, n)
            states = Bw.transpose(-1, -2) @ X  # (b, h, c, n, p): each chunk's own end state
            chunk_decay = cum[..., -1].exp()  # (b, h, c); the state is carried in the decays' precision
            entering = torch.zeros((batch, heads, chunks, n, p), dtype=ddt, device=x.device)
            for k in range(1, chunks):
                entering[:, :, k] = entering[:, :, k - 1] * chunk_decay[:, :, k - 1, None, None] + states[:, :, k - 1]
            decayed = cum.exp().to(dtype).unsqueeze(-1)  # (b, h, c, Q, 1): decay since the chunk began
            Cw = Cc * decayed  # (b, h, c, Q, n)
            Y = Cw @ entering.to(dtype)
            Y.view(-1, Q, p).baddbmm_(M.reshape(-1, Q, Q), X.reshape(-1, Q, p))
            # The skip term keeps D's precision (float32 under bf16 autocast), as x * D always did.
            out = x.new_empty((batch, length, heads, p), dtype=x.dtype if D is None else torch.promote_types(x.dtype, D.dtype))
            if D is None:
                _head_major(out, Q).copy_(Y)
            else:
                torch.addcmul(Y, xh, _per_row(D.to(dtype)).unsqueeze(-1), out=_head_major(out, Q))
            ctx.save_for_backward(xh, dth, A, D, X, Bc, Cc, seg, G, M, to_end, Bw, chunk_decay, entering, decayed, Cw)
            ctx.dtypes = (x.dtype, dt.dtype, B.dtype, C.dtype)
            ctx.Q = Q
            return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad: Tensor) -> Tuple[Any, ...]:
        xh, dth, A, D, X, Bc, Cc, seg, G, M, to_end, Bw, chunk_decay, entering, decayed, Cw = ctx.saved_tensors
        with torch.autocast(grad.device.type, enabled=False):
            Q, (batch, heads, chunks, _, p), n = ctx.Q, X.shape, Bc.shape[-1]
            ddt = dth.dtype
            dY = torch.empty_like(X).copy_(_head_major(grad, Q))  # (b, h, c, Q, p); ours to overwrite
            # Inside the chunk: Y = M X.
            dX = M.transpose(-1, -2) @ dY
            dM = dY @ X.transpose(-1, -2)  # (b, h, c, Q, Q)
            d_cum = dM.mul_(seg)  # in place, as below: a fresh tensor this size costs more than its arithmetic
            dG = d_cum.sum(1, keepdim=True)  # G is shared by the heads
            d_cum.mul_(G)  # d/d(a_l - a_s) of M = seg * G: dM * M, zero above the diagonal
            d_cum = d_cum.sum(-1, dtype=ddt) - d_cum.sum(-2, dtype=ddt)  # (b, h, c, Q); sums cancel: full precision
            dC = dG @ Bc
            dB = dG.transpose(-1, -2) @ Cc
            # From the state entering the chunk: Y += Cw H.
            dCw = dY @ entering.to(dY.dtype).transpose(-1, -2)  # (b, h, c, Q, n)
            dH = Cw.transpose(-1, -2) @ dY  # (b, h, c, n, p)
            d_cum += (dCw * Cw).sum(-1, dtype=ddt)
            dC = dC + (dCw * decayed).sum(1, keepdim=True)
            # Across chunks: H_{k+1} = chunk_decay_k H_k + states_k, run backwards.
            d_states = torch.zeros_like(entering)
            d_chunk_decay = torch.zeros_like(chunk_decay)
            carry = torch.zeros_like(entering[:, :, 0])
            for k in range(chunks - 1, 0, -1):  # carry: d loss / d H_k (the state entering chunk k)
                carry = carry + dH[:, :, k]
                d_states[:, :, k - 1] = carry
                d_chunk_decay[:, :, k - 1] = (entering[:, :, k - 1] * carry).sum((-1, -2))
                carry = carry * chunk_decay[:, :, k - 1, None, None]
            d_last = d_chunk_decay * chunk_decay  # d/d a_Q of exp(a_Q)
            # Each chunk's end state: states = Bw^T X, Bw = B * exp(a_Q - a).
            d_states = d_states.to(X.dtype)
            dX.view(-1, Q, p).baddbmm_(Bw.reshape(-1, Q, n), d_states.reshape(-1, n, p))
            dBw = X @ d_states.transpose(-1, -2)  # (b, h, c, Q, n)
            dBw_a = (dBw * Bw).sum(-1, dtype=ddt)  # d/d(a_Q - a_s)
            d_cum -= dBw_a
            d_last += dBw_a.sum(-1)
            d_cum[..., -1] += d_last
            dB = dB + (dBw * to_end.unsqueeze(-1)).sum(1, keepdim=True)
            # cum is the running sum of dt * A inside each chunk; X = dt * x.
            d_decay = d_cum.flip(-1).cumsum(-1).flip(-1)  # d/d(dt A), (b, h, c, Q)
            dA = _reduce_like(d_decay * dth, A)
            dx = xh.new_empty((batch, chunks * Q, heads, p))
            torch.mul(dX, dth.to(dX.dtype).unsqueeze(-1), out=_head_major(dx, Q))
            d_dt = d_decay * _per_row(A.to(ddt)) + dX.to(ddt).mul_(xh).sum(-1)  # products in full precision too
            dD = None
            if D is not None:
                D_h = _per_row(D.to(dY.dtype)).unsqueeze(-1)
                _head_major(dx, Q).addcmul_(dY, D_h)
                if grad.dtype == dY.dtype:  # dY is our own copy of grad: multiply in place
                    skip = dY.to(ddt).mul_(xh)
                else:  # the skip's own precision (float32 under bf16); grad itself is never written
                    skip = _head_major(grad, Q).to(ddt) * xh
                dD = _reduce_like(skip, D)
            x_dtype, dt_dtype, B_dtype, C_dtype = ctx.dtypes
            return (
                dx.to(x_dtype),
                d_dt.permute(0, 2, 3, 1).reshape(batch, chunks * Q, heads).to(dt_dtype),
                dA,
                dB.reshape(batch, chunks * Q, n).to(B_dtype),
                dC.reshape(batch, chunks * Q, n).to(C_dtype),
                dD,
                None,
            )


def ssd_reference(x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Optional[Tensor] = None) -> Tensor:
    """The same recurrence, one step at a time: slow and obviously right (for tests)."""
    batch, length, heads, head_dim = x.shape
    state = x.new_zeros(batch, heads, head_dim, B.shape[-1])
    A = A if A.dim() == 2 else A.expand(batch, heads)
    ys = []
    for t in range(length):
        decay = torch.exp(dt[:, t] * A)  # (b, h)
        update = torch.einsum("bhp,bn->bhpn", x[:, t] * dt[:, t, :, None], B[:, t])
        state = state * decay[:, :, None, None] + update
        ys.append(torch.einsum("bhpn,bn->bhp", state, C[:, t]))
    y = torch.stack(ys, dim=1)
    if D is not None:
        y = y + x * (D if D.dim() == 2 else D.expand(batch, heads))[:, None, :, None]
    return y
