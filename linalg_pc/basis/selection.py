"""Choosing which basis columns to refresh, and measuring how good a basis is.

:func:`select_columns` chooses the set J that :func:`~linalg_pc.basis.subspace.subspace_refresh`
refreshes (cyclic, topk, residual, random, topk-cyclic); :func:`column_scores` gives the
per-column scores behind "topk" and "residual"; :func:`eigenbasis_quality` measures how diagonal
QᵀKQ is (the refresh criterion of Meta's Distributed Shampoo).

References
----------
Golub & Van Loan, *Matrix Computations*, 4th ed., §8.5 (Jacobi orderings: the shifted block
orderings of "cyclic", the off-diagonal mass of "residual"). Vyas et al., "SOAP",
arXiv 2409.11321 (columns ordered by their Rayleigh quotients).
"""

from __future__ import annotations

import numpy as np

from .. import _backend as B
from .._operators import is_array
from ._common import compute_format, decode, mT, operator
from ._refresh import diag

__all__ = ["COLUMN_POLICIES", "select_columns", "column_scores", "eigenbasis_quality"]

COLUMN_POLICIES = ("cyclic", "topk", "residual", "random", "topk-cyclic")


# --------------------------------------------------------------------------- quality
def _check_q(Q):
    """Q (..., d, m) of a real float format, finite (O(dm): a NaN of Q must not be blamed on
    K, whose finiteness is checked on the product K Q); returns its namespace."""
    if not is_array(Q):
        raise TypeError(f"Q must be an array, got {type(Q).__name__}")
    xp = B.array_namespace(Q)
    B.format_of(Q, argname="Q")
    if Q.ndim < 2:
        raise ValueError(f"Q must have shape (..., d, m), got {tuple(Q.shape)}")
    B.check_finite(xp, Q, "Q")
    return xp


def _quality_parts(K, Q):
    """QᵀKQ in fp64 (..., m, m), K array or operator."""
    xp = _check_q(Q)
    d = Q.shape[-2]
    matvec = operator(K, xp, d, tuple(Q.shape[:-2]), "fp64")
    Q64 = decode(Q, "fp64")
    return xp, Q64, mT(xp, Q64) @ matvec(Q64)


def eigenbasis_quality(K, Q):
    """‖offdiag(QᵀKQ)‖_F / ‖QᵀKQ‖_F in fp64: 0 for an exact eigenbasis.

    The refresh criterion of Meta's Distributed Shampoo: the basis is still good while this is
    below a threshold τ. K is an array (..., d, d) or an operator as in
    :func:`subspace_refresh`; Q (..., d, m). Cost 2d²m + 2dm² flops in fp64.

    Returns
    -------
    float, or numpy.ndarray of the batch shape
        NaN-free: 0 where QᵀKQ = 0.

    Examples
    --------
    >>> import numpy as np
    >>> K = np.diag([3.0, 2.0, 1.0])
    >>> eigenbasis_quality(K, np.eye(3))
    0.0
    """
    xp, _, M = _quality_parts(K, Q)
    dg = diag(xp, M)
    tot = xp.sum(M * M, axis=(-2, -1))
    off = tot - xp.sum(dg * dg, axis=-1)
    off = xp.where(off > 0, off, xp.zeros_like(off))
    q = xp.where(tot > 0, xp.sqrt(off / xp.where(tot > 0, tot, xp.ones_like(tot))),
                 xp.zeros_like(tot))
    qh = np.asarray(B.to_numpy(q), dtype=np.float64)
    return float(qh) if qh.ndim == 0 else qh


