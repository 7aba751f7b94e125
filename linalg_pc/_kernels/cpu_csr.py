"""Numba CPU kernels of conjugate gradients on a CSR matrix: fused passes over the vectors.

One right-hand side takes three passes per CG iteration instead of SciPy's dozen, each streaming
its vectors once:

1. :func:`update_xp`: ``x += alpha_prev p`` (the previous iteration's x update, deferred to this
   pass because it streams p anyway) and ``p = z + beta p``, in place;
2. :func:`csr_matvec_dot`: ``q = A p`` and ``pᵀq``; each row is summed in index order, so ``q``
   is bit for bit ``A @ p`` of scipy.sparse;
3. :func:`update_r` / :func:`update_r_jacobi`: ``r -= alpha q`` and ``rᵀr`` (and for a diagonal
   preconditioner ``z = d * r`` and ``rᵀz``).

Passes 1 and 2 are not fused: forming p = z + beta·p inside the SpMV's gather (into a second
buffer, so that no thread reads a p another one rewrites) recomputes it for every nonzero (7×
the indirect loads and flops for a 7-point stencil) and writes a second p where pass 1 rewrites
the first in place, so it moves as many bytes; measured against these three passes it was
slower at 40³, 80³ and 100³ (docs/solvers.md).

``s`` right-hand sides (``(n, s)`` row-major blocks, the ``s`` entries of a row adjacent) take the
same three passes with per-column coefficients and masks (finished columns stop updating):
:func:`update_xp_multi`; :func:`csr_matmat8_dot` when ``s`` is a multiple of 8 (eight columns
per group in scalar accumulators, which the compiler keeps in vector registers) or
:func:`csr_matmat_dot`, both reading each row of A once for all columns; and
:func:`update_r_multi` / :func:`update_r_jacobi_multi`. Every column goes through the same
operations in the same order as in the one-column kernels, so a multi-RHS solve equals the
one-column solves bit for bit. :func:`csr_residual_gap` / :func:`csr_residual_gap_multi`
recompute the true residual and its drift from the recursive one in one pass.

Reductions use a fixed number of row chunks (``NCHUNKS``), each summed in order and then added
in chunk order, so results do not depend on the number of threads. Every kernel is compiled
twice (:func:`linalg_pc._kernels._twins.twins`, kind "stream": memory-bound passes); the caller
picks the twin with :func:`linalg_pc._kernels._twins.pick`. The engine that drives these passes
is ``linalg_pc.solvers._engine_csr``.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from ._twins import twins

NCHUNKS = 64


def _stream(f):
    """Compile ``f`` parallel and serial (kind "stream"); returns the parallel dispatcher, which
    :func:`linalg_pc._kernels._twins.pick` maps to the twin to call."""
    return twins(f, "stream").parallel


# --------------------------------------------------------------------------- shared pieces
# Inlined into the kernels below: one copy of the CSR row product and of the fixed-order
# reduction of the per-chunk partial sums (the order every result's bits depend on).
@njit(cache=True, inline="always")
def _row_dot(indptr, indices, data, x, i):
    """Row i of the CSR matrix times x, summed in index order."""
    acc = 0.0
    for k in range(indptr[i], indptr[i + 1]):
        acc += data[k] * x[indices[k]]
    return acc


@njit(cache=True, inline="always")
def _row_dot_cols(indptr, indices, data, x, i, acc):
    """acc[t] = row i of the CSR matrix times column t of the (n, s) x, in index order."""
    s = acc.shape[0]
    for t in range(s):
        acc[t] = 0.0
    for k in range(indptr[i], indptr[i + 1]):
        j = indices[k]
        a = data[k]
        for t in range(s):
            acc[t] += a * x[j, t]


@njit(cache=True, inline="always")
def _total(partial):
    """Sum of the per-chunk partial sums, in chunk order."""
    tot = 0.0
    for c in range(partial.shape[0]):
        tot += partial[c]
    return tot


@njit(cache=True, inline="always")
def _column_totals(partial):
    """Column sums of the (nchunks, s) partial sums, in chunk order (float64)."""
    nch, s = partial.shape
    out = np.zeros(s, dtype=np.float64)
    for c in range(nch):
        for t in range(s):
            out[t] += partial[c, t]
    return out


# --------------------------------------------------------------------------- CSR, one RHS
@_stream
def update_xp(x, p, z, alpha_prev, beta):
    """x += alpha_prev · p, then p = z + beta · p, in place (one pass over x, p, z).

    ``alpha_prev`` is the step of the previous iteration: the x update is deferred to this pass,
    which streams p anyway.
    """
    n = x.shape[0]
    nch = NCHUNKS
    chunk = (n + nch - 1) // nch
    for c in prange(nch):
        lo = c * chunk
        hi = min(n, lo + chunk)
        for i in range(lo, hi):
            pi = p[i]
            x[i] += alpha_prev * pi
            p[i] = z[i] + beta * pi


@_stream
def csr_matvec_dot(indptr, indices, data, p, q, partial):
    """q = A p; returns pᵀq (each row summed in index order, as scipy.sparse does)."""
    n = p.shape[0]
    nch = partial.shape[0]
    chunk = (n + nch - 1) // nch
    for c in prange(nch):
        lo = c * chunk
        hi = min(n, lo + chunk)
        s = 0.0
        for i in range(lo, hi):
            acc = _row_dot(indptr, indices, data, p, i)
            q[i] = acc
            s += p[i] * acc
        partial[c] = s
    return _total(partial)


@_stream
def update_r(r, q, alpha, partial):
    """r -= alpha q; returns rᵀr."""
    n = r.shape[0]
    nch = partial.shape[0]
    chunk = (n + nch - 1) // nch
    for c in prange(nch):
        lo = c * chunk
        hi = min(n, lo + chunk)
        s = 0.0
        for i in range(lo, hi):
            ri = r[i] - alpha * q[i]
            r[i] = ri
            s += ri * ri
        partial[c] = s
    return _total(partial)


@_stream
def update_r_jacobi(r, q, alpha, dinv, z, partial, partial2):
    """r -= alpha q; z = dinv * r; returns (rᵀr, rᵀz)."""
    n = r.shape[0]
    nch = partial.shape[0]
    chunk = (n + nch - 1) // nch
    for c in prange(nch):
        lo = c * chunk
        hi = min(n, lo + chunk)
        s = 0.0
        s2 = 0.0
        for i in range(lo, hi):
            ri = r[i] - alpha * q[i]
            r[i] = ri
            zi = dinv[i] * ri
            z[i] = zi
            s += ri * ri
            s2 += ri * zi
        partial[c] = s
        partial2[c] = s2
    return _total(partial), _total(partial2)


@_stream
def axpy(x, alpha, p):
    """x += alpha p."""
    n = x.shape[0]
    nch = NCHUNKS
    chunk = (n + nch - 1) // nch
    for c in prange(nch):
        lo = c * chunk
        hi = min(n, lo + chunk)
        for i in range(lo, hi):
            x[i] += alpha * p[i]


@_stream
def csr_residual(indptr, indices, data, b, x, r, partial):
    """r = b - A x; returns rᵀr."""
    n = b.shape[0]
    nch = partial.shape[0]
    chunk = (n + nch - 1) // nch
    for c in prange(nch):
        lo = c * chunk
        hi = min(n, lo + chunk)
        s = 0.0
        for i in range(lo, hi):
            acc = _row_dot(indptr, indices, data, x, i)
            ri = b[i] - acc
            r[i] = ri
            s += ri * ri
        partial[c] = s
    return _total(partial)


@_stream
def csr_residual_gap(indptr, indices, data, b, x, r, rt, partial, partial2):
    """rt = b - A x; returns (rtᵀrt, ‖r - rt‖²): the true residual and its drift from the
    recursive residual r, in one pass."""
    n = b.shape[0]
    nch = partial.shape[0]
    chunk = (n + nch - 1) // nch
    for c in prange(nch):
        lo = c * chunk
        hi = min(n, lo + chunk)
        s = 0.0
        s2 = 0.0
        for i in range(lo, hi):
            acc = _row_dot(indptr, indices, data, x, i)
            ri = b[i] - acc
            rt[i] = ri
            s += ri * ri
            d = r[i] - ri
            s2 += d * d
        partial[c] = s
        partial2[c] = s2
    return _total(partial), _total(partial2)


@_stream
def dot_chunked(u, v, partial):
    """uᵀv with the fixed chunk order."""
    n = u.shape[0]
    nch = partial.shape[0]
    chunk = (n + nch - 1) // nch
    for c in prange(nch):
        lo = c * chunk
        hi = min(n, lo + chunk)
        s = 0.0
        for i in range(lo, hi):
            s += u[i] * v[i]
        partial[c] = s
    return _total(partial)


@_stream
def copy_kernel(src, dst):
    """dst = src (used to measure the copy bandwidth the CG kernels are compared with)."""
    n = src.shape[0]
    nch = NCHUNKS
    chunk = (n + nch - 1) // nch
    for c in prange(nch):
        lo = c * chunk
        hi = min(n, lo + chunk)
        for i in range(lo, hi):
            dst[i] = src[i]


# --------------------------------------------------------------------------- CSR, s RHS
# The s right-hand sides are (n, s) C-contiguous arrays: the s entries of a row are adjacent, so
# each pass streams whole rows and the SpMV reads each row of A once for all columns. The passes
# are those of one right-hand side with per-column coefficients (float64 arrays, as the scalar
# coefficients of the one-column kernels are float64) and masks; every column is computed with
# the same operations in the same order as the one-column kernels, so column t of a multi-RHS
# solve is bit for bit the solve of column t alone.
@_stream
def update_xp_multi(x, p, z, alpha_prev, xmask, beta, active):
    """Column-wise x += alpha_prev · p where ``xmask``, then p = z + beta · p where ``active``.

    (n, s) arrays updated in place (one pass over x, p, z); ``alpha_prev``, ``beta`` (s,) float64,
    ``xmask``, ``active`` (s,) uint8. Masked-out entries are left as they are.
    """
    n, s = x.shape
    nch = NCHUNKS
    chunk = (n + nch - 1) // nch
    for c in prange(nch):
        lo = c * chunk
        hi = min(n, lo + chunk)
        for i in range(lo, hi):
            for t in range(s):
                pi = p[i, t]
                xi = x[i, t]
                x[i, t] = xi + alpha_prev[t] * pi if xmask[t] else xi
                p[i, t] = z[i, t] + beta[t] * pi if active[t] else pi


@_stream
def axpy_multi(x, alpha, p, mask):
    """Column-wise x += alpha · p where ``mask`` ((n, s) x, p; (s,) alpha, mask)."""
    n, s = x.shape
    nch = NCHUNKS
    chunk = (n + nch - 1) // nch
    for c in prange(nch):
        lo = c * chunk
        hi = min(n, lo + chunk)
        for i in range(lo, hi):
            for t in range(s):
                xi = x[i, t]
                x[i, t] = xi + alpha[t] * p[i, t] if mask[t] else xi


@_stream
def csr_matmat_dot(indptr, indices, data, p, q, partial):
    """Q = A P for (n, s) P; returns the column-wise Pᵀ Q (s,) (rows summed in index order)."""
    n, s = p.shape
    nch = partial.shape[0]
    chunk = (n + nch - 1) // nch
    for c in prange(nch):
        lo = c * chunk
        hi = min(n, lo + chunk)
        tot = np.zeros(s)
        acc = np.empty(s)
        for i in range(lo, hi):
            _row_dot_cols(indptr, indices, data, p, i, acc)
            for t in range(s):
                q[i, t] = acc[t]
                tot[t] += p[i, t] * acc[t]
        for t in range(s):
            partial[c, t] = tot[t]
    return _column_totals(partial)


@_stream
def csr_matmat8_dot(indptr, indices, data, p, q, partial):
    """As :func:`csr_matmat_dot` for s = 8·m columns viewed as (n, m, 8) arrays.

    The eight columns of a group are accumulated in eight scalars with constant indices, which
    the compiler keeps in vector registers; the loop over a runtime ``s`` of
    :func:`csr_matmat_dot` cannot. ``partial`` is (nchunks, 8·m); returns (8·m,).
    """
    n, m, _ = p.shape
    nch = partial.shape[0]
    chunk = (n + nch - 1) // nch
    for c in prange(nch):
        lo = c * chunk
        hi = min(n, lo + chunk)
        tot = np.zeros(8 * m)
        for i in range(lo, hi):
            k0 = indptr[i]
            k1 = indptr[i + 1]
            for g in range(m):
                a0 = 0.0
                a1 = 0.0
                a2 = 0.0
                a3 = 0.0
                a4 = 0.0
                a5 = 0.0
                a6 = 0.0
                a7 = 0.0
                for k in range(k0, k1):
                    a = data[k]
                    pj = p[indices[k], g]
                    a0 += a * pj[0]
                    a1 += a * pj[1]
                    a2 += a * pj[2]
                    a3 += a * pj[3]
                    a4 += a * pj[4]
                    a5 += a * pj[5]
                    a6 += a * pj[6]
                    a7 += a * pj[7]
                qi = q[i, g]
                qi[0] = a0
                qi[1] = a1
                qi[2] = a2
                qi[3] = a3
                qi[4] = a4
                qi[5] = a5
                qi[6] = a6
                qi[7] = a7
                pi = p[i, g]
                o = 8 * g
                tot[o] += pi[0] * a0
                tot[o + 1] += pi[1] * a1
                tot[o + 2] += pi[2] * a2
                tot[o + 3] += pi[3] * a3
                tot[o + 4] += pi[4] * a4
                tot[o + 5] += pi[5] * a5
                tot[o + 6] += pi[6] * a6
                tot[o + 7] += pi[7] * a7
        for t in range(8 * m):
            partial[c, t] = tot[t]
    return _column_totals(partial)


@_stream
def update_r_multi(r, q, alpha, active, partial):
    """Column-wise r -= alpha q where ``active``; returns rᵀr per column (s,)."""
    n, s = r.shape
    nch = partial.shape[0]
    chunk = (n + nch - 1) // nch
    for c in prange(nch):
        lo = c * chunk
        hi = min(n, lo + chunk)
        tot = np.zeros(s)
        for i in range(lo, hi):
            for t in range(s):
                ri = r[i, t] - alpha[t] * q[i, t] if active[t] else r[i, t]
                r[i, t] = ri
                tot[t] += ri * ri
        for t in range(s):
            partial[c, t] = tot[t]
    return _column_totals(partial)


@_stream
def update_r_jacobi_multi(r, q, alpha, dinv, z, active, partial, partial2):
    """As :func:`update_r_multi`, then z = dinv * r (row-wise scale, every column); returns
    (rᵀr, rᵀz) per column."""
    n, s = r.shape
    nch = partial.shape[0]
    chunk = (n + nch - 1) // nch
    for c in prange(nch):
        lo = c * chunk
        hi = min(n, lo + chunk)
        tot = np.zeros(s)
        tot2 = np.zeros(s)
        for i in range(lo, hi):
            d = dinv[i]
            for t in range(s):
                ri = r[i, t] - alpha[t] * q[i, t] if active[t] else r[i, t]
                r[i, t] = ri
                zi = d * ri
                z[i, t] = zi
                tot[t] += ri * ri
                tot2[t] += ri * zi
        for t in range(s):
            partial[c, t] = tot[t]
            partial2[c, t] = tot2[t]
    return _column_totals(partial), _column_totals(partial2)


@_stream
def csr_residual_gap_multi(indptr, indices, data, b, x, r, rt, partial, partial2):
    """rt = b - A x for (n, s) arrays; returns (‖rt‖², ‖r - rt‖²) per column: the true residual
    and its drift from the recursive residual r, in one pass."""
    n, s = b.shape
    nch = partial.shape[0]
    chunk = (n + nch - 1) // nch
    for c in prange(nch):
        lo = c * chunk
        hi = min(n, lo + chunk)
        tot = np.zeros(s)
        tot2 = np.zeros(s)
        acc = np.empty(s)
        for i in range(lo, hi):
            _row_dot_cols(indptr, indices, data, x, i, acc)
            for t in range(s):
                ri = b[i, t] - acc[t]
                rt[i, t] = ri
                tot[t] += ri * ri
                d = r[i, t] - ri
                tot2[t] += d * d
        for t in range(s):
            partial[c, t] = tot[t]
            partial2[c, t] = tot2[t]
    return _column_totals(partial), _column_totals(partial2)


@_stream
def csr_residual_multi(indptr, indices, data, b, x, r, partial):
    """r = b - A x for (n, s) arrays; returns ‖r‖² per column."""
    n, s = b.shape
    nch = partial.shape[0]
    chunk = (n + nch - 1) // nch
    for c in prange(nch):
        lo = c * chunk
        hi = min(n, lo + chunk)
        acc = np.empty(s)  # float64, as the one-column kernel's accumulator
        for t in range(s):
            partial[c, t] = 0.0
        for i in range(lo, hi):
            _row_dot_cols(indptr, indices, data, x, i, acc)
            for t in range(s):
                ri = b[i, t] - acc[t]
                r[i, t] = ri
                partial[c, t] += ri * ri
    return _column_totals(partial)


@_stream
def dot_multi(u, v, partial):
    """Column-wise uᵀv of (n, s) arrays."""
    n, s = u.shape
    nch = partial.shape[0]
    chunk = (n + nch - 1) // nch
    for c in prange(nch):
        lo = c * chunk
        hi = min(n, lo + chunk)
        for t in range(s):
            partial[c, t] = 0.0
        for i in range(lo, hi):
            for t in range(s):
                partial[c, t] += u[i, t] * v[i, t]
    return _column_totals(partial)
