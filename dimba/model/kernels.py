"""Which SSD scan runs: mamba-ssm's fused Triton kernel on a GPU, else the PyTorch one.

`model.scan=auto` (the default) takes mamba-ssm's `mamba_chunk_scan_combined` when the
package is installed and the tensors are on CUDA, and the pure-PyTorch chunked scan
otherwise (CPU, or no mamba-ssm); `torch` always takes the PyTorch scan; `mamba_ssm`
insists on the kernel and is refused at model build time where it cannot run. The two
compute the same recurrence (`tests/test_fused_kernels.py` compares them where mamba-ssm
is present).
"""

from __future__ import annotations

import functools
from typing import Callable, Optional

from torch import Tensor

from dimba.model.ssd import ssd_scan

Scan = Callable[..., Tensor]


@functools.lru_cache(maxsize=None)
def fused_chunk_scan() -> Optional[Callable[..., Tensor]]:
    """mamba-ssm's fused chunked scan, or None where the package (or Triton) is missing."""
    try:
        from mamba_ssm.ops.triton.ssd_combined import mamba_chunk_scan_combined
    except Exception:  # ImportError, or Triton failing to initialise without a GPU
        return None
    return mamba_chunk_scan_combined


def mamba_ssm_scan(x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, chunk_size: int,
                   D: Optional[Tensor] = None) -> Tensor:
    """`ssd_scan`'s contract on mamba-ssm's kernel (B and C as one group shared by all heads;
    A and D of shape (heads,) only)."""
    kernel = fused_chunk_scan()
    assert kernel is not None, "mamba-ssm is not installed"
    dtype = x.dtype
    return kernel(x, dt.float(), A.float(), B.unsqueeze(2).to(dtype), C.unsqueeze(2).to(dtype),
                  chunk_size=chunk_size, D=None if D is None else D.float()).to(dtype)  # the step sizes (hence the decays) stay float32


def select_scan(choice: str, x: Tensor) -> Scan:
    if choice == "torch":
        return ssd_scan
    fused = x.is_cuda and fused_chunk_scan() is not None
    if choice == "mamba_ssm" and not fused:
        raise RuntimeError("model.scan=mamba_ssm needs the mamba-ssm package and CUDA tensors; use model.scan=auto")
    return mamba_ssm_scan if fused else ssd_scan
