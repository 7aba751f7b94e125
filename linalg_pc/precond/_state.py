"""The optimizer state of a Kronecker-factored preconditioner: a small record of arrays.

Every array lives in the parameter's library and on its device, in the storage format chosen
for its kind (:data:`~linalg_pc.precond._config.STATE_KINDS`). Host fields are plain Python
values that the transform keeps without reading the device: the step count the host expects,
the refresh events and their failures. The per-step failure signals (a non-finite gradient)
stay on the device (``count``, ``skipped``, ``step_ok``) so that no step waits for the device.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .. import _backend as B
from ..basis.state import BasisState, materialize
from ._config import Layout

__all__ = ["PrecondState", "StateArray"]


@dataclass(frozen=True)
class StateArray:
    """One row of :meth:`PrecondState.describe`."""

    name: str
    kind: str
    shape: tuple
    format: str
    nbytes: int
    what: str


def _nbytes(a) -> int:
    n = 1
    for s in a.shape:
        n *= int(s)
    kind = B.dtype_kind(a)
    if kind == "float":
        return n * (B.format_of(a).bits // 8)
    xp = B.array_namespace(a)
    return n if a.dtype == xp.bool else n * (xp.iinfo(a.dtype).bits // 8)


@dataclass(frozen=True)
class PrecondState:
    """State of one parameter (or of a stack of same-shape parameters).

    Attributes
    ----------
    method : str
        "soap", "shampoo", "kl_shampoo" or "kl_soap".
    layout : Layout
        Parameter shape, batch shape, the merged work shape and which axes have a factor.
    formats : dict
        Storage format per kind ("factors", "basis", "moments"); ``compute`` the arithmetic
        format; ``param_format`` the format of the parameter and its gradient.
    factors : tuple
        Per work axis: the factor statistics (*batch, d, d) in the "factors" format, or None.
    bases : tuple
        Per work axis: a :class:`~linalg_pc.basis.state.BasisState` holding the eigenbasis
        (*batch, d, d) in the "basis" format, or None (identity).
    eigenvalues : tuple
        Per work axis: eigenvalue estimates (*batch, d) in the compute format, or None.
        KL methods keep λ on every axis (an axis without a factor has a diagonal one);
        Shampoo keeps the eigenvalues of each factor from its last refresh.
    moments : dict
        Named moment arrays in the "moments" format (SOAP/KL-SOAP ``exp_avg`` and
        ``exp_avg_sq`` in the eigenbasis, Shampoo's Adam moments in the parameter's space).
    count : array
        0-d int32 on the device: steps taken since the first (initializing) step.
    skipped : array
        0-d int32 on the device: steps skipped for a non-finite gradient.
    step_ok : array
        0-d bool on the device: whether the last gradient was finite (and used).
    initialized : bool
        Whether a finite first gradient has initialized the factors and bases.
    hint : int
        The host's upper bound of ``count`` (equal to it unless a step was skipped); the
        refresh schedule reads ``count`` only when ``hint`` reaches a refresh step.
    last_refresh : int
        ``count`` at the last refresh.
    refresh_failures, fallbacks : int
        Refreshes (or initial eigendecompositions) that failed and kept the previous basis;
        bases reset to the identity after ``max_failures`` consecutive failures.
    consecutive : tuple of numpy.ndarray
        Consecutive failed refreshes per work axis, per member (host int64 arrays of the
        batch shape; 0-d for one parameter).
    estimates : tuple
        Per work axis: Rayleigh quotients of the basis columns (*batch, d), compute format,
        from the last refresh (SOAP with ``basis_update="subspace"``; None otherwise): what
        the "topk" column policies of a subspace refresh read (Shampoo and the KL methods
        read their eigenvalues).
    extra : dict
        Method options' own fields. A factor-free SOAP state (``factor_free=True``, no
        factors) keeps ``"ff_Z"``: per work axis the running block Q_Jᵀ K Q_J (*batch, k, k)
        in the "factors" format, and ``"ff_J"``: per work axis the host int64 columns J of
        the next refresh (``linalg_pc.precond._factor_free``); ``estimates`` then hold the
        per-column eigenvalue estimates, decayed every step.
    last_status : str
        What the last host-side event was ("new", "init", "refresh", "refresh-skipped",
        "refresh-failed: …", "fallback: …", "init-failed: …").
    """

    method: str
    layout: Layout
    formats: dict
    compute: str
    param_format: str
    factors: tuple
    bases: tuple
    eigenvalues: tuple
    moments: dict
    count: Any
    skipped: Any
    step_ok: Any
    initialized: bool = False
    hint: int = 0
    last_refresh: int = 0
    refresh_failures: int = 0
    fallbacks: int = 0
    consecutive: tuple = ()
    last_status: str = "new"
    estimates: tuple = ()
    extra: dict = field(default_factory=dict)

    # ------------------------------------------------------------------ queries
    @property
    def shape(self) -> tuple:
        """Shape of the parameter (stack) this state belongs to."""
        return (*self.layout.batch, *self.layout.shape)

    @property
    def batched(self) -> bool:
        """Whether the state holds a stack of parameters."""
        return bool(self.layout.batch)

    def arrays(self) -> dict:
        """Every stored array by name (bases as their stored arrays)."""
        out = {}
        for a, K in enumerate(self.factors):
            if K is not None:
                out[f"factor{a}"] = K
        for a, Q in enumerate(self.bases):
            if Q is not None:
                for nm, arr in Q.stored.items():
                    if arr is not None:
                        out[f"basis{a}" if nm in ("Q", "Q0") else f"basis{a}.{nm}"] = arr
        for a, lam in enumerate(self.eigenvalues):
            if lam is not None:
                out[f"eigenvalues{a}"] = lam
        for a, est in enumerate(self.estimates):
            if est is not None:
                out[f"estimates{a}"] = est
        for a, Z in enumerate(self.extra.get("ff_Z", ())):
            if Z is not None:
                out[f"block{a}"] = Z
        out.update(self.moments)
        out.update({"count": self.count, "skipped": self.skipped, "step_ok": self.step_ok})
        return out

    @property
    def nbytes(self) -> int:
        """Bytes of every stored array."""
        return sum(_nbytes(a) for a in self.arrays().values())

    @property
    def failures(self) -> dict:
        """Failure counts: ``nonfinite_grad`` (0-d device array: reading it waits for the
        device), ``refresh`` and ``fallback`` (host ints)."""
        return {"nonfinite_grad": self.skipped, "refresh": self.refresh_failures,
                "fallback": self.fallbacks}

    def describe(self) -> list[StateArray]:
        """One :class:`StateArray` per stored array: name, kind, shape, format, bytes, what."""
        rows = []
        for name, arr in self.arrays().items():
            kind, what = _what(name, self.method)
            rows.append(StateArray(name, kind, tuple(int(s) for s in arr.shape),
                                   _format_name(arr), _nbytes(arr), what))
        return rows

    def copy(self) -> PrecondState:
        """A state with copies of every array (a checkpoint an in-place update cannot touch)."""
        def cp(a):
            if a is None:
                return None
            xp = B.array_namespace(a)
            return xp.asarray(a, copy=True)

        bases = tuple(None if Q is None else dataclasses.replace(
            Q, Q=cp(Q.Q), W=cp(Q.W)) for Q in self.bases)
        extra = {k: tuple(None if x is None else x.copy() if isinstance(x, np.ndarray)
                          else cp(x) for x in v) for k, v in self.extra.items()}
        return dataclasses.replace(
            self, factors=tuple(cp(K) for K in self.factors), bases=bases,
            eigenvalues=tuple(cp(v) for v in self.eigenvalues),
            estimates=tuple(cp(v) for v in self.estimates),
            moments={k: cp(v) for k, v in self.moments.items()},
            count=cp(self.count), skipped=cp(self.skipped), step_ok=cp(self.step_ok),
            extra=extra)


def _format_name(a) -> str:
    if B.dtype_kind(a) == "float":
        return B.format_of(a).name
    return str(a.dtype).rsplit(".", 1)[-1]


def _what(name: str, method: str) -> tuple[str, str]:
    if name.startswith("factor"):
        return "factors", f"Kronecker factor of axis {name[6:]} (EMA of the mode Gram matrix)"
    if name.startswith("basis"):
        return "basis", f"eigenbasis of factor {name[5:]}"
    if name.startswith("block"):
        return "factors", (f"Q_JᵀKQ_J of the next refresh's columns J, axis {name[5:]} "
                           f"(factor-free: the factor's stand-in)")
    if name.startswith("estimates"):
        return "eigenvalues", f"Rayleigh quotients of the basis columns, axis {name[9:]}"
    if name.startswith("eigenvalues"):
        what = ("KL eigenvalue estimates λ (clamped)" if method.startswith("kl")
                else "eigenvalues at the last refresh")
        return "eigenvalues", f"{what}, axis {name[11:]}"
    if name == "exp_avg":
        return "moments", ("first moment in the eigenbasis" if method != "shampoo"
                           else "first moment (momentum) in the parameter's space")
    if name == "exp_avg_sq":
        return "moments", ("second moment in the eigenbasis" if method != "shampoo"
                           else "second moment of the Adam grafting")
    return "counters", {"count": "steps since the first", "skipped": "non-finite gradients",
                        "step_ok": "last gradient finite"}.get(name, name)


def new_basis(Q, scheme: str) -> BasisState:
    """A BasisState over the stored eigenbasis Q (its arrays, no copy) under ``scheme``."""
    return BasisState(scheme, Q)


#: Schemes whose stored Q is the basis itself (decoded, never rectified or rotated)
PLAIN_SCHEMES = ("dense", "fp32", "bf16", "bf16-project")


def materialize_basis(bs: BasisState, compute: str):
    """The basis in the compute format: the stored Q decoded (the array itself when already in
    the compute format: no copy per step), or the rectified basis of "bf16-rectify"."""
    if bs.scheme in PLAIN_SCHEMES:
        f = B.format_of(bs.Q)
        if f.name == compute:
            return bs.Q
        from .._backend.convert import DECODE, convert
        from ..precision import get_format

        return convert(bs.Q, f, get_format(compute), op=DECODE)
    return materialize(bs, compute)
