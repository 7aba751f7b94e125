"""Numba kernel: Householder QR of a stack of small matrices, one matrix per loop iteration.

A fused small factorization (not a matrix product): for each matrix of the stack, copy it into a
thread-local work array, compute the reflectors column by column (LAPACK ``xGEQR2``/``xLARFG``
conventions: β = −sign(α)‖x‖, τ = (β − α)/β, norms scaled by max|x|), and form Q by backward
accumulation (``xORG2R``). ``prange`` runs over chunks of the batch, so the threads share the
stack; nothing inside calls BLAS. Meant for matrices up to about 32×32, where LAPACK's per-call
overhead dominates; any size is correct.

Cost per matrix: 2mn² − 2n³/3 flops for R, the same again for Q; memory m·n + n per thread.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

__all__ = ["batched_householder"]

_CHUNK = 256


@njit(cache=True, inline="always")
def _qr_one(A, W, tau, Q, R, m, n, k, ncols, want_q):
    for i in range(m):
        for j in range(n):
            W[i, j] = A[i, j]
    for j in range(k):
        # reflector for W[j:, j]
        alpha = W[j, j]
        s = 0.0
        for i in range(j + 1, m):
            a = abs(W[i, j])
            if a > s:
                s = a
        if s == 0.0:
            tau[j] = 0.0
            continue
        ss = 0.0
        for i in range(j + 1, m):
            t = W[i, j] / s
            ss += t * t
        tnorm = s * np.sqrt(ss)
        big = max(abs(alpha), tnorm)
        a_s = alpha / big
        t_s = tnorm / big
        norm = big * np.sqrt(a_s * a_s + t_s * t_s)
        beta = -norm if alpha >= 0 else norm
        tj = (beta - alpha) / beta
        scal = 1.0 / (alpha - beta)
        for i in range(j + 1, m):
            W[i, j] *= scal
        W[j, j] = beta
        tau[j] = tj
        # apply H_j = I - tau v vᵀ (v[j] = 1) to W[j:, j+1:]
        for c in range(j + 1, n):
            acc = W[j, c]
            for i in range(j + 1, m):
                acc += W[i, j] * W[i, c]
            acc *= tj
            W[j, c] -= acc
            for i in range(j + 1, m):
                W[i, c] -= acc * W[i, j]
    # R: upper trapezoid of the first rows
    rrows = R.shape[0]
    for i in range(rrows):
        for j in range(n):
            R[i, j] = W[i, j] if (i <= j and i < k) else 0.0
    if not want_q:
        return
    # Q = H_0 H_1 ... H_{k-1} applied to the first ncols columns of I (backward accumulation)
    for i in range(m):
        for j in range(ncols):
            Q[i, j] = 1.0 if i == j else 0.0
    for j in range(k - 1, -1, -1):
        tj = tau[j]
        if tj == 0.0:
            continue
        for c in range(j, ncols):
            acc = Q[j, c]
            for i in range(j + 1, m):
                acc += W[i, j] * Q[i, c]
            acc *= tj
            Q[j, c] -= acc
            for i in range(j + 1, m):
                Q[i, c] -= acc * W[i, j]


@njit(parallel=True, cache=True)
def _batched(A, Q, R, want_q):
    nb, m, n = A.shape
    k = min(m, n)
    ncols = Q.shape[2]
    nchunks = (nb + _CHUNK - 1) // _CHUNK
    for c in prange(nchunks):
        W = np.empty((m, n), dtype=A.dtype)
        tau = np.empty(max(k, 1), dtype=A.dtype)
        for b in range(c * _CHUNK, min(nb, (c + 1) * _CHUNK)):
            _qr_one(A[b], W, tau, Q[b], R[b], m, n, k, ncols, want_q)


def batched_householder(A: np.ndarray, mode: str = "reduced"):
    """Householder QR of each matrix of A (batch, m, n), float32 or float64, C-contiguous.

    Returns (Q, R): Q (batch, m, k) for "reduced", (batch, m, m) for "complete", None for "r";
    R (batch, k, n), or (batch, m, n) for "complete". Signs follow LAPACK (equal to
    ``numpy.linalg.qr`` up to rounding).
    """
    if A.ndim != 3 or A.dtype not in (np.float32, np.float64):
        raise TypeError("A must be a 3-D float32/float64 array")
    A = np.ascontiguousarray(A)
    nb, m, n = A.shape
    k = min(m, n)
    rrows = m if mode == "complete" else k
    ncols = m if mode == "complete" else k
    want_q = mode != "r"
    R = np.empty((nb, rrows, n), dtype=A.dtype)
    Q = np.empty((nb, m, ncols) if want_q else (nb, 1, 1), dtype=A.dtype)
    if nb:
        _batched(A, Q, R, want_q)
    return (Q if want_q else None), R
