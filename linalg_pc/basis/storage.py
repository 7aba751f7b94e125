"""Storage of an orthonormal basis in BF16 without drift: five schemes behind one object.

A BF16-rounded orthogonal matrix has ‖QᵀQ − I‖₂ ≈ 1.2·u_bf16 (u_bf16 = 2⁻⁸): the *one-rounding
floor*. Under repeated partial updates (rotate k columns, round them again) the error of the
touched columns random-walks, ≈ 1.2·u·√(roundings per column). :class:`StoredBasis` keeps a basis
under one of five schemes and lets the same update run on each:

=================  ==========================================================  ===============
scheme             what is stored / what an update does                        bytes (d×m)
=================  ==========================================================  ===============
"fp32"             fp32 Q; rotate (the reference)                              4dm
"bf16"             bf16 Q; rotate the decoded columns, round them again        2dm
"bf16-project"     bf16 Q; touched columns re-orthogonalized against the       2dm
                   stored others (CGS2) + thin QR, then rounded once
"bf16-rectify"     bf16 Q; touched columns taken from the Björck-rectified     2dm
                   basis before the rotate; one Björck step on materialize
"block-rotation"   Q = Q₀·blkdiag(W₁..W_{m/k}): Q₀ bf16, never re-rounded      2dm + 4mk
                   between re-basings; W_i fp32 k×k, re-orthogonalized by an
                   exact k×k QR at every update
=================  ==========================================================  ===============

Block-rotation ("ours", the reparametrization): a subspace update of block i changes only W_i
(W_i ← qr(W_i V).Q with V the k×k rotation of :func:`subspace_refresh`), so the orthogonality
of Q is that of Q₀ and does not drift. Blocks are consecutive columns after a cyclic shift by
``offset``; :meth:`StoredBasis.rebase` folds the W's into Q₀ (materialize in fp32, one Björck
step, one rounding to bf16) and alternates the offset between 0 and ⌊k/2⌋, so that successive
partitions overlap and energy moves between blocks (the shifted orderings of block Jacobi).

References
----------
Milligan et al., arXiv 2605.26327 (2026): reparametrized bases for BF16 storage. Björck &
Bowie, "An iterative algorithm for computing the best estimate of an orthogonal matrix", SINUM 8
(1971): the step V ← V(3I − VᵀV)/2 maps ‖VᵀV − I‖ = ε to ≈ ¾ε². Higham, *Accuracy and
Stability*, Thm 19.4 (Householder QR orthogonality).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from .. import _backend as B
from ..precision import to_storage, unit_roundoff
from ._common import (
    ORTHONORMALITY_TOL,
    check_orthonormal,
    compute_format,
    decode,
    encode,
    mT,
    qr_pos,
)
from .subspace import (
    RANK_C,
    _check_cols,
    _is_array,
    _operator,
    _r_ratio,
    _rotate_block,
    _scatter_columns,
    subspace_refresh,
)

__all__ = ["StoredBasis", "BasisUpdate", "STORAGE_SCHEMES", "bjorck_step"]

STORAGE_SCHEMES = ("fp32", "bf16", "bf16-project", "bf16-rectify", "block-rotation")


class BasisUpdate(NamedTuple):
    """Result of :meth:`StoredBasis.update`.

    Attributes
    ----------
    cols : numpy.ndarray of int64 (k,)
        The refreshed columns, in the order ``eigenvalues`` refers to.
    eigenvalues : array (k,)
        Rayleigh quotients of the refreshed columns (compute format).
    permutation : array (m,) int64
        New column j descends from old column ``permutation[j]`` (identity outside cols).
    info : dict
        Plain values (those of :class:`SubspaceRefresh` plus ``scheme`` and ``rebased``).
    """

    cols: np.ndarray
    eigenvalues: Any
    permutation: Any
    info: dict


def bjorck_step(V):
    """One Björck (Newton–Schulz) orthogonalization step V ← 1.5·V − 0.5·V(VᵀV).

    For ‖VᵀV − I‖₂ = ε < 1 the result has loss ≈ ¾ε² (plus the rounding of the arithmetic):
    a BF16-rounded orthogonal matrix goes from ≈ 4.7e-3 to ≈ 1.6e-5 in fp32. Cost 4dm² flops
    for V (d×m). V must be in a compute format (fp32/fp64).
    """
    xp = B.array_namespace(V)
    return 1.5 * V - 0.5 * (V @ (mT(xp, V) @ V))


def _nbytes(a) -> int:
    size = 1
    for s in a.shape:
        size *= int(s)
    return size * (B.format_of(a).bits // 8)


class StoredBasis:
    """An orthonormal d×m basis stored under one of :data:`STORAGE_SCHEMES`.

    Parameters
    ----------
    Q : array (d, m), m ≤ d
        Initial orthonormal basis, any real float format (fp64 is rounded once, correctly).
    scheme : str
        One of "fp32", "bf16", "bf16-project", "bf16-rectify", "block-rotation".
    block_size : int, optional
        k for "block-rotation" (m must be a multiple of it). Default m // 8 (at least 1).
    shifted : bool
        Alternate the block offset between 0 and ⌊k/2⌋ at every re-basing (block-rotation).
    rebase_every : int or None
        Re-base automatically after this many updates (block-rotation); default m/k, one sweep
        over the blocks (measured on the drifting factor: re-basing every second sweep lets
        the eigenbasis quality fall behind the overlapping cyclic sweeps of the other
        schemes). 0 disables it.
    orth_tol : float or None
        Tolerance of the input checks (default :data:`ORTHONORMALITY_TOL`).

    Notes
    -----
    Memory (:attr:`nbytes`): 4dm ("fp32"), 2dm (the three BF16 schemes), 2dm + 4mk
    ("block-rotation"): every BF16 scheme is within 0.5× the fp32 bytes plus 4dk.
    Orthogonality of :meth:`materialize` after any number of updates (u = u_bf16, one-rounding
    floor f ≈ 1.2u for square Q): "fp32" O(u_fp32·√n); "bf16" grows ≈ f·√(n_J) with n_J
    the roundings per column; "bf16-project" stays ≈ f (each pair of columns carries the error
    of one rounding); "block-rotation" = loss of Q₀ = f exactly (W orthogonal to fp32);
    "bf16-rectify" ≈ ¾f² + O(u_fp32) on materialization. The object is mutable: ``update`` and
    ``rebase`` change it in place (it is a storage buffer); 2-D bases only.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> Q = np.linalg.qr(rng.standard_normal((16, 16)))[0]
    >>> sb = StoredBasis(Q, "block-rotation", block_size=4)
    >>> sb.nbytes == 2 * 16 * 16 + 4 * 16 * 4
    True
    """

    def __init__(self, Q, scheme: str = "fp32", *, block_size: int | None = None,
                 shifted: bool = True, rebase_every: int | None = None,
                 orth_tol: float | None = ORTHONORMALITY_TOL):
        if scheme not in STORAGE_SCHEMES:
            raise ValueError(f"scheme must be one of {STORAGE_SCHEMES}, got {scheme!r}")
        if not _is_array(Q):
            raise TypeError(f"Q must be an array, got {type(Q).__name__}")
        xp = B.array_namespace(Q)
        B.format_of(Q, argname="Q")
        if Q.ndim != 2:
            raise ValueError(f"Q must be 2-D (d, m), got shape {tuple(Q.shape)}")
        d, m = Q.shape
        if m > d:
            raise ValueError(f"Q must have m <= d columns, got shape {tuple(Q.shape)}")
        B.check_finite(xp, Q, "Q")
        self.xp = xp
        self.scheme = scheme
        self.shape = (int(d), int(m))
        self.orth_tol = orth_tol
        self.n_updates = 0
        self.n_rebases = 0
        if orth_tol is not None and m:
            check_orthonormal(xp, decode(Q, "fp64" if B.format_of(Q).name == "fp64"
                                         else "fp32"), argname="Q", tol=orth_tol)
        if scheme == "fp32":
            self._Q = encode(decode(Q, "fp64") if B.format_of(Q).name == "fp64" else
                             decode(Q, "fp32"), "fp32")
            return
        if scheme != "block-rotation":
            self._Q = self._to_bf16(Q)
            return
        k = max(1, m // 8) if block_size is None else int(block_size)
        if k < 1 or m % k:
            raise ValueError(f"block_size must divide m={m}, got {block_size!r}")
        self.block_size = k
        self.shifted = bool(shifted)
        nb = m // k
        self.rebase_every = nb if rebase_every is None else int(rebase_every)
        self.offset = 0
        self._since_rebase = 0
        self._Q0 = self._to_bf16(Q)
        eye = xp.eye(k, dtype=xp.float32, device=B.device_of(Q))
        self._W = xp.asarray(xp.broadcast_to(eye, (nb, k, k)), copy=True)

    # ------------------------------------------------------------------ helpers
    def _to_bf16(self, Q):
        if B.format_of(Q).name == "bf16":
            return self.xp.asarray(Q, copy=True)
        try:
            return to_storage(Q, "bf16")
        except TypeError as exc:
            raise TypeError(f"scheme {self.scheme!r} needs bfloat16 arrays: {exc}") from None

    @property
    def nbytes(self) -> int:
        """Bytes of the stored arrays."""
        if self.scheme == "block-rotation":
            return _nbytes(self._Q0) + _nbytes(self._W)
        return _nbytes(self._Q)

    @property
    def stored(self) -> dict:
        """The stored arrays by name (read-only view of the representation)."""
        if self.scheme == "block-rotation":
            return {"Q0": self._Q0, "W": self._W}
        return {"Q": self._Q}

    def blocks(self) -> list[np.ndarray]:
        """Column indices of the blocks of the current partition (block-rotation)."""
        self._need_blocks()
        m, k = self.shape[1], self.block_size
        return [(self.offset + b * k + np.arange(k, dtype=np.int64)) % m
                for b in range(m // k)]

    def block_index(self, cols) -> int:
        """Which block of the current partition the set ``cols`` is (ValueError if none)."""
        self._need_blocks()
        J = np.sort(_check_cols(cols, self.shape[1]))
        for b, blk in enumerate(self.blocks()):
            if blk.size == J.size and np.array_equal(np.sort(blk), J):
                return b
        raise ValueError(f"cols must be one block of the current partition (block_size="
                         f"{self.block_size}, offset={self.offset}); see StoredBasis.blocks()")

    def _need_blocks(self):
        if self.scheme != "block-rotation":
            raise ValueError(f"blocks exist only for scheme 'block-rotation', not "
                             f"{self.scheme!r}")

    def _roll_rows(self, Y, sign: int):
        return Y if self.offset == 0 else self.xp.roll(Y, sign * self.offset, axis=-2)

    def _apply_blocks(self, Y, *, transpose: bool):
        """blkdiag(W) Y (or its transpose) for Y (m, n), in the shifted coordinates."""
        xp = self.xp
        m, k = self.shape[1], self.block_size
        W = decode(self._W, B.format_of(Y).name)
        if transpose:
            W = mT(xp, W)
        Yr = self._roll_rows(Y, -1)
        n = Yr.shape[-1]
        Z = W @ xp.reshape(Yr, (m // k, k, n))
        return self._roll_rows(xp.reshape(Z, (m, n)), +1)

    # ------------------------------------------------------------------ reading
    def materialize(self, compute="fp32"):
        """The basis as a d×m array of the compute format ("fp32" or "fp64").

        Cost: a decode (16-bit schemes); plus 2dmk flops for block-rotation (one k×k product
        per block) or 4dm² for bf16-rectify (one Björck step).
        """
        comp = compute_format(compute)
        xp = self.xp
        if self.scheme == "block-rotation":
            d, m = self.shape
            k = self.block_size
            Q0 = decode(self._Q0, comp)
            Q0r = Q0 if self.offset == 0 else xp.roll(Q0, -self.offset, axis=-1)
            blocks = xp.permute_dims(xp.reshape(Q0r, (d, m // k, k)), (1, 0, 2))
            Qb = blocks @ decode(self._W, comp)
            Q = xp.reshape(xp.permute_dims(Qb, (1, 0, 2)), (d, m))
            return Q if self.offset == 0 else xp.roll(Q, self.offset, axis=-1)
        V = decode(self._Q, comp)
        if self.scheme == "bf16-rectify":
            return bjorck_step(V)
        return V

    def apply(self, X, transpose: bool = False, side: str = "left", *, compute=None):
        """Q @ X, Qᵀ @ X (``side="left"``) or X @ Q, X @ Qᵀ (``side="right"``).

        Q is not formed where the representation allows it: block-rotation applies the k×k
        blocks and Q₀ (2dmn + 2mkn flops for n right-hand sides instead of 2dmk + 2dmn);
        bf16-rectify applies 1.5V − 0.5V(VᵀV) as three products with V (6dmn flops).
        ``compute`` defaults to X's format (fp32 for 16-bit X). Returns the compute format.
        """
        if side not in ("left", "right"):
            raise ValueError(f"side must be 'left' or 'right', got {side!r}")
        xp = self.xp
        if not _is_array(X):
            raise TypeError(f"X must be an array, got {type(X).__name__}")
        if B.namespace_name(B.array_namespace(X)) != B.namespace_name(xp):
            raise TypeError("X must come from the same array library as the basis")
        fx = B.format_of(X, argname="X")
        comp = compute_format(compute if compute is not None else
                              ("fp64" if fx.name == "fp64" else "fp32"))
        if X.ndim < 1:
            raise ValueError("X must be at least 1-D")
        vec = X.ndim == 1
        Xc = decode(X, comp)
        if vec:
            Xc = Xc[:, None] if side == "left" else Xc[None, :]
        if side == "right":  # X op(Q) = (op(Q)ᵀ Xᵀ)ᵀ
            out = mT(xp, self._apply_left(mT(xp, Xc), not transpose, comp))
        else:
            out = self._apply_left(Xc, transpose, comp)
        if vec:
            out = out[:, 0] if side == "left" else out[0, :]
        return out

    def _apply_left(self, X, transpose: bool, comp: str):
        d, m = self.shape
        need = d if transpose else m
        if X.ndim != 2 or X.shape[0] != need:
            raise ValueError(f"X has shape {tuple(X.shape)}; op(Q) is "
                             f"{(m, d) if transpose else (d, m)}, so X needs {need} rows")
        xp = self.xp
        if self.scheme == "block-rotation":
            Q0 = decode(self._Q0, comp)
            if transpose:
                return self._apply_blocks(mT(xp, Q0) @ X, transpose=True)
            return Q0 @ self._apply_blocks(X, transpose=False)
        V = decode(self._Q, comp)
        if self.scheme == "bf16-rectify":
            if transpose:  # Q_rᵀ X = 1.5 VᵀX − 0.5 Vᵀ(V(VᵀX))
                Y = mT(xp, V) @ X
                return 1.5 * Y - 0.5 * (mT(xp, V) @ (V @ Y))
            Y = V @ X
            return 1.5 * Y - 0.5 * (V @ (mT(xp, V) @ Y))
        return (mT(xp, V) @ X) if transpose else (V @ X)

    # ------------------------------------------------------------------ writing
    def update(self, K, cols, *, sort: bool = True, compute="fp32") -> BasisUpdate:
        """Refresh the columns ``cols`` against the symmetric factor K (array or operator).

        "fp32" and "bf16" run :func:`subspace_refresh` with method "rotate" on the stored
        matrix (bf16: the touched columns are rounded again); "bf16-project" with method
        "project"; "bf16-rectify" first replaces the touched columns by those of the
        Björck-rectified basis, V_J ← 1.5V_J − 0.5V(VᵀV_J) (4dmk flops), then rotates;
        "block-rotation" needs ``cols`` to be one block of the current partition
        (:meth:`blocks`), computes Q_J = Q₀[:, J] W_b, the rotation V of
        :func:`subspace_refresh`, and sets W_b ← qr(W_b V).Q (k×k, exact to fp32), re-basing
        afterwards when ``rebase_every`` updates have accumulated.
        """
        comp = compute_format(compute)
        xp = self.xp
        d, m = self.shape
        rebased = False
        if self.scheme in ("fp32", "bf16", "bf16-project"):
            method = "project" if self.scheme == "bf16-project" else "rotate"
            r = subspace_refresh(K, self._Q, cols, method=method, compute=comp, sort=sort,
                                 orth_tol=self.orth_tol)
            self._Q = r.Q
            J = _check_cols(cols, m)
            eig, perm, info = r.eigenvalues, r.permutation, dict(r.info)
        else:
            J = _check_cols(cols, m)
            if self.scheme == "block-rotation":
                b = self.block_index(J)
                blk = self.blocks()[b]  # the block's local order (rolled by the offset)
                # refresh in ascending column order, so that sorting puts the largest Rayleigh
                # quotient on the smallest column index whatever the offset (the wrap-around
                # block would otherwise move the dominant directions to the end of the basis)
                loc = np.argsort(blk, kind="stable")
                J = blk[loc]
            matvec = _operator(K, xp, d, (), comp)
            dev = B.device_of(self._W if self.scheme == "block-rotation" else self._Q)
            Jx = xp.asarray(J, device=dev)
            if self.scheme == "block-rotation":
                Wb = xp.take(decode(self._W[b, ...], comp), xp.asarray(loc, device=dev),
                             axis=-1)
                Q0b = xp.take(self._Q0, xp.asarray(blk, device=dev), axis=-1)
                QJ = decode(Q0b, comp) @ Wb
            else:
                V = decode(self._Q, comp)
                VJ = xp.take(V, Jx, axis=-1)
                QJ = 1.5 * VJ - 0.5 * (V @ (mT(xp, V) @ VJ))
            loss = check_orthonormal(xp, QJ, argname="Q", tol=self.orth_tol)
            Vrot, eig, perm_l, R = _rotate_block(xp, QJ, matvec(QJ), sort=sort)
            if self.scheme == "block-rotation":
                Wn, _ = qr_pos(xp, Wb @ Vrot)
                back = xp.asarray(np.argsort(loc), device=dev)
                self._W[b, ...] = xp.astype(xp.take(Wn, back, axis=-1), self._W.dtype)
            else:
                self._Q = _scatter_columns(xp, self._Q, J, encode(QJ @ Vrot, "bf16"))
            ratio = _r_ratio(xp, R)
            perm_h = np.asarray(B.to_numpy(perm_l), dtype=np.int64)
            full = np.arange(m, dtype=np.int64)
            full[J] = J[perm_h]
            perm = xp.asarray(full, device=dev)
            info = {"method": "rotate", "compute": comp, "k": int(J.size), "sorted": bool(sort),
                    "input_loss": float(loss), "min_r_ratio": ratio,
                    "rank_deficient": bool(ratio < RANK_C * J.size * unit_roundoff(comp))}
        self.n_updates += 1
        if self.scheme == "block-rotation":
            self._since_rebase += 1
            if self.rebase_every and self._since_rebase >= self.rebase_every:
                self.rebase()
                rebased = True
        info.update(scheme=self.scheme, rebased=rebased)
        return BasisUpdate(J, eig, perm, info)

    def rebase(self) -> None:
        """Fold the block rotations into Q₀ (block-rotation only).

        Q = Q₀·blkdiag(W) is formed in fp32, rectified by one Björck step (its loss of
        orthogonality, that of Q₀, drops from f ≈ 1.2·u_bf16 to ≈ ¾f²), rounded once to bf16;
        the W's are reset to the identity and, with ``shifted``, the block offset alternates
        between 0 and ⌊k/2⌋. Cost 2dmk + 4dm² flops. Orthogonality after: one rounding, f.
        """
        self._need_blocks()
        xp = self.xp
        Qf = bjorck_step(self.materialize("fp32"))
        self._Q0 = to_storage(Qf, "bf16")
        nb, k = self._W.shape[0], self.block_size
        eye = xp.eye(k, dtype=self._W.dtype, device=B.device_of(self._W))
        self._W = xp.asarray(xp.broadcast_to(eye, (nb, k, k)), copy=True)
        if self.shifted:
            self.offset = (k // 2) if self.offset == 0 else 0
        self._since_rebase = 0
        self.n_rebases += 1

    def __repr__(self) -> str:
        extra = (f", block_size={self.block_size}, offset={self.offset}"
                 if self.scheme == "block-rotation" else "")
        return (f"StoredBasis(scheme={self.scheme!r}, shape={self.shape}{extra}, "
                f"nbytes={self.nbytes}, updates={self.n_updates})")