# --------------------------------------------------------------------------- column selection
def column_scores(policy: str, *, K=None, Q=None, estimates=None) -> np.ndarray:
    """Per-column scores (host fp64, summed over a batch) for the "topk" and "residual" policies.

    "topk": the estimates if given, else the Rayleigh quotients ρ_j = q_jᵀKq_j. "residual": the
    eigen-residual ‖K q_j − ρ_j q_j‖₂², which for an orthogonal Q equals the off-diagonal mass
    Σ_{i≠j} (QᵀKQ)_ij² of column j (Jacobi's criterion) and needs no QᵀKQ. Cost 2d²m + O(dm)
    flops in fp32 (fp64 for an fp64 Q).
    """
    if policy == "topk" and estimates is not None:
        e = _estimates(estimates)
        return e.reshape(-1, e.shape[-1]).sum(axis=0)
    if K is None or Q is None:
        need = "estimates or both K and Q" if policy == "topk" else "both K and Q"
        raise ValueError(f"policy {policy!r} needs {need}")
    xp = _check_q(Q)
    comp = compute_format(None, B.format_of(Q))
    matvec = operator(K, xp, Q.shape[-2], tuple(Q.shape[:-2]), comp)
    Qc = decode(Q, comp)
    P = matvec(Qc)
    rho = xp.sum(Qc * P, axis=-2)
    if policy == "topk":
        s = rho
    else:
        Rz = P - Qc * rho[..., None, :]
        s = xp.sum(Rz * Rz, axis=-2)
    sh = np.asarray(B.to_numpy(s), dtype=np.float64)
    return sh.reshape(-1, sh.shape[-1]).sum(axis=0)


def _estimates(estimates) -> np.ndarray:
    """estimates (..., m) as host fp64: real numbers of any library (bf16 included), m ≥ 1."""
    e = B.to_numpy(estimates) if is_array(estimates) else estimates
    try:
        e = np.asarray(e)
        ok = e.dtype.kind in "iuf" or (e.dtype.kind == "V" and B.format_of(e).bits == 16)
    except (TypeError, ValueError):  # ragged sequences; ml_dtypes types that are not floats
        ok = False
    if not ok:
        got = e.dtype.name if isinstance(e, np.ndarray) else type(estimates).__name__
        raise TypeError(f"estimates must be real numbers (an integer or real floating array "
                        f"(..., m)), got {got}")
    e = e.astype(np.float64)
    if e.ndim < 1 or e.shape[-1] == 0:
        raise ValueError(f"estimates must have shape (..., m) with m >= 1, got {e.shape}")
    return e


