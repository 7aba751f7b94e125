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

Column selection and the quality measure live in :mod:`linalg_pc.basis.selection` (re-exported
here); the refresh steps shared with the basis state in :mod:`linalg_pc.basis._refresh`.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from .. import _backend as B
from ._common import (
    ORTHONORMALITY_TOL,
    check_basis,
    check_cols,
    check_tol,
    default_method,
    operator,
)
from ._refresh import RANK_C, RefreshInfo, full_permutation, make_info, refresh_columns
from .selection import COLUMN_POLICIES, column_scores, eigenbasis_quality, select_columns

__all__ = [
    "SubspaceRefresh",
    "RefreshInfo",
    "subspace_refresh",
    "select_columns",
    "eigenbasis_quality",
    "COLUMN_POLICIES",
    "column_scores",
    "RANK_C",
]

_METHODS = ("rotate", "project")


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
    info : RefreshInfo
        ``method``, ``compute``, ``k``, ``sorted``, ``input_loss`` (the check's estimate of
        ‖Q_JᵀQ_J − I‖₂, NaN when not checked: see ``orth_tol``), ``min_r_ratio`` (min
        |R_ii| / max |R_ii| of the final QR), ``rank_deficient`` (bool); ``info.as_dict()``
        for a plain dict.
    """

    Q: Any
    eigenvalues: Any
    permutation: Any
    info: RefreshInfo


def subspace_refresh(K, Q, cols, *, method: str | None = None, compute=None, sort: bool = True,
                     orth_tol: float | None = ORTHONORMALITY_TOL,
                     inplace: bool = False) -> SubspaceRefresh:
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
    method : {"rotate", "project"}, optional
        Default (None): "project" for a 16-bit Q (bf16, fp16), "rotate" for fp32 and fp64 Q.
        A 16-bit basis refreshed by "rotate" re-rounds the touched columns without repairing
        them, so its loss of orthogonality random-walks (≈ 1.2·u_bf16·√(roundings per
        column)) until the input check rejects it (measured: a plain BF16 basis at d = 256,
        k = 32, went from 0.0066 to 0.079 in 300 refreshes and was rejected at refresh 441);
        "project" brings every touched column back to O(u_compute) against the others before
        the one rounding, so the loss stays at the one-rounding floor (docs/basis.md).
        "rotate": B = K Q_J, M = Q_Jᵀ B, W = qr(M).Q, Q_J ← Q_J W (2d²k + 2dk² + 2dk² +
        O(k³) flops); orthogonality of Q_J is preserved to the precision of Q_J itself.
        "project": the touched columns re-orthogonalized twice against the unchanged ones
        (Y ← Y − Q_{J^c}(Q_{J^c}ᵀ Y), twice, with a thin QR after each pass: block CGS2,
        8dk(m − k) + 8dk² flops). For m = d, or when K Q_J is numerically rank deficient, Y is
        the rotate step's Q_J W (inside span(Q_J) and of full rank whatever the rank of K; a
        projected rank-deficient K Q_J would leave its null directions to the arbitrary
        columns of a QR, which the projection can annihilate: measured loss 1 on a K with
        dead units); for m < d, Y = K Q_J (orthogonal iteration in the complement of the kept
        columns). Equal to "rotate" in exact arithmetic when m = d; orthogonal to the kept
        columns to O(u_compute) in every case, so it repairs the touched columns of a
        16-bit-stored basis before the one rounding of the result.
        Both methods set entries of a new column below FLUSH_C·u·‖q‖₂/√d to zero (O(dk)): the
        null directions of a rank-deficient K would otherwise leave entries of 1e-30 and
        below (subnormals in fp32, slow in every later product) where qr(K Q) has zeros; the
        orthogonality changes by O(u).
    compute : {"fp32", "fp64"}, optional
        Arithmetic format. Default (:class:`~linalg_pc.Precision`): Q's format, at least fp32:
        fp64 arithmetic for an fp64 Q, fp32 for fp32 and 16-bit Q.
    sort : bool
        Order the k columns by decreasing Rayleigh quotient before the QR (SOAP's ordering: the
        QR then pushes the dominant directions to the front) and return the permutation.
    orth_tol : float or None
        Largest accepted ‖Q_JᵀQ_J − I‖₂ of the touched columns; None skips the check. Only Q_J
        is checked, on Q's device: 2dk² flops for E = Q_JᵀQ_J − I, then O(k²) bounds and one
        host read of a scalar, no eigensolver. E passes when min(‖E‖_F, ‖E‖_∞) ≤ orth_tol;
        otherwise 8 steps of power iteration on E (2k² flops each) give a lower bound ρ of
        ‖E‖₂ and Q is rejected when ρ > orth_tol. Guaranteed: a loss ≤ orth_tol is never
        rejected; an accepted Q_J has a loss ≤ √k·orth_tol. Measured: ρ ≥ 0.91‖E‖₂ on the
        gap-free E of drifted BF16 bases (k = 128, 1024), exact to 3 digits when E has a
        dominant eigenvalue (a basis that is not one), so a loss above orth_tol/0.91 is
        rejected in practice.
    inplace : bool
        Write the k new columns into Q itself and return it as ``.Q`` (NumPy, PyTorch and CuPy
        arrays: item assignment; a namespace without it, such as array-api-strict, gets a new
        array and Q is left unchanged). An optimizer that owns Q then pays no copy of the
        d − k unchanged columns per refresh (16 MB at d = 2048 in fp32, about a tenth of the
        refresh's time). Q is written only after every check and product has succeeded: a
        refresh that raises leaves Q as it was. Default False: Q is not modified and the
        result is a new array. The same in-place path serves :meth:`StoredBasis.update` and
        ``basis.state.update(..., inplace=True)`` (the preconditioners' refreshes).

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
    Range: K Q_J is linear in K, so a product within PRODUCT_HEADROOM·d·k of the compute
    format's maximum (or one that overflows although K is finite) is scaled by a power of two
    before the Gram products and QRs, which would otherwise overflow into a NaN Q. The basis is
    that of the unscaled problem (a power of two changes no mantissa), the eigenvalues are
    scaled back exactly, ``info.scale_log2`` reports the exponent and
    ``info.eigenvalues_finite`` is False where a Rayleigh quotient exceeds the format (±inf).
    Cost: one O(dk) reduction (max |K Q_J|), which replaces the finiteness check of the product.

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
    >>> res = subspace_refresh(K, Q, [0, 1, 2])  # fp64 Q: fp64 arithmetic
    >>> bool(np.array_equal(res.Q[:, 3:], Q[:, 3:]))
    True
    >>> res2 = subspace_refresh(K, Q, [0, 1, 2], inplace=True)  # Q now holds the new columns
    >>> res2.Q is Q and bool(np.array_equal(Q, res.Q))
    True
    """
    if not isinstance(inplace, bool | np.bool_):
        raise TypeError(f"inplace must be a bool, got {type(inplace).__name__}")
    if method is not None and method not in _METHODS:
        raise ValueError(f"method must be one of {_METHODS} or None, got {method!r}")
    orth_tol = check_tol(orth_tol)
    # the structure only: the orthonormality and finiteness of Q are checked by the refresh,
    # on Q_J (2dk² flops) and by one O(dm) test of the stored bits
    arg = check_basis(Q, compute=compute)
    xp, comp, d, m = arg.xp, arg.compute, arg.d, arg.m
    if method is None:
        method = default_method(arg.fmt)
    J = check_cols(cols, m)
    matvec = operator(K, xp, d, tuple(Q.shape[:-2]), comp)
    Qout, eig, perm, R, loss, e = refresh_columns(matvec, Q, J, method=method, comp=comp,
                                                  sort=sort, orth_tol=orth_tol,
                                                  inplace=bool(inplace))
    full = full_permutation(xp, perm, J, m, B.device_of(Q))
    info = make_info(method, comp, J.size, sort, loss, R, xp, scale=e, eig=eig)
    return SubspaceRefresh(Qout, eig, full, info)
