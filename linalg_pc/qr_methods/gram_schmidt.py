"""Gram-Schmidt QR: modified (MGS), classical with reorthogonalization (CGS2), block (BCGS2).

All three orthogonalize the columns of a tall A (m >= n) left to right:

- **MGS** (right-looking, row-oriented): after normalizing column k, remove its component from
  every later column. BLAS-2; ‖I − QᵀQ‖ ≈ c·u·κ(A) (Björck 1967; Björck & Paige 1992), residual
  O(u). Cost 2mn².
- **CGS2** ("twice is enough", Giraud, Langou, Rozložník, Comput. Math. Appl. 50, 2005): project
  each column against all previous ones twice, with matrix-vector products. O(u) orthogonality
  while A is numerically full rank (c·u·κ(A) < 1). Cost 4mn².
- **BCGS2** (Barlow & Smoktunowicz, Numer. Math. 123, 2013; Stathopoulos & Wu): the block
  version, panels of ``block_size`` columns projected twice against the previous panels with
  matrix-matrix products and factored inside by Householder QR. BLAS-3; O(u) for numerically
  full-rank A. Cost 4mn² + O(mnb).

A column whose norm after projection is zero, or an R whose condition estimate reaches u⁻¹, is a
breakdown (rank deficiency): Householder QR runs instead and ``info.fallbacks`` says so.
"""

from __future__ import annotations

import math

from ._common import (
    Ctx,
    QRResult,
    finish,
    kappa_est,
    mT,
    pow2_rescaling,
    prepare,
    scale_pow2,
    to_float,
    unscale_r,
    zeros,
)
from .cholesky import complete_q
from .householder import householder_core

__all__ = ["mgs", "cgs2", "bcgs2"]

DEFAULT_BLOCK_SIZE = 16


class _Breakdown(Exception):
    pass


def _norm(xp, v):
    """‖v‖₂ scaled by max|v| (safe near underflow and overflow)."""
    s = xp.max(xp.abs(v))
    s_safe = xp.where(s > 0, s, xp.ones_like(s))
    w = v / s_safe
    return s * xp.sqrt(xp.sum(w * w))


def _mgs(ctx: Ctx, A):
    xp, em = ctx.xp, ctx.em
    m, n = A.shape
    W = xp.asarray(A, copy=True)
    R = zeros(xp, (n, n), like=A)
    for k in range(n):
        v = W[:, k]
        r = em(_norm(xp, v))
        if not to_float(r) > 0:
            raise _Breakdown(f"column {k} is zero after orthogonalization (rank deficient)")
        q = em(v / r)
        W[:, k] = q
        R[k, k] = r
        if k + 1 < n:
            row = em(xp.matmul(q[None, :], W[:, k + 1:])[0, :])
            R[k, k + 1:] = row
            W[:, k + 1:] = em(W[:, k + 1:] - q[:, None] * row[None, :])
    return W, R


def _cgs2(ctx: Ctx, A):
    xp, em = ctx.xp, ctx.em
    m, n = A.shape
    Q = zeros(xp, (m, n), like=A)
    R = zeros(xp, (n, n), like=A)
    for j in range(n):
        v = A[:, j]
        if j:
            Qj = Q[:, :j]
            r1 = em(xp.matmul(mT(xp, Qj), v[:, None]))
            v = em(v - xp.matmul(Qj, r1)[:, 0])
            r2 = em(xp.matmul(mT(xp, Qj), v[:, None]))
            v = em(v - xp.matmul(Qj, r2)[:, 0])
            R[:j, j] = em(r1[:, 0] + r2[:, 0])
        r = em(_norm(xp, v))
        if not to_float(r) > 0:
            raise _Breakdown(f"column {j} is zero after orthogonalization (rank deficient)")
        Q[:, j] = em(v / r)
        R[j, j] = r
    return Q, R


def _bcgs2(ctx: Ctx, A, block_size: int):
    xp, em = ctx.xp, ctx.em
    m, n = A.shape
    Q = zeros(xp, (m, n), like=A)
    R = zeros(xp, (n, n), like=A)
    sub = ctx.sub("reduced")
    for j0 in range(0, n, block_size):
        j1 = min(j0 + block_size, n)
        V = A[:, j0:j1]
        if j0:
            Qp = Q[:, :j0]
            S1 = em(xp.matmul(mT(xp, Qp), V))
            W = em(V - xp.matmul(Qp, S1))
            Qh, R1 = householder_core(sub, W)
            Qh, R1 = em(Qh), em(R1)
            S2 = em(xp.matmul(mT(xp, Qp), Qh))
            W2 = em(Qh - xp.matmul(Qp, S2))
            Qk, R2 = householder_core(sub, W2)
            Qk, R2 = em(Qk), em(R2)
            R[:j0, j0:j1] = em(S1 + xp.matmul(S2, R1))
            R[j0:j1, j0:j1] = em(xp.matmul(R2, R1))
        else:
            Qk, Rk = householder_core(sub, V)
            Qk = em(Qk)
            R[j0:j1, j0:j1] = em(Rk)
        Q[:, j0:j1] = Qk
    return Q, R


