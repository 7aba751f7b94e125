"""NumPy delegates: LAPACK through scipy.linalg for the primitives of :mod:`linalg_pc._backend`."""

from __future__ import annotations

import numpy as np

from . import register


@register("numpy", "solve_triangular")
def solve_triangular(A, B, *, lower, trans, unit_diagonal):
    """xTRTRS through scipy.linalg, looped over leading (broadcast) dimensions."""
    import scipy.linalg as sla

    tr = 1 if trans else 0
    if A.ndim == 2 and B.ndim == 2:
        return sla.solve_triangular(A, B, lower=lower, trans=tr, unit_diagonal=unit_diagonal,
                                    check_finite=False)
    shape = np.broadcast_shapes(A.shape[:-2], B.shape[:-2])
    Ab = np.broadcast_to(A, shape + A.shape[-2:])
    Bb = np.broadcast_to(B, shape + B.shape[-2:])
    out = np.empty(shape + B.shape[-2:], dtype=np.result_type(A.dtype, B.dtype))
    for idx in np.ndindex(*shape):
        out[idx] = sla.solve_triangular(Ab[idx], Bb[idx], lower=lower, trans=tr,
                                        unit_diagonal=unit_diagonal, check_finite=False)
    return out


@register("numpy", "cholesky")
def cholesky(A):
    """xPOTRF with LAPACK's info (0, or the order of the first failing leading minor)."""
    from scipy.linalg import lapack

    batch = A.shape[:-2]
    if A.ndim == 2:
        potrf = lapack.get_lapack_funcs("potrf", (A,))
        c, info = potrf(A, lower=1, clean=1, overwrite_a=0)
        if info == 0 and not np.all(np.isfinite(np.diagonal(c))):
            info = A.shape[-1]
        return c, max(int(info), 0) if info >= 0 else -int(info)
    try:
        with np.errstate(all="ignore"):
            L = np.linalg.cholesky(A)
        finite = np.isfinite(L).reshape(batch + (-1,)).all(axis=-1)
        if np.all(finite):
            return L, np.zeros(batch, dtype=np.int64)
    except np.linalg.LinAlgError:
        pass
    L = np.zeros_like(A)
    info = np.zeros(batch, dtype=np.int64)
    for idx in np.ndindex(*batch):
        L[idx], info[idx] = cholesky(A[idx])
    return L, info
