"""QR of many small matrices at once: A (..., m, n) with the leading dimensions as the batch.

NumPy and PyTorch on the CPU: a Numba kernel (``_kernels/cpu_qr.py``) runs one fused Householder
factorization per matrix with ``prange`` over the batch (on a CPU tensor's own memory, without a
copy); CuPy: one CUDA thread per matrix (``_kernels/gpu_qr.py``); other libraries and devices
(array_api_strict, CUDA tensors): the batched array-API reference implementation
(``householder_factor``), which vectorizes over the batch. The backend's ``"batched_qr"``
delegate says which kernel a library has. LAPACK's
per-call overhead (and the per-matrix loops of torch/cuSOLVER batched QR) dominate for matrices
this small: a stack of 100,000 8×8 matrices is ~1 µs of arithmetic each.

The factors follow LAPACK's sign conventions, so they agree with ``numpy.linalg.qr`` matrix by
matrix to rounding. Bound: Householder's, ‖I − QᵀQ‖ ≤ γ̃_{mn}, ‖A − QR‖ ≤ γ̃_{mn}‖A‖ per matrix.
"""

from __future__ import annotations

import math

from .. import _backend as B
from ._common import Ctx, QRResult, finish, guard_overflow, kappa_est, prepare
from .householder import householder_core

__all__ = ["batched_qr", "BATCHED_MAX_DIM"]

#: Size up to which ``method="auto"`` sends a stack of matrices to the batched kernels.
BATCHED_MAX_DIM = 32
#: ``info.kappa_est`` (the largest over the stack) is computed for stacks up to this many
#: matrices; beyond, it would cost more than the factorization and is left nan.
KAPPA_EST_MAX_BATCH = 4096


def batched_core(ctx: Ctx, A):
    """(Q, R) of a stack in the compute dtype; sets ``ctx.trace.backend``.

    The backend's ``"batched_qr"`` delegate runs when the library has one for this stack (the
    Numba kernel for NumPy and CPU torch fp32/fp64 stacks, the CUDA kernel for CuPy up to
    ``BATCHED_MAX_DIM``) and nothing is emulated; otherwise the array-API reference.
    """
    impl = B.delegate(ctx.xp, "batched_qr") if ctx.emulate is None else None

    def factor(X):
        out = impl(X, ctx.mode) if impl is not None else None
        if out is None:
            return householder_core(ctx, X, vendor=False)
        Q, R, ctx.trace.backend = out
        return Q, R

    # a matrix whose R overflowed is factored again scaled by a power of two (the reference
    # path guards itself: householder_core)
    return guard_overflow(ctx, A, factor) if impl is not None else factor(A)


def batched_qr(A, *, mode: str = "reduced", storage=None, compute=None,
               emulate=None) -> QRResult:
    """Householder QR of every matrix of a stack A (..., m, n), in one fused kernel.

    Parameters
    ----------
    A : array (..., m, n)
        Any supported library and real format; meant for m, n <= ~32 (any size is correct).
    mode : {"reduced", "complete", "r"}
    storage, compute, emulate : optional
        Returned format, arithmetic, emulated storage (emulation runs the reference code).

    Returns
    -------
    QRResult
        Q (..., m, k) / (..., m, m), R (..., k, n) / (..., m, n); ``info.kappa_est`` is the
        largest estimate over the stack (computed only for stacks of at most 4096 matrices, else
        nan).

    Notes
    -----
    Cost per matrix 4mn² − 4n³/3 flops (R and Q); no BLAS calls. Bound: Householder's per
    matrix (Higham, ASNA, Thm 19.4).

    Examples
    --------
    >>> import numpy as np
    >>> A = np.random.default_rng(0).standard_normal((1000, 4, 4)).astype(np.float32)
    >>> Q, R, info = batched_qr(A)
    >>> float(np.abs(Q @ R - A).max()) < 1e-5
    True
    """
    ctx, Ac = prepare(A, method="batched", mode=mode, storage=storage, compute=compute,
                      emulate=emulate)
    Q, R = batched_core(ctx, Ac)
    if math.prod(Ac.shape[:-2]) <= KAPPA_EST_MAX_BATCH:
        ctx.trace.kappa_est = kappa_est(ctx.xp, R)
    return finish(ctx, Q, R)
