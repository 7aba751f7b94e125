"""Eigenbases of Kronecker factors: the first eigendecomposition and the periodic refresh.

- :func:`eigh_descending`: eigh of a stack of symmetric factors in the compute format with one
  retry in fp64 when it raises or returns a non-finite value (the failure users of fp32
  Shampoo meet on nearly low-rank factors), eigenpairs in descending order (the order the SOAP
  reference code uses). Cost ≈ 9d³ flops per factor (≈ 4× more for the fp64 retry).
- :func:`orthogonal_iteration`: one step of orthogonal (subspace) iteration Q ← qr(K Q)
  through :func:`linalg_pc.qr_methods.orthonormal_basis` (the QR :func:`linalg_pc.qr` runs,
  without its κ estimate and record; a bf16-stored basis needs no manual upcast), optionally after
  sorting the columns by their Rayleigh quotients diag(QᵀKQ) in descending order (SOAP: the
  second moments follow the permutation). Cost 2d³ (K Q) + ≈ 4/3·d³·2 (QR) flops per factor.

Both work per member of a batch: a member whose factor or product is not finite, or whose
decomposition fails, keeps its previous basis, and its failure is returned as a host flag
(read once after the QR, which waits for it anyway; the refresh also reads whether every K Q is
finite before its QR, to skip the replacement pass when all are).

References
----------
Vyas et al., "SOAP: Improving and stabilizing Shampoo using Adam", arXiv 2409.11321 (2024).
Golub & Van Loan, Matrix Computations, 4th ed. (2013), §8.2.4 (orthogonal iteration).
"""

from __future__ import annotations

import numpy as np

from .. import _backend as B
from ..qr_methods import orthonormal_basis
from ._fused import host_all_finite
from ._tensor import mT

__all__ = ["eigh_descending", "orthogonal_iteration", "member_finite", "where_member"]


def member_finite(xp, X):
    """Device bool (*batch,): whether every entry of each member (last two axes) is finite.

    A stack in host memory is first tested at once by one pass over its bits (all True, the
    common case, without a temporary); otherwise one reduction over the flattened members (a
    reduction over two axes at once runs as two reductions in some array-API wrappers: 3×
    slower on a CPU torch stack)."""
    if host_all_finite(xp, X):
        return xp.ones(tuple(X.shape[:-2]), dtype=xp.bool, device=B.device_of(X))
    ok = xp.isfinite(X)
    return xp.all(xp.reshape(ok, (*ok.shape[:-2], -1)), axis=-1)


def where_member(xp, mask, a, b):
    """Per member: ``a`` where ``mask`` (*batch,) holds, else ``b`` (…, r, c)."""
    return xp.where(mask[..., None, None], a, b)


def _host(xp, mask) -> np.ndarray:
    return np.asarray(B.to_numpy(mask), dtype=bool)


def _eigh(A):
    try:
        w, V = B.eigh(A)
    except Exception:  # noqa: BLE001 - LinAlgError of any library: a failure as a value
        return None
    return w, V


