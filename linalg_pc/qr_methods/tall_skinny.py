"""TSQR: communication-avoiding QR of a tall-skinny matrix by a binary tree of Householder QRs.

The rows of A (m×n, m >= n) are split into blocks of at least ``leaf_rows`` rows; each block is
factored by Householder QR (LAPACK / cuSOLVER / torch, or the reference implementation when
emulating), pairs of n×n R factors are stacked and factored again up the tree, and Q is
assembled down the tree: Q_block ← Q_block · (the block's rows of the parent's Q).

Reference: Demmel, Grigori, Hoemmen, Langou, "Communication-optimal parallel and sequential QR
and LU factorizations", SISC 34 (2012). Mori, Yamamoto, Zhang (2012) show the TSQR orthogonality
error is bounded like Householder's with the tree depth replacing a factor of m: O(u) whatever
κ(A), often smaller than flat Householder's.

Cost 2mn² + O(n³ log(m/b)) flops for R, about as much again to assemble Q; each leaf and merge
is independent (the shape a distributed implementation uses, one reduction of n×n blocks).
"""

from __future__ import annotations

from ._common import Ctx, QRResult, finish, guard_overflow, kappa_est, prepare
from .cholesky import complete_q
from .householder import householder_core

__all__ = ["tsqr"]

DEFAULT_LEAF_ROWS = 4096


def _hqr(ctx: Ctx, X, mode="reduced"):
    sub = ctx.sub(mode)
    Q, R = householder_core(sub, X)
    ctx.trace.backend = sub.trace.backend
    return Q, R


def _tsqr(ctx: Ctx, X, leaf_rows: int, need_q: bool, depth: list):
    xp = ctx.xp
    m, n = X.shape
    if m <= max(leaf_rows, 2 * n):
        return _hqr(ctx, X, "reduced" if need_q else "r")
    h = m // 2
    Q1, R1 = _tsqr(ctx, X[:h, :], leaf_rows, need_q, depth)
    Q2, R2 = _tsqr(ctx, X[h:, :], leaf_rows, need_q, depth)
    depth[0] += 1
    Qs, R = _hqr(ctx, xp.concat([R1, R2], axis=0), "reduced" if need_q else "r")
    R = ctx.em(R)
    if not need_q:
        return None, R
    Qs = ctx.em(Qs)
    top = ctx.em(xp.matmul(Q1, Qs[:n, :]))
    bot = ctx.em(xp.matmul(Q2, Qs[n:, :]))
    return xp.concat([top, bot], axis=0), R


def tsqr(A, *, mode: str = "reduced", storage=None, compute=None, emulate=None,
         leaf_rows: int = DEFAULT_LEAF_ROWS) -> QRResult:
    """Tall-skinny QR by a binary reduction tree of Householder factorizations.

    Parameters
    ----------
    A : array (m, n), m >= n
        Any supported library and real format.
    mode : {"reduced", "complete", "r"}
    storage, compute, emulate : optional
        Returned format, arithmetic, emulated storage of every intermediate Q and R.
    leaf_rows : int
        Row blocks are split until they have at most ``max(leaf_rows, 2n)`` rows.

    Returns
    -------
    QRResult
        ``info.passes`` is the number of tree levels + 1; ``info.notes`` the leaf size.

    Notes
    -----
    Cost 2mn² + O(n³ log(m/b)) flops (R only); forming Q costs about 2mn² more. Bound: like
    Householder's, ‖I − QᵀQ‖ ≤ γ̃(b + n log₂(m/b)) (Mori, Yamamoto, Zhang, 2012).

    Examples
    --------
    >>> import numpy as np
    >>> A = np.random.default_rng(0).standard_normal((10000, 8))
    >>> Q, R, info = tsqr(A, leaf_rows=1000)
    >>> float(np.linalg.norm(Q @ R - A) / np.linalg.norm(A)) < 1e-14
    True
    """
    if not (isinstance(leaf_rows, int) and leaf_rows >= 1):
        raise ValueError(f"leaf_rows must be a positive int, got {leaf_rows!r}")
    ctx, Ac = prepare(A, method="tsqr", mode=mode, storage=storage, compute=compute,
                      emulate=emulate, tall_only=True, batch_ok=False)
    depth = [0]
    # an R past the format's range (a leaf's norms overflowed) is computed again from A scaled
    # by a power of two, and scaled back (or reported) as Householder does
    Q, R = guard_overflow(ctx, Ac, lambda X: _tsqr(ctx, X, leaf_rows, ctx.mode != "r", depth))
    ctx.trace.passes = depth[0] + 1
    ctx.trace.notes.append(f"leaf rows <= {max(leaf_rows, 2 * Ac.shape[1])}, "
                           f"{depth[0]} merges")
    if ctx.mode == "complete" and Q is not None:
        Q, R = complete_q(ctx, Q, R)
    ctx.trace.kappa_est = kappa_est(ctx.xp, R)
    return finish(ctx, Q, R)
