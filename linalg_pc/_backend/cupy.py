"""CuPy delegates: cuSOLVER through cupyx.scipy.linalg for the primitives of
:mod:`linalg_pc._backend`."""

from __future__ import annotations

import cupy
import numpy as np

from . import register


@register("cupy", "solve_triangular")
def solve_triangular(A, B, *, lower, trans, unit_diagonal):
    """cuSOLVER's TRSM for single matrices; None (generic substitution) for batches."""
    if A.ndim != 2 or B.ndim != 2:
        return None
    import cupyx.scipy.linalg as csla

    return csla.solve_triangular(A, B, lower=lower, trans=1 if trans else 0,
                                 unit_diagonal=unit_diagonal)


@register("cupy", "cholesky")
def cholesky(A):
    from . import _cholesky_fallback

    batch = A.shape[:-2]
    try:
        L = cupy.linalg.cholesky(A)
    except Exception:  # noqa: BLE001 - cuSOLVER reports failure by raising when it can sync
        return _cholesky_fallback(cupy, A)
    bad = ~cupy.isfinite(L).reshape(batch + (-1,)).all(axis=-1)
    info = np.where(cupy.asnumpy(bad), A.shape[-1], 0)
    return L, info


@register("cupy", "to_numpy")
def to_numpy(x):
    return x.get()


@register("cupy", "uniform")
def uniform(shape, rng, *, device, dtype):
    """Draws from a ``cupy.random.Generator``; None (use the NumPy draw) otherwise."""
    if rng is not None and type(rng).__module__.startswith("cupy"):
        return rng.random(shape, dtype=dtype)
    return None
