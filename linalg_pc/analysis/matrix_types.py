"""The LAPACK ``xCHKQR`` matrix types of :mod:`linalg_pc.analysis.matrices`: scaled near the
underflow / overflow of the storage format, zero, diagonal and triangular (LAPACK
``TESTING/LIN/dlatb4.f``; see that module for the conventions and references)."""

from __future__ import annotations

import numpy as np

from .._formats import Format
from .matrix_blocks import (
    SHRINK,
    TestMatrix,
    _generator,
    _kappa_arg,
    _mode_arg,
    _randsvd64,
    _singular_values,
    _size,
    _store,
    _target,
)


def _scale_limits(f: Format) -> tuple[float, float]:
    """LAPACK dlatb4's SMALL = SHRINK·tiny/eps and LARGE = 1/SMALL for format f (powers of 2)."""
    small = SHRINK * f.tiny / f.eps
    return small, 1.0 / small


def scaled(m, n, kappa, where="underflow", *, mode="geometric", dtype="fp64", rng=None,
           xp=None) -> TestMatrix:
    """A :func:`randsvd` matrix scaled to sit near underflow or overflow of the storage format.

    As LAPACK's QR test types 7 and 8 (``dlatb4``): the largest singular value is
    ``SMALL = SHRINK·tiny/eps`` (``where="underflow"``) or ``LARGE = 1/SMALL``
    (``where="overflow"``), with ``tiny``, ``eps`` those of the storage format and SHRINK = 1/4.
    Near underflow, errors of the size of ``tiny`` are still within ``4·eps·||A||``, so a stable
    algorithm must pass; near overflow, ``LARGE ≈ max·eps`` (for IEEE formats), so column norms
    and products of entries formed without scaling overflow in the storage precision.
    Both limits are powers of two, so the scaling itself is exact.

    Parameters
    ----------
    m, n, kappa, mode
        As in :func:`randsvd`.
    where : {"underflow", "overflow"}
    dtype, rng, xp
        See the module docstring.

    Examples
    --------
    >>> t = scaled(5, 3, 2.0, "overflow", dtype="bf16", rng=0)
    >>> t.params["sigma_max"] == 2.0**121
    True
    """
    m = _size(m, "m")
    n = _size(n, "n")
    k = _kappa_arg(kappa)
    if where not in ("underflow", "overflow"):
        raise ValueError(f"where must be 'underflow' or 'overflow', got {where!r}")
    mode = _mode_arg(mode)
    f, xp = _target(dtype, xp)
    gen = _generator(rng)
    small, large = _scale_limits(f)
    target = small if where == "underflow" else large
    A = _randsvd64(m, n, k, mode, gen) * target  # exact: target is a power of two
    return _store(A, f, xp, f"scaled({where})",
                  {"kappa_requested": k, "mode": mode, "where": where, "sigma_max": target})


def zero(m, n, *, dtype="fp64", rng=None, xp=None) -> TestMatrix:
    """The m×n zero matrix (κ = inf, or 1 when empty). ``rng`` is unused.

    Examples
    --------
    >>> zero(2, 3).kappa
    inf
    """
    m = _size(m, "m")
    n = _size(n, "n")
    f, xp = _target(dtype, xp)
    return _store(np.zeros((m, n)), f, xp, "zero", {})


def diagonal(m, n, kappa, *, mode="geometric", dtype="fp64", rng=None, xp=None) -> TestMatrix:
    """m×n diagonal matrix with singular values by ``mode`` (see :func:`randsvd`), random signs.

    LAPACK's QR test type 1. Cost ``O(mn)``.

    Examples
    --------
    >>> t = diagonal(4, 3, 100.0, rng=0)
    >>> sorted(abs(float(v)) for v in t.A.diagonal())
    [0.01, 0.1, 1.0]
    """
    m = _size(m, "m")
    n = _size(n, "n")
    k = _kappa_arg(kappa)
    mode = _mode_arg(mode)
    f, xp = _target(dtype, xp)
    gen = _generator(rng)
    p = min(m, n)
    s = _singular_values(p, k, mode, gen)
    signs = np.where(gen.random(p) < 0.5, -1.0, 1.0)
    A = np.zeros((m, n))
    A[np.arange(p), np.arange(p)] = s * signs
    return _store(A, f, xp, "diagonal", {"kappa_requested": k, "mode": mode})


def triangular(m, n, kappa, lower=False, *, mode="geometric", dtype="fp64", rng=None,
               xp=None) -> TestMatrix:
    """Upper (or lower) triangular/trapezoidal m×n matrix with prescribed singular values.

    Built as the R factor of a :func:`randsvd` matrix (orthogonal transformations keep the
    singular values), zero-padded to m×n; ``lower=True`` gives the transpose of the upper
    n×m one. LAPACK's QR test types 2 and 3. Cost that of randsvd plus one QR.

    Examples
    --------
    >>> import numpy as np
    >>> t = triangular(4, 4, 10.0, rng=0)
    >>> bool(np.all(np.tril(t.A, -1) == 0))
    True
    """
    m = _size(m, "m")
    n = _size(n, "n")
    k = _kappa_arg(kappa)
    mode = _mode_arg(mode)
    if not isinstance(lower, (bool, np.bool_)):
        raise TypeError(f"lower must be a bool, got {type(lower).__name__}")
    f, xp = _target(dtype, xp)
    gen = _generator(rng)
    rows, cols = (n, m) if lower else (m, n)
    A = np.zeros((rows, cols))
    if min(rows, cols) > 0:
        R = np.linalg.qr(_randsvd64(rows, cols, k, mode, gen), mode="r")
        A[: R.shape[0]] = np.triu(R)
    if lower:
        A = np.ascontiguousarray(A.T)
    name = "lower_triangular" if lower else "upper_triangular"
    return _store(A, f, xp, name, {"kappa_requested": k, "mode": mode, "lower": bool(lower)})
