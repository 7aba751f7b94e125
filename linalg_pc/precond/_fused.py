"""The fused elementwise passes of a step, where the arrays live in host memory.

A step of the Kronecker-factored transforms is a few products of the factors' bases with the
gradient and, between them, elementwise work on arrays as large as the parameter. Written as
array expressions (the path every library takes, and the reference) that work is about fifteen
passes over memory; on NumPy arrays and PyTorch CPU tensors the Numba kernels of
:mod:`linalg_pc._kernels.cpu_precond` do it in four: the finite-gradient test, the moments with
the Adam quotient, the update with weight decay, and each factor's EMA (none at all where the
library multiplies with β and α inside the product: PyTorch's ``baddbmm_``). The kernels equal
the expressions bit for bit (see that module); only the factor EMA inside the product rounds
differently (one rounding of β·K + α·G Gᵀ per entry instead of three).

Each helper returns None (or False) when its arrays are not host arrays the kernels take (a CUDA
tensor, a CuPy or array-API-strict array, a non-contiguous view, an fp16 state, bf16 storage
with fp64 arithmetic); the caller then runs the array expressions. The fused path also reads the
finite-gradient flag on the host: on host memory that is no device synchronization, and a step
with a non-finite gradient then takes the array-expression path, which skips it without
changing any state.

On CuPy arrays (moments and factors in the compute format) the ``device_*`` helpers run one
CuPy ElementwiseKernel per group (:mod:`linalg_pc._kernels.gpu_precond`) with the decay rates
gated on the device, so no flag is read by the host; they equal the array expressions bit for
bit as well.

``FUSE`` turns the fused path off (tests compare the two paths; benchmarks time both).
"""

from __future__ import annotations

import numpy as np

from .._kernels import cpu_precond as K
from .._kernels import gpu_precond as GK
from ._tensor import mT

__all__ = ["FUSE", "host_step", "host_all_finite", "adam_direction", "assemble", "ema", "gram_ema",
           "device_adam", "device_assemble", "device_ema", "product"]

#: Whether the fused host kernels run (False: every step takes the array expressions).
FUSE = True


def _dtype_ok(view, comp: str) -> bool:
    return view is not None and view.dtype == (np.float32 if comp == "fp32" else np.float64)


def host_step(G, comp: str) -> bool | None:
    """For a gradient ``G`` (compute format) in host memory: whether it is finite (one pass
    over its bits). None when the fused path does not apply to it."""
    if not FUSE or comp not in ("fp32", "fp64"):
        return None
    g = K.host_view(G)
    if not _dtype_ok(g, comp):
        return None
    return K.all_finite(g)


def host_all_finite(xp, X) -> bool | None:
    """Whether every entry of the stack ``X`` (fp32/fp64 in host memory, C-contiguous or with
    column-major members, as a QR returns them) is finite: one pass over its bits, no
    temporary. None when no kernel reads it (the caller then tests it by array expressions)."""
    if not FUSE:
        return None
    for view in (X, mT(xp, X)):
        h = K.host_view(view)
        if h is not None and h.dtype in (np.float32, np.float64):
            return K.all_finite(h)
    return None


def host_count(x) -> int | None:
    """The step counter's value when it lies in host memory (read without a synchronization),
    else None."""
    return K.host_count(x)


def _state_view(x, comp: str):
    """A stored state array's flat host view if a kernel can update it in place with ``comp``
    arithmetic: the compute format itself, or bf16 with fp32 arithmetic."""
    h = K.host_view(x)
    if h is None:
        return None
    if h.dtype == K.BF16:
        return h if comp == "fp32" else None
    return h if _dtype_ok(h, comp) else None


def product(a, b):
    """``a @ b``, into recycled host memory where the kernels module can (NumPy, PyTorch CPU):
    the mode products of a fused step then fault no new pages."""
    out = K.matmul(a, b)
    return a @ b if out is None else out


def adam_direction(Gt, m, v, beta1: float, beta2: float, eps: float, comp: str, *,
                   inplace: bool):
    """m ← β₁m + (1−β₁)G̃, v ← β₂v + (1−β₂)G̃², returns m/(√v + ε) (of the stored values),
    in one pass; the result overwrites ``Gt`` when ``inplace``. None: not fusable."""
    g = K.host_view(Gt)
    hm, hv = _state_view(m, comp), _state_view(v, comp)
    if not _dtype_ok(g, comp) or hm is None or hv is None or hm.dtype != hv.dtype:
        return None
    if hm.size != g.size:
        return None
    out = Gt if inplace else K.empty_like(Gt)
    K.adam_moments(g, hm, hv, K.host_view(out), beta1, beta2, eps)
    return out


def assemble(D, P, ss, lrwd: float, comp: str, *, inplace: bool):
    """u = −ss·D, then u ← u − lrwd·(P + u) (P None: no weight decay), one pass; None: not
    fusable. ``ss`` is a Python float or a 0-d array of the compute format."""
    d = K.host_view(D)
    if not _dtype_ok(d, comp):
        return None
    p = None
    if P is not None:
        p = K.host_view(P)
        if not _dtype_ok(p, comp) or p.size != d.size:
            return None
    if isinstance(ss, float):
        s = np.full(1, ss, dtype=d.dtype)
    else:
        s = K.host_view(ss)
        if not _dtype_ok(s, comp):
            return None
    out = D if inplace else K.empty_like(D)
    K.assemble(d, p, K.host_view(out), s, lrwd)
    return out


def ema(dst, new, beta: float, comp: str) -> bool:
    """dst ← β·dst + (1−β)·new in place (dst stored in the compute format or bf16); False: not
    fusable."""
    h = _state_view(dst, comp)
    n = K.host_view(new)
    if h is None or not _dtype_ok(n, comp) or h.size != n.size:
        return False
    K.ema(h, n, beta)
    return True


def gram_ema(xp, dst, X, beta: float, comp: str) -> bool:
    """dst ← β·dst + (1−β)·X Xᵀ by one product where the library scales inside it (X: the mode
    unfolding, (…, d, r)); False: not available (the caller forms X Xᵀ and calls :func:`ema`)."""
    if _state_view(dst, comp) is None or K.BF16 == K.host_view(dst).dtype:
        return False
    return K.gram_ema(dst, X, mT(xp, X), beta)


# ------------------------------------------------------------------------------ device (CuPy)
def device_adam(Gt, m, v, b1, c1, b2, c2, eps: float, comp: str):
    """The moments and the quotient in one CuPy kernel (decays gated on the device); None: not
    CuPy arrays in the compute format."""
    if not FUSE or not GK.takes(comp, Gt, m, v) or m.size != Gt.size:
        return None
    return GK.adam_moments(Gt, m, v, b1, c1, b2, c2, eps)


def device_assemble(D, P, ss, lrwd: float, okf, comp: str):
    """The update with weight decay and the finite gate in one CuPy kernel; None: not CuPy."""
    if not FUSE or not GK.takes(comp, D, P):
        return None
    return GK.assemble(D, P, ss, lrwd, okf)


def device_ema(dst, new, b, c, comp: str) -> bool:
    """dst ← b·dst + c·new in one CuPy kernel (b, c gated 0-d arrays); False: not CuPy."""
    if not FUSE or not GK.takes(comp, dst, new) or dst.size != new.size:
        return False
    GK.ema(dst, new, b, c)
    return True