def _int_arg(value, name: str, lo: int) -> int:
    """An integer argument ≥ lo (bool, non-integral floats, NaN and strings refused)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < lo:
        raise ValueError(f"{name} must be an integer >= {lo}, got {value!r}")
    return int(value)


def _ncols(ncols, K, Q, estimates) -> int:
    if ncols is not None:
        return _int_arg(ncols, "ncols", 1)
    if Q is not None:
        return int(Q.shape[-1])
    if estimates is not None:
        return int(_estimates(estimates).shape[-1])
    if K is not None and getattr(K, "shape", None) is not None:
        return int(K.shape[-1])
    raise ValueError("the number of columns is unknown: pass Q, estimates, K or ncols")


def select_columns(policy: str, k: int, *, step: int | None = None, K=None, Q=None,
                   estimates=None, rng=None, ncols: int | None = None) -> np.ndarray:
    """Choose k of the m basis columns to refresh.

    Parameters
    ----------
    policy : {"cyclic", "topk", "residual", "random", "topk-cyclic"}
        "cyclic": block ``step`` of consecutive columns (wrapping around); every other sweep
        over the m columns is offset by ⌊k/2⌋ so that blocks overlap their neighbours and
        energy moves between them (a fixed partition never couples two of its blocks: the
        shifted ordering of block-Jacobi methods). "topk": the k largest eigenvalue estimates
        (``estimates``, else diag(QᵀKQ)). "residual": the k columns with the largest
        eigen-residual ‖Kq_j − ρ_j q_j‖ (= off-diagonal mass of column j of QᵀKQ: Jacobi-like,
        those the basis describes worst). "random":
        k distinct columns uniformly at random. "topk-cyclic": the ⌊k/2⌋ largest estimates (the
        pivot columns, which hold most of ‖K‖_F) plus block ``step`` of a cyclic sweep over the
        other columns, so that the dominant directions meet every other column once per sweep
        (one-sided block Jacobi); it needs ``estimates`` and ``step``.
    k : int
        Number of columns, 1 ≤ k ≤ m.
    step : int
        The update counter (needed by "cyclic").
    K, Q : arrays or operator
        The factor and basis, needed by "residual". "topk" and "topk-cyclic" accept them in
        place of ``estimates`` and then compute the Rayleigh quotients diag(QᵀKQ) from a full
        K·Q: 2d²m flops (a d×d×m product, the cost of m/k refreshes of k columns; measured
        24–70 ms at d = 1024 against 0.2 ms from estimates). Pass estimates instead.
    estimates : array (..., m)
        Eigenvalue estimates for "topk" and "topk-cyclic", any library (read to the host:
        O(m)). The cheap path: the Rayleigh quotients the refreshes return, tracked over the
        m columns: ``est = est[res.permutation]; est[cols] = res.eigenvalues`` after each
        refresh (see the example), started from diag(QᵀKQ) or the eigenvalues the first
        basis came from. Summed over a batch.
    rng : None, int or numpy.random.Generator
        Randomness for "random".
    ncols : int, optional
        m, when none of Q, estimates, K give it.

    Returns
    -------
    numpy.ndarray of int64 (k,)
        Sorted distinct column indices (host: they index the basis of every library).

    Notes
    -----
    A policy that returns a fixed set (e.g. "topk" with frozen estimates) never couples J with
    its complement: the basis then cannot follow a factor whose eigenvectors leave span(Q_J).

    Examples
    --------
    >>> select_columns("cyclic", 4, step=2, ncols=8).tolist()
    [2, 3, 4, 5]

    "topk-cyclic" on the Rayleigh quotients the refreshes return (no product by K to choose):

    >>> import numpy as np
    >>> import linalg_pc as lpc
    >>> rng = np.random.default_rng(0)
    >>> G = rng.standard_normal((8, 8)); K = G @ G.T
    >>> Q = np.linalg.qr(rng.standard_normal((8, 8)))[0]
    >>> est = np.einsum("ij,ij->j", Q, K @ Q)  # once, at the start
    >>> for step in range(4):
    ...     cols = select_columns("topk-cyclic", 4, step=step, estimates=est)
    ...     res = lpc.subspace_refresh(K, Q, cols)
    ...     Q, est = res.Q, est[res.permutation]
    ...     est[cols] = res.eigenvalues
    >>> bool(np.allclose(est, np.einsum("ij,ij->j", Q, K @ Q)))
    True
    """
    if policy not in COLUMN_POLICIES:
        raise ValueError(f"policy must be one of {COLUMN_POLICIES}, got {policy!r}")
    m = _ncols(ncols, K, Q, estimates)
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= m:
        raise ValueError(f"k must be an integer in [1, {m}], got {k!r}")
    k = int(k)
    if policy in ("cyclic", "topk-cyclic"):
        if (step is None or isinstance(step, bool) or not isinstance(step, (int, np.integer))
                or step < 0):
            raise ValueError(f"policy {policy!r} needs a non-negative step (an integer), got "
                             f"{step!r}")
        step = int(step)
    if policy == "cyclic":
        pos = step * k
        sweep = pos // m
        start = (pos + (sweep % 2) * (k // 2)) % m
        return np.sort((start + np.arange(k, dtype=np.int64)) % m)
    if policy == "topk-cyclic":
        ktop = k // 2
        s = column_scores("topk", K=K, Q=Q, estimates=estimates)
        if s.shape[-1] != m:
            raise ValueError(f"estimates have {s.shape[-1]} entries, expected m={m}")
        if not np.all(np.isfinite(s)):
            raise ValueError("estimates (or the Rayleigh quotients of K and Q) have non-finite "
                             "entries (NaN or inf)")
        top = np.argsort(-s, kind="stable")[:ktop]
        rest = np.setdiff1d(np.arange(m, dtype=np.int64), top)
        if k - ktop == 0:
            return np.sort(top.astype(np.int64))
        sweep = select_columns("cyclic", k - ktop, step=step, ncols=rest.size)
        return np.sort(np.concatenate([top, rest[sweep]]).astype(np.int64))
    if policy == "random":
        try:
            gen = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
        except (TypeError, ValueError):
            raise TypeError(f"rng must be None, an int or a numpy.random.Generator, got "
                            f"{rng!r}") from None
        return np.sort(gen.choice(m, size=k, replace=False).astype(np.int64))
    s = column_scores(policy, K=K, Q=Q, estimates=estimates)
    if s.shape[-1] != m:
        raise ValueError(f"scores have {s.shape[-1]} entries, expected m={m}")
    if not np.all(np.isfinite(s)):
        raise ValueError("estimates or QᵀKQ have non-finite entries")
    idx = np.argsort(-s, kind="stable")[:k]
    return np.sort(idx.astype(np.int64))

