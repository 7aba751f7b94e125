"""Numba CPU kernels for the solvers: fused CSR conjugate-gradient steps and batched small systems.

Two families live here; neither does dense linear algebra on large matrices (that stays in BLAS).

**Fused CSR CG steps** (one right-hand side, or ``s`` right-hand sides stored row-major as an
``(n, s)`` array). One right-hand side takes three passes per CG iteration instead of SciPy's
dozen, each streaming its vectors once:

1. :func:`update_xp`: ``x += alpha_prev p`` (the previous iteration's x update, deferred to this
   pass because it streams p anyway) and ``p = z + beta p``, in place;
2. :func:`csr_matvec_dot`: ``q = A p`` and ``pᵀq``; each row is summed in index order, so ``q``
   is bit for bit ``A @ p`` of scipy.sparse;
3. :func:`update_r` / :func:`update_r_jacobi`: ``r -= alpha q`` and ``rᵀr`` (and for a diagonal
   preconditioner ``z = d * r`` and ``rᵀz``).

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
in chunk order, so results do not depend on the number of threads.

**Batched small systems** (:func:`dcreg_batch`, :func:`pcg_small_batch`): ``prange`` over the
batch, one workspace per chunk of systems, and per system: block Schur complements, cyclic
Jacobi eigendecompositions, the optimal eigenvector-to-axis assignment over a table of
permutations, the targeted preconditioner, preconditioned CG with true-residual checks, and a
Householder-QR direct solve as the fallback.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from ._twins import twins

NCHUNKS = 64


def _dual(f):
    """Compile ``f`` parallel and serial (:func:`linalg_pc._kernels._twins.twins`, kind
    "dense"); returns the parallel dispatcher, which :func:`linalg_pc._kernels._twins.pick`
    maps to the twin to call (kind "stream" for the memory-bound CSR passes)."""
    return twins(f, "dense").parallel


def trim_history(hist: np.ndarray, iters: np.ndarray) -> np.ndarray:
    """(k_max + 1, N) history from per-system rows hist (N, ≥ k_max + 1) valid up to iters[s],
    each row continued with its last value."""
    kmax = int(iters.max()) if iters.size else 0
    cols = np.minimum(np.arange(kmax + 1)[None, :], iters[:, None])
    return np.ascontiguousarray(np.take_along_axis(hist[:, : kmax + 1], cols, axis=1).T)

# status codes shared with linalg_pc.solvers.pcg
CONVERGED, MAXITER, BREAKDOWN, INDEFINITE, NONFINITE = 0, 1, 2, 3, 4
STATUS_NAMES = ("converged", "maxiter", "breakdown", "indefinite", "nonfinite")
# Stagnation ("breakdown"): at a true-residual check the check counts as stalled when the true
# residual is not below half the best one seen at earlier checks while the drift between the
# recursive and the true residual is at least GAP_RATIO of the true residual (the iteration works
# at the rounding-error level); STALL_LIMIT consecutive stalled checks end the solve.
STALL_LIMIT = 3
GAP_RATIO = 0.1


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
@_dual
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


@_dual
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


@_dual
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


@_dual
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


@_dual
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


@_dual
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


@_dual
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


@_dual
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


@_dual
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
@_dual
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


@_dual
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


@_dual
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


@_dual
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


@_dual
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


@_dual
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


@_dual
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


@_dual
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


@_dual
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


# --------------------------------------------------------------------------- batch validation
@_dual
def symmetrize_batch(H, out):
    """out = (H + Hᵀ)/2 for H (N, n, n); returns (max|H − Hᵀ|, max|H|, all finite)."""
    N, n, _ = H.shape
    nch = min(N, NCHUNKS * 4)
    chunk = (N + nch - 1) // nch
    asym = np.zeros(nch)
    amax = np.zeros(nch)
    fin = np.ones(nch, dtype=np.bool_)
    for c in prange(nch):
        lo = c * chunk
        hi = min(N, lo + chunk)
        a1 = 0.0
        a2 = 0.0
        f = True
        for s in range(lo, hi):
            for i in range(n):
                for j in range(i, n):
                    x = H[s, i, j]
                    y = H[s, j, i]
                    if not (np.isfinite(x) and np.isfinite(y)):
                        f = False
                    a1 = max(a1, abs(x - y))
                    a2 = max(a2, abs(x), abs(y))
                    m = 0.5 * (x + y)
                    out[s, i, j] = m
                    out[s, j, i] = m
        asym[c] = a1
        amax[c] = a2
        fin[c] = f
    return asym.max(), amax.max(), fin.all()


# --------------------------------------------------------------------------- small dense helpers
@njit(cache=True, inline="always")
def _matvec(A, v, out, n):
    for i in range(n):
        acc = 0.0
        for j in range(n):
            acc += A[i, j] * v[j]
        out[i] = acc


@njit(cache=True, inline="always")
def _dot(u, v, n):
    acc = 0.0
    for i in range(n):
        acc += u[i] * v[i]
    return acc


@njit(cache=True)
def jacobi_eigh(A, V, k, eps, want_vectors=True):
    """Cyclic Jacobi on the symmetric k×k workspace ``A`` (destroyed); eigenvectors into ``V``.

    Rotations are skipped when |a_pq| <= eps·sqrt(|a_pp a_qq|) (Demmel–Veselić threshold, which
    keeps small eigenvalues of SPD matrices to high relative accuracy); stops after a sweep with
    no rotation (at most 30 sweeps). Eigenvalues are left on the diagonal of A, unsorted.
    Rotation formulas as in Golub & Van Loan, Alg. 8.5.2 (symmetric Schur decomposition), with
    the updates of a_pp and a_qq written as a_pp − t·a_pq and a_qq + t·a_pq.
    """
    if want_vectors:
        for i in range(k):
            for j in range(k):
                V[i, j] = 1.0 if i == j else 0.0
    for _sweep in range(30):
        rotated = False
        for p in range(k - 1):
            for qq in range(p + 1, k):
                apq = A[p, qq]
                app = A[p, p]
                aqq = A[qq, qq]
                if apq == 0.0 or abs(apq) <= eps * np.sqrt(abs(app * aqq)):
                    A[p, qq] = 0.0
                    A[qq, p] = 0.0
                    continue
                rotated = True
                theta = (aqq - app) / (2.0 * apq)
                if abs(theta) > 1e150:
                    t = 0.5 / theta
                else:
                    t = 1.0 / (abs(theta) + np.sqrt(theta * theta + 1.0))
                    if theta < 0.0:
                        t = -t
                c = 1.0 / np.sqrt(t * t + 1.0)
                s = t * c
                for r in range(k):
                    if r == p or r == qq:
                        continue
                    g = A[r, p]
                    h = A[r, qq]
                    g2 = c * g - s * h
                    h2 = s * g + c * h
                    A[r, p] = g2
                    A[p, r] = g2
                    A[r, qq] = h2
                    A[qq, r] = h2
                A[p, p] = app - t * apq
                A[qq, qq] = aqq + t * apq
                A[p, qq] = 0.0
                A[qq, p] = 0.0
                if want_vectors:
                    for r in range(k):
                        vrp = V[r, p]
                        vrq = V[r, qq]
                        V[r, p] = c * vrp - s * vrq
                        V[r, qq] = s * vrp + c * vrq
        if not rotated:
            break


@njit(cache=True)
def sym_eigvals(A, d, e, n, eps):
    """Eigenvalues of the symmetric n×n workspace ``A`` (destroyed) into ``d`` (unsorted).

    Householder reduction to tridiagonal form (Golub & Van Loan, Alg. 8.3.1: p = βAv,
    w = p − (βpᵀv/2)v, A ← A − vwᵀ − wvᵀ) followed by the implicit QL iteration with Wilkinson
    shifts (the tql/tqli scheme, Bowdler, Martin, Reinsch & Wilkinson 1968). About
    4n³/3 + 30n² flops; eigenvalue errors O(u)·‖A‖ as LAPACK's syev. Returns False if QL did
    not converge in 60 sweeps for some eigenvalue.
    """
    for k in range(n - 2):
        nrm2 = 0.0
        for i in range(k + 1, n):
            nrm2 += A[i, k] * A[i, k]
        x0 = A[k + 1, k]
        if nrm2 == x0 * x0:  # already tridiagonal in this column
            d[k] = A[k, k]
            e[k] = x0
            continue
        nrm = np.sqrt(nrm2)
        alpha = -nrm if x0 >= 0.0 else nrm
        # v = x - alpha e1 stored in A[k+1:, k]
        A[k + 1, k] = x0 - alpha
        vv = 0.0
        for i in range(k + 1, n):
            vv += A[i, k] * A[i, k]
        beta = 2.0 / vv
        # p = beta A22 v  (stored in d[k+1:] temporarily is unsafe; use e[k+1:] as p)
        for i in range(k + 1, n):
            acc = 0.0
            for j in range(k + 1, n):
                acc += A[i, j] * A[j, k]
            e[i] = beta * acc
        pv = 0.0
        for i in range(k + 1, n):
            pv += e[i] * A[i, k]
        kk = 0.5 * beta * pv
        for i in range(k + 1, n):
            e[i] -= kk * A[i, k]  # w
        for i in range(k + 1, n):
            vi = A[i, k]
            wi = e[i]
            for j in range(k + 1, n):
                A[i, j] -= vi * e[j] + wi * A[j, k]
        d[k] = A[k, k]
        e[k] = alpha
    if n >= 2:
        d[n - 2] = A[n - 2, n - 2]
        e[n - 2] = A[n - 1, n - 2]
    d[n - 1] = A[n - 1, n - 1]
    e[n - 1] = 0.0
    for l in range(n):
        it = 0
        while True:
            m = l
            while m < n - 1:
                dd = abs(d[m]) + abs(d[m + 1])
                if abs(e[m]) <= eps * dd:
                    break
                m += 1
            if m == l:
                break
            it += 1
            if it > 60:
                return False
            g = (d[l + 1] - d[l]) / (2.0 * e[l])
            r = np.hypot(g, 1.0)
            g = d[m] - d[l] + e[l] / (g + (r if g >= 0.0 else -r))
            s = 1.0
            c = 1.0
            p = 0.0
            i = m - 1
            early = False
            while i >= l:
                f = s * e[i]
                b = c * e[i]
                r = np.hypot(f, g)
                e[i + 1] = r
                if r == 0.0:
                    d[i + 1] -= p
                    e[m] = 0.0
                    early = True
                    break
                s = f / r
                c = g / r
                g = d[i + 1] - p
                r = (d[i] - g) * s + 2.0 * c * b
                p = s * r
                d[i + 1] = g + p
                g = c * r - b
                i -= 1
            if early:
                continue
            d[l] -= p
            e[l] = g
            e[m] = 0.0
    return True


LANES = 16


@njit(cache=True)
def jacobi_eigvals_lanes(A, n, eps, c_, s_, t_):
    """Eigenvalues of ``A.shape[2]`` symmetric n×n matrices stored lane-wise, A (n, n, L).

    Cyclic Jacobi with the same rotation for every lane written branch-free (a lane with
    a_pq = 0 gets the identity rotation), so the innermost loops over lanes vectorize. Sweeps
    stop when every lane has off(A)² <= eps²·Σ a_ii²; eigenvalues are left on the diagonals
    (absolute error O(eps)·‖A‖_F, as LAPACK's syev). Returns False after 30 sweeps without
    convergence.
    """
    L = A.shape[2]
    for _sweep in range(30):
        done = True
        for l in range(L):
            off = 0.0
            dia = 0.0
            for p in range(n):
                dia += A[p, p, l] * A[p, p, l]
                for q in range(p + 1, n):
                    off += A[p, q, l] * A[p, q, l]
            if off > eps * eps * dia:
                done = False
        if done:
            return True
        for p in range(n - 1):
            for q in range(p + 1, n):
                for l in range(L):
                    apq = A[p, q, l]
                    den = 2.0 * apq if apq != 0.0 else 1.0
                    theta = (A[q, q, l] - A[p, p, l]) / den
                    tt = 1.0 / (abs(theta) + np.sqrt(theta * theta + 1.0))
                    tt = tt if theta >= 0.0 else -tt
                    tt = tt if apq != 0.0 else 0.0
                    cc = 1.0 / np.sqrt(tt * tt + 1.0)
                    c_[l] = cc
                    s_[l] = tt * cc
                    t_[l] = tt
                for r in range(n):
                    if r == p or r == q:
                        continue
                    for l in range(L):
                        g = A[r, p, l]
                        h = A[r, q, l]
                        g2 = c_[l] * g - s_[l] * h
                        h2 = s_[l] * g + c_[l] * h
                        A[r, p, l] = g2
                        A[p, r, l] = g2
                        A[r, q, l] = h2
                        A[q, r, l] = h2
                for l in range(L):
                    apq = A[p, q, l]
                    A[p, p, l] -= t_[l] * apq
                    A[q, q, l] += t_[l] * apq
                    A[p, q, l] = 0.0
                    A[q, p, l] = 0.0
    return False


@njit(cache=True)
def _cond_lanes(H, lo, hi, condH, Wl, c_, s_, t_, W, lam_h, e_h, eps):
    """κ₂ of the SPD matrices H[lo:hi] (inf where not positive definite), LANES at a time."""
    n = H.shape[1]
    L = Wl.shape[2]
    for g0 in range(lo, hi, L):
        cnt = min(L, hi - g0)
        for l in range(L):
            sidx = g0 + min(l, cnt - 1)
            for i in range(n):
                for j in range(n):
                    Wl[i, j, l] = H[sidx, i, j]
        ok = jacobi_eigvals_lanes(Wl, n, eps, c_, s_, t_)
        for l in range(cnt):
            if ok:
                for i in range(n):
                    lam_h[i] = Wl[i, i, l]
            else:
                for i in range(n):
                    for j in range(n):
                        W[i, j] = H[g0 + l, i, j]
                sym_eigvals(W, lam_h, e_h, n, eps)
            lmax = -np.inf
            lmin = np.inf
            for i in range(n):
                lmax = max(lmax, lam_h[i])
                lmin = min(lmin, lam_h[i])
            condH[g0 + l] = lmax / lmin if lmin > 0.0 else np.inf


@njit(cache=True)
def _chol_solve_block(A, off_r, off_c, B, off_br, off_bc, nb, ncols, L, Y, eps):
    """Y = A[blk]⁻¹ B[blk] for the SPD nb×nb block of A at (off_r, off_c) and the nb×ncols block
    of B at (off_br, off_bc), by Cholesky into workspace L. A pivot that is not positive (the
    block is not positive definite) is replaced by eps·(trace/nb); returns True when that
    happened."""
    tr = 0.0
    for i in range(nb):
        tr += abs(A[off_r + i, off_c + i])
    floor = eps * max(tr / max(nb, 1), 1e-300)
    reg = False
    for j in range(nb):
        d = A[off_r + j, off_c + j]
        for k in range(j):
            d -= L[j, k] * L[j, k]
        if not (d > 0.0):
            d = floor
            reg = True
        L[j, j] = np.sqrt(d)
        for i in range(j + 1, nb):
            v = A[off_r + i, off_c + j]
            for k in range(j):
                v -= L[i, k] * L[j, k]
            L[i, j] = v / L[j, j]
    for col in range(ncols):
        for i in range(nb):
            v = B[off_br + i, off_bc + col]
            for k in range(i):
                v -= L[i, k] * Y[k, col]
            Y[i, col] = v / L[i, i]
        for i in range(nb - 1, -1, -1):
            v = Y[i, col]
            for k in range(i + 1, nb):
                v -= L[k, i] * Y[k, col]
            Y[i, col] = v / L[i, i]
    return reg


@njit(cache=True)
def _qr_solve(A, b, x, n, W, w):
    """x = A⁻¹ b by Householder QR (column pivoting not needed for the fallback's use).

    Workspace W (n×n) and w (n). Returns False when R has an exactly zero diagonal entry.
    """
    for i in range(n):
        w[i] = b[i]
        for j in range(n):
            W[i, j] = A[i, j]
    for k in range(n):
        nrm = 0.0
        for i in range(k, n):
            nrm += W[i, k] * W[i, k]
        nrm = np.sqrt(nrm)
        if nrm == 0.0:
            continue
        alpha = -nrm if W[k, k] >= 0 else nrm
        v0 = W[k, k] - alpha
        vnorm2 = v0 * v0
        for i in range(k + 1, n):
            vnorm2 += W[i, k] * W[i, k]
        if vnorm2 == 0.0:
            continue
        # apply H = I - 2 v vᵀ / vᵀv to the trailing columns and to w; v = (v0, W[k+1:, k])
        for j in range(k + 1, n):
            s = v0 * W[k, j]
            for i in range(k + 1, n):
                s += W[i, k] * W[i, j]
            f = 2.0 * s / vnorm2
            W[k, j] -= f * v0
            for i in range(k + 1, n):
                W[i, j] -= f * W[i, k]
        s = v0 * w[k]
        for i in range(k + 1, n):
            s += W[i, k] * w[i]
        f = 2.0 * s / vnorm2
        w[k] -= f * v0
        for i in range(k + 1, n):
            w[i] -= f * W[i, k]
        W[k, k] = alpha
    for i in range(n - 1, -1, -1):
        if W[i, i] == 0.0:
            return False
        v = w[i]
        for j in range(i + 1, n):
            v -= W[i, j] * x[j]
        x[i] = v / W[i, i]
    return True


@njit(cache=True)
def _pcg_one(A, b, M, use_m, x, r, z, p, q, rt, n, tol, maxiter, check_every, hist):
    """Preconditioned CG on one small dense system; the same rules as linalg_pc.pcg.

    x holds x0 on entry; ``tol`` is the absolute tolerance on ‖r‖. Returns (iterations,
    status, true residual norm); hist[k] = ‖r_k‖ for k <= iterations (later entries untouched).
    """
    bn = np.sqrt(_dot(b, b, n))
    if bn == 0.0:
        for i in range(n):
            x[i] = 0.0
        hist[0] = 0.0
        return 0, CONVERGED, 0.0
    _matvec(A, x, q, n)
    for i in range(n):
        r[i] = b[i] - q[i]
        p[i] = 0.0
    rn = np.sqrt(_dot(r, r, n))
    hist[0] = rn
    k = 0
    rho_prev = 1.0
    stall = 0
    best = np.inf
    status = MAXITER
    tn = -1.0
    while True:
        cand = rn < tol or rn == 0.0
        if cand or (k > 0 and k % check_every == 0):
            _matvec(A, x, rt, n)
            gap = 0.0
            for i in range(n):
                rt[i] = b[i] - rt[i]
                gap += (r[i] - rt[i]) ** 2
            tn = np.sqrt(_dot(rt, rt, n))
            if np.isfinite(tn):
                hist[k] = tn
            if cand and (tn < tol or tn == 0.0):
                return k, CONVERGED, tn
            if tn <= 0.5 * best:
                stall = 0
            elif np.sqrt(gap) >= GAP_RATIO * tn:
                stall += 1
            best = min(best, tn)
            if stall >= STALL_LIMIT:
                return k, BREAKDOWN, tn
            for i in range(n):
                r[i] = rt[i]
            rn = tn
            if not np.isfinite(rn):
                return k, NONFINITE, tn
        if k >= maxiter:
            break
        if use_m:
            _matvec(M, r, z, n)
        else:
            for i in range(n):
                z[i] = r[i]
        rho = _dot(r, z, n)
        if not np.isfinite(rho):
            status = NONFINITE
            break
        if rho <= 0.0:
            status = INDEFINITE
            break
        beta = rho / rho_prev if k > 0 else 0.0
        for i in range(n):
            p[i] = z[i] + beta * p[i]
        _matvec(A, p, q, n)
        pq = _dot(p, q, n)
        if not np.isfinite(pq):
            status = NONFINITE
            break
        if pq <= 0.0:
            status = INDEFINITE
            break
        alpha = rho / pq
        for i in range(n):
            x[i] += alpha * p[i]
            r[i] -= alpha * q[i]
        rho_prev = rho
        k += 1
        rn = np.sqrt(_dot(r, r, n))
        hist[k] = rn
        if not np.isfinite(rn):
            status = NONFINITE
            break
    _matvec(A, x, rt, n)
    for i in range(n):
        rt[i] = b[i] - rt[i]
    tn = np.sqrt(_dot(rt, rt, n))
    return k, status, tn


@_dual
def pcg_small_batch(A, b, M, use_m, x, tol, maxiter, check_every, iters, status, tnorm, hist):
    """Batched PCG over dense systems A (N, n, n), b (N, n) with tolerances tol (N,);
    x (N, n) holds x0 and is overwritten."""
    N, n = b.shape
    nch = min(N, NCHUNKS * 4)
    chunk = (N + nch - 1) // nch
    for c in prange(nch):
        lo = c * chunk
        hi = min(N, lo + chunk)
        r = np.empty(n, dtype=b.dtype)
        z = np.empty(n, dtype=b.dtype)
        p = np.empty(n, dtype=b.dtype)
        q = np.empty(n, dtype=b.dtype)
        rt = np.empty(n, dtype=b.dtype)
        for s in range(lo, hi):
            mi = M[s] if use_m else M[0]
            k, st, tn = _pcg_one(A[s], b[s], mi, use_m, x[s], r, z, p, q, rt, n, tol[s],
                                 maxiter, check_every, hist[s])
            iters[s] = k
            status[s] = st
            tnorm[s] = tn


# --------------------------------------------------------------------------- DCReg pipeline
@njit(cache=True)
def _analyse_block(S, k, perms, eps, lam_out, V_out, W, Vw):
    """Eigendecompose the k×k block S, align eigenvectors to axes by the best permutation
    (maximal Σ_i V[i, σ(i)]²) with V[i, i] >= 0 after alignment."""
    for i in range(k):
        for j in range(k):
            W[i, j] = S[i, j]
    jacobi_eigh(W, Vw, k, eps, True)
    best = -1.0
    bi = 0
    for pi in range(perms.shape[0]):
        sc = 0.0
        for i in range(k):
            v = Vw[i, perms[pi, i]]
            sc += v * v
        if sc > best:
            best = sc
            bi = pi
    for i in range(k):
        col = perms[bi, i]
        lam_out[i] = W[col, col]
        sg = 1.0 if Vw[i, col] >= 0.0 else -1.0
        for r in range(k):
            V_out[r, i] = sg * Vw[r, col]


@_dual
def dcreg_batch(H, b, do_solve, split, perms_r, perms_t, threshold, kappa_target, eps,
                rtol, atol, maxiter, check_every,
                SR, St, lamR, VR, lamt, Vt, degR, degt, condH, condR, condt, reg, P,
                x, xf, iters, status, tnorm, hist, fallback):
    """The DCReg pipeline for N small systems H (N, n, n) (and b (N, n) when ``do_solve``).

    x receives the PCG iterates, xf the solutions (the QR solution where PCG did not converge,
    marked in ``fallback``)."""
    N, n, _ = H.shape
    k = split
    m = n - k
    nch = min(N, NCHUNKS * 4)
    chunk = (N + nch - 1) // nch
    for c in prange(nch):
        lo = c * chunk
        hi = min(N, lo + chunk)
        L = np.empty((n, n), dtype=H.dtype)
        Y = np.empty((n, n), dtype=H.dtype)
        W = np.empty((n, n), dtype=H.dtype)
        Vw = np.empty((n, n), dtype=H.dtype)
        lam_h = np.empty(n, dtype=H.dtype)
        e_h = np.empty(n, dtype=H.dtype)
        Wl = np.empty((n, n, LANES), dtype=H.dtype)
        c_ = np.empty(LANES, dtype=H.dtype)
        s_ = np.empty(LANES, dtype=H.dtype)
        t_ = np.empty(LANES, dtype=H.dtype)
        _cond_lanes(H, lo, hi, condH, Wl, c_, s_, t_, W, lam_h, e_h, eps)
        r = np.empty(n, dtype=H.dtype)
        z = np.empty(n, dtype=H.dtype)
        p = np.empty(n, dtype=H.dtype)
        q = np.empty(n, dtype=H.dtype)
        rt = np.empty(n, dtype=H.dtype)
        for s in range(lo, hi):
            Hs = H[s]
            # S_R = H_RR - H_Rt H_tt^{-1} H_tR
            rg1 = _chol_solve_block(Hs, k, k, Hs, k, 0, m, k, L, Y, eps)
            for i in range(k):
                for j in range(k):
                    acc = Hs[i, j]
                    for t in range(m):
                        acc -= Hs[i, k + t] * Y[t, j]
                    SR[s, i, j] = acc
            # S_t = H_tt - H_tR H_RR^{-1} H_Rt
            rg2 = _chol_solve_block(Hs, 0, 0, Hs, 0, k, k, m, L, Y, eps)
            for i in range(m):
                for j in range(m):
                    acc = Hs[k + i, k + j]
                    for t in range(k):
                        acc -= Hs[k + i, t] * Y[t, j]
                    St[s, i, j] = acc
            reg[s] = rg1 or rg2
            for i in range(k):
                for j in range(i + 1, k):
                    v = 0.5 * (SR[s, i, j] + SR[s, j, i])
                    SR[s, i, j] = v
                    SR[s, j, i] = v
            for i in range(m):
                for j in range(i + 1, m):
                    v = 0.5 * (St[s, i, j] + St[s, j, i])
                    St[s, i, j] = v
                    St[s, j, i] = v
            _analyse_block(SR[s], k, perms_r, eps, lamR[s], VR[s], W, Vw)
            _analyse_block(St[s], m, perms_t, eps, lamt[s], Vt[s], W, Vw)
            # condition numbers and degeneracy masks
            for blk in range(2):
                kb = k if blk == 0 else m
                lam = lamR[s] if blk == 0 else lamt[s]
                deg = degR[s] if blk == 0 else degt[s]
                lmax = -np.inf
                lmin = np.inf
                for i in range(kb):
                    lmax = max(lmax, lam[i])
                    lmin = min(lmin, lam[i])
                cnd = lmax / lmin if lmin > 0.0 else np.inf
                if blk == 0:
                    condR[s] = cnd
                else:
                    condt[s] = cnd
                for i in range(kb):
                    deg[i] = (lam[i] <= 0.0) or (lmax > threshold * lam[i]) or reg[s]
            # targeted preconditioner P = blkdiag(V_R Λ̃_R⁻¹ V_Rᵀ, V_t Λ̃_t⁻¹ V_tᵀ)
            for i in range(n):
                for j in range(n):
                    P[s, i, j] = 0.0
            for blk in range(2):
                kb = k if blk == 0 else m
                off = 0 if blk == 0 else k
                lam = lamR[s] if blk == 0 else lamt[s]
                V = VR[s] if blk == 0 else Vt[s]
                deg = degR[s] if blk == 0 else degt[s]
                lmax = -np.inf
                for i in range(kb):
                    lmax = max(lmax, lam[i])
                floor = lmax / kappa_target
                for a in range(kb):
                    la = lam[a]
                    if deg[a] and la < floor:
                        la = floor
                    inv = 1.0 / la if la > 0.0 else 0.0
                    for i in range(kb):
                        vi = V[i, a] * inv
                        for j in range(kb):
                            P[s, off + i, off + j] += vi * V[j, a]
            if do_solve:
                for i in range(n):
                    x[s, i] = 0.0
                bn = np.sqrt(_dot(b[s], b[s], n))
                kk, st, tn = _pcg_one(Hs, b[s], P[s], True, x[s], r, z, p, q, rt, n,
                                      max(atol, rtol * bn), maxiter, check_every, hist[s])
                iters[s] = kk
                status[s] = st
                tnorm[s] = tn
                fallback[s] = False
                for i in range(n):
                    xf[s, i] = x[s, i]
                if st != CONVERGED:
                    ok = _qr_solve(Hs, b[s], z, n, W, r)
                    if ok:
                        fin = True
                        for i in range(n):
                            if not np.isfinite(z[i]):
                                fin = False
                        if fin:
                            for i in range(n):
                                xf[s, i] = z[i]
                            fallback[s] = True
