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


# --------------------------------------------------------------------------- operators, columns
@register("numpy", "is_sparse")
def is_sparse(A):
    import scipy.sparse as sp

    return sp.issparse(A)


@register("numpy", "is_linear_operator")
def is_linear_operator(A):
    from scipy.sparse.linalg import LinearOperator

    return isinstance(A, LinearOperator)


def _sparse_all_finite(mod, A):
    """dataᵀdata is finite when every entry is (one fast pass); only when it is not (a NaN or
    inf entry, or overflow of finite ones) are the entries tested one by one."""
    data = A.tocsr().data if A.format not in ("csr", "csc", "coo", "bsr") else A.data
    with np.errstate(over="ignore", invalid="ignore"):
        v = data.ravel()
        if bool(mod.isfinite(v @ v)):
            return True
    return bool(mod.all(mod.isfinite(data)))


@register("numpy", "sparse_all_finite")
def sparse_all_finite(A):
    return _sparse_all_finite(np, A)


@register("numpy", "take_columns")
def take_columns(Q, cols):
    """A view for one run of columns, the one-pass Numba gather for several."""
    from . import column_runs

    if not isinstance(Q, np.ndarray):
        return None
    runs = column_runs(cols)
    if len(runs) == 1:
        return Q[..., runs[0][0]:runs[0][1]]
    from .._kernels import cpu_columns

    return cpu_columns.gather_columns(Q, cols)


@register("numpy", "put_columns")
def put_columns(Q, cols, new, *, inplace):
    """Out of place: the fused copy-and-scatter Numba kernel; in place: slice assignments."""
    from . import column_runs

    if not (isinstance(Q, np.ndarray) and isinstance(new, np.ndarray) and new.dtype == Q.dtype):
        return None
    if not inplace:
        from .._kernels import cpu_columns

        return cpu_columns.scatter_columns(Q, cols, new)
    runs = column_runs(cols)
    if len(runs) <= 8:
        for a, b, pos in runs:
            Q[..., a:b] = new[..., pos:pos + (b - a)]
    else:
        Q[..., cols] = new
    return Q


@register("numpy", "matmul_into_columns")
def matmul_into_columns(Q, cols, A, V):
    """One run a:b: ``A @ V`` written by BLAS into the new array, the rest copied once."""
    from . import column_runs

    if not all(isinstance(x, np.ndarray) for x in (Q, A, V)) or not (
            Q.dtype == A.dtype == V.dtype):
        return None
    runs = column_runs(cols)
    if len(runs) != 1:
        return None
    try:
        if np.broadcast_shapes(A.shape[:-2], V.shape[:-2]) != Q.shape[:-2]:
            return None
    except ValueError:
        return None
    a, b, _ = runs[0]
    out = np.empty(Q.shape, dtype=Q.dtype)
    np.matmul(A, V, out=out[..., a:b])
    if a:
        out[..., :a] = Q[..., :a]
    if b < Q.shape[-1]:
        out[..., b:] = Q[..., b:]
    return out
