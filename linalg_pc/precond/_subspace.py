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


def _put_rows(xp, X, Y, J: np.ndarray, axis: int):
    """Write Y (len(J) along ``axis``) into the entries J along ``axis`` of the stored array X,
    in place where the library allows item assignment (NumPy, PyTorch, CuPy: only the k rows
    are written); otherwise X receives the whole new array. Y is rounded to X's format."""
    ax = axis % X.ndim
    fx, fy = B.format_of(X), B.format_of(Y)
    if fx != fy:
        from .._backend.convert import STORE, convert

        Y = convert(Y, fy, fx, op=STORE)
    last = X.ndim - 1
    view = X if ax == last else xp.moveaxis(X, ax, last)
    out = B.put_columns(view, J, Y if ax == last else xp.moveaxis(Y, ax, last), inplace=True)
    if out is not view:  # a library without item assignment: a new array
        X[...] = out if ax == last else xp.moveaxis(out, last, ax)
    return X


def _take_rows(xp, X, src, axis: int, nb: int):
    """X's entries ``src`` along ``axis``: src (k,) on the host, or per member (*batch, k)."""
    ax = axis % X.ndim
    dev = B.device_of(X)
    if src.ndim == 1:
        return xp.take(X, xp.asarray(src, device=dev), axis=ax)
    shp = (*src.shape[:-1], *([1] * (ax - nb)), int(src.shape[-1]),
           *([1] * (X.ndim - ax - 1)))
    full = (*X.shape[:ax], int(src.shape[-1]), *X.shape[ax + 1:])
    idx = xp.broadcast_to(xp.reshape(xp.asarray(src, device=dev), shp), full)
    return xp.take_along_axis(X, idx, axis=ax)


def subspace_refresh_axis(tx, xp, state, a: int, K, Q, k: int, count: int, *, cols=None):
    """Refresh k columns of axis a's basis; returns (host success flags, new BasisState).

    K and Q are the factor and the (materialized) basis in the compute format. A refresh that
    fails (a non-finite K·Q_J, a failed QR) keeps the basis of every member of a stack.
    ``cols`` (host int64) names the columns instead of the column policy (the factor-free
    state chooses them one refresh ahead); K may then be an operator (a callable X ↦ K X).

    Cost: 2d²k flops for K·Q_J, 2d²k for the k rows Q_new,Jᵀ Q_old of the momentum's rotation
    and 2kN for applying them (N parameter entries), O(dk²) for the rest; memory traffic O(d²)
    (one finiteness pass over the basis) plus O(kN/d) for the k rows of each moment written.
    Nothing of size d×d or N is copied: the old basis is kept only in its k refreshed columns
    (when Q is the state's own array, which the in-place refresh overwrites), the second
    moment's permutation moves only the rows of J (it is the identity elsewhere) and the
    rotated first moment is written into its k rows.
    """
    hp = tx.hp
    comp = hp.compute
    lay = state.layout
    nb = lay.nb
    d = int(Q.shape[-1])
    r = count // hp.precondition_frequency  # the refresh counter drives the cyclic policies
    est = state.estimates[a] if state.estimates[a] is not None else state.eigenvalues[a]
    opts: dict = {"step": r, "ncols": d}
    if cols is not None:
        pass
    elif hp.basis_policy in ("topk", "topk-cyclic"):
        opts["estimates"] = est
    elif hp.basis_policy == "residual":
        opts.update(K=K, Q=Q)
    elif hp.basis_policy == "random":
        opts["rng"] = np.random.default_rng(r)
    fail = np.zeros(lay.batch, dtype=bool)
    if cols is None:
        try:
            cols = np.asarray(select_columns(hp.basis_policy, k, **opts), dtype=np.int64)
        except (ValueError, ArithmeticError, RuntimeError):
            return fail, state.bases[a]
    # the in-place refresh overwrites the columns J of the state's array, which Q may be:
    # keep those old columns (d×k), not the d×d basis
    aliased = B.memory_overlap(Q, state.bases[a].Q) != "none"
    QJold = xp.asarray(B.take_columns(Q, cols), copy=True) if aliased else None
    try:
        bs, upd = basis_update(state.bases[a], K, cols, sort=tx.sort_refresh, compute=comp,
                               orth_tol=None, inplace=True)
    except (ValueError, ArithmeticError, RuntimeError):
        return fail, state.bases[a]
    J = np.asarray(upd.cols, dtype=np.int64)
    Qn = materialize_basis(bs, comp)
    QnJ = B.take_columns(Qn, J)
    if not bool(xp.all(xp.isfinite(QnJ))):
        return fail, state.bases[a]
    if tx.rotate_momentum and "exp_avg" in state.moments:
        m = state.moments["exp_avg"]
        QnJt = mT(xp, QnJ)
        if aliased:  # Q_old = Q_new but in the columns J
            RJ = B.put_columns(QnJt @ Qn, J, QnJt @ QJold, inplace=True)
        else:
            RJ = QnJt @ Q  # (…, k, d): the rows of Q_newᵀQ_old that move
        _put_rows(xp, m, mode_apply(xp, load(m, comp), RJ, a, nb), J, nb + a)
    if tx.sort_refresh and "exp_avg_sq" in state.moments:
        # v's entries follow their columns; the permutation is the identity outside J
        perm = np.asarray(B.to_numpy(upd.permutation), dtype=np.int64)[..., J]
        v = state.moments["exp_avg_sq"]
        _put_rows(xp, v, _take_rows(xp, v, perm, nb + a, nb), J, nb + a)
    eig = xp.astype(upd.eigenvalues, Q.dtype)
    if state.estimates[a] is not None:
        store_into(state.estimates[a], _scatter(xp, load(state.estimates[a], comp), eig, J, -1))
    tx._after_subspace(xp, state, a, J, eig, _scatter)
    return ~fail, bs
