"""CuPy delegates: cuSOLVER through cupyx.scipy.linalg (and the CUDA batched QR kernel) for the
primitives of :mod:`linalg_pc._backend`."""

from __future__ import annotations

import math

import cupy
import numpy as np

from ._core import register
from .numpy import _bf16, numpy_dtype_kind

register("cupy", "dtype_kind")(numpy_dtype_kind)  # CuPy dtypes are NumPy dtypes
register("cupy", "bf16_dtype")(_bf16)


@register("cupy", "from_bf16_bits")
def from_bf16_bits(h, device):
    return cupy.asarray(h).view(_bf16())


@register("cupy", "solve_triangular")
def solve_triangular(A, B, *, lower, trans, unit_diagonal, side, overwrite_b, cond):
    """cuSOLVER's TRSM for single matrices; None (generic substitution) for batches."""
    if side != "left" or A.ndim != 2 or B.ndim != 2:
        return None
    import cupyx.scipy.linalg as csla

    return csla.solve_triangular(A, B, lower=lower, trans=1 if trans else 0,
                                 unit_diagonal=unit_diagonal)


@register("cupy", "cholesky")
def cholesky(A):
    from .linalg import _cholesky_fallback

    batch = A.shape[:-2]
    try:
        L = cupy.linalg.cholesky(A)
    except Exception:  # noqa: BLE001 - cuSOLVER reports failure by raising when it can sync
        return _cholesky_fallback(cupy, A)
    bad = ~cupy.isfinite(L).reshape(batch + (-1,)).all(axis=-1)
    info = np.where(cupy.asnumpy(bad), A.shape[-1], 0)
    return L, info


@register("cupy", "qr")
def qr(A, mode):
    """cupy.linalg.qr (cuSOLVER xGEQRF/xORGQR)."""
    if mode == "r":
        return None, cupy.linalg.qr(A, mode="r"), "cusolver"
    Q, R = cupy.linalg.qr(A, mode=mode)
    return Q, R, "cusolver"


@register("cupy", "batched_qr")
def batched_qr(A, mode):
    """The CUDA kernel (one thread per matrix) for matrices up to ``gpu_qr.MAX_DIM``; None
    beyond (the caller's array-API code runs)."""
    from .._kernels.gpu_qr import MAX_DIM, batched_householder_gpu

    batch = tuple(A.shape[:-2])
    m, n = A.shape[-2], A.shape[-1]
    if max(m, n) > MAX_DIM:
        return None
    Q, R = batched_householder_gpu(cupy.reshape(A, (math.prod(batch), m, n)), mode)
    Q = None if Q is None else cupy.reshape(Q, batch + tuple(Q.shape[1:]))
    return Q, cupy.reshape(R, batch + tuple(R.shape[1:])), "cuda"


@register("cupy", "memory_extent")
def memory_extent(x):
    """(device, address of element 0, itemsize, shape, byte strides) for memory_overlap."""
    return (int(x.device.id), int(x.data.ptr), int(x.itemsize), tuple(x.shape),
            tuple(int(s) for s in x.strides))


@register("cupy", "to_numpy")
def to_numpy(x):
    return x.get()


@register("cupy", "uniform")
def uniform(shape, rng, *, device, dtype):
    """Draws from a ``cupy.random.Generator``; None (use the NumPy draw) otherwise."""
    if rng is not None and type(rng).__module__.startswith("cupy"):
        return rng.random(shape, dtype=dtype)
    return None


@register("cupy", "countsketch")
def countsketch(X, rows, signs, k):
    """A scatter-add (``cupyx.scatter_add``): O(mn)."""
    import cupyx

    Y = cupy.zeros((k, X.shape[1]), dtype=X.dtype)
    cupyx.scatter_add(Y, cupy.asarray(rows), X * cupy.asarray(signs, dtype=X.dtype)[:, None])
    return Y


# --------------------------------------------------------------------------- operators, columns
@register("cupy", "is_sparse")
def is_sparse(A):
    import cupyx.scipy.sparse as csp

    return csp.issparse(A)


@register("cupy", "is_linear_operator")
def is_linear_operator(A):
    from cupyx.scipy.sparse.linalg import LinearOperator

    return isinstance(A, LinearOperator)


@register("cupy", "sparse_all_finite")
def sparse_all_finite(A):
    from .numpy import _sparse_all_finite

    return _sparse_all_finite(cupy, A)


@register("cupy", "take_columns")
def take_columns(Q, cols):
    """Slices of the runs of consecutive columns (strided gathers are slow)."""
    from .columns import take_by_runs

    return take_by_runs(Q, cols)


@register("cupy", "put_columns")
def put_columns(Q, cols, new, *, inplace):
    """Slice assignments of the runs, an index-put beyond (on a copy unless ``inplace``)."""
    from .columns import put_by_runs

    def index_put(o, c, v):
        o[..., cupy.asarray(c)] = v

    return put_by_runs(Q if inplace else Q.copy(), cols, new, index_put)
