"""Numba CPU kernel of the DCReg pipeline over a batch of small SPD systems.

Per system, inside one ``prange`` over the batch (Hu et al., arXiv:2509.06285, §IV): the two
block Schur complements (regularized Cholesky block solves), their cyclic Jacobi
eigendecompositions, the optimal eigenvector-to-axis assignment over a table of permutations,
the degeneracy masks and condition numbers, the targeted preconditioner, and — when right-hand
sides are given — preconditioned CG (:func:`linalg_pc._kernels.cpu_pcg_small.pcg_one`, the
rules of ``linalg_pc.solvers._loop``) with a Householder-QR direct solve as the fallback.
``linalg_pc.solvers.schur`` and ``linalg_pc.solvers.degenerate`` call :func:`run_dcreg`.

Cost per 6×6 system: about 2·10³ flops for the analysis plus about 150 flops per CG iteration.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numba import njit, prange

from ._twins import pick, twins
from .cpu_dense_small import (
    BATCH_CHUNKS,
    LANES,
    chol_solve_block,
    cond_lanes,
    dot_small,
    jacobi_eigh,
    qr_solve_small,
)
from .cpu_pcg_small import kernel_rules, pcg_one


class DCRegAnalysis(NamedTuple):
    """Analysis outputs of :func:`run_dcreg` over the N systems (NumPy arrays).

    S_R (N, k, k), S_t (N, m, m) Schur complements; eigenvalues / eigenvectors of each, aligned
    to the axes; degeneracy masks; κ₂ of H, S_R, S_t; ``regularized`` (a diagonal block was not
    positive definite); P (N, n, n) the targeted preconditioner.
    """

    S_R: np.ndarray
    S_t: np.ndarray
    eigvals_R: np.ndarray
    eigvecs_R: np.ndarray
    eigvals_t: np.ndarray
    eigvecs_t: np.ndarray
    degenerate_R: np.ndarray
    degenerate_t: np.ndarray
    cond_H: np.ndarray
    cond_R: np.ndarray
    cond_t: np.ndarray
    regularized: np.ndarray
    P: np.ndarray


class DCRegSolve(NamedTuple):
    """Solve outputs of :func:`run_dcreg`: x (N, n) PCG iterates, solution (N, n) (the QR
    solution where ``fallback``), iterations, status codes, true residual norms, history
    (N, maxiter + 1) valid up to each system's iterations."""

    x: np.ndarray
    solution: np.ndarray
    iterations: np.ndarray
    status: np.ndarray
    true_residual_norm: np.ndarray
    history: np.ndarray
    fallback: np.ndarray


def _dense(f):
    return twins(f, "dense").parallel


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


