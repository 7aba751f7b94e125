"""Numba CPU kernels of conjugate gradients on a compact CSR copy of the structure: 16-bit
column offsets and 8-bit row lengths.

A one-right-hand-side CG iteration on a CSR matrix is bound by memory traffic, and the matrix
is most of it: 12 bytes per nonzero (float64 value, int32 column index) plus 4 per row pointer,
against about 84 bytes per row for the vectors of the three passes. Where every column index
lies within ±32767 of its row (a banded matrix: a 7-point stencil on an n³ grid in natural
order has offsets up to n², so up to n = 181) and every row has at most 255 entries, the
structure is stored once per solve as ``off[k] = indices[k] − i`` (int16) and
``rowlen[i] = indptr[i+1] − indptr[i]`` (uint8): 10 bytes per nonzero and 1 per row, 14% fewer
bytes per iteration for the 7-point stencil (measured: the SpMV pass 18–21% faster at 40³ and
80³). The values are read from the caller's ``data`` every time: only the structure is
compacted, and it is rebuilt on every solve (one pass over ``indptr`` and ``indices``, about
half an SpMV), so a matrix changed between calls is never read through a stale copy.

Each row is summed over the same entries in the same order as
:func:`linalg_pc._kernels.cpu_csr.csr_matvec_dot`, so every result is bit for bit that of the
int32 kernels (and ``q`` is SciPy's ``A @ p``). Reductions use the fixed chunks of
:mod:`linalg_pc._kernels.cpu_csr`; each kernel has a serial twin (kind "stream").
"""

from __future__ import annotations

import numpy as np
from numba import int64, njit, prange, uint64

from ._twins import twins_of
from .cpu_csr import NCHUNKS, _stream, _total

__all__ = ["OFFSET_MAX", "ROWLEN_MAX", "compact", "csr_offsets16", "csr_matvec_dot16",
           "csr_residual16", "csr_residual_gap16"]

#: Largest |column − row| the int16 offsets hold.
OFFSET_MAX = 32767
#: Most entries per row the uint8 row lengths hold.
ROWLEN_MAX = 255


@njit(cache=True, inline="always")
def _row_dot16(rowlen, off, data, x, i, k):
    """(row i times x summed in index order, index of row i + 1's first entry); row i starts at
    entry ``k``. Indices are formed unsigned (Numba then skips the wraparound test)."""
    acc = 0.0
    for _ in range(rowlen[i]):
        acc += data[k] * x[uint64(i + int64(off[k]))]
        k += uint64(1)
    return acc, k


@_stream
def csr_offsets16(indptr, indices, off, rowlen, flags):
    """off[k] = indices[k] − i and rowlen[i] = indptr[i+1] − indptr[i]; returns whether every
    offset fits in int16 and every row length in uint8 (the arrays are not usable otherwise)."""
    n = rowlen.shape[0]
    nch = flags.shape[0]
    chunk = (n + nch - 1) // nch
    for c in prange(nch):
        lo = c * chunk
        hi = min(n, lo + chunk)
        bad = 0
        for i in range(lo, hi):
            k0 = int64(indptr[i])
            ln = int64(indptr[i + 1]) - k0
            if ln < 0 or ln > ROWLEN_MAX:
                bad = 1
                ln = 0
            rowlen[i] = ln
            for k in range(k0, k0 + ln):
                d = int64(indices[k]) - i
                if d < -OFFSET_MAX or d > OFFSET_MAX:
                    bad = 1
                    d = 0
                off[k] = d
        flags[c] = bad
    nbad = 0
    for c in range(nch):
        nbad += flags[c]
    return nbad == 0


@_stream
def csr_matvec_dot16(indptr, rowlen, off, data, p, q, partial):
    """q = A p; returns pᵀq (as :func:`linalg_pc._kernels.cpu_csr.csr_matvec_dot`)."""
    n = p.shape[0]
    nch = partial.shape[0]
    chunk = (n + nch - 1) // nch
    for c in prange(nch):
        lo = c * chunk
        hi = min(n, lo + chunk)
        s = 0.0
        if lo < hi:
            k = uint64(indptr[lo])
            for i in range(lo, hi):
                acc, k = _row_dot16(rowlen, off, data, p, i, k)
                q[i] = acc
                s += p[i] * acc
        partial[c] = s
    return _total(partial)


@_stream
def csr_residual16(indptr, rowlen, off, data, b, x, r, partial):
    """r = b - A x; returns rᵀr (as :func:`linalg_pc._kernels.cpu_csr.csr_residual`)."""
    n = b.shape[0]
    nch = partial.shape[0]
    chunk = (n + nch - 1) // nch
    for c in prange(nch):
        lo = c * chunk
        hi = min(n, lo + chunk)
        s = 0.0
        if lo < hi:
            k = uint64(indptr[lo])
            for i in range(lo, hi):
                acc, k = _row_dot16(rowlen, off, data, x, i, k)
                ri = b[i] - acc
                r[i] = ri
                s += ri * ri
        partial[c] = s
    return _total(partial)


@_stream
def csr_residual_gap16(indptr, rowlen, off, data, b, x, r, rt, partial, partial2):
    """rt = b - A x; returns (rtᵀrt, ‖r - rt‖²) (as
    :func:`linalg_pc._kernels.cpu_csr.csr_residual_gap`)."""
    n = b.shape[0]
    nch = partial.shape[0]
    chunk = (n + nch - 1) // nch
    for c in prange(nch):
        lo = c * chunk
        hi = min(n, lo + chunk)
        s = 0.0
        s2 = 0.0
        if lo < hi:
            k = uint64(indptr[lo])
            for i in range(lo, hi):
                acc, k = _row_dot16(rowlen, off, data, x, i, k)
                ri = b[i] - acc
                rt[i] = ri
                s += ri * ri
                d = r[i] - ri
                s2 += d * d
        partial[c] = s
        partial2[c] = s2
    return _total(partial), _total(partial2)


def compact(indptr, indices, parallel: bool, alloc=np.empty):
    """(indptr, rowlen, off) of the compact structure, or None where it does not apply (an
    offset beyond ±:data:`OFFSET_MAX`, a row longer than :data:`ROWLEN_MAX`). ``alloc(shape,
    dtype)`` allocates the two arrays (recycled memory in the engine)."""
    n = indptr.shape[0] - 1
    if n <= 0 or indices.shape[0] == 0:
        return None
    off = alloc(indices.shape[0], np.int16)
    rowlen = alloc(n, np.uint8)
    t = twins_of(csr_offsets16)
    kern = t.parallel if parallel else t.serial
    if not kern(indptr, indices, off, rowlen, np.empty(NCHUNKS, dtype=np.int64)):
        return None
    return indptr, rowlen, off
