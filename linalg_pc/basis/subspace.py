"""Subspace basis refresh: one step of orthogonal iteration restricted to k columns of a basis.

Shampoo-family optimizers refresh the eigenbasis Q of a Kronecker factor K by one step of
orthogonal iteration, ``Q ← qr(K Q)``: about 4.7·d³ flops, most of it in LAPACK's square QR which
runs far below GEMM speed. If the d − k columns outside a set J are kept exactly, the new k
columns must span the same subspace as the old ones, so every valid update of Q_J is a k×k
rotation ``Q_J ← Q_J W``. :func:`subspace_refresh` computes W by one orthogonal-iteration step
inside span(Q_J): 2d²k flops for K Q_J plus O(dk² + k³); :func:`select_columns` chooses J;
:func:`eigenbasis_quality` measures how diagonal QᵀKQ is (the refresh criterion of Meta's
Distributed Shampoo).

References
----------
Milligan, Xu, Dangel, Lacoste-Julien, Lin, "Reparametrizing Shampoo and SOAP for Subspace Basis
Updates and BFloat16 Storage", arXiv 2605.26327 (2026): subspace updates of part of the basis.
Vyas et al., "SOAP", arXiv 2409.11321: the refresh ``qr(K Q)`` with columns sorted by their
Rayleigh quotients. Golub & Van Loan, *Matrix Computations*, 4th ed., §8.2.4 (orthogonal
iteration) and §8.5 (Jacobi orderings).
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import array_api_compat
import numpy as np

from .. import _backend as B
from .._kernels import cpu_columns as _cols_kernel
from ..precision import unit_roundoff
from ._common import (
    ORTHONORMALITY_TOL,
    check_orthonormal,
    compute_format,
    decode,
    encode,
    mT,
    qr_pos,
)

__all__ = [
    "SubspaceRefresh",
    "subspace_refresh",
    "select_columns",
    "eigenbasis_quality",
    "COLUMN_POLICIES",
    "column_scores",
]

_METHODS = ("rotate", "project")
COLUMN_POLICIES = ("cyclic", "topk", "residual", "random", "topk-cyclic")

#: A diagonal entry of the k×k (or d×k) triangular factor below RANK_C·k·u·max|diag R| flags the
#: refreshed block as numerically rank deficient (K annihilates part of span(Q_J)); the computed
#: columns are still orthonormal (Householder QR), only their order inside the null part is
#: arbitrary.
RANK_C = 10.0


class SubspaceRefresh(NamedTuple):
    """Result of :func:`subspace_refresh`.

    Attributes
    ----------
    Q : array (..., d, m)
        The refreshed basis, in the input's library, device and dtype. Columns outside ``cols``
        are bit-for-bit those of the input.
    eigenvalues : array (..., k)
        Rayleigh quotients qᵀKq of the k refreshed columns, in the order of ``cols`` after the
        refresh (compute format).
    permutation : array (..., m) of int64
        ``permutation[j]`` is the old column the new column j descends from (the identity
        outside ``cols``): a caller permutes its per-column statistics with ``v[..., perm]``
        (or ``v[perm, :]`` for row statistics such as SOAP's second moments).
    info : dict
        Plain values: ``method``, ``compute``, ``k``, ``sorted``, ``input_loss`` (measured
        ‖Q_JᵀQ_J − I‖₂ upper bound, NaN when not checked), ``min_r_ratio``
        (min |R_ii| / max |R_ii| of the final QR), ``rank_deficient`` (bool).
    """

    Q: Any
    eigenvalues: Any
    permutation: Any
    info: dict


# --------------------------------------------------------------------------- input handling
def _is_array(x) -> bool:
    if isinstance(x, np.ndarray):
        return True
    return array_api_compat.is_array_api_obj(x)


def _check_cols(cols, m: int, *, argname: str = "cols") -> np.ndarray:
    """cols as a host int64 vector: 1-D, integral, unique, in [0, m)."""
    c = B.to_numpy(cols) if _is_array(cols) and not isinstance(cols, np.ndarray) else cols
    c = np.asarray(c)
    if c.ndim != 1:
        raise ValueError(f"{argname} must be a 1-D sequence of column indices, got shape "
                         f"{c.shape}")
    if c.size == 0:
        raise ValueError(f"{argname} must name at least one column")
    if not (np.issubdtype(c.dtype, np.integer)
            or (np.issubdtype(c.dtype, np.floating) and np.all(c == np.round(c)))):
        raise ValueError(f"{argname} must hold integer column indices, got dtype {c.dtype}")
    c = c.astype(np.int64)
    bad = c[(c < 0) | (c >= m)]
    if bad.size:
        raise ValueError(f"{argname} has indices out of range [0, {m}): {bad[:5].tolist()}")
    uniq, counts = np.unique(c, return_counts=True)
    if uniq.size != c.size:
        raise ValueError(f"{argname} has repeated indices: {uniq[counts > 1][:5].tolist()}")
    return c


def _operator(K, xp, d: int, batch: tuple, comp: str, *, argname: str = "K"):
    """A function X ↦ K X in the compute format, with K validated."""
    if _is_array(K):
        kxp = B.array_namespace(K)
        if B.namespace_name(kxp) != B.namespace_name(xp):
            raise TypeError(f"{argname} is a {B.namespace_name(kxp)} array but Q is a "
                            f"{B.namespace_name(xp)} array")
        B.format_of(K, argname=argname)
        if K.ndim < 2 or K.shape[-1] != K.shape[-2]:
            raise ValueError(f"{argname} must be square (..., d, d), got shape "
                             f"{tuple(K.shape)}")
        if K.shape[-1] != d:
            raise ValueError(f"{argname} of shape {tuple(K.shape)} does not match Q with d={d} "
                             f"rows")
        try:
            np.broadcast_shapes(tuple(K.shape[:-2]), batch)
        except ValueError:
            raise ValueError(f"batch shape {tuple(K.shape[:-2])} of {argname} does not "
                             f"broadcast with Q's {batch}") from None
        Kc = decode(K, comp)
        return lambda X: _finite_product(xp, Kc @ X, argname)
    if hasattr(K, "matmat"):
        raw = K.matmat
    elif callable(K):
        raw = K
    elif hasattr(K, "__matmul__"):
        def raw(X):
            return K @ X
    else:
        raise TypeError(f"{argname} must be an array, a callable X -> K @ X or a linear "
                        f"operator, got {type(K).__name__}")
    shape_attr = getattr(K, "shape", None)
    if shape_attr is not None and len(shape_attr) >= 2 and (
            shape_attr[-1] != shape_attr[-2] or shape_attr[-1] != d):
        raise ValueError(f"{argname} operator of shape {tuple(shape_attr)} must be square and "
                         f"match Q with d={d} rows")

    def apply(X):
        Y = raw(X)
        if _is_array(Y):
            _finite_product(xp, Y, argname)
        if not _is_array(Y) or tuple(Y.shape[-2:]) != tuple(X.shape[-2:]):
            got = tuple(getattr(Y, "shape", ())) if _is_array(Y) else type(Y).__name__
            raise ValueError(f"{argname}(X) must return an array shaped like X "
                             f"{tuple(X.shape)}, got {got}")
        Y = decode(xp.asarray(Y) if not B.is_numpy(xp) else np.asarray(Y), comp)
        return Y

    return apply


def _finite_product(xp, Y, argname):
    """Raise if the product K @ X has a non-finite entry.

    A NaN or infinite entry of K reaches every row it multiplies (NaN·x = NaN, inf·0 = NaN),
    so checking the d×k product replaces an O(d²) scan of K before the work.
    """
    if not bool(xp.all(xp.isfinite(Y))):
        raise ValueError(f"{argname} has non-finite entries (NaN or inf): {argname} @ X is "
                         f"not finite")
    return Y


def _argsort_desc(xp, v):
    try:
        return xp.argsort(v, axis=-1, descending=True, stable=True)
    except TypeError:  # namespaces without the keywords
        return xp.argsort(-v, axis=-1)


def _take_last(xp, A, idx):
    """A[..., idx[...]] along the last axis with a per-batch index (..., k)."""
    full = xp.broadcast_to(idx[..., None, :], (*A.shape[:-1], idx.shape[-1]))
    return xp.take_along_axis(A, full, axis=-1)


def _take_rows(xp, A, idx):
    """A[..., idx[...], :] with a per-batch row index (..., k)."""
    full = xp.broadcast_to(idx[..., :, None], (*A.shape[:-2], idx.shape[-1], A.shape[-1]))
    return xp.take_along_axis(A, full, axis=-2)


def _runs(cols: np.ndarray) -> list[tuple[int, int, int]]:
    """Maximal runs of consecutive increasing indices: (first column, stop column, position)."""
    breaks = np.flatnonzero(np.diff(cols) != 1) + 1
    starts = np.r_[0, breaks]
    stops = np.r_[breaks, cols.size]
    return [(int(cols[a]), int(cols[b - 1]) + 1, int(a)) for a, b in zip(starts, stops)]


def _gather_columns(xp, Q, cols: np.ndarray):
    """Q[..., :, cols]: slices for runs of consecutive columns (strided gathers are slow).

    NumPy: one run is returned as a view (BLAS reads it with its row stride), several runs
    through the one-pass Numba gather.
    """
    runs = _runs(cols)
    if B.is_numpy(xp) and isinstance(Q, np.ndarray):
        if len(runs) == 1:
            return Q[..., runs[0][0]:runs[0][1]]
        return _cols_kernel.gather_columns(Q, cols)
    if len(runs) <= 4 and (B.is_numpy(xp) or B.is_torch(xp) or B.is_cupy(xp)):
        parts = [Q[..., a:b] for a, b, _ in runs]
        return parts[0] if len(parts) == 1 else xp.concat(parts, axis=-1)
    return xp.take(Q, xp.asarray(cols, device=B.device_of(Q)), axis=-1)


def _scatter_columns(xp, Q, cols: np.ndarray, new):
    """Q with columns ``cols`` replaced by ``new``; the other columns are copied bit for bit.

    NumPy: one fused pass over Q (Numba), which writes every output row once.
    """
    if (B.is_numpy(xp) and isinstance(Q, np.ndarray) and isinstance(new, np.ndarray)
            and new.dtype == Q.dtype):
        return _cols_kernel.scatter_columns(Q, cols, new)
    if B.is_numpy(xp) or B.is_torch(xp) or B.is_cupy(xp):
        out = Q.clone() if B.is_torch(xp) else Q.copy()
        runs = _runs(cols)
        if len(runs) <= 8:
            for a, b, pos in runs:
                out[..., a:b] = new[..., pos:pos + (b - a)]
        elif B.is_torch(xp):
            import torch

            out[..., torch.as_tensor(cols, device=Q.device)] = new
        else:
            out[..., cols] = new
        return out
    m = Q.shape[-1]
    src = np.arange(m, dtype=np.int64)
    src[cols] = m + np.arange(cols.size)
    both = xp.concat([Q, xp.broadcast_to(new, (*Q.shape[:-1], cols.size))], axis=-1)
    return xp.take(both, xp.asarray(src, device=B.device_of(Q)), axis=-1)


def _diag(xp, A):
    return xp.linalg.diagonal(A) if hasattr(xp.linalg, "diagonal") else xp.diagonal(A)


def _r_ratio(xp, R) -> float:
    r = xp.abs(_diag(xp, R))
    if r.shape[-1] == 0:
        return 1.0
    hi = xp.max(r, axis=-1)
    lo = xp.min(r, axis=-1)
    ratio = xp.where(hi > 0, lo / xp.where(hi > 0, hi, xp.ones_like(hi)), xp.zeros_like(hi))
    return float(xp.min(ratio))


# --------------------------------------------------------------------------- the refresh
def _permute_sym(xp, M, perm):
    """Pᵀ M P: ``M[..., perm, :][..., :, perm]`` (k×k)."""
    if B.is_numpy(xp) and M.ndim == 2:
        return M.take(perm, axis=0).take(perm, axis=1)
    return _take_rows(xp, _take_last(xp, M, perm), perm)


def _unpermute_rows(xp, W, perm):
    """P W: the rows of W put back in the old local order (row perm[i] of the result is W[i])."""
    if B.is_numpy(xp) and W.ndim == 2:
        return W.take(np.argsort(perm), axis=0)
    return _take_rows(xp, W, xp.argsort(perm, axis=-1))


def _rotate_block(xp, QJ, BJ, *, sort: bool):
    """Rotate step on decoded columns QJ with BJ = K QJ: returns (V, eigenvalues, perm, R).

    QJ_new = QJ @ V, V = P W with W = qr(Pᵀ M P).Q, M = QJᵀ BJ (symmetrized), P the sorting
    permutation (perm[i] is the old local column that becomes new local column i). The
    Rayleigh quotients wᵢᵀ(PᵀMP)wᵢ are read off the factors, diag(R W) (PᵀMP = W R, so
    Wᵀ(PᵀMP)W = R W): O(k²) instead of a k×k×k product, equal to O(k·u·‖M‖).
    """
    k = QJ.shape[-1]
    M = mT(xp, QJ) @ BJ
    M = 0.5 * (M + mT(xp, M))
    if sort:
        perm = _argsort_desc(xp, _diag(xp, M))
        Ms = _permute_sym(xp, M, perm)
    else:
        perm = xp.broadcast_to(xp.arange(k, device=B.device_of(M)), M.shape[:-1])
        Ms = M
    # NumPy: numpy.linalg.qr (an fp32 block is factored in fp64, so W is orthogonal to the
    # rounding of its entries). Not SciPy's LAPACK: SciPy loads a second OpenBLAS whose idle
    # threads spin after a call and take a core from the next NumPy GEMM (K Q_J measured
    # 20 ms instead of 11 ms on 2 cores when every refresh called it)
    W, R = qr_pos(xp, Ms)
    eig = xp.sum(R * mT(xp, W), axis=-1)
    V = _unpermute_rows(xp, W, perm) if sort else W
    return V, eig, perm, R


def _rotate_into(xp, Q, J, QJ, V):
    """NumPy, one run of columns a:b, no format change: Q with Q[..., a:b] ← QJ @ V, the
    product written by BLAS straight into the new array and the other columns copied once.
    None when the shortcut does not apply (the caller then scatters)."""
    if not (B.is_numpy(xp) and isinstance(Q, np.ndarray) and isinstance(QJ, np.ndarray)
            and isinstance(V, np.ndarray) and Q.dtype == QJ.dtype == V.dtype):
        return None
    runs = _runs(J)
    if len(runs) != 1:
        return None
    try:
        if np.broadcast_shapes(QJ.shape[:-2], V.shape[:-2]) != Q.shape[:-2]:
            return None
    except ValueError:
        return None
    a, b, _ = runs[0]
    out = np.empty(Q.shape, dtype=Q.dtype)
    np.matmul(QJ, V, out=out[..., a:b])
    if a:
        out[..., :a] = Q[..., :a]
    if b < Q.shape[-1]:
        out[..., b:] = Q[..., b:]
    return out


def subspace_refresh(K, Q, cols, *, method: str = "rotate", compute="fp32", sort: bool = True,
                     orth_tol: float | None = ORTHONORMALITY_TOL) -> SubspaceRefresh:
    """Refresh the columns ``cols`` of the basis Q of the symmetric factor K.

    Parameters
    ----------
    K : array (..., d, d), or callable / linear operator computing K @ X
        The symmetric factor. An array may be in any real float format (bf16 is decoded
        exactly into the compute format). A callable ``K(X)`` (or an object with ``matmat`` or
        ``@``, e.g. a SciPy ``LinearOperator``) receives the d×k block of the compute format
        and returns K @ X, so a caller that never forms K (K = Q diag(λ) Qᵀ + G Gᵀ) can refresh.
    Q : array (..., d, m), m ≤ d
        Orthonormal basis (any real float format). Leading dimensions are a batch of stacked
        factors; ``cols`` is shared by the batch.
    cols : sequence of int (k,)
        Distinct column indices in [0, m): the set J to refresh.
    method : {"rotate", "project"}
        "rotate": B = K Q_J, M = Q_Jᵀ B, W = qr(M).Q, Q_J ← Q_J W (2d²k + 2dk² + 2dk² +
        O(k³) flops); orthogonality of Q_J is preserved to the precision of Q_J itself.
        "project": B re-orthogonalized twice against the unchanged columns
        (B ← B − Q_{J^c}(Q_{J^c}ᵀ B), twice, with a thin QR after each pass: block CGS2,
        8dk(m − k) + 8dk² flops): equal to "rotate" in exact arithmetic when m = d and K Q_J
        has full rank, orthogonal to the kept columns to O(u) even when it has not (the
        null directions are completed inside span(Q_J) when m = d), and it repairs the
        orthogonality of the touched columns of a BF16-stored basis (they become orthogonal to
        the stored others to O(u_compute) before the one rounding of the result).
    compute : {"fp32", "fp64"}
        Arithmetic format.
    sort : bool
        Order the k columns by decreasing Rayleigh quotient before the QR (SOAP's ordering: the
        QR then pushes the dominant directions to the front) and return the permutation.
    orth_tol : float or None
        Largest accepted ‖Q_JᵀQ_J − I‖₂ of the touched columns (2dk² flops to check; only Q_J
        is checked so the check never costs O(d³)). None skips it.

    Returns
    -------
    SubspaceRefresh
        ``(Q, eigenvalues, permutation, info)``; see :class:`SubspaceRefresh`.

    Raises
    ------
    ValueError
        cols out of range, repeated or empty; K not square or not matching Q; Q not nearly
        orthonormal on cols (the message reports the measured loss); non-finite Q columns, or
        non-finite K (detected on the d×k product K Q_J, which any NaN or inf of K reaches,
        instead of an O(d²) scan); unknown method.
    TypeError
        K of an unsupported type or of another array library than Q.

    Notes
    -----
    Error bound (rotate, compute precision u): Q_J W with W from Householder QR of a k×k
    matrix satisfies ‖(Q_J W)ᵀ(Q_J W) − I‖₂ ≤ ‖Q_JᵀQ_J − I‖₂ + c·k·u (Higham Thm 19.4 for W,
    and one product by an orthogonal-to-O(u) matrix), so a stored fp32 basis does not drift
    beyond O(u·√updates). Rounding the result to a 16-bit storage format adds u_storage per
    column per update: that is the drift of plain BF16 storage (see :class:`StoredBasis`).
    Cost vs the full refresh qr(K Q): 2d²k + O(dk²) against ≈ 4.7d³ (the 2d³ GEMM plus a square
    Householder QR and the formation of its Q); for d = 2048, k = 256 the flop ratio is ≈ 19×
    and the measured time ratio larger (LAPACK's square QR runs below GEMM speed).

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> G = rng.standard_normal((8, 8)); K = G @ G.T
    >>> Q = np.linalg.qr(rng.standard_normal((8, 8)))[0]
    >>> res = subspace_refresh(K, Q, [0, 1, 2], compute="fp64")
    >>> bool(np.array_equal(res.Q[:, 3:], Q[:, 3:]))
    True
    """
    if method not in _METHODS:
        raise ValueError(f"method must be one of {_METHODS}, got {method!r}")
    comp = compute_format(compute)
    if not _is_array(Q):
        raise TypeError(f"Q must be an array, got {type(Q).__name__}")
    xp = B.array_namespace(Q)
    qfmt = B.format_of(Q, argname="Q")
    if Q.ndim < 2:
        raise ValueError(f"Q must have shape (..., d, m), got {tuple(Q.shape)}")
    d, m = Q.shape[-2], Q.shape[-1]
    if m > d:
        raise ValueError(f"Q must have m <= d columns, got shape {tuple(Q.shape)}")
    J = _check_cols(cols, m)
    k = J.size
    batch = tuple(Q.shape[:-2])
    matvec = _operator(K, xp, d, batch, comp)
    dev = B.device_of(Q)
    QJ = decode(_gather_columns(xp, Q, J), comp)
    if orth_tol is None or math.isinf(orth_tol):
        B.check_finite(xp, QJ, "Q")
    # otherwise the check rejects a non-finite Q_J itself: a NaN or inf reaches the diagonal
    # of Q_JᵀQ_J (Σ q²), and a non-finite Gram matrix raises the same ValueError
    loss_in = check_orthonormal(xp, QJ, argname="Q", tol=orth_tol)
    BJ = matvec(QJ)
    if method == "rotate":
        V, eig, perm, R = _rotate_block(xp, QJ, BJ, sort=sort)
        Qout = _rotate_into(xp, Q, J, QJ, V)
        QJn = QJ @ V if Qout is None else None
    else:
        Jc = np.setdiff1d(np.arange(m, dtype=np.int64), J)
        if sort:
            perm = _argsort_desc(xp, xp.sum(QJ * BJ, axis=-2))
        else:
            perm = xp.broadcast_to(xp.arange(k, device=dev), (*BJ.shape[:-2], k))
        Bp = _take_last(xp, BJ, perm) if sort else BJ
        if Jc.size:
            # block CGS2 with a QR after each pass: the second pass starts from an orthonormal
            # block, so the result is orthogonal to the kept columns to O(u) even when K Q_J
            # is ill-conditioned or rank deficient (the first QR then returns arbitrary
            # directions, which the second projection brings back into span(Q_J))
            Qc = decode(_gather_columns(xp, Q, Jc), comp)
            B.check_finite(xp, Qc, "Q")
            Bp = Bp - Qc @ (mT(xp, Qc) @ Bp)
            Bp, R = qr_pos(xp, Bp)
            Bp = Bp - Qc @ (mT(xp, Qc) @ Bp)
            QJn, _ = qr_pos(xp, Bp)
        else:
            QJn, R = qr_pos(xp, Bp)
        if m == d:
            # in exact arithmetic QJn = QJ V and K QJn = BJ V: Rayleigh quotients without a
            # second product by K (exact for a complete basis, O(loss) otherwise)
            V = mT(xp, QJ) @ QJn
            eig = xp.sum(V * (mT(xp, BJ) @ QJn), axis=-2)
        else:
            eig = xp.sum(QJn * matvec(QJn), axis=-2)
    if QJn is not None:
        Qout = _scatter_columns(xp, Q, J, encode(QJn, qfmt))
    perm_h = np.asarray(B.to_numpy(perm), dtype=np.int64)
    full = np.broadcast_to(np.arange(m, dtype=np.int64), (*perm_h.shape[:-1], m)).copy()
    full[..., J] = J[perm_h]
    ratio = _r_ratio(xp, R)
    info = {
        "method": method,
        "compute": comp,
        "k": int(k),
        "sorted": bool(sort),
        "input_loss": float(loss_in),
        "min_r_ratio": ratio,
        "rank_deficient": bool(ratio < RANK_C * k * unit_roundoff(comp)),
    }
    return SubspaceRefresh(Qout, eig, xp.asarray(full, device=dev), info)


# --------------------------------------------------------------------------- quality
def _quality_parts(K, Q):
    """QᵀKQ in fp64 (..., m, m), K array or operator."""
    xp = B.array_namespace(Q)
    if Q.ndim < 2:
        raise ValueError(f"Q must have shape (..., d, m), got {tuple(Q.shape)}")
    d = Q.shape[-2]
    matvec = _operator(K, xp, d, tuple(Q.shape[:-2]), "fp64")
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
    dg = _diag(xp, M)
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
        e = np.asarray(B.to_numpy(estimates) if _is_array(estimates) else estimates,
                       dtype=np.float64)
        return e.reshape(-1, e.shape[-1]).sum(axis=0)
    if K is None or Q is None:
        need = "estimates or both K and Q" if policy == "topk" else "both K and Q"
        raise ValueError(f"policy {policy!r} needs {need}")
    xp = B.array_namespace(Q)
    comp = "fp64" if B.format_of(Q, argname="Q").name == "fp64" else "fp32"
    matvec = _operator(K, xp, Q.shape[-2], tuple(Q.shape[:-2]), comp)
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


def _ncols(ncols, K, Q, estimates) -> int:
    if ncols is not None:
        return int(ncols)
    if Q is not None:
        return int(Q.shape[-1])
    if estimates is not None:
        return int(np.shape(estimates)[-1])
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
        (one-sided block Jacobi); it needs ``estimates`` (or K and Q) and ``step``.
    k : int
        Number of columns, 1 ≤ k ≤ m.
    step : int
        The update counter (needed by "cyclic").
    K, Q : arrays or operator
        The factor and basis (needed by "residual", and by "topk" without ``estimates``).
    estimates : array (..., m)
        Eigenvalue estimates for "topk" (e.g. the ``eigenvalues`` an optimizer tracks).
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
    """
    if policy not in COLUMN_POLICIES:
        raise ValueError(f"policy must be one of {COLUMN_POLICIES}, got {policy!r}")
    m = _ncols(ncols, K, Q, estimates)
    if not isinstance(k, (int, np.integer)) or not 1 <= k <= m:
        raise ValueError(f"k must be an integer in [1, {m}], got {k!r}")
    k = int(k)
    if policy == "cyclic":
        if step is None or int(step) < 0:
            raise ValueError(f"policy 'cyclic' needs a non-negative step, got {step!r}")
        pos = int(step) * k
        sweep = pos // m
        start = (pos + (sweep % 2) * (k // 2)) % m
        return np.sort((start + np.arange(k, dtype=np.int64)) % m)
    if policy == "topk-cyclic":
        if step is None or int(step) < 0:
            raise ValueError(f"policy 'topk-cyclic' needs a non-negative step, got {step!r}")
        ktop = k // 2
        s = column_scores("topk", K=K, Q=Q, estimates=estimates)
        if s.shape[-1] != m:
            raise ValueError(f"estimates have {s.shape[-1]} entries, expected m={m}")
        top = np.argsort(-s, kind="stable")[:ktop]
        rest = np.setdiff1d(np.arange(m, dtype=np.int64), top)
        if k - ktop == 0:
            return np.sort(top.astype(np.int64))
        sweep = select_columns("cyclic", k - ktop, step=step, ncols=rest.size)
        return np.sort(np.concatenate([top, rest[sweep]]).astype(np.int64))
    if policy == "random":
        gen = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
        return np.sort(gen.choice(m, size=k, replace=False).astype(np.int64))
    s = column_scores(policy, K=K, Q=Q, estimates=estimates)
    if s.shape[-1] != m:
        raise ValueError(f"scores have {s.shape[-1]} entries, expected m={m}")
    if not np.all(np.isfinite(s)):
        raise ValueError("estimates or QᵀKQ have non-finite entries")
    idx = np.argsort(-s, kind="stable")[:k]
    return np.sort(idx.astype(np.int64))