@_dense
def dcreg_batch(H, b, perms_r, perms_t, params, codes, rules, analysis, solve):
    """The DCReg pipeline for N small systems H (N, n, n) (and b (N, n) when ``do_solve``).

    ``params`` = (do_solve, split, threshold, kappa_target, eps, rtol, atol, maxiter,
    check_every, rank_tol) (rank_tol: the truncation of the QR fallback, as in
    :func:`qr_solve_small`); ``codes``, ``rules``: status codes and stall rule as in
    :func:`linalg_pc._kernels.cpu_pcg_small.pcg_one`; ``analysis`` and ``solve``: the output
    arrays in the field order of :class:`DCRegAnalysis` and :class:`DCRegSolve`, filled. x
    receives the PCG iterates, xf the solutions (the QR solution where PCG did not converge,
    marked in ``fallback``)."""
    (do_solve, split, threshold, kappa_target, eps, rtol, atol, maxiter, check_every,
     rank_tol) = params
    SR, St, lamR, VR, lamt, Vt, degR, degt, condH, condR, condt, reg, P = analysis
    x, xf, iters, status, tnorm, hist, fallback = solve
    CONVERGED = codes[0]
    N, n, _ = H.shape
    k = split
    m = n - k
    nch = min(N, BATCH_CHUNKS)
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
        cond_lanes(H, lo, hi, condH, Wl, c_, s_, t_, W, lam_h, e_h, eps)
        work = (np.empty(n, dtype=H.dtype), np.empty(n, dtype=H.dtype),
                np.empty(n, dtype=H.dtype), np.empty(n, dtype=H.dtype),
                np.empty(n, dtype=H.dtype))
        r, z = work[0], work[1]
        for s in range(lo, hi):
            Hs = H[s]
            # S_R = H_RR - H_Rt H_tt^{-1} H_tR
            rg1 = chol_solve_block(Hs, k, k, Hs, k, 0, m, k, L, Y, eps)
            for i in range(k):
                for j in range(k):
                    acc = Hs[i, j]
                    for t in range(m):
                        acc -= Hs[i, k + t] * Y[t, j]
                    SR[s, i, j] = acc
            # S_t = H_tt - H_tR H_RR^{-1} H_Rt
            rg2 = chol_solve_block(Hs, 0, 0, Hs, 0, k, k, m, L, Y, eps)
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
                bn = np.sqrt(dot_small(b[s], b[s], n))
                kk, st, tn = pcg_one(Hs, b[s], P[s], True, x[s], work, max(atol, rtol * bn),
                                     maxiter, check_every, codes, rules, hist[s])
                iters[s] = kk
                status[s] = st
                tnorm[s] = tn
                fallback[s] = False
                for i in range(n):
                    xf[s, i] = x[s, i]
                if st != CONVERGED:
                    ok = qr_solve_small(Hs, b[s], z, n, W, r, rank_tol)
                    if ok:
                        fin = True
                        for i in range(n):
                            if not np.isfinite(z[i]):
                                fin = False
                        if fin:
                            for i in range(n):
                                xf[s, i] = z[i]
                            fallback[s] = True


def run_dcreg(H, b, perms_r, perms_t, *, split: int, threshold: float, kappa_target: float,
              eps: float, rtol: float = 0.0, atol: float = 0.0, maxiter: int = 1,
              check_every: int = 1, codes: tuple, rules: tuple, rank_tol: float = 0.0
              ) -> tuple[DCRegAnalysis, DCRegSolve | None]:
    """:func:`dcreg_batch` on H (N, n, n) C-contiguous float32/float64 and b (N, n) or None
    (analysis only); ``perms_r``, ``perms_t`` the permutation tables of the two blocks. Allocates
    the outputs; returns (analysis, solve), solve None without b. ``codes`` and ``rules`` are
    the caller's status codes and stall rule (``linalg_pc.solvers._status``)."""
    N, n, _ = H.shape
    k, m = split, n - split
    dt = H.dtype
    do_solve = b is not None
    bf = np.ascontiguousarray(b, dtype=dt) if do_solve else np.zeros((1, n), dtype=dt)
    an = DCRegAnalysis(np.empty((N, k, k), dt), np.empty((N, m, m), dt), np.empty((N, k), dt),
                       np.empty((N, k, k), dt), np.empty((N, m), dt), np.empty((N, m, m), dt),
                       np.empty((N, k), np.bool_), np.empty((N, m), np.bool_), np.empty(N),
                       np.empty(N), np.empty(N), np.empty(N, np.bool_), np.empty((N, n, n), dt))
    Ns = N if do_solve else 1
    so = DCRegSolve(np.zeros((Ns, n), dt), np.zeros((Ns, n), dt), np.zeros(Ns, np.int64),
                    np.zeros(Ns, np.int8), np.zeros(Ns),
                    np.empty((N, maxiter + 1) if do_solve else (1, 1)), np.zeros(Ns, np.bool_))
    params = (do_solve, int(split), float(threshold), float(kappa_target), float(eps),
              float(rtol), float(atol), int(maxiter), int(check_every), float(rank_tol))
    kern = pick(dcreg_batch, N * 256)
    kern(H, bf, perms_r, perms_t, params, tuple(int(c) for c in codes),
         kernel_rules(rules, dt), tuple(an), tuple(so))
    return an, (so if do_solve else None)
