"""Numba kernel: Householder QR of a stack of small matrices, 16 matrices per SIMD lane group.

A fused small factorization (not a matrix product). Matrices are processed 16 at a time in an
interleaved fp64 work array W[column, row, lane], so every operation of the algorithm is a loop
over the 16 lanes that the compiler vectorizes; ``prange`` runs over groups of lanes. Per matrix
it follows LAPACK ``xGEQR2``/``xLARFG`` (β = −sign(α)‖x‖, τ = (β − α)/β, H = I − τvvᵀ) and forms
Q by backward accumulation (``xORG2R``), so the factors match ``numpy.linalg.qr`` to rounding.
The work array has the input's precision (as LAPACK); a sum of squares near underflow or
overflow is recomputed scaled by max|x|. Nothing calls BLAS. Meant for matrices up to about
32×32, where LAPACK's per-call overhead dominates; any size is correct.

Cost per matrix: 2mn² − 2n³/3 flops for R, the same again for Q; scratch 2·16·m·max(m, n)
words per thread.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from ._twins import twins

__all__ = ["batched_householder"]

#: Matrices processed side by side in SIMD lanes (the innermost loop runs over them).
_L = 16
#: Lane groups per parallel task (scratch arrays are allocated once per task).
_SUPER = 64
#: LLVM fast-math flags: only fused multiply-add contraction (one rounding instead of two, ~10%
#: faster on 8×8). No flag that assumes finite values: the kernel detects overflow itself.
_FMA = {"contract"}
#: A column (α, x) with max(|α|, ‖x‖) below _TINY_COL is scaled by _UP (exactly) while its
#: reflector is formed, as LAPACK's xLARFG does: its norm would otherwise be rounded in the
#: subnormal range and 1/(α − β) would overflow. Only fp64 columns can be this small.
_TINY_COL = 2.0 ** -900
_UP = 2.0 ** 600
_DOWN = 2.0 ** -600


def _lanes_impl(A, Q, R, want_q, lo, hi):
    nb, m, n = A.shape
    k = min(m, n)
    ncols = Q.shape[2]
    rrows = R.shape[1]
    L = _L
    nchunks = (nb + L - 1) // L
    nsuper = (nchunks + _SUPER - 1) // _SUPER
    for sc in prange(nsuper):
        W = np.zeros((n, m, L), dtype=A.dtype)
        QT = np.zeros((max(ncols, 1), m, L), dtype=A.dtype)
        tau = np.zeros((max(k, 1), L), dtype=A.dtype)
        ss = np.empty(L, dtype=A.dtype)
        scal = np.empty(L, dtype=np.float64)  # 1/(α − β) overflows fp32 for subnormal columns
        dv = np.empty(L, dtype=np.float64)  # each lane's α of the current column
        acc = np.empty(L, dtype=A.dtype)
        for c in range(sc * _SUPER, min(nchunks, (sc + 1) * _SUPER)):
            _chunk(A, Q, R, want_q, lo, hi, c * L, min(L, nb - c * L), m, n, k, ncols,
                   rrows, W, QT, tau, ss, scal, dv, acc)


@njit(cache=True, inline="always", fastmath=_FMA)
def _scaled_norm(W, j, l, m, f):
    """‖f·x‖ for x = W[j, j+1:m, l], in fp64, scaled by max|f·x| (0 for x = 0)."""
    s = 0.0
    for i in range(j + 1, m):
        s = max(s, abs(np.float64(W[j, i, l])) * f)
    t2 = 0.0
    if s > 0:
        for i in range(j + 1, m):
            t = (np.float64(W[j, i, l]) * f) / s
            t2 += t * t
    return s * np.sqrt(t2)


@njit(cache=True, inline="always", fastmath=_FMA)
def _beta(alpha, tn):
    """β = −sign(α)·‖(α, x)‖ from α and tn = ‖x‖, without squaring either (xLAPY2)."""
    big = max(abs(alpha), tn)
    bs = big if big > 0.0 else 1.0
    a_s = alpha / bs
    t_s = tn / bs
    nrm = big * np.sqrt(a_s * a_s + t_s * t_s)
    return -nrm if alpha >= 0 else nrm


@njit(cache=True, inline="always", fastmath=_FMA)
def _rescaled_reflectors(W, j, m, dv, tau, scal):
    """Redo the reflector of column j in the lanes whose |β| = ‖(α, x)‖ is below _TINY_COL
    (fp64 columns of subnormal size; dv holds their α), with α and x scaled by _UP as LAPACK's
    xLARFG does: in place their norm is rounded in the subnormal range and 1/(α − β) overflows.
    Leaves scal = 1 for those lanes, their x already scaled into v."""
    for l in range(_L):
        if not (abs(W[j, j, l]) < _TINY_COL and tau[j, l] != 0.0):
            continue
        alpha = dv[l] * _UP
        beta = _beta(alpha, _scaled_norm(W, j, l, m, _UP))
        tau[j, l] = (beta - alpha) / beta
        r = 1.0 / (alpha - beta)
        for i in range(j + 1, m):
            W[j, i, l] = (W[j, i, l] * _UP) * r
        scal[l] = 1.0
        W[j, j, l] = beta * _DOWN


@njit(cache=True, inline="always", fastmath=_FMA)
def _chunk(A, Q, R, want_q, lo, hi, b0, nl, m, n, k, ncols, rrows, W, QT, tau, ss, scal, dv,
           acc):
    L = _L
    if nl < L:  # a partial last group: the idle lanes must hold finite values
        for l in range(L):
            for i in range(m):
                for j in range(n):
                    W[j, i, l] = 0.0
    for l in range(nl):
        for i in range(m):
            for j in range(n):
                W[j, i, l] = A[b0 + l, i, j]
    for j in range(k):
        for l in range(L):
            ss[l] = 0.0
        for i in range(j + 1, m):
            for l in range(L):
                ss[l] += W[j, i, l] * W[j, i, l]
        for l in range(L):
            alpha = W[j, j, l]
            tn = np.sqrt(np.float64(ss[l]))
            if not (lo < ss[l] < hi):
                # possibly under/overflowed (0 included): recompute in fp64, scaled by max|x|
                tn = _scaled_norm(W, j, l, m, 1.0)
            triv = tn == 0.0
            beta = alpha if triv else _beta(np.float64(alpha), tn)
            tau[j, l] = 0.0 if triv else (beta - alpha) / beta
            scal[l] = 1.0 if triv else 1.0 / (alpha - beta)
            W[j, j, l] = beta
            dv[l] = alpha
        nsmall = 0
        for l in range(L):  # |β| = ‖(α, x)‖ of subnormal size (branch-free, so it vectorizes)
            nsmall += 1 if abs(W[j, j, l]) < _TINY_COL else 0
        if nsmall:
            _rescaled_reflectors(W, j, m, dv, tau, scal)
        for i in range(j + 1, m):
            for l in range(L):
                W[j, i, l] *= scal[l]
        for cc in range(j + 1, n):
            for l in range(L):
                acc[l] = W[cc, j, l]
            for i in range(j + 1, m):
                for l in range(L):
                    acc[l] += W[j, i, l] * W[cc, i, l]
            for l in range(L):
                acc[l] *= tau[j, l]
                W[cc, j, l] -= acc[l]
            for i in range(j + 1, m):
                for l in range(L):
                    W[cc, i, l] -= acc[l] * W[j, i, l]
    for l in range(nl):
        for i in range(rrows):
            for j in range(n):
                R[b0 + l, i, j] = W[j, i, l] if (i <= j and i < k) else 0.0
    if want_q:
        for cc in range(ncols):
            for i in range(m):
                for l in range(L):
                    QT[cc, i, l] = 1.0 if cc == i else 0.0
        for j in range(k - 1, -1, -1):
            for cc in range(j, ncols):
                for l in range(L):
                    acc[l] = QT[cc, j, l]
                for i in range(j + 1, m):
                    for l in range(L):
                        acc[l] += W[j, i, l] * QT[cc, i, l]
                for l in range(L):
                    acc[l] *= tau[j, l]
                    QT[cc, j, l] -= acc[l]
                for i in range(j + 1, m):
                    for l in range(L):
                        QT[cc, i, l] -= acc[l] * W[j, i, l]
        for l in range(nl):
            for i in range(m):
                for cc in range(ncols):
                    Q[b0 + l, i, cc] = QT[cc, i, l]


_LANES = twins(_lanes_impl, "batch", fastmath=_FMA)


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
    Q = np.empty((nb, m, ncols) if want_q else (nb, 0, 0), dtype=A.dtype)
    if nb:
        kern = _LANES.pick(nb)
        fi = np.finfo(A.dtype)
        # sums of squares outside [lo, hi] may have under/overflowed: rescale those columns
        lo, hi = float(fi.tiny) / float(fi.eps), float(fi.max) * float(fi.eps)
        kern(A, Q, R, want_q, lo, hi)
    return (Q if want_q else None), R
