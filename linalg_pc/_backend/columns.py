"""Generic primitives for operator objects and basis columns: which library a host object
(scipy.sparse, LinearOperator, cupyx sparse) belongs to, and column take/put on stacks of
bases, each asking its library's delegate first."""

from __future__ import annotations

import numpy as np

from ._core import _library_delegate, array_namespace, delegate, device_of

# Used by linalg_pc._operators (operator normalization) and linalg_pc.basis (column refresh).
# Host objects (scipy.sparse matrices, SciPy LinearOperators, cupyx sparse matrices) are not
# array-API arrays: their library is read from the module of their type, and the checks go to
# that library's delegates.
_OBJECT_LIBRARIES = (("scipy", "numpy"), ("cupyx", "cupy"))


def object_library(A) -> str | None:
    """"numpy" for SciPy objects, "cupy" for cupyx objects, None for anything else."""
    mod = type(A).__module__
    for prefix, lib in _OBJECT_LIBRARIES:
        if mod == prefix or mod.startswith(prefix + "."):
            return lib
    return None


def is_sparse(A) -> bool:
    """Whether ``A`` is a scipy.sparse or cupyx.scipy.sparse matrix or array."""
    lib = object_library(A)
    impl = None if lib is None else _library_delegate(lib, "is_sparse")
    return bool(impl(A)) if impl is not None else False


def is_linear_operator(A) -> bool:
    """Whether ``A`` is a ``scipy.sparse.linalg.LinearOperator`` (or a CuPy one)."""
    lib = object_library(A)
    impl = None if lib is None else _library_delegate(lib, "is_linear_operator")
    return bool(impl(A)) if impl is not None else False


def sparse_all_finite(A) -> bool:
    """Whether every stored entry of the sparse matrix ``A`` is finite."""
    impl = _library_delegate(object_library(A) or "", "sparse_all_finite")
    if impl is None:
        raise TypeError(f"not a sparse matrix of a supported library: {type(A).__name__}")
    return bool(impl(A))


def column_runs(cols) -> list[tuple[int, int, int]]:
    """Maximal runs of consecutive increasing host indices: (first, stop, position in cols)."""
    c = np.asarray(cols, dtype=np.int64)
    if c.size == 0:
        return []
    breaks = np.flatnonzero(np.diff(c) != 1) + 1
    starts = np.r_[0, breaks]
    stops = np.r_[breaks, c.size]
    return [(int(c[a]), int(c[b - 1]) + 1, int(a)) for a, b in zip(starts, stops)]


#: Slices beat a strided gather up to this many runs of consecutive columns (take), and beat an
#: index-put up to this many (put), on torch and CuPy.
MAX_TAKE_RUNS, MAX_PUT_RUNS = 4, 8


def take_by_runs(Q, cols):
    """``Q[..., cols]`` as slices of the runs of consecutive columns, or None past
    :data:`MAX_TAKE_RUNS` runs (libraries whose strided gathers are slow)."""
    runs = column_runs(cols)
    if len(runs) > MAX_TAKE_RUNS:
        return None
    parts = [Q[..., a:b] for a, b, _ in runs]
    return parts[0] if len(parts) == 1 else array_namespace(Q).concat(parts, axis=-1)


def put_by_runs(out, cols, new, index_put):
    """Write ``new`` into the columns ``cols`` of ``out`` (in place): slice assignments up to
    :data:`MAX_PUT_RUNS` runs, ``index_put(out, cols, new)`` (the library's index-put) beyond."""
    runs = column_runs(cols)
    if len(runs) <= MAX_PUT_RUNS:
        for a, b, pos in runs:
            out[..., a:b] = new[..., pos:pos + (b - a)]
    else:
        index_put(out, cols, new)
    return out


def take_columns(Q, cols):
    """``Q[..., :, cols]`` for host int64 indices ``cols`` (k,); may be a view of Q.

    NumPy: one run of consecutive columns is a view (BLAS reads it with its row stride),
    several runs go through the one-pass Numba gather; torch/CuPy: slices of up to four runs;
    any other namespace: ``take``.
    """
    xp = array_namespace(Q)
    cols = np.asarray(cols, dtype=np.int64)
    impl = delegate(xp, "take_columns")
    if impl is not None:
        out = impl(Q, cols)
        if out is not None:
            return out
    return xp.take(Q, xp.asarray(cols, device=device_of(Q)), axis=-1)


def take_along_axis(x, idx, axis: int):
    """``x`` gathered along ``axis`` by the integer array ``idx`` of x's shape (a broadcast view
    is fine), as ``xp.take_along_axis``; PyTorch: one ``torch.gather`` (the array-API wrapper
    first materializes the index and costs about 25× the gather on a 2×256×256 stack)."""
    xp = array_namespace(x)
    impl = delegate(xp, "take_along_axis")
    if impl is not None:
        return impl(x, idx, axis)
    return xp.take_along_axis(x, idx, axis=axis)


def column_sumsq(x):
    """Column sums of squares of ``x`` (..., d, k) -> (..., k), accumulated in x's dtype.

    NumPy: one ``einsum`` (``vecdot`` along axis -2 runs a strided dot per column: 1.4 ms
    against 0.09 ms for a 2048×256 fp32 block); other libraries: ``vecdot`` where the namespace
    has it (no d×k temporary), else sum(x·x)."""
    xp = array_namespace(x)
    impl = delegate(xp, "column_sumsq")
    if impl is not None:
        return impl(x)
    vd = getattr(xp, "vecdot", None)
    if vd is not None:
        try:
            return vd(x, x, axis=-2)
        except TypeError:  # a namespace whose vecdot has no axis keyword
            pass
    return xp.sum(x * x, axis=-2)


def put_columns(Q, cols, new, *, inplace: bool = False):
    """Q with the columns ``cols`` (host int64, distinct) replaced by those of ``new``.

    The other columns are Q's, bit for bit. ``new`` (..., d, k) has Q's dtype and broadcasts
    against Q's batch shape. ``inplace=True`` writes into Q and returns it where the library
    allows item assignment (NumPy, torch, CuPy: no copy of the other columns); otherwise (and
    by default) a new array is returned and Q is not modified.
    """
    xp = array_namespace(Q)
    cols = np.asarray(cols, dtype=np.int64)
    impl = delegate(xp, "put_columns")
    if impl is not None:
        out = impl(Q, cols, new, inplace=inplace)
        if out is not None:
            return out
    m = Q.shape[-1]
    src = np.arange(m, dtype=np.int64)
    src[cols] = m + np.arange(cols.size)
    both = xp.concat([Q, xp.broadcast_to(new, (*Q.shape[:-1], cols.size))], axis=-1)
    return xp.take(both, xp.asarray(src, device=device_of(Q)), axis=-1)


def matmul_into_columns(Q, cols, A, V, *, inplace: bool = False):
    """Q with the columns ``cols`` replaced by ``A @ V`` (A, V and Q of one dtype).

    NumPy, one run of columns, out of place: the product is written by BLAS straight into the
    new array and the other columns are copied once. Otherwise ``put_columns(Q, cols, A @ V)``.
    """
    xp = array_namespace(Q)
    cols = np.asarray(cols, dtype=np.int64)
    if not inplace:
        impl = delegate(xp, "matmul_into_columns")
        if impl is not None:
            out = impl(Q, cols, A, V)
            if out is not None:
                return out
    return put_columns(Q, cols, A @ V, inplace=inplace)
