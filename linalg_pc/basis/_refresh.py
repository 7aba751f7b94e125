"""The column refresh shared by :func:`subspace_refresh` and the basis state: the rotate and
project steps on decoded columns, the permutation they report and their typed info.

The public functions validate the columns and the operator (:mod:`linalg_pc.basis._common`);
:func:`refresh_columns` checks only the orthonormality and finiteness of the touched columns.
The mathematics is documented in :func:`linalg_pc.basis.subspace.subspace_refresh`.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

from .. import _backend as B
from .._formats import get_format
from ..precision import unit_roundoff
from ._common import check_orthonormal, decode, encode, mT, qr_pos, scale_back

__all__ = ["RANK_C", "RefreshInfo", "refresh_columns", "rotate_block", "full_permutation",
           "r_ratio", "make_info"]

#: A diagonal entry of the k×k (or d×k) triangular factor below RANK_C·k·u·max|diag R| flags the
#: refreshed block as numerically rank deficient (K annihilates part of span(Q_J)); the computed
#: columns are still orthonormal (Householder QR), only their order inside the null part is
#: arbitrary.
RANK_C = 10.0

#: Entries of a refreshed column q below FLUSH_C·u·‖q‖₂/√d are set to zero. When K annihilates
#: part of span(Q_J) (dead units of a network: zero rows of K), the rotation mixes the null
#: and range directions with coefficients at the level of the rounding noise of Q_JᵀKQ_J, and
#: Q_J W holds entries of 1e-30 and below (subnormal in fp32: 4× slower products with the basis
#: afterwards) where qr(K Q) holds zeros. Flushing them moves each column by at most
#: FLUSH_C·u·‖q‖₂ (√d entries of u‖q‖/√d at most), so orthogonality changes by O(u).
FLUSH_C = 1.0


@dataclass(frozen=True)
class RefreshInfo:
    """What a column refresh did (:func:`subspace_refresh`, ``StoredBasis.update``,
    ``basis.state.update``).

    Attributes
    ----------
    method : str
        "rotate" or "project".
    compute : str
        The arithmetic format, "fp32" or "fp64".
    k : int
        Number of refreshed columns.
    sorted : bool
        Whether the columns were ordered by decreasing Rayleigh quotient.
    input_loss : float
        The input check's estimate of ‖Q_JᵀQ_J − I‖₂ of the touched columns (NaN: not
        checked): the upper bound min(‖E‖_F, ‖E‖_∞), E = Q_JᵀQ_J − I, where it is ≤ orth_tol,
        else the power-iteration lower bound (≥ 0.91‖E‖₂ measured; see
        :func:`~linalg_pc.subspace_refresh`, ``orth_tol``).
    min_r_ratio : float
        min |R_ii| / max |R_ii| of the final QR (over a batch: the smallest).
    rank_deficient : bool
        ``min_r_ratio < RANK_C·k·u_compute``: K annihilates part of span(Q_J).
    scheme : str or None
        The storage scheme of the basis updated (None for a plain :func:`subspace_refresh`).
    rebased : bool
        Whether the update was followed by a re-basing (block-rotation).
    scale_log2 : int
        K·Q_J was computed as 2^scale_log2 times a product scaled to [1, 2) because it (or K)
        came within PRODUCT_HEADROOM·d·k of the compute format's maximum (0: no scaling). A
        power of two changes no mantissa: Q is the same as without it, and the eigenvalues are
        scaled back exactly.
    eigenvalues_finite : bool
        False when a Rayleigh quotient exceeds the compute format's maximum: that eigenvalue
        is returned as ±inf (the basis itself is finite and orthonormal).
    """

    method: str
    compute: str
    k: int
    sorted: bool
    input_loss: float
    min_r_ratio: float
    rank_deficient: bool
    scheme: str | None = None
    rebased: bool = False
    scale_log2: int = 0
    eigenvalues_finite: bool = True

    def as_dict(self) -> dict:
        """The fields as a plain dict (for records and JSON)."""
        return dataclasses.asdict(self)


def make_info(method: str, comp: str, k: int, sort: bool, loss, R, xp, *, scale: int = 0,
              eig=None) -> RefreshInfo:
    ratio = r_ratio(xp, R)
    finite = True if scale == 0 or eig is None else bool(xp.all(xp.isfinite(eig)))
    return RefreshInfo(method=method, compute=comp, k=int(k), sorted=bool(sort),
                       input_loss=float(loss), min_r_ratio=ratio,
                       rank_deficient=bool(ratio < RANK_C * k * unit_roundoff(comp)),
                       scale_log2=int(scale), eigenvalues_finite=finite)


def flush_tiny(xp, X, comp: str):
    """X (..., d, k) with entries below FLUSH_C·u·‖column‖₂/√d set to zero (cost O(dk)).

    Three passes over X when nothing is flushed (the column norms, |X|, the
    comparison) and X itself is returned; the masked copy only when an entry is flushed (one
    host read of a flag decides)."""
    d = X.shape[-2]
    if d == 0 or X.shape[-1] == 0:
        return X
    t = xp.sqrt(B.column_sumsq(X)) * (FLUSH_C * unit_roundoff(comp) / math.sqrt(d))
    small = xp.abs(X) < t[..., None, :]
    if not bool(xp.any(small)):
        return X
    return xp.where(small, xp.zeros_like(X), X)


def diag(xp, A):
    return xp.linalg.diagonal(A) if hasattr(xp.linalg, "diagonal") else xp.diagonal(A)


def r_ratio(xp, R) -> float:
    r = xp.abs(diag(xp, R))
    if r.shape[-1] == 0:
        return 1.0
    hi = xp.max(r, axis=-1)
    lo = xp.min(r, axis=-1)
    ratio = xp.where(hi > 0, lo / xp.where(hi > 0, hi, xp.ones_like(hi)), xp.zeros_like(hi))
    return float(xp.min(ratio))


def argsort_desc(xp, v):
    try:
        return xp.argsort(v, axis=-1, descending=True, stable=True)
    except TypeError:  # namespaces without the keywords
        return xp.argsort(-v, axis=-1)


def take_last(xp, A, idx):
    """A[..., idx[...]] along the last axis with a per-batch index (..., k)."""
    if idx.ndim == 1:
        return xp.take(A, idx, axis=-1)
    full = xp.broadcast_to(idx[..., None, :], (*A.shape[:-1], idx.shape[-1]))
    return B.take_along_axis(A, full, -1)


def take_rows(xp, A, idx):
    """A[..., idx[...], :] with a per-batch row index (..., k)."""
    if idx.ndim == 1:
        return xp.take(A, idx, axis=-2)
    full = xp.broadcast_to(idx[..., :, None], (*A.shape[:-2], idx.shape[-1], A.shape[-1]))
    return B.take_along_axis(A, full, -2)


def rotate_block(xp, QJ, BJ, *, sort: bool):
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
        perm = argsort_desc(xp, diag(xp, M))
        Ms = take_rows(xp, take_last(xp, M, perm), perm)
    else:
        perm = xp.broadcast_to(xp.arange(k, device=B.device_of(M)), M.shape[:-1])
        Ms = M
    # NumPy: numpy.linalg.qr (an fp32 block is factored in fp64, so W is orthogonal to the
    # rounding of its entries). Not SciPy's LAPACK: SciPy loads a second OpenBLAS whose idle
    # threads spin after a call and take a core from the next NumPy GEMM (K Q_J measured
    # 20 ms instead of 11 ms on 2 cores when every refresh called it)
    W, R = qr_pos(xp, Ms)
    eig = xp.sum(R * mT(xp, W), axis=-1)
    V = take_rows(xp, W, xp.argsort(perm, axis=-1)) if sort else W
    return V, eig, perm, R


def full_permutation(xp, perm, J: np.ndarray, m: int, device):
    """The permutation of all m columns (identity outside J) from the local one (..., k)."""
    perm_h = np.asarray(B.to_numpy(perm), dtype=np.int64)
    full = np.broadcast_to(np.arange(m, dtype=np.int64), (*perm_h.shape[:-1], m)).copy()
    full[..., J] = J[perm_h]
    return xp.asarray(full, device=device)


def refresh_columns(matvec, Q, J: np.ndarray, *, method: str, comp: str, sort: bool,
                    orth_tol, inplace: bool = False):
    """One refresh of the columns J of the stored basis Q (any storage format).

    Returns (Q_new, eigenvalues, local permutation (..., k), R of the final QR, input loss,
    scale exponent of K·Q_J: see :attr:`RefreshInfo.scale_log2`).
    Q_new has Q's dtype; the columns outside J are Q's bit for bit. ``inplace`` writes the new
    columns into Q where the library allows it (no copy of the other columns).
    """
    xp = B.array_namespace(Q)
    qfmt = B.format_of(Q)
    d, m = Q.shape[-2], Q.shape[-1]
    k = J.size
    dev = B.device_of(Q)
    QJ = decode(B.take_columns(Q, J), comp)
    # every column of Q must be finite, whatever the method (rotate never reads the columns
    # outside J, project multiplies by them): one O(dm) test of the stored bits, its flag read
    # with the orthonormality check's scalar (no host read of its own on an accelerator)
    if orth_tol is None or math.isinf(orth_tol):
        if not bool(_finite_sum_flag(xp, Q, qfmt)):
            B.check_finite(xp, Q, "Q")
        loss_in = float("nan")
    else:
        try:
            loss_in = check_orthonormal(xp, QJ, argname="Q", tol=orth_tol,
                                        finite=_finite_sum_flag(xp, Q, qfmt))
        except ValueError:
            # the flag is the finiteness of sum(Q), which finite entries of a Q far from a
            # basis can overflow: decide by the exact test (this path only ever raises)
            if not bool(B.finite_flag(xp, Q)):
                raise
            loss_in = check_orthonormal(xp, QJ, argname="Q", tol=orth_tol)
    BJ, e = matvec.scaled(QJ)  # K QJ = 2^e BJ
    if method == "rotate":
        V, eig, perm, R = rotate_block(xp, QJ, BJ, sort=sort)
        return _finish(xp, Q, J, flush_tiny(xp, QJ @ V, comp), qfmt, inplace,
                       scale_back(xp, eig, e, comp), perm, R, loss_in, e)
    Jc = np.setdiff1d(np.arange(m, dtype=np.int64), J)
    Qc = decode(B.take_columns(Q, Jc), comp) if Jc.size else None
    if m < d:
        # orthogonal iteration in the complement of the kept columns: block CGS2 of K Q_J
        # against them, with a QR after each pass
        if sort:
            perm = argsort_desc(xp, xp.sum(QJ * BJ, axis=-2))
        else:
            perm = xp.broadcast_to(xp.arange(k, device=dev), (*BJ.shape[:-2], k))
        Bp = take_last(xp, BJ, perm) if sort else BJ
        Bp, R = qr_pos(xp, Bp - Qc @ (mT(xp, Qc) @ Bp)) if Qc is not None else qr_pos(xp, Bp)
        if r_ratio(xp, R) >= RANK_C * k * unit_roundoff(comp):
            QJn = _project_out(xp, Bp, Qc) if Qc is not None else Bp
            Y, e2 = matvec.scaled(QJn)
            eig = scale_back(xp, xp.sum(QJn * Y, axis=-2), e2, comp)
            return _finish(xp, Q, J, flush_tiny(xp, QJn, comp), qfmt, inplace, eig, perm, R,
                           loss_in, e)
    # m = d, or K annihilates part of span(Q_J): the new columns are the rotate step's Q_J V
    # (inside span(Q_J), full rank whatever the rank of K Q_J) repaired by block CGS2 against
    # the kept columns. Projecting a rank-deficient K Q_J instead would leave its null
    # directions to the arbitrary columns of a QR, which the projection can annihilate.
    V, _, perm, R = rotate_block(xp, QJ, BJ, sort=sort)
    Y = QJ @ V
    QJn = _project_out(xp, Y, Qc) if Qc is not None else qr_pos(xp, Y)[0]
    if m == d:
        # in exact arithmetic QJn = QJ V and K QJn = 2^e BJ V: Rayleigh quotients without a
        # second product by K (exact for a complete basis, O(loss) otherwise)
        V2 = mT(xp, QJ) @ QJn
        eig = scale_back(xp, xp.sum(V2 * (mT(xp, BJ) @ QJn), axis=-2), e, comp)
    else:
        Y, e2 = matvec.scaled(QJn)
        eig = scale_back(xp, xp.sum(QJn * Y, axis=-2), e2, comp)
    return _finish(xp, Q, J, flush_tiny(xp, QJn, comp), qfmt, inplace, eig, perm, R, loss_in,
                   e)


def _finite_sum_flag(xp, Q, qfmt):
    """A device flag, True when every entry of Q is finite, for the common case at one pass
    with no temporary: sum(Q) is finite iff no entry is NaN or inf, unless finite entries
    overflow the sum (impossible for the entries of a basis, ≤ 1 + loss in magnitude; the
    callers then fall back to the exact test). 16-bit formats take the exact test (NumPy's
    bit test of bf16; a bf16 sum would run in bf16)."""
    if get_format(qfmt).bits <= 16:
        return B.finite_flag(xp, Q)
    with np.errstate(over="ignore", invalid="ignore"):  # an overflow is decided exactly
        return xp.isfinite(xp.sum(Q))


def _project_out(xp, Y, Qc):
    """Y (orthonormal columns) made orthogonal to Qc to O(u): one more projection and QR
    (the second pass of block CGS2: it starts from an orthonormal block)."""
    Y, _ = qr_pos(xp, Y - Qc @ (mT(xp, Qc) @ Y))
    Y = Y - Qc @ (mT(xp, Qc) @ Y)
    return qr_pos(xp, Y)[0]


def _finish(xp, Q, J, QJn, qfmt, inplace, eig, perm, R, loss_in, e):
    return (B.put_columns(Q, J, encode(QJn, qfmt), inplace=inplace), eig, perm, R, loss_in, e)
