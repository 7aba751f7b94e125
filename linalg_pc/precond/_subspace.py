"""Subspace refreshes of the preconditioners' eigenbases: refresh k of d columns per refresh by
a QR in that subspace (:func:`linalg_pc.basis.state.update`), with the column policies of
:func:`linalg_pc.select_columns` and the storage schemes of the basis layer.

Per refresh of a d×d basis with k columns: 2d²k flops for K·Q_J plus O(dk²) (rotate) or
O(d²k) (project), against ≈ 2d³ + 8/3·d³ for the full Q ← qr(K Q). What depends on a column
follows it: SOAP's second moment is permuted with the columns that the refresh sorts, the first
moment (kept in the eigenbasis) is rotated by Q_new,Jᵀ Q_old (2d²k + 2kN flops for N parameter
entries: only the k refreshed rows change), Shampoo's eigenvalues and every method's estimates
are replaced on the refreshed columns, and KL's λ stays tied to its column (no sort).

References
----------
Milligan et al., "Reparametrizing Shampoo and SOAP for subspace basis updates and BFloat16
storage", arXiv 2605.26327 (2026). docs/basis.md: the column policies, the schemes and their
measured drift.
"""

from __future__ import annotations

import numbers

import numpy as np

from .. import _backend as B
from ..basis.selection import COLUMN_POLICIES, select_columns
from ..basis.state import update as basis_update
from ._state import materialize_basis
from ._store import load, store_into
from ._tensor import mode_apply, mT

__all__ = ["BASIS_UPDATES", "PRECOND_SCHEMES", "check_basis_options", "subspace_refresh_axis"]

BASIS_UPDATES = ("full", "subspace")
#: The basis-layer schemes the preconditioners store their eigenbases under
PRECOND_SCHEMES = ("dense", "fp32", "bf16", "bf16-project", "bf16-rectify")
_SCHEME_FORMAT = {"fp32": "fp32", "bf16": "bf16", "bf16-project": "bf16", "bf16-rectify": "bf16"}
#: Default fraction of the columns refreshed per subspace refresh (k = d/8: the sizes of the
#: basis studies, docs/basis.md)
DEFAULT_FRACTION = 0.125


def check_basis_options(basis_update, basis_k, basis_policy, basis_scheme, fmts: dict,
                        comp: str):
    """Checked (basis_update, k, policy, scheme, storage formats) of a transform."""
    if basis_update not in BASIS_UPDATES:
        raise ValueError(f"basis_update must be one of {BASIS_UPDATES}, got {basis_update!r}")
    if basis_k is None:
        k = DEFAULT_FRACTION
    elif isinstance(basis_k, bool) or not isinstance(basis_k, numbers.Real):
        raise TypeError(f"basis_k must be an int (columns) or a float in (0, 1] (a fraction "
                        f"of the columns), got {type(basis_k).__name__}")
    elif isinstance(basis_k, numbers.Integral):
        if basis_k < 1:
            raise ValueError(f"basis_k must be >= 1 columns, got {basis_k!r}")
        k = int(basis_k)
    else:
        if not 0.0 < float(basis_k) <= 1.0:
            raise ValueError(f"basis_k as a fraction must be in (0, 1], got {basis_k!r}")
        k = float(basis_k)
    if basis_policy not in COLUMN_POLICIES:
        raise ValueError(f"basis_policy must be one of {COLUMN_POLICIES}, got {basis_policy!r}")
    fmts = dict(fmts)
    if basis_scheme is None:
        f = fmts["basis"]
        if f == comp or f == "fp16":
            scheme = "dense"
        elif f == "bf16":  # a plain bf16 basis refreshed in a subspace would drift: project
            scheme = "bf16-project" if basis_update == "subspace" else "bf16"
        else:
            scheme = f
    else:
        if basis_scheme == "block-rotation":
            raise ValueError("basis_scheme 'block-rotation' is not supported by the "
                             "preconditioners (its refreshes must follow its block partition); "
                             f"use one of {PRECOND_SCHEMES}")
        if basis_scheme not in PRECOND_SCHEMES:
            raise ValueError(f"basis_scheme must be one of {PRECOND_SCHEMES}, got "
                             f"{basis_scheme!r}")
        scheme = basis_scheme
        want = _SCHEME_FORMAT.get(scheme)
        if want is not None:
            if fmts["basis"] not in (comp, want):
                raise ValueError(f"basis_scheme {scheme!r} stores the basis in {want}, but "
                                 f"storage gives the basis {fmts['basis']}")
            fmts["basis"] = want
    return basis_update, k, basis_policy, scheme, fmts


