"""Numba kernels: column gather and fused copy-and-scatter on stacks of row-major matrices.

A basis refresh reads k columns of a (..., d, m) basis and returns a new basis whose other
m − k columns are the input's, bit for bit. In a C-ordered array a column is a strided vector,
so NumPy's fancy indexing (``Q[..., cols]`` and ``out[..., cols] = new``) walks the matrix once
per index array with a general iterator; the kernels here make one pass over the rows instead:

- :func:`gather_columns`: ``out[b, i, p] = Q[b, i, cols[p]]``;
- :func:`scatter_columns`: ``out = Q`` with ``out[b, i, cols[p]] = new[b, i, p]``, the copy and
  the scatter fused in one pass (each output row is written once, from cache).

Both move bits, not numbers: the wrappers view the arrays as unsigned integers of the same
width, so NaN payloads, signed zeros and 16-bit storage formats (bf16, which Numba cannot
type) are copied exactly. The NumPy expressions above are the references the tests compare
against, bit for bit. The kernels are memory bound: their serial/parallel choice is the
"columns" policy of :mod:`linalg_pc._kernels._twins`.
"""

from __future__ import annotations

import numpy as np
from numba import prange

from ._twins import twins, use_parallel

__all__ = ["gather_columns", "scatter_columns"]

_UINT = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}


def _gather_impl(Q, cols, out):
    nb, d, _ = Q.shape
    k = cols.size
    for r in prange(nb * d):
        b = r // d
        i = r - b * d
        for p in range(k):
            out[b, i, p] = Q[b, i, cols[p]]


def _scatter_impl(Q, cols, new, out):
    nb, d, m = Q.shape
    k = cols.size
    for r in prange(nb * d):
        b = r // d
        i = r - b * d
        for j in range(m):
            out[b, i, j] = Q[b, i, j]
        for p in range(k):
            out[b, i, cols[p]] = new[b, i, p]


# separate functions for the two compilations: see _twins (Numba's cache keys on the name)
_gather_par, _gather_seq, _ = twins(_gather_impl, "columns")
_scatter_par, _scatter_seq, _ = twins(_scatter_impl, "columns")


def _bits(a: np.ndarray) -> np.ndarray:
    """``a`` as a 3-D (batch, rows, cols) view of unsigned integers of its item size."""
    u = a.view(_UINT[a.dtype.itemsize])
    return u.reshape((-1, *u.shape[-2:])) if u.ndim != 3 else u


def gather_columns(Q: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """``Q[..., cols]`` as a new C-contiguous array (bit-exact copy).

    Parameters
    ----------
    Q : numpy.ndarray (..., d, m)
        Any dtype with an item size of 1, 2, 4 or 8 bytes (bf16 included); any strides.
    cols : numpy.ndarray of int64 (k,)
        Column indices in [0, m) (not checked here; may repeat).

    Returns
    -------
    numpy.ndarray (..., d, k)
        Same dtype as Q, C-contiguous.
    """
    cols = np.ascontiguousarray(cols, dtype=np.int64)
    out = np.empty((*Q.shape[:-1], cols.size), dtype=Q.dtype)
    if out.size == 0:
        return out
    kern = _gather_par if use_parallel(out.size, "columns") else _gather_seq
    kern(_bits(Q), cols, _bits(out))
    return out


def scatter_columns(Q: np.ndarray, cols: np.ndarray, new: np.ndarray) -> np.ndarray:
    """A copy of Q with the columns ``cols`` replaced by those of ``new``, in one pass.

    Equal bit for bit to ``out = Q.copy(); out[..., cols] = new``: the columns outside ``cols``
    are the input's bits.

    Parameters
    ----------
    Q : numpy.ndarray (..., d, m)
        Any dtype with an item size of 1, 2, 4 or 8 bytes; any strides.
    cols : numpy.ndarray of int64 (k,)
        Distinct column indices in [0, m) (not checked here).
    new : numpy.ndarray (..., d, k)
        Same dtype as Q; broadcast against Q's batch shape.

    Returns
    -------
    numpy.ndarray (..., d, m)
        A new C-contiguous array.
    """
    cols = np.ascontiguousarray(cols, dtype=np.int64)
    if new.dtype != Q.dtype:
        raise TypeError(f"new has dtype {new.dtype}, Q has {Q.dtype}")
    new = np.broadcast_to(new, (*Q.shape[:-1], cols.size))
    out = np.empty(Q.shape, dtype=Q.dtype)
    if out.size == 0:
        return out
    kern = _scatter_par if use_parallel(out.size, "columns") else _scatter_seq
    kern(_bits(Q), cols, _bits(new), _bits(out))
    return out
