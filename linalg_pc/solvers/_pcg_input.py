"""Input transformations of :func:`linalg_pc.solvers.pcg`: SciPy's ``x0="Mb"`` and the exact
power-of-two scaling of right-hand sides whose squares underflow (see docs/solvers.md)."""

from __future__ import annotations

import numpy as np

from .._backend import array_namespace, device_of, to_numpy
from .._operators import as_operator, host_or_device_ok

__all__ = ["m_times_b", "per_system", "times_pow2", "underflow_exponents"]


def m_times_b(A, b, M):
    """SciPy's ``x0="Mb"``: x0 = M b (a copy of b without M), in b's shape and library.
    Errors in A, b or M are left to the solver's validation (None is returned then)."""
    if b is None or not hasattr(b, "shape"):
        return None
    if M is None:
        return b * 1
    xp = array_namespace(b)
    opA = as_operator(A, argname="A", xp=xp)
    batched = opA.kind == "batched"
    opM = as_operator(M, argname="M", xp=xp, n=b.shape[-1] if batched else b.shape[0])
    host_or_device_ok(xp, opM, "M")
    if batched:
        return opM.apply(xp, b, "batch")
    X = b[:, None] if b.ndim == 1 else b
    out = opM.apply(xp, X, "cols")
    return out[:, 0] if b.ndim == 1 else out


def per_system(xp, c, layout, like):
    """Per-system coefficients c (K,) as an array broadcasting against ``like``'s layout."""
    c = xp.astype(xp.asarray(np.asarray(c, dtype=np.float64), device=device_of(like)),
                  like.dtype)
    return c[None, :] if layout == "cols" else c[:, None]


def times_pow2(xp, X, e, layout):
    """X times 2^e per system (e (K,) integers), in two halves so that neither factor
    overflows (or underflows) the working format: exact, unless the result does."""
    h = e // 2
    X = X * per_system(xp, np.exp2(h), layout, X)
    return X * per_system(xp, np.exp2(e - h), layout, X)


def underflow_exponents(xp, B, X0, axis, work) -> np.ndarray:
    """Exponents e, per system, such that 2^e brings a right-hand side whose squares underflow
    (max|b| < √tiny of the working format) to max|b| ∈ [1, 2), limited so that 2^e·x0 stays
    below half the format's maximum; 0 elsewhere. Scaling by a power of two is exact, and PCG is
    linear in (b, x0, atol): the solve of the scaled system, scaled back, is the solve of the
    caller's (its residuals and x below ``tiny`` would otherwise be flushed to a zero
    "converged" solution)."""
    amax = np.asarray(to_numpy(xp.max(xp.abs(B), axis=axis)), dtype=np.float64)
    small = (amax > 0) & (amax < np.sqrt(work.tiny))
    if not small.any():
        return np.zeros(amax.shape, dtype=np.int64)
    e = np.where(small, -np.floor(np.log2(np.where(small, amax, 1.0))), 0.0)
    if X0 is not None:
        xmax = np.asarray(to_numpy(xp.max(xp.abs(X0), axis=axis)), dtype=np.float64)
        room = np.floor(np.log2(work.max / 2) - np.log2(np.where(xmax > 0, xmax, 1.0)))
        e = np.where(xmax > 0, np.minimum(e, np.maximum(room, 0.0)), e)
    return e.astype(np.int64)