def _scatter(xp, X, Y, J: np.ndarray, axis: int):
    """X with its entries at positions J along ``axis`` replaced by Y (len(J) along axis)."""
    d = int(X.shape[axis])
    dev = B.device_of(X)
    inv = np.zeros(d, dtype=np.int64)
    inv[J] = np.arange(J.size)
    mask = np.zeros(d, dtype=bool)
    mask[J] = True
    full = xp.take(Y, xp.asarray(inv, device=dev), axis=axis)
    ax = axis % X.ndim
    shape = [1] * X.ndim
    shape[ax] = d
    return xp.where(xp.reshape(xp.asarray(mask, device=dev), tuple(shape)), full, X)


def subspace_refresh_axis(tx, xp, state, a: int, K, Q, k: int, count: int):
    """Refresh k columns of axis a's basis; returns (host success flags, new BasisState).

    K and Q are the factor and the (materialized) basis in the compute format. A refresh that
    fails (a non-finite K·Q_J, a failed QR) keeps the basis of every member of a stack.
    """
    hp = tx.hp
    comp = hp.compute
    lay = state.layout
    Q = xp.asarray(Q, copy=True)  # the old basis: an in-place refresh may write the array Q is
    nb = lay.nb
    d = int(Q.shape[-1])
    r = count // hp.precondition_frequency  # the refresh counter drives the cyclic policies
    est = state.estimates[a] if state.estimates[a] is not None else state.eigenvalues[a]
    opts: dict = {"step": r, "ncols": d}
    if hp.basis_policy in ("topk", "topk-cyclic"):
        opts["estimates"] = est
    elif hp.basis_policy == "residual":
        opts.update(K=K, Q=Q)
    elif hp.basis_policy == "random":
        opts["rng"] = np.random.default_rng(r)
    fail = np.zeros(lay.batch, dtype=bool)
    try:
        cols = select_columns(hp.basis_policy, k, **opts)
        bs, upd = basis_update(state.bases[a], K, cols, sort=tx.sort_refresh, compute=comp,
                               orth_tol=None, inplace=True)
    except (ValueError, ArithmeticError, RuntimeError):
        return fail, state.bases[a]
    J = np.asarray(upd.cols, dtype=np.int64)
    Qn = materialize_basis(bs, comp)
    if not bool(xp.all(xp.isfinite(B.take_columns(Qn, J)))):
        return fail, state.bases[a]
    if tx.rotate_momentum and "exp_avg" in state.moments:
        m = state.moments["exp_avg"]
        mc = load(m, comp)
        RJ = mT(xp, B.take_columns(Qn, J)) @ Q  # (…, k, d): the rows of Q_newᵀQ_old that move
        store_into(m, _scatter(xp, mc, mode_apply(xp, mc, RJ, a, nb), J, nb + a))
    if tx.sort_refresh:
        tx._permute_second_moment(xp, state, a, upd.permutation)
    eig = xp.astype(upd.eigenvalues, Q.dtype)
    if state.estimates[a] is not None:
        store_into(state.estimates[a], _scatter(xp, load(state.estimates[a], comp), eig, J, -1))
    tx._after_subspace(xp, state, a, J, eig, _scatter)
    return ~fail, bs