def eigh_descending(xp, K, comp: str, fallback):
    """Eigenpairs of the symmetric stack K (*batch, d, d), descending.

    Parameters
    ----------
    K : array
        Compute-format factors.
    comp : str
        "fp32" or "fp64".
    fallback : array
        Basis (*batch, d, d) kept by members that fail.

    Returns
    -------
    w : array (*batch, d)
        Eigenvalues (0 for members that failed).
    V : array (*batch, d, d)
        Eigenvectors as columns (``fallback`` for members that failed).
    ok : numpy.ndarray of bool (batch shape)
        Host flags: which members succeeded.
    """
    d = int(K.shape[-1])
    eye = xp.eye(d, dtype=K.dtype, device=B.device_of(K))
    finite = member_finite(xp, K)
    Ks = where_member(xp, finite, K, eye)
    res = _eigh(Ks)
    good = finite
    if res is not None:
        w, V = res
        good = finite & xp.all(xp.isfinite(w), axis=-1) & member_finite(xp, V)
    if res is None or not bool(xp.all(good == finite)):
        # fp64 retry of the whole stack (rare: the members that passed get the same answer
        # to fp32 accuracy)
        K64 = xp.astype(Ks, xp.float64)
        res64 = _eigh(K64)
        if res64 is not None:
            w, V = (xp.astype(a, K.dtype) for a in res64)
            good = finite & xp.all(xp.isfinite(w), axis=-1) & member_finite(xp, V)
        elif res is None:
            w = xp.zeros(K.shape[:-1], dtype=K.dtype, device=B.device_of(K))
            V = fallback
            good = xp.zeros_like(finite)
    w = xp.flip(w, axis=-1)
    V = xp.flip(V, axis=-1)
    V = where_member(xp, good, V, fallback)
    w = xp.where(good[..., None], w, xp.zeros_like(w))
    return w, V, _host(xp, good)


def argsort_desc(xp, v):
    """Stable descending argsort along the last axis."""
    try:
        return xp.argsort(v, axis=-1, descending=True, stable=True)
    except TypeError:  # pragma: no cover - a namespace without the keywords
        return xp.argsort(-v, axis=-1)


def orthogonal_iteration(xp, K, Q, comp: str, *, sort: bool):
    """One step Q ← qr(K Q) per member, columns sorted by Rayleigh quotient when ``sort``.

    Returns
    -------
    Qn : array (*batch, d, d)
        The new basis in the compute format (the old Q for members that failed).
    perm : array (*batch, d) int64 or None
        New column j descends from old column ``perm[j]`` (identity for failed members);
        None when not sorting.
    ok : numpy.ndarray of bool (batch shape)
        Host flags: which members were refreshed.
    """
    if K.ndim == 2:  # one matrix goes through the stack path: a stack's members and a single
        # matrix then get the same QR kernel, so batched and looped runs agree bit for bit
        Qn, perm, ok = orthogonal_iteration(xp, K[None, ...], Q[None, ...], comp, sort=sort)
        return Qn[0, ...], (None if perm is None else perm[0, ...]), ok[0]
    KQ = K @ Q
    ok_dev = member_finite(xp, KQ)
    perm = None
    d = int(Q.shape[-1])
    if sort:
        est = xp.sum(Q * KQ, axis=-2)
        est = xp.where(xp.isfinite(est), est, xp.zeros_like(est))
        perm = argsort_desc(xp, est)
        idx = xp.broadcast_to(perm[..., None, :], KQ.shape)
        KQ = B.take_along_axis(KQ, idx, -1)
    # members with a non-finite K Q are factored as their old basis (finite) and then keep it;
    # one host read of the flags skips that pass over the stack when every member is finite
    KQs = KQ if bool(xp.all(ok_dev)) else where_member(xp, ok_dev, KQ, Q)
    try:
        Qn = orthonormal_basis(KQs, compute=comp)
        ok_dev = ok_dev & member_finite(xp, Qn)
    except (ValueError, ArithmeticError, RuntimeError):
        Qn = Q
        ok_dev = xp.zeros_like(ok_dev)
    ok = _host(xp, ok_dev)
    if not ok.all():
        Qn = where_member(xp, ok_dev, Qn, Q)
        if perm is not None:
            ident = xp.broadcast_to(xp.arange(d, dtype=perm.dtype, device=B.device_of(Q)),
                                    perm.shape)
            perm = xp.where(ok_dev[..., None], perm, ident)
    return Qn, perm, ok


def rayleigh(xp, K, Q):
    """diag(QᵀKQ) per member: (*batch, d)."""
    return xp.sum(Q * (K @ Q), axis=-2)


def rotation(xp, Qn, Q):
    """Qnᵀ Q: the change of coordinates from basis Q to basis Qn."""
    return mT(xp, Qn) @ Q
