"""Compile one kernel body twice: a parallel version and a serial twin.

A loop written with ``prange`` runs in parallel under ``njit(parallel=True)`` and as a plain
``range`` under ``njit()``. Small inputs take the serial twin (thread start-up would cost more
than it saves). The twin must be a separate Python function under its own qualified name:
Numba's on-disk cache (``cache=True``) keys its entries on the function's qualified name and
signature, not on the compilation options, so two compilations of the *same* function share one
cache entry and a later process loads whichever was written first for both.

Importing this module also starts Numba's threading layer with OpenMP workers that *sleep*
between parallel regions (:func:`start_threads`): by default GNU OpenMP workers spin for a
while after each region, and on a small machine they take the cores from the BLAS call that
usually follows one of our kernels (a 200000×64 fp32 SYRK right after the parallel bf16 decode
measured 16–20 ms against 8.5 ms alone; bf16 CholeskyQR2 53 ms against 41 ms).
"""

from __future__ import annotations

import os
import types

from numba import njit

__all__ = ["twins", "start_threads"]

#: OpenMP wait policy our kernels' workers are started with (unless OMP_WAIT_POLICY is set).
OMP_WAIT_POLICY = "PASSIVE"


def start_threads() -> str:
    """Start Numba's threading layer now, with sleeping OpenMP workers; returns the layer's name.

    GNU OpenMP reads ``OMP_WAIT_POLICY`` once, when the library is loaded, which for Numba is
    the first parallel launch. This sets the variable to ``PASSIVE`` for that moment only (the
    environment is restored afterwards, so neither child processes nor other libraries see it),
    unless the user set it. When OpenMP or Numba's threads were already started by then, nothing
    changes. Idempotent.
    """
    from numba.np.ufunc import parallel

    if getattr(parallel, "_is_initialized", False):
        return _layer()
    had = "OMP_WAIT_POLICY" in os.environ
    if not had:
        os.environ["OMP_WAIT_POLICY"] = OMP_WAIT_POLICY
    try:
        parallel._launch_threads()
    finally:
        if not had:
            os.environ.pop("OMP_WAIT_POLICY", None)
    return _layer()


def _layer() -> str:
    import numba

    try:
        return numba.threading_layer()
    except ValueError:  # not started
        return ""


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


try:
    start_threads()
except Exception:  # noqa: BLE001 - e.g. NUMBA_THREADING_LAYER names a layer that is not
    pass  # installed: importing must not fail; Numba raises at the first parallel call instead
