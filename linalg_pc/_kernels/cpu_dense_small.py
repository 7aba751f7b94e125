"""Numba CPU kernels of small dense algebra for batches of tiny systems (6×6 Hessians and the
like): symmetrization with validation, symmetric eigenvalue solvers, block Cholesky solves and
a Householder-QR solve.

Everything here works on one small matrix at a time inside a caller's ``prange`` over the batch
(:mod:`linalg_pc._kernels.cpu_dcreg`, :mod:`linalg_pc._kernels.cpu_pcg_small`); only
:func:`symmetrize_batch` loops over a batch itself (compiled twice, kind "dense" of
:data:`linalg_pc._kernels._twins.POLICIES`).

- :func:`jacobi_eigh`: cyclic Jacobi with the Demmel–Veselić threshold (small eigenvalues of SPD
  matrices to high relative accuracy), Golub & Van Loan Alg. 8.5.2;
- :func:`sym_eigvals`: Householder tridiagonalization + implicit QL (Golub & Van Loan Alg. 8.3.1;
  Bowdler, Martin, Reinsch & Wilkinson 1968), the fallback of the lane-wise Jacobi;
- :func:`jacobi_eigvals_lanes` / :func:`cond_lanes`: eigenvalues (condition numbers) of
  ``LANES`` matrices at once, branch-free so the lane loops vectorize;
- :func:`chol_solve_block`: a regularized Cholesky solve with a diagonal block of a matrix;
- :func:`qr_solve_small`: Householder QR solve (the direct fallback of the DCReg pipeline).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from ._twins import twins

#: the batched kernels split their batch into at most this many chunks (one workspace each)
BATCH_CHUNKS = 256
#: matrices per lane group of :func:`jacobi_eigvals_lanes`
LANES = 16


def _dense(f):
    """Compile ``f`` parallel and serial (kind "dense"); returns the parallel dispatcher, which
    :func:`linalg_pc._kernels._twins.pick` maps to the twin to call."""
    return twins(f, "dense").parallel


# --------------------------------------------------------------------------- batch validation
@_dense
def symmetrize_batch(H, out):
    """out = (H + Hᵀ)/2 for H (N, n, n); returns (max|H − Hᵀ|, max|H|, all finite)."""
    N, n, _ = H.shape
    nch = min(N, BATCH_CHUNKS)
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
def matvec_small(A, v, out, n):
    for i in range(n):
        acc = 0.0
        for j in range(n):
            acc += A[i, j] * v[j]
        out[i] = acc


@njit(cache=True, inline="always")
def dot_small(u, v, n):
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
def cond_lanes(H, lo, hi, condH, Wl, c_, s_, t_, W, lam_h, e_h, eps):
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
def chol_solve_block(A, off_r, off_c, B, off_br, off_bc, nb, ncols, L, Y, eps):
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
def qr_solve_small(A, b, x, n, W, w, rank_tol):
    """x = A⁻¹ b by Householder QR (column pivoting not needed for the fallback's use).

    Workspace W (n×n) and w (n). A diagonal entry of R with |R_ii| <= rank_tol·max_j |R_jj|
    (numerically singular A) is treated as zero: x_i = 0 and row i is dropped, the truncated
    (basic) least-squares solution. Returns False when R is zero.
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
    rmax = 0.0
    for i in range(n):
        rmax = max(rmax, abs(W[i, i]))
    if not (rmax > 0.0):
        return False
    for i in range(n - 1, -1, -1):
        if abs(W[i, i]) <= rank_tol * rmax:
            x[i] = 0.0
            continue
        v = w[i]
        for j in range(i + 1, n):
            v -= W[i, j] * x[j]
        x[i] = v / W[i, i]
    return True
