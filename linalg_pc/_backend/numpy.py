"""NumPy delegates: LAPACK through scipy.linalg (and NumPy's own BLAS, Numba kernels) for the
primitives of :mod:`linalg_pc._backend`."""

from __future__ import annotations

import math

import numpy as np

from ._core import register

#: Row-block size (bytes) of the in-place product X ← X·R⁻¹: a block and its product stay in
#: cache while the block is overwritten.
_INPLACE_BLOCK_BYTES = 1 << 20
#: Below this κ estimate of R, a right-side solve X R⁻¹ without NumPy's own TRSM runs as
#: TRTRI + GEMM (faster than SciPy's TRSM; its extra error u·κ(R) is negligible).
INVERSE_KAPPA_MAX = 100.0
_FLOATS = (np.float32, np.float64)


def _bf16():
    import ml_dtypes

    return np.dtype(ml_dtypes.bfloat16)


def numpy_dtype_kind(dt) -> str:
    """The kind of a NumPy dtype (also CuPy's), ml_dtypes bf16 (kind 'V', 2 bytes) a float."""
    if dt.kind == "V" and dt.itemsize == 2:  # ml_dtypes bfloat16
        return "float"
    return {"f": "float", "c": "complex", "b": "bool", "i": "int", "u": "int"}.get(dt.kind,
                                                                                   "other")


register("numpy", "dtype_kind")(numpy_dtype_kind)
register("numpy", "bf16_dtype")(_bf16)


@register("numpy", "host_blas")
def host_blas(x) -> bool:
    return x.dtype in _FLOATS


@register("numpy", "row_passes")
def row_passes(A, dtype):
    """Streamed passes over the row blocks of a 2-D A in compute dtype ``dtype``
    (:class:`linalg_pc._kernels.cpu_rowpass.RowPasses`: bf16 and fp16 read in their own
    format, no compute-dtype copy of A), or None where they do not run."""
    from .._kernels import cpu_rowpass

    dt = np.dtype(dtype)
    if not (isinstance(A, np.ndarray) and A.ndim == 2 and cpu_rowpass.available(dt)):
        return None
    if not (A.dtype == dt or dt == np.float32 and A.dtype in (np.float16, _bf16())):
        return None
    return cpu_rowpass.RowPasses(A, dt)


@register("numpy", "all_finite")
def all_finite(x) -> bool:
    """Finiteness on bf16 bit patterns (no decode), ``np.isfinite`` otherwise."""
    x = np.asarray(x)
    if x.dtype.kind == "V" and x.dtype == _bf16():  # (ml_dtypes is imported only for bf16)
        return not np.any((x.view(np.uint16) & 0x7FFF) >= 0x7F80)
    return bool(np.all(np.isfinite(x)))


@register("numpy", "memory_extent")
def memory_extent(x):
    """(device, address of element 0, itemsize, shape, byte strides) for memory_overlap."""
    x = np.asarray(x)
    return ("cpu", int(x.__array_interface__["data"][0]), int(x.itemsize), tuple(x.shape),
            tuple(int(s) for s in x.strides))


@register("numpy", "finite_flag")
def finite_flag(x):
    """all_finite as a 0-d NumPy array (the host is NumPy's device)."""
    return np.asarray(all_finite(x))


@register("numpy", "from_bf16_bits")
def from_bf16_bits(h, device):
    return h.view(_bf16())


@register("numpy", "solve_triangular")
def solve_triangular(A, B, *, lower, trans, unit_diagonal, side, overwrite_b, cond):
    """xTRTRS through scipy.linalg, looped over leading (broadcast) dimensions; the right-side
    upper solve of a 2-D fp32/fp64 B through NumPy's own BLAS (:func:`_right_upper`)."""
    if side == "right":
        if (A.ndim == 2 and B.ndim == 2 and not lower and not trans and not unit_diagonal
                and A.dtype == B.dtype and B.dtype in _FLOATS):
            return _right_upper(B, A, own=overwrite_b, cond=cond)
        return None  # the generic code solves the transposed left-side system
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


def _right_upper(X, R, *, own: bool, cond):
    """X R⁻¹ for upper-triangular R. ``own``: X is a work array that may be overwritten.

    TRSM in place from NumPy's own BLAS (:mod:`linalg_pc._kernels.cpu_blas`, mn² flops,
    backward stable) when it is reachable, into recycled memory (``_buffers``) unless X may be
    overwritten; otherwise TRTRI + GEMM over row blocks while ``cond`` <= ``INVERSE_KAPPA_MAX``
    (2mn² flops, extra error u·κ(R)), SciPy's TRSM beyond.
    """
    from .. import _buffers
    from .._kernels import cpu_blas

    if cpu_blas.available(X.dtype):
        Y = X
        if not (own and X.flags.c_contiguous and X.flags.writeable):
            Y = _buffers.empty(X.shape, X.dtype)  # Q's memory: recycled when possible
            np.copyto(Y, X)
        return cpu_blas.trsm_right_upper(Y, R)

    from scipy.linalg import blas, lapack

    if not X.flags.c_contiguous:
        X = np.ascontiguousarray(X)
        own = True
    Rf = np.asfortranarray(R)
    if cond is not None and cond <= INVERSE_KAPPA_MAX:
        trtri = lapack.get_lapack_funcs("trtri", (Rf,))
        Ri, info = trtri(Rf, lower=0)
        if info == 0:
            Ri = np.triu(Ri)
            return _times_inverse_inplace(X, Ri) if own else X @ Ri
    Y = X if own else X.copy()
    trsm = blas.get_blas_funcs("trsm", (Rf,))
    return trsm(1.0, Rf, Y.T, side=0, lower=0, trans_a=1, overwrite_b=1).T


