"""A functional basis state: a record of arrays and pure functions that refresh, apply and
materialize it, batched over leading axes, on every array namespace.

An optimizer keeps one :class:`BasisState` per Kronecker factor (or one for a stack of
factors of the same shape) and calls

- :func:`init` (store an orthonormal basis under a scheme),
- :func:`update` (refresh k columns against the factor K: rotate / project / rectify, or the
  k×k block rotation of the block-rotation scheme),
- :func:`apply` (Q X, Qᵀ X, X Q, X Qᵀ without forming Q where the scheme allows it),
- :func:`materialize` (Q in the compute format),
- :func:`rebase` (fold the block rotations into Q₀).

Every function returns new values and leaves its inputs alone, except :func:`update` with
``inplace=True``, which writes the refreshed columns (NumPy, PyTorch, CuPy; other namespaces
get a new array) or the one k×k block rotation (every namespace: an item assignment) into the
state's own arrays: no copy of the d×m basis per refresh. :func:`init` copies its input, so an
in-place update never writes into the caller's arrays.
:class:`~linalg_pc.basis.storage.StoredBasis` is the mutable object over these functions.

Schemes (see :mod:`linalg_pc.basis.storage` for their error behaviour): "dense" keeps the basis
in its input's format (the precision policy's default storage; fp64 in, fp64 kept and fp64
arithmetic) and refreshes by the default method of :func:`subspace_refresh` (rotate; project
for a 16-bit basis, which would otherwise drift); "fp32", "bf16", "bf16-project",
"bf16-rectify" and "block-rotation" are the schemes of :data:`STORAGE_SCHEMES`. A batch shares
the columns refreshed and the block partition.

References
----------
Milligan et al., arXiv 2605.26327 (2026): subspace updates and reparametrized BF16 bases.
Björck & Bowie, SINUM 8 (1971): the rectifying step. docs/basis.md: the schemes and their
measured drift.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from .. import _backend as B
from .._operators import is_array
from ..precision import to_storage
from ._common import (
    ORTHONORMALITY_TOL,
    check_basis,
    check_cols,
    check_orthonormal,
    check_tol,
    compute_format,
    decode,
    default_method,
    encode,
    mT,
    operator,
    qr_pos,
    scale_back,
)
from ._refresh import (
    RefreshInfo,
    flush_tiny,
    full_permutation,
    make_info,
    refresh_columns,
    rotate_block,
)

__all__ = ["BasisState", "BasisUpdate", "STORAGE_SCHEMES", "STATE_SCHEMES", "bjorck_step",
           "init", "update", "apply", "materialize", "rebase", "blocks", "block_index"]

STORAGE_SCHEMES = ("fp32", "bf16", "bf16-project", "bf16-rectify", "block-rotation")
STATE_SCHEMES = ("dense", *STORAGE_SCHEMES)


class BasisUpdate(NamedTuple):
    """What one refresh of a basis returns (:func:`update`, ``StoredBasis.update``).

    Attributes
    ----------
    cols : numpy.ndarray of int64 (k,)
        The refreshed columns, in the order ``eigenvalues`` refers to.
    eigenvalues : array (..., k)
        Rayleigh quotients of the refreshed columns (compute format).
    permutation : array (..., m) int64
        New column j descends from old column ``permutation[j]`` (identity outside cols).
    info : RefreshInfo
        Typed record (``info.as_dict()`` for a plain dict), with ``scheme`` and ``rebased``.
    """

    cols: np.ndarray
    eigenvalues: Any
    permutation: Any
    info: RefreshInfo


@dataclass(frozen=True)
class BasisState:
    """An orthonormal basis (..., d, m) stored under a scheme of :data:`STATE_SCHEMES`.

    Attributes
    ----------
    scheme : str
        The scheme.
    Q : array (..., d, m)
        The stored basis (Q₀ for "block-rotation"): fp32 ("fp32"), bf16 (the BF16 schemes and
        block-rotation) or the input's format ("dense").
    W : array (..., m/k, k, k) or None
        The fp32 block rotations of "block-rotation" (Q = Q₀·blkdiag(W) after a cyclic
        shift of the columns by ``offset``); None for the other schemes.
    block_size : int or None
        k of "block-rotation".
    offset : int
        Cyclic shift of the block partition (0 or ⌊k/2⌋, alternated by :func:`rebase`).
    """

    scheme: str
    Q: Any
    W: Any = None
    block_size: int | None = None
    offset: int = 0

    @property
    def shape(self) -> tuple[int, int]:
        """(d, m)."""
        return int(self.Q.shape[-2]), int(self.Q.shape[-1])

    @property
    def batch(self) -> tuple:
        """The leading (batch) shape."""
        return tuple(self.Q.shape[:-2])

    @property
    def stored(self) -> dict:
        """The stored arrays by name."""
        return {"Q0": self.Q, "W": self.W} if self.scheme == "block-rotation" else {"Q": self.Q}

    @property
    def nbytes(self) -> int:
        """Bytes of the stored arrays."""
        return sum(_nbytes(a) for a in self.stored.values())


def _nbytes(a) -> int:
    size = 1
    for s in a.shape:
        size *= int(s)
    return size * (B.format_of(a).bits // 8)


def bjorck_step(V):
    """One Björck (Newton–Schulz) orthogonalization step V ← 1.5·V − 0.5·V(VᵀV).

    For ‖VᵀV − I‖₂ = ε < 1 the result has loss ≈ ¾ε² (plus the rounding of the arithmetic):
    a BF16-rounded orthogonal matrix goes from ≈ 4.7e-3 to ≈ 1.6e-5 in fp32. Cost 4dm² flops
    for V (d×m). V must be in a compute format (fp32/fp64: a 16-bit V is a TypeError, decode
    it first); like any product it propagates a NaN or inf of V (no O(dm) check).
    """
    if not is_array(V):
        raise TypeError(f"V must be an array, got {type(V).__name__}")
    fmt = B.format_of(V, argname="V")  # real float formats only (a complex V would lose its
    if fmt.name not in ("fp32", "fp64"):  # imaginary part in the transpose products)
        raise TypeError(f"V must be fp32 or fp64 (a compute format), got {fmt.name}: decode "
                        f"it first (lpc.from_storage)")
    if V.ndim < 2:
        raise ValueError(f"V must have shape (..., d, m), got {tuple(V.shape)}")
    xp = B.array_namespace(V)
    return 1.5 * V - 0.5 * (V @ (mT(xp, V) @ V))


def _to_bf16(xp, Q, scheme):
    if B.format_of(Q).name == "bf16":
        return xp.asarray(Q, copy=True)
    try:
        return to_storage(Q, "bf16")
    except TypeError as exc:
        raise TypeError(f"scheme {scheme!r} needs bfloat16 arrays: {exc}") from None


def _identities(xp, batch, nb, k, dtype, device):
    eye = xp.eye(k, dtype=dtype, device=device)
    return xp.asarray(xp.broadcast_to(eye, (*batch, nb, k, k)), copy=True)


def init(Q, scheme: str = "dense", *, block_size: int | None = None,
         orth_tol: float | None = ORTHONORMALITY_TOL) -> BasisState:
    """Store the orthonormal basis Q (..., d, m), m ≤ d, under ``scheme``.

    Parameters
    ----------
    Q : array (..., d, m)
        Any real float format (fp64 is rounded once, correctly, for the fp32/bf16 schemes).
    scheme : str
        One of :data:`STATE_SCHEMES`; "dense" keeps Q's own format.
    block_size : int, optional
        k of "block-rotation" (it must divide m). Default m // 8 (at least 1).
    orth_tol : float or None
        Largest accepted ‖QᵀQ − I‖₂ (2dm² + O(m²) flops on Q's device, no eigensolver; the
        guarantees of :func:`~linalg_pc.subspace_refresh`); None skips the check.

    Returns
    -------
    BasisState
        Owning copies of the stored arrays. Cost: one copy or rounding of Q.

    Raises
    ------
    ValueError
        Unknown scheme, Q not (..., d, m) with m ≤ d, non-finite or not orthonormal Q,
        block_size not dividing m.
    TypeError
        Q not an array; a BF16 scheme on a library without bfloat16 (array_api_strict).

    Examples
    --------
    >>> import numpy as np
    >>> from linalg_pc.basis import state
    >>> s = state.init(np.eye(4))
    >>> s.scheme, s.Q.dtype.name, s.shape
    ('dense', 'float64', (4, 4))
    """
    if scheme not in STATE_SCHEMES:
        raise ValueError(f"scheme must be one of {STATE_SCHEMES}, got {scheme!r}")
    orth_tol = check_tol(orth_tol)
    arg = check_basis(Q, entries=True, orth_tol=orth_tol)
    xp, m = arg.xp, arg.m
    if scheme == "dense":
        return BasisState(scheme, xp.asarray(Q, copy=True))
    if scheme == "fp32":
        Qs = encode(arg.decoded, "fp32")
        return BasisState(scheme, xp.asarray(Qs, copy=True) if Qs is Q else Qs)
    if scheme != "block-rotation":
        return BasisState(scheme, _to_bf16(xp, Q, scheme))
    k = max(1, m // 8) if block_size is None else int(block_size)
    if k < 1 or m % k:
        raise ValueError(f"block_size must divide m={m}, got {block_size!r}")
    W = _identities(xp, Q.shape[:-2], m // k, k, xp.float32, B.device_of(Q))
    return BasisState(scheme, _to_bf16(xp, Q, scheme), W, k, 0)


# --------------------------------------------------------------------------- blocks
def _need_blocks(state: BasisState):
    if state.scheme != "block-rotation":
        raise ValueError(f"blocks exist only for scheme 'block-rotation', not {state.scheme!r}")


def blocks(state: BasisState) -> list[np.ndarray]:
    """Column indices of the blocks of the current partition (block-rotation)."""
    _need_blocks(state)
    m, k = state.shape[1], state.block_size
    return [(state.offset + b * k + np.arange(k, dtype=np.int64)) % m for b in range(m // k)]


def block_index(state: BasisState, cols) -> int:
    """Which block of the current partition the set ``cols`` is (ValueError if none)."""
    _need_blocks(state)
    J = np.sort(check_cols(cols, state.shape[1]))
    for b, blk in enumerate(blocks(state)):
        if blk.size == J.size and np.array_equal(np.sort(blk), J):
            return b
    raise ValueError(f"cols must be one block of the current partition (block_size="
                     f"{state.block_size}, offset={state.offset}); see StoredBasis.blocks()")


def _roll(xp, Y, shift: int, axis: int):
    return Y if shift == 0 else xp.roll(Y, shift, axis=axis)


def _apply_blocks(xp, state: BasisState, Y, *, transpose: bool):
    """blkdiag(W) Y (or its transpose) for Y (..., m, n), in the shifted coordinates."""
    m, k = state.shape[1], state.block_size
    W = decode(state.W, B.format_of(Y).name)
    if transpose:
        W = mT(xp, W)
    Yr = _roll(xp, Y, -state.offset, -2)
    Z = W @ xp.reshape(Yr, (*Yr.shape[:-2], m // k, k, Yr.shape[-1]))
    return _roll(xp, xp.reshape(Z, (*Z.shape[:-3], m, Z.shape[-1])), state.offset, -2)


# --------------------------------------------------------------------------- reading
def materialize(state: BasisState, compute=None):
    """The basis as an array (..., d, m) of the compute format, never sharing memory with the
    state (a copy where no conversion or product makes a new array).

    ``compute`` defaults to the stored format, at least fp32 (fp64 for a "dense" fp64 state).
    Cost: a decode (16-bit schemes); plus 2dmk flops for block-rotation (one k×k product per
    block) or 4dm² for bf16-rectify (one Björck step).
    """
    comp = compute_format(compute, B.format_of(state.Q))
    xp = B.array_namespace(state.Q)
    if state.scheme == "block-rotation":
        d, m = state.shape
        k = state.block_size
        nb_ax = len(state.batch)
        Q0r = _roll(xp, decode(state.Q, comp), -state.offset, -1)
        blk = xp.reshape(Q0r, (*state.batch, d, m // k, k))
        axes = (*range(nb_ax), nb_ax + 1, nb_ax, nb_ax + 2)  # swap the d and block axes
        Qb = xp.permute_dims(blk, axes) @ decode(state.W, comp)
        Q = xp.reshape(xp.permute_dims(Qb, axes), (*Qb.shape[:-3], d, m))
        return _roll(xp, Q, state.offset, -1)
    V = decode(state.Q, comp)
    if state.scheme == "bf16-rectify":
        return bjorck_step(V)
    # never hand out the state's own buffer (an in-place update would change the caller's
    # array, and a write into the result would change the state)
    return xp.asarray(V, copy=True) if V is state.Q else V


def apply(state: BasisState, X, *, transpose: bool = False, side: str = "left", compute=None):
    """Q @ X, Qᵀ @ X (``side="left"``) or X @ Q, X @ Qᵀ (``side="right"``).

    X is a vector or an array (..., rows, n) whose batch broadcasts with the state's. Q is not
    formed where the representation allows it: block-rotation applies the k×k blocks and Q₀
    (2dmn + 2mkn flops for n right-hand sides instead of 2dmk + 2dmn); bf16-rectify applies
    1.5V − 0.5V(VᵀV) as three products with V (6dmn flops). ``compute`` defaults to X's
    format, at least fp32. Returns the compute format. X is not scanned for NaN or inf (a
    product: they propagate to the columns of the result they touch, as in any matmul).
    """
    if side not in ("left", "right"):
        raise ValueError(f"side must be 'left' or 'right', got {side!r}")
    xp = B.array_namespace(state.Q)
    if not is_array(X):
        raise TypeError(f"X must be an array, got {type(X).__name__}")
    if B.namespace_name(B.array_namespace(X)) != B.namespace_name(xp):
        raise TypeError("X must come from the same array library as the basis")
    comp = compute_format(compute, B.format_of(X, argname="X"))
    if X.ndim < 1:
        raise ValueError("X must be at least 1-D")
    vec = X.ndim == 1
    Xc = decode(X, comp)
    if vec:
        Xc = Xc[:, None] if side == "left" else Xc[None, :]
    if side == "right":  # X op(Q) = (op(Q)ᵀ Xᵀ)ᵀ
        out = mT(xp, _apply_left(xp, state, mT(xp, Xc), not transpose, comp))
    else:
        out = _apply_left(xp, state, Xc, transpose, comp)
    if vec:
        out = out[..., :, 0] if side == "left" else out[..., 0, :]
    return out


def _apply_left(xp, state: BasisState, X, transpose: bool, comp: str):
    d, m = state.shape
    need = d if transpose else m
    if X.ndim < 2 or X.shape[-2] != need:
        raise ValueError(f"X has shape {tuple(X.shape)}; op(Q) is "
                         f"{(m, d) if transpose else (d, m)}, so X needs {need} rows")
    if state.scheme == "block-rotation":
        Q0 = decode(state.Q, comp)
        if transpose:
            return _apply_blocks(xp, state, mT(xp, Q0) @ X, transpose=True)
        return Q0 @ _apply_blocks(xp, state, X, transpose=False)
    V = decode(state.Q, comp)
    if state.scheme == "bf16-rectify":
        if transpose:  # Q_rᵀ X = 1.5 VᵀX − 0.5 Vᵀ(V(VᵀX))
            Y = mT(xp, V) @ X
            return 1.5 * Y - 0.5 * (mT(xp, V) @ (V @ Y))
        Y = V @ X
        return 1.5 * Y - 0.5 * (V @ (mT(xp, V) @ Y))
    return (mT(xp, V) @ X) if transpose else (V @ X)


# --------------------------------------------------------------------------- writing
def update(state: BasisState, K, cols, *, sort: bool = True, compute=None,
           orth_tol: float | None = ORTHONORMALITY_TOL,
           inplace: bool = False) -> tuple[BasisState, BasisUpdate]:
    """Refresh the columns ``cols`` against the symmetric factor K (array or operator).

    "fp32" and "bf16" run the rotate step of :func:`subspace_refresh` on the stored matrix
    ("bf16" rounds the touched columns again and drifts: the study's reference scheme);
    "dense" runs the default method of :func:`subspace_refresh` (rotate, or project for a
    16-bit basis); "bf16-project" the project step; "bf16-rectify" first replaces the touched
    columns by those of the Björck-rectified basis, V_J ← 1.5V_J − 0.5V(VᵀV_J) (4dmk flops),
    then rotates; "block-rotation" needs ``cols`` to be one block of the current partition
    (:func:`blocks`), computes Q_J = Q₀[:, J] W_b, the rotation V of the rotate step, and
    sets W_b ← qr(W_b V).Q (k×k, exact to fp32). K is validated as in
    :func:`subspace_refresh` (arrays broadcast over the batch). ``compute`` defaults to the
    stored format, at least fp32.

    Returns
    -------
    (BasisState, BasisUpdate)
        The new state (sharing the unchanged arrays with the old one; with ``inplace`` and a
        library that allows item assignment, the old state's arrays hold the new values too)
        and the refresh's columns, Rayleigh quotients, permutation and :class:`RefreshInfo`.
    """
    orth_tol = check_tol(orth_tol)
    xp = B.array_namespace(state.Q)
    comp = compute_format(compute, B.format_of(state.Q))
    d, m = state.shape
    J = check_cols(cols, m)
    matvec = operator(K, xp, d, state.batch, comp)
    dev = B.device_of(state.Q)
    if state.scheme in ("dense", "fp32", "bf16", "bf16-project"):
        method = ("project" if state.scheme == "bf16-project"
                  else default_method(B.format_of(state.Q)) if state.scheme == "dense"
                  else "rotate")
        Qn, eig, perm, R, loss, e = refresh_columns(matvec, state.Q, J, method=method,
                                                    comp=comp, sort=sort, orth_tol=orth_tol,
                                                    inplace=inplace)
        new = dataclasses.replace(state, Q=Qn)
    else:
        method = "rotate"
        if state.scheme == "block-rotation":
            b = block_index(state, J)
            blk = blocks(state)[b]  # the block's local order (rolled by the offset)
            # refresh in ascending column order, so that sorting puts the largest Rayleigh
            # quotient on the smallest column index whatever the offset (the wrap-around
            # block would otherwise move the dominant directions to the end of the basis)
            loc = np.argsort(blk, kind="stable")
            J = blk[loc]
            Wb = xp.take(decode(state.W[..., b, :, :], comp), xp.asarray(loc, device=dev),
                         axis=-1)
            QJ = decode(B.take_columns(state.Q, blk), comp) @ Wb
        else:
            V = decode(state.Q, comp)
            VJ = B.take_columns(V, J)
            QJ = 1.5 * VJ - 0.5 * (V @ (mT(xp, V) @ VJ))
        loss = check_orthonormal(xp, QJ, argname="Q", tol=orth_tol)
        BJ, e = matvec.scaled(QJ)
        Vrot, eig, perm, R = rotate_block(xp, QJ, BJ, sort=sort)
        eig = scale_back(xp, eig, e, comp)
        if state.scheme == "block-rotation":
            Wn, _ = qr_pos(xp, Wb @ Vrot)
            back = xp.asarray(np.argsort(loc), device=dev)
            W = state.W if inplace else xp.asarray(state.W, copy=True)
            W[..., b, :, :] = xp.astype(xp.take(Wn, back, axis=-1), W.dtype)
            new = dataclasses.replace(state, W=W)
        else:
            Qn = B.put_columns(state.Q, J, encode(flush_tiny(xp, QJ @ Vrot, comp),
                                                  B.format_of(state.Q)), inplace=inplace)
            new = dataclasses.replace(state, Q=Qn)
    info = dataclasses.replace(make_info(method, comp, J.size, sort, loss, R, xp, scale=e,
                                         eig=eig), scheme=state.scheme)
    return new, BasisUpdate(J, eig, full_permutation(xp, perm, J, m, dev), info)


def rebase(state: BasisState, *, shifted: bool = True) -> BasisState:
    """Fold the block rotations into Q₀ (block-rotation only).

    Q = Q₀·blkdiag(W) is formed in fp32, rectified by one Björck step (its loss of
    orthogonality, that of Q₀, drops from f ≈ 1.2·u_bf16 to ≈ ¾f²), rounded once to bf16;
    the W's are reset to the identity and, with ``shifted``, the block offset alternates
    between 0 and ⌊k/2⌋. Cost 2dmk + 4dm² flops. Orthogonality after: one rounding, f.
    """
    _need_blocks(state)
    xp = B.array_namespace(state.Q)
    Q0 = to_storage(bjorck_step(materialize(state, "fp32")), "bf16")
    k = state.block_size
    W = _identities(xp, state.batch, state.shape[1] // k, k, state.W.dtype,
                    B.device_of(state.W))
    offset = ((k // 2) if state.offset == 0 else 0) if shifted else state.offset
    return BasisState(state.scheme, Q0, W, k, offset)
