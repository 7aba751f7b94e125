"""Argument checks of the analysis helpers: each raises naming the argument, before any work."""

from __future__ import annotations

import math
import numbers


def _scalar(value):
    """A 0-d array (NumPy, torch, ...) as its Python scalar; anything else unchanged."""
    if getattr(value, "ndim", None) == 0 and callable(getattr(value, "item", None)):
        return value.item()
    return value


def check_int(value, name: str, *, low: int = 0) -> int:
    """``value`` as an int >= ``low``; integral floats (2.0) pass, 2.5, NaN, inf and bools do not.

    Raises TypeError for a non-number, ValueError for a non-integral or too small one.
    """
    value = _scalar(value)
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be an integer >= {low}, got {type(value).__name__}")
    v = float(value)
    if not math.isfinite(v) or v != math.floor(v):
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    if v < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {int(v)}")
    return int(v)


def check_real(value, name: str, *, low: float = -math.inf, high: float = math.inf,
               high_open: bool = False, finite: bool = True) -> float:
    """``value`` as a float in [low, high] (or [low, high) with ``high_open``); NaN never passes,
    ±inf only with ``finite=False``."""
    value = _scalar(value)
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    v = float(value)
    interval = f"[{low:g}, {high:g}{')' if high_open else ']'}"
    if math.isnan(v) or (finite and math.isinf(v)):
        raise ValueError(f"{name} must be a finite number in {interval}, got {v}")
    if v < low or v > high or (high_open and v == high):
        raise ValueError(f"{name} must be in {interval}, got {v}")
    return v