def _times_inverse_inplace(X: np.ndarray, Ri: np.ndarray) -> np.ndarray:
    """X ← X·Ri over row blocks, with NumPy's GEMM (C-contiguous X, no m×n temporary).

    NumPy's matmul, not SciPy's TRMM: the Gram matrices use NumPy's BLAS, and NumPy and SciPy
    each load their own OpenBLAS, whose threads spin after a call and halve the speed of the
    other library's next call (CholQR2 at 200000×64 fp32: 125 ms alternating TRMM and SYRK,
    84 ms with NumPy only). GEMM does twice TRMM's flops on a triangular Ri, but runs faster.
    """
    m, n = X.shape
    b = max(1, _INPLACE_BLOCK_BYTES // max(1, n * X.itemsize))
    tmp = np.empty((min(b, m), n), dtype=X.dtype)
    for i in range(0, m, b):
        blk = X[i:i + b]
        t = tmp[:blk.shape[0]]
        np.matmul(blk, Ri, out=t)
        blk[...] = t
    return X


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


@register("numpy", "qr")
def qr(A, mode):
    """Householder QR through LAPACK: scipy.linalg.qr (xGEQRF/xORGQR) for a matrix,
    numpy.linalg.qr for a stack. Returns (Q or None, R, "lapack")."""
    if A.ndim == 2:
        import scipy.linalg as sla

        smode = {"reduced": "economic", "complete": "full", "r": "r"}[mode]
        out = sla.qr(A, mode=smode, check_finite=False, overwrite_a=False)
        if mode == "r":  # scipy's mode="r" returns the full m×n R
            return None, out[0][:min(A.shape), :], "lapack"
        return out[0], out[1], "lapack"
    out = np.linalg.qr(A, mode=mode)
    if mode == "r":
        return None, out, "lapack"
    return out[0], out[1], "lapack"


def batched_numba(A: np.ndarray, mode: str):
    """The Numba batched Householder kernel on a fp32/fp64 stack (..., m, n); None otherwise.
    Returns (Q or None, R, "numba") with the stack's leading shape."""
    if A.dtype not in _FLOATS:
        return None
    from .._kernels.cpu_qr import batched_householder

    batch = tuple(A.shape[:-2])
    m, n = A.shape[-2], A.shape[-1]
    Q, R = batched_householder(np.reshape(A, (math.prod(batch), m, n)), mode)
    Q = None if Q is None else Q.reshape(batch + Q.shape[1:])
    return Q, R.reshape(batch + R.shape[1:]), "numba"


register("numpy", "batched_qr")(batched_numba)


@register("numpy", "column_sumsq")
def column_sumsq(x):
    """Column sums of squares by one einsum (rows streamed, no temporary)."""
    return np.einsum("...ij,...ij->...j", x, x)


@register("numpy", "tri_cond_est")
def tri_cond_est(R) -> float:
    """LAPACK ``xtrcon``: 1/rcond of the 1-norm estimate (O(n²))."""
    from scipy.linalg import lapack

    R = np.asarray(R)
    if R.dtype not in _FLOATS:
        R = R.astype(np.float64)
    d = np.abs(np.diagonal(R))
    if not np.all(np.isfinite(d)) or np.min(d) == 0:
        return float("inf")
    trcon = lapack.get_lapack_funcs("trcon", (R,))
    if R.flags.c_contiguous:  # κ₁(R) = κ_∞(Rᵀ), and Rᵀ is Fortran-ordered: no copy
        rcond, info = trcon(R.T, norm="I", uplo="L", diag="N")
    else:
        rcond, info = trcon(np.asfortranarray(R), norm="1", uplo="U", diag="N")
    # an inf entry gives rcond = 0 and a NaN gives rcond = NaN: both mean "not usable"
    return float(1.0 / rcond) if rcond > 0 else float("inf")


@register("numpy", "countsketch")
def countsketch(X, rows, signs, k):
    """A sparse (CSR) S times X: O(mn)."""
    import scipy.sparse as sp

    m = X.shape[0]
    S = sp.csr_matrix((signs.astype(X.dtype), (rows, np.arange(m))), shape=(k, m))
    return np.asarray(S @ X)


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
    from .columns import column_runs

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
    from .columns import column_runs

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
    from .columns import column_runs

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


@register("numpy", "gram")
def gram(X):
    """X Xᵀ through NumPy's matmul of an array with its own transpose, which runs BLAS xSYRK
    for 2-D float operands (half the flops); a stack member by member, so that each member
    gets the same kernel as the matrix alone (a stacked state equals its members' states)."""
    if X.ndim == 2:
        return X @ X.T
    out = np.empty(X.shape[:-1] + X.shape[-2:-1], dtype=np.result_type(X.dtype, X.dtype))
    for idx in np.ndindex(*X.shape[:-2]):
        out[idx] = X[idx] @ X[idx].T
    return out
