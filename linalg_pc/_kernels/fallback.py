"""Pure array-API rounding to any binary format: the reference every kernel is tested against.

Works for any namespace that follows the array API standard (NumPy, CuPy, PyTorch through
array-api-compat, array_api_strict). The arithmetic runs in float64, where every step below is
exact for targets up to fp32, so the result is a single correct rounding (no double rounding
through fp32, unlike ``astype`` chains from float64).

Algorithm, for finite x and a target with p stored mantissa bits and exponent range [emin, emax]:

1. e = floor(log2|x|), corrected by one where log2 rounded across a power of two, and clamped
   below at emin (the subnormal range has a fixed quantum);
2. q = 2^(e - p) is the spacing of the target at x; y = x / q is exact;
3. y is rounded to an integer (half to even, toward zero, or floor(y + U) with U ~ U[0, 1) for
   stochastic rounding), and r = round(y) * q is exact;
4. |r| > max becomes inf (nearest, stochastic) or max (toward zero); the sign of x is restored
   (signed zero); NaN becomes the quiet NaN with x's sign; ±inf stays.
"""

from __future__ import annotations

import math

from .._formats import Format

MODES = ("nearest", "stochastic", "zero")


def round_values(xp, x, fmt: Format, mode: str = "nearest", uniform=None):
    """Round the float64 array ``x`` to values of ``fmt``; returns float64.

    Parameters
    ----------
    xp : namespace
    x : float64 array
    fmt : Format
    mode : {"nearest", "stochastic", "zero"}
    uniform : float64 array like x, values in [0, 1); required for ``mode="stochastic"``.
    """
    with quiet(xp):
        return _round_values(xp, x, fmt, mode, uniform)


def _round_values(xp, x, fmt: Format, mode: str, uniform):
    finite = xp.isfinite(x)
    xf = xp.where(finite, x, xp.zeros_like(x))
    a = xp.abs(xf)
    lg = xp.log2(xp.where(a > 0, a, xp.ones_like(a)))
    e = xp.floor(lg)
    two = xp.asarray(2.0, dtype=x.dtype, device=_device(x))
    p2 = xp.pow(two, e)
    e = xp.where(p2 > a, e - 1, e)
    e = xp.where(p2 * 2 <= a, e + 1, e)
    e = xp.where(a > 0, e, xp.full_like(e, float(fmt.emin)))
    e = xp.maximum(e, xp.full_like(e, float(fmt.emin)))
    q = xp.pow(two, e - fmt.mantissa_bits)
    y = xf / q
    if mode == "nearest":
        n = xp.round(y)
    elif mode == "zero":
        n = xp.trunc(y)
    elif mode == "stochastic":
        if uniform is None:
            raise ValueError("stochastic rounding needs uniform random numbers")
        n = xp.floor(y + uniform)
    else:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    r = n * q
    big = xp.abs(r) > fmt.max
    if mode == "zero":
        r = xp.where(big, xp.full_like(r, fmt.max), xp.abs(r))
    else:
        r = xp.where(big, xp.full_like(r, math.inf), xp.abs(r))
    r = xp.copysign(r, x)
    nan = xp.isnan(x)
    qnan = xp.copysign(xp.full_like(x, math.nan), x)
    return xp.where(finite, r, xp.where(nan, qnan, x))


def _device(x):
    return getattr(x, "device", None)


class quiet:
    """Silence NumPy floating-point warnings where the namespace is NumPy-based."""

    def __init__(self, xp):
        self._np = None
        name = getattr(xp, "__name__", "")
        if "numpy" in name or "array_api_strict" in name:
            import numpy as np

            self._np = np

    def __enter__(self):
        if self._np is not None:
            self._state = self._np.seterr(all="ignore")
        return self

    def __exit__(self, *exc):
        if self._np is not None:
            self._np.seterr(**self._state)
        return False