def _run(A, name, fn, *, mode, storage, compute, emulate, passes) -> QRResult:
    ctx, Ac = prepare(A, method=name, mode=mode, storage=storage, compute=compute,
                      emulate=emulate, tall_only=True, batch_ok=False)
    tr = ctx.trace
    tr.backend = "blas"
    tr.passes = passes
    m, n = Ac.shape
    try:
        if m == 0 or n == 0:
            raise _Breakdown("empty matrix")
        sexp = pow2_rescaling(ctx, Ac, "the norms")
        Q, R = fn(ctx, ctx.em(scale_pow2(Ac, sexp)) if sexp else Ac)
        kap = kappa_est(ctx.xp, R)  # of the scaled R (κ is scale invariant), which is finite
        if not kap * ctx.u_work < 1.0 or not math.isfinite(kap):
            raise _Breakdown(f"R is numerically singular (kappa estimate {kap:.3g})")
        R = ctx.em(unscale_r(ctx, R, -sexp)) if sexp else R
    except _Breakdown as exc:
        if m and n:
            tr.fallbacks.append(f"{name} -> householder: {exc}")
            tr.method = "householder"
        tr.passes = 1
        Q, R = householder_core(ctx, Ac)
        tr.kappa_est = kappa_est(ctx.xp, R)
        return finish(ctx, Q, R)
    if ctx.mode == "complete":
        Q, R = complete_q(ctx, Q, R)
    tr.kappa_est = kap
    return finish(ctx, Q, R)


_PARAMS = """
    Parameters
    ----------
    A : array (m, n), m >= n
        Any supported library and real format (16-bit decoded into ``compute``).
    mode : {"reduced", "complete", "r"}
    storage, compute, emulate : optional
        Returned format, arithmetic format, and a format every stored vector, coefficient and
        update is rounded to.
"""


def mgs(A, *, mode: str = "reduced", storage=None, compute=None, emulate=None) -> QRResult:
    """Modified Gram-Schmidt QR.
    {params}
    Notes
    -----
    Cost 2mn² flops (BLAS-2). Bounds (Björck & Paige, SIMAX 13, 1992): ‖A − QR‖ ≤ c·m·n·u‖A‖,
    ‖I − QᵀQ‖₂ ≤ c·m·n·u·κ(A) while c·m·n·u·κ(A) < 1.

    Examples
    --------
    >>> import numpy as np
    >>> Q, R, info = mgs(np.random.default_rng(0).standard_normal((50, 5)))
    >>> info.method
    'mgs'
    """
    return _run(A, "mgs", _mgs, mode=mode, storage=storage, compute=compute, emulate=emulate,
                passes=1)


def cgs2(A, *, mode: str = "reduced", storage=None, compute=None, emulate=None) -> QRResult:
    """Classical Gram-Schmidt with one reorthogonalization per column.
    {params}
    Notes
    -----
    Cost 4mn² flops (BLAS-2 matrix-vector products). Bound (Giraud, Langou, Rozložník,
    Barlow): ‖I − QᵀQ‖₂ ≤ c·m·n^(3/2)·u when c·m·n²·u·κ(A) < 1; residual O(u‖A‖).

    Examples
    --------
    >>> import numpy as np
    >>> Q, R, info = cgs2(np.random.default_rng(0).standard_normal((50, 5)))
    >>> info.passes
    2
    """
    return _run(A, "cgs2", _cgs2, mode=mode, storage=storage, compute=compute, emulate=emulate,
                passes=2)


def bcgs2(A, *, mode: str = "reduced", storage=None, compute=None, emulate=None,
          block_size: int = DEFAULT_BLOCK_SIZE) -> QRResult:
    """Block classical Gram-Schmidt with reorthogonalization, Householder inside each panel.
    {params}    block_size : int
        Panel width b.

    Notes
    -----
    Cost 4mn² + 4mnb flops, BLAS-3. Bound (Barlow & Smoktunowicz, Numer. Math. 123, 2013):
    O(u) orthogonality and residual for numerically full-rank A (c·u·κ(A) < 1).

    Examples
    --------
    >>> import numpy as np
    >>> Q, R, info = bcgs2(np.random.default_rng(0).standard_normal((60, 20)), block_size=8)
    >>> Q.shape
    (60, 20)
    """
    if not (isinstance(block_size, int) and block_size >= 1):
        raise ValueError(f"block_size must be a positive int, got {block_size!r}")
    return _run(A, "bcgs2", lambda c, X: _bcgs2(c, X, block_size), mode=mode, storage=storage,
                compute=compute, emulate=emulate, passes=2)


for _f in (mgs, cgs2, bcgs2):
    _f.__doc__ = _f.__doc__.replace("{params}", _PARAMS)
