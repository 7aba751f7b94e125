"""Numba CPU kernel: preconditioned CG on a batch of small dense systems, one whole solve per
system inside the kernel.

A 6×6 system converges in a handful of iterations; driving each iteration from Python (as the
general loop of ``linalg_pc.solvers._loop`` does) would cost far more than the arithmetic, so
:func:`pcg_small_batch` runs the loop itself, ``prange`` over the batch. Its rules are those of
``linalg_pc.solvers._loop.run`` — the stopping test on the recursive residual confirmed by the
true residual, true-residual checks every ``check_every`` steps with residual replacement, the
stall rule, the order of the ``rho``/``pᵀAp`` checks — and its constants are not defined here: the
caller passes the status codes and the stall rule (``linalg_pc.solvers._status``) as arguments.

Cost per iteration and system: two n×n matvecs are avoided by keeping ``q = A p``; about
2n² + 10n flops; memory 5 vectors of n per chunk of the batch.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numba import njit, prange

from ._twins import pick, twins
from .cpu_dense_small import BATCH_CHUNKS, dot_small, matvec_small


class SmallPCGOut(NamedTuple):
    """Outputs of :func:`run_pcg_small` (NumPy arrays over the N systems).

    x : (N, n) the iterates; iterations : (N,) int64; status : (N,) int8 codes (the caller's);
    true_residual_norm : (N,) ‖b − A x‖; history : (N, maxiter + 1), row s valid up to
    ``iterations[s]``.
    """

    x: np.ndarray
    iterations: np.ndarray
    status: np.ndarray
    true_residual_norm: np.ndarray
    history: np.ndarray


@njit(cache=True)
def pcg_one(A, b, M, use_m, x, work, tol, maxiter, check_every, codes, rules, hist):
    """Preconditioned CG on one small dense system; the rules of linalg_pc.solvers._loop.run.

    ``work`` = (r, z, p, q, rt) vectors of n; x holds x0 on entry; ``tol`` is the absolute
    tolerance on ‖r‖; ``codes`` = (converged, maxiter, breakdown, indefinite, nonfinite) status
    codes and ``rules`` = (stall_limit, gap_ratio, improve, drift) the stall rule and the
    relative drift ‖r − rt‖/‖r‖ above which a periodic check replaces r (when the drift is
    also at least ``gap_ratio·tol``). Returns (iterations,
    status, true residual norm); hist[k] = ‖r_k‖ for k <= iterations (later entries untouched).
    """
    CONVERGED, MAXITER, BREAKDOWN, INDEFINITE, NONFINITE = codes
    stall_limit, gap_ratio, improve, drift = rules
    r, z, p, q, rt = work
    n = b.shape[0]
    bn = np.sqrt(dot_small(b, b, n))
    if bn == 0.0:
        for i in range(n):
            x[i] = 0.0
        hist[0] = 0.0
        return 0, CONVERGED, 0.0
    matvec_small(A, x, q, n)
    for i in range(n):
        r[i] = b[i] - q[i]
        p[i] = 0.0
    rn = np.sqrt(dot_small(r, r, n))
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
            matvec_small(A, x, rt, n)
            gap = 0.0
            for i in range(n):
                rt[i] = b[i] - rt[i]
                gap += (r[i] - rt[i]) ** 2
            tn = np.sqrt(dot_small(rt, rt, n))
            if cand and (tn < tol or tn == 0.0):
                hist[k] = tn
                return k, CONVERGED, tn
            if tn <= improve * best:
                stall = 0
            elif np.sqrt(gap) >= gap_ratio * tn:
                stall += 1
            best = min(best, tn)
            if stall >= stall_limit:
                if np.isfinite(tn):
                    hist[k] = tn
                return k, BREAKDOWN, tn
            if not np.isfinite(tn):
                return k, NONFINITE, tn
            # replace r only where it passed the test or has drifted (van der Vorst & Ye) by
            # enough to matter to the test
            gn = np.sqrt(gap)
            if cand or (gn > drift * rn and gn > gap_ratio * tol):
                for i in range(n):
                    r[i] = rt[i]
                rn = tn
                hist[k] = tn
        if k >= maxiter:
            break
        if use_m:
            matvec_small(M, r, z, n)
        else:
            for i in range(n):
                z[i] = r[i]
        rho = dot_small(r, z, n)
        if not np.isfinite(rho):
            status = NONFINITE
            break
        if rho <= 0.0:
            status = INDEFINITE
            break
        beta = rho / rho_prev if k > 0 else 0.0
        for i in range(n):
            p[i] = z[i] + beta * p[i]
        matvec_small(A, p, q, n)
        pq = dot_small(p, q, n)
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
        rn = np.sqrt(dot_small(r, r, n))
        hist[k] = rn
        if not np.isfinite(rn):
            status = NONFINITE
            break
    matvec_small(A, x, rt, n)
    for i in range(n):
        rt[i] = b[i] - rt[i]
    tn = np.sqrt(dot_small(rt, rt, n))
    return k, status, tn


def _dense(f):
    return twins(f, "dense").parallel


@_dense
def pcg_small_batch(A, b, M, x, tol, control, codes, rules, out):
    """Batched PCG over dense systems A (N, n, n), b (N, n) with tolerances tol (N,).

    x (N, n) holds x0 and is overwritten; M is (N, n, n) or (1, n, n) (unused unless
    ``control[0]``); ``control`` = (use_m, maxiter, check_every); ``codes``, ``rules`` as in
    :func:`pcg_one`; ``out`` = (iterations, status, true residual norms, history) arrays, filled.
    """
    use_m, maxiter, check_every = control
    iters, status, tnorm, hist = out
    N, n = b.shape
    nch = min(N, BATCH_CHUNKS)
    chunk = (N + nch - 1) // nch
    for c in prange(nch):
        lo = c * chunk
        hi = min(N, lo + chunk)
        work = (np.empty(n, dtype=b.dtype), np.empty(n, dtype=b.dtype),
                np.empty(n, dtype=b.dtype), np.empty(n, dtype=b.dtype),
                np.empty(n, dtype=b.dtype))
        for s in range(lo, hi):
            mi = M[s] if use_m else M[0]
            k, st, tn = pcg_one(A[s], b[s], mi, use_m, x[s], work, tol[s], maxiter,
                                check_every, codes, rules, hist[s])
            iters[s] = k
            status[s] = st
            tnorm[s] = tn


def kernel_rules(rules: tuple, dtype) -> tuple:
    """The caller's rule (stall_limit, gap_ratio, improve, replace_power) as the kernels take
    it: (stall_limit, gap_ratio, improve, u^replace_power), u the unit roundoff of ``dtype``."""
    u = float(np.finfo(dtype).eps) / 2
    return (int(rules[0]), float(rules[1]), float(rules[2]), u ** float(rules[3]))


def run_pcg_small(A, B, M, x0, tol, maxiter: int, check_every: int, codes: tuple,
                  rules: tuple) -> SmallPCGOut:
    """:func:`pcg_small_batch` on NumPy arrays: A (N, n, n), B (N, n), M None, (n, n) or
    (N, n, n), x0 (N, n) (copied), tol (N,); allocates and returns the outputs."""
    A = np.ascontiguousarray(A)
    B = np.ascontiguousarray(B)
    N, n = B.shape
    if M is None:
        Mm, use_m = np.zeros((1, n, n), dtype=A.dtype), False
    elif M.ndim == 2:
        Mm, use_m = np.broadcast_to(np.asarray(M), (N, n, n)), True
    else:
        Mm, use_m = np.ascontiguousarray(M), True
    x = np.array(x0, dtype=B.dtype, copy=True)
    out = SmallPCGOut(x, np.zeros(N, dtype=np.int64), np.zeros(N, dtype=np.int8),
                      np.zeros(N), np.empty((N, maxiter + 1)))
    kern = pick(pcg_small_batch, N * n * n * 8)
    kern(A, B, Mm, x, np.ascontiguousarray(tol, dtype=np.float64),
         (bool(use_m), int(maxiter), int(check_every)),
         tuple(int(c) for c in codes), kernel_rules(rules, B.dtype),
         out[1:])
    return out
