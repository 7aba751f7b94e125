"""Orthonormal completion of a basis: W with [U W] orthogonal.

The subspace updates of :mod:`linalg_pc.basis.subspace` keep d − k columns of a basis fixed and
rotate k of them; an optimizer that tracks only k eigenvectors (a low-rank factor) needs the
orthonormal complement of those k to represent the rest of the space. This file computes it.
"""

from __future__ import annotations

from .. import _backend as B
from ._common import ORTHONORMALITY_TOL, check_basis, check_tol, mT, qr_pos

__all__ = ["complete_basis"]

_METHODS = ("householder", "random")


def complete_basis(U, *, method: str = "householder", rng=None, compute=None,
                   orth_tol: float | None = ORTHONORMALITY_TOL):
    """Orthonormal complement W (..., d, d−k) of an orthonormal U (..., d, k).

    Parameters
    ----------
    U : array (..., d, k)
        Orthonormal columns (any real float format; 16-bit arrays are decoded exactly).
        Leading dimensions are a batch.
    method : {"householder", "random"}
        "householder": the last d − k columns of the complete Householder QR of U (the
        reflectors of U's QR applied to the last unit vectors). Cost ≈ 4d²k − 2dk² + 4d²(d−k)
        flops (factor, then form the complete Q). "random": X uniform random d×(d−k), projected
        twice against U (CGS2), thin QR, and the whole step repeated once more so the result is
        orthogonal to U to O(u) whatever the conditioning of the projected X. Cost ≈
        2·(8dk(d−k) + 4d(d−k)²) flops; cheaper than "householder" when d − k ≪ d.
    rng : None, int, numpy.random.Generator or torch.Generator
        Randomness for ``method="random"`` (ignored otherwise).
    compute : {"fp32", "fp64"}, optional
        Arithmetic and output format. Default (:class:`~linalg_pc.Precision`): U's format, at
        least fp32 (fp64 for fp64 input, fp32 otherwise).
    orth_tol : float or None
        Largest accepted ‖UᵀU − I‖₂ (default :data:`ORTHONORMALITY_TOL` = 0.1), checked on
        U's device as in :func:`~linalg_pc.subspace_refresh` (2dk² + O(k²) flops, no
        eigensolver). ``None`` skips the check.

    Returns
    -------
    W : array (..., d, d − k)
        In U's library and on its device, in the compute format.

    Raises
    ------
    ValueError
        k > d, U not finite, U not orthonormal within ``orth_tol`` (the message reports the
        measured loss), unknown ``method``.

    Notes
    -----
    Error bound: Householder QR in precision u gives a computed complete Q with ‖QᵀQ − I‖₂ ≤
    c·d·u (Higham, *Accuracy and Stability*, Thm 19.4; observed ≈ u·√d), and its first k
    columns span range(U) up to the same order, so ‖[U W]ᵀ[U W] − I‖₂ ≤
    max(‖UᵀU − I‖₂, c·d·u). The "random" method reaches the same order because its second pass
    starts from a matrix orthonormal to O(u) (Giraud, Langou, Rozložník 2005: "twice is
    enough").

    Examples
    --------
    >>> import numpy as np
    >>> U = np.linalg.qr(np.random.default_rng(0).standard_normal((6, 2)))[0]
    >>> W = complete_basis(U)
    >>> V = np.concatenate([U, W], axis=1)
    >>> bool(np.abs(V.T @ V - np.eye(6)).max() < 1e-14)
    True
    """
    if method not in _METHODS:
        raise ValueError(f"method must be one of {_METHODS}, got {method!r}")
    orth_tol = check_tol(orth_tol)
    arg = check_basis(U, argname="U", ncols="k", compute=compute, entries=True,
                      orth_tol=orth_tol)
    xp, d, k, Uc = arg.xp, arg.d, arg.m, arg.decoded
    if k == d or d == 0:
        return xp.zeros((*U.shape[:-1], d - k), dtype=Uc.dtype, device=B.device_of(Uc))
    if method == "householder":
        Qc, _ = xp.linalg.qr(Uc, mode="complete")
        return Qc[..., :, k:]
    X = B.uniform(xp, (*U.shape[:-2], d, d - k), rng, like=Uc, dtype=Uc.dtype) - 0.5
    for _ in range(2):
        for _ in range(2):
            X = X - Uc @ (mT(xp, Uc) @ X)
        X, _ = qr_pos(xp, X)
    return X

