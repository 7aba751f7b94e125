"""Dask: recognising Dask collections without importing Dask, and the dispatch table of routines.

A Dask array is not an array-API array of its own library: its chunks are (NumPy, CuPy, or
scipy.sparse for the PCG operator), and linalg_pc runs its local routines on them through the
distributed algorithms of :mod:`linalg_pc.distributed`. The local entry points (``lpc.qr``,
``lpc.pcg``, the batched DCReg routines, the conversions) ask :func:`dispatch` first; it returns
the registered distributed implementation when an argument is a Dask collection, else None, in a
few attribute reads (Dask is never imported here: a Dask array exists only once the caller has
imported Dask). The implementations register themselves with :func:`register_routine` when
:mod:`linalg_pc.distributed` is imported (by ``import linalg_pc``; it does not import Dask
either).
"""

from __future__ import annotations

import sys

__all__ = ["is_dask", "any_dask", "register_routine", "dispatch"]

_ROUTINES: dict[str, object] = {}


def is_dask(x) -> bool:
    """``x`` is a Dask collection (a ``dask.array.Array``, a Delayed, ...)."""
    if "dask" not in sys.modules:
        return False
    return type(x).__module__.startswith("dask.") and hasattr(x, "__dask_graph__")


def any_dask(*args) -> bool:
    """Some argument is a Dask collection."""
    if "dask" not in sys.modules:
        return False
    return any(is_dask(a) for a in args)


def register_routine(name: str):
    """Decorator: ``f`` is the distributed implementation of the public routine ``name``."""

    def deco(f):
        _ROUTINES[name] = f
        return f

    return deco


def dispatch(name: str, *args):
    """The distributed implementation of ``name`` when an argument is a Dask collection, else
    None (the caller runs its local code)."""
    if "dask" not in sys.modules or not any(is_dask(a) for a in args):
        return None
    f = _ROUTINES.get(name)
    if f is None:
        raise NotImplementedError(f"{name} has no distributed implementation for Dask arrays; "
                                  f"compute the input first (x.compute()) to run it locally")
    return f
