"""Refreshes computed by another process: what data-parallel training needs from a transform.

In data-parallel training every process holds the same state and takes the same steps; the
refreshes of the eigenbases (eigh, QR, subspace QR: the cubic part of the cost) are divided
among the processes, and each refreshed state is copied from the process that computed it.
Two functions serve this:

- :func:`follower` ``(tx)``: a copy of ``tx`` whose refresh steps change no array and record
  only that the refresh step was reached (``last_refresh``): the process that does not own a
  state steps it with this copy and receives the refreshed arrays and host fields afterwards.
  Everything else (the direction, the statistics, the step schedule and its one read of
  ``count``) is the transform's own, so both processes reach the same refresh steps.
- :func:`refreshed_arrays` ``(tx, state, ...)``: every array a refresh of ``tx`` may write,
  in its storage format (the bytes to copy), and :data:`REFRESH_HOST_FIELDS`, the host fields
  it sets.

The first eigendecomposition (a state's first step) is not deferred: every process computes it
once, and the owner's result is copied like a refresh's so that the processes agree even where
eigh is not deterministic.
"""

from __future__ import annotations

import copy
import dataclasses
import types

from ._state import PrecondState
from ._transform import KroneckerTransform

__all__ = ["follower", "refreshed_arrays", "REFRESH_HOST_FIELDS"]

#: Host fields of a PrecondState that a refresh (or the first step) sets
REFRESH_HOST_FIELDS = ("initialized", "hint", "last_refresh", "refresh_failures", "fallbacks",
                       "consecutive", "last_status")


def _deferred_refresh(self, xp, state: PrecondState, count: int) -> PrecondState:
    return dataclasses.replace(state, last_refresh=count, last_status="refresh-deferred")


def follower(tx: KroneckerTransform) -> KroneckerTransform:
    """A copy of ``tx`` whose refreshes are left to another process (see the module).

    The copy shares ``tx``'s hyperparameters; its refresh steps cost nothing but the host's
    read of ``count`` that ``tx`` also makes. Its states must receive the refreshed arrays
    (:func:`refreshed_arrays`) and host fields (:data:`REFRESH_HOST_FIELDS`) of the process
    that refreshed them before their next step.
    """
    if not isinstance(tx, KroneckerTransform):
        raise TypeError(f"tx must be a transform of linalg_pc.precond, got {type(tx).__name__}")
    if tx.hp.factor_free:
        raise ValueError("a factor-free transform (factor_free=True) cannot defer its "
                         "refreshes: the next refresh's columns and block estimate are chosen "
                         "by the refresh itself; run it in every process")
    out = copy.copy(tx)
    out._refresh_all = types.MethodType(_deferred_refresh, out)
    return out


def refreshed_arrays(tx: KroneckerTransform, state: PrecondState, *, first: bool = False,
                     fallback_axes=()) -> list:
    """The arrays of ``state`` that a refresh by ``tx`` may have written, in a fixed order.

    Per factored axis: the basis's stored arrays, the eigenvalues (Shampoo; KL's λ after a
    fallback) and the column estimates; then the moments that follow the basis (the rotated
    first moment when ``tx.rotate_momentum``, the permuted second moment when
    ``tx.sort_refresh``); then the factors of ``fallback_axes`` (restarted from zero). With
    ``first=True`` (the first eigendecomposition) the moments and factors are left out: the
    first step writes neither differently from a process that computes it too.
    """
    out = []
    for a, Q in enumerate(state.bases):
        if Q is None:
            continue
        out.extend(arr for arr in Q.stored.values() if arr is not None)
        for v in (state.eigenvalues[a] if a < len(state.eigenvalues) else None,
                  state.estimates[a] if a < len(state.estimates) else None):
            if v is not None:
                out.append(v)
    if first:
        return out
    for name in ("exp_avg",) if tx.rotate_momentum else ():
        if name in state.moments:
            out.append(state.moments[name])
    if tx.sort_refresh and "exp_avg_sq" in state.moments:
        out.append(state.moments["exp_avg_sq"])
    for a in fallback_axes:
        if state.factors[a] is not None:
            out.append(state.factors[a])
    return out
