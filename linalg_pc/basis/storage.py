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

The arithmetic lives in :mod:`linalg_pc.basis.state` (pure functions on a
:class:`~linalg_pc.basis.state.BasisState`, batched); :class:`StoredBasis` is its mutable,
2-D object form.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from .. import _backend as B
from .._operators import is_array
from . import state as S
from ._common import ORTHONORMALITY_TOL, check_tol
from .state import STORAGE_SCHEMES, BasisUpdate, bjorck_step

__all__ = ["StoredBasis", "BasisUpdate", "STORAGE_SCHEMES", "bjorck_step"]


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
    ``rebase`` change it in place (it is a storage buffer: an update writes the refreshed
    columns, or the one block rotation, into the stored arrays); 2-D bases only. It holds a
    :class:`~linalg_pc.basis.state.BasisState` (:attr:`state`) and delegates every operation
    to the pure functions of :mod:`linalg_pc.basis.state`, which also take batches.

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
        orth_tol = check_tol(orth_tol)
        if rebase_every is not None and (isinstance(rebase_every, bool) or not isinstance(
                rebase_every, (int, np.integer)) or rebase_every < 0):
            raise ValueError(f"rebase_every must be None or an integer >= 0, got "
                             f"{rebase_every!r}")
        if not is_array(Q):
            raise TypeError(f"Q must be an array, got {type(Q).__name__}")
        B.format_of(Q, argname="Q")
        if Q.ndim != 2:
            raise ValueError(f"Q must be 2-D (d, m), got shape {tuple(Q.shape)}")
        self._state = S.init(Q, scheme, block_size=block_size, orth_tol=orth_tol)
        self.xp = B.array_namespace(Q)
        self.scheme = scheme
        self.shape = self._state.shape
        self.orth_tol = orth_tol
        self.n_updates = 0
        self.n_rebases = 0
        if scheme == "block-rotation":
            self.block_size = self._state.block_size
            self.shifted = bool(shifted)
            nb = self.shape[1] // self.block_size
            self.rebase_every = nb if rebase_every is None else int(rebase_every)
            self._since_rebase = 0

    @property
    def state(self) -> S.BasisState:
        """The current :class:`~linalg_pc.basis.state.BasisState`."""
        return self._state

    @property
    def offset(self) -> int:
        """Cyclic shift of the block partition (block-rotation)."""
        return self._state.offset

    @property
    def nbytes(self) -> int:
        """Bytes of the stored arrays."""
        return self._state.nbytes

    @property
    def stored(self) -> dict:
        """Copies of the stored arrays by name ("Q", or "Q0" and "W"): writing into them never
        changes the basis (cost: one copy of the stored bytes, :attr:`nbytes`). Use
        :attr:`state` for the arrays themselves (a frozen record the caller must not write)."""
        xp = self.xp
        return {name: xp.asarray(a, copy=True) for name, a in self._state.stored.items()}

    def blocks(self) -> list[np.ndarray]:
        """Column indices of the blocks of the current partition (block-rotation)."""
        return S.blocks(self._state)

    def block_index(self, cols) -> int:
        """Which block of the current partition the set ``cols`` is (ValueError if none)."""
        return S.block_index(self._state, cols)

    def materialize(self, compute=None):
        """The basis as a d×m array of the compute format ("fp32", the default, or "fp64"), a
        new array (never the stored buffer: writing into it does not change the basis).

        Cost: a decode (16-bit schemes); plus 2dmk flops for block-rotation (one k×k product
        per block) or 4dm² for bf16-rectify (one Björck step).
        """
        return S.materialize(self._state, compute)

    def apply(self, X, transpose: bool = False, side: str = "left", *, compute=None):
        """Q @ X, Qᵀ @ X (``side="left"``) or X @ Q, X @ Qᵀ (``side="right"``).

        Q is not formed where the representation allows it (see
        :func:`linalg_pc.basis.state.apply`). ``compute`` defaults to X's format, at least
        fp32. Returns the compute format.
        """
        return S.apply(self._state, X, transpose=transpose, side=side, compute=compute)

    def update(self, K, cols, *, sort: bool = True, compute=None) -> BasisUpdate:
        """Refresh the columns ``cols`` against the symmetric factor K (array or operator).

        See :func:`linalg_pc.basis.state.update` (run in place on the stored arrays);
        "block-rotation" re-bases afterwards when ``rebase_every`` updates have accumulated.
        ``compute`` defaults to fp32 (the stored formats are fp32 and bf16).
        """
        self._state, up = S.update(self._state, K, cols, sort=sort, compute=compute,
                                   orth_tol=self.orth_tol, inplace=True)
        self.n_updates += 1
        rebased = False
        if self.scheme == "block-rotation":
            self._since_rebase += 1
            if self.rebase_every and self._since_rebase >= self.rebase_every:
                self.rebase()
                rebased = True
        return up._replace(info=dataclasses.replace(up.info, rebased=rebased))

    def rebase(self) -> None:
        """Fold the block rotations into Q₀ (block-rotation only); see
        :func:`linalg_pc.basis.state.rebase`. Alternates the offset when ``shifted``."""
        self._state = S.rebase(self._state, shifted=self.shifted if
                               self.scheme == "block-rotation" else True)
        self._since_rebase = 0
        self.n_rebases += 1

    def __repr__(self) -> str:
        extra = (f", block_size={self.block_size}, offset={self.offset}"
                 if self.scheme == "block-rotation" else "")
        return (f"StoredBasis(scheme={self.scheme!r}, shape={self.shape}{extra}, "
                f"nbytes={self.nbytes}, updates={self.n_updates})")
