"""Compile one kernel body twice: a parallel version and a serial twin.

A loop written with ``prange`` runs in parallel under ``njit(parallel=True)`` and as a plain
``range`` under ``njit()``. Small inputs take the serial twin (thread start-up would cost more
than it saves). The twin must be a separate Python function under its own qualified name:
Numba's on-disk cache (``cache=True``) keys its entries on the function's qualified name and
signature, not on the compilation options, so two compilations of the *same* function share one
cache entry and a later process loads whichever was written first for both.
"""

from __future__ import annotations

import types

from numba import njit

__all__ = ["twins"]


def twins(f, **options):
    """``(parallel, serial)`` compilations of ``f`` with separate on-disk cache entries.

    ``options`` go to both ``njit`` calls (``cache=True`` is always set). The serial twin is a
    copy of ``f`` named ``<name>_seq``.
    """
    g = types.FunctionType(f.__code__, f.__globals__, f.__name__ + "_seq", f.__defaults__,
                           f.__closure__)
    g.__qualname__ = f.__qualname__ + "_seq"
    g.__doc__ = f.__doc__
    g.__module__ = f.__module__
    return (njit(parallel=True, cache=True, **options)(f),
            njit(cache=True, **options)(g))
