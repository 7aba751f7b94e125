"""Dask versions of the algorithms, shaped as "local block work + a small reduction".

Users pass Dask arrays to the public routines (``lpc.qr``, ``lpc.pcg``, ``lpc.block_degeneracy``,
``lpc.solve_degenerate``, ``lpc.round_to``, ``lpc.to_storage``, ``lpc.from_storage``); their entry
points dispatch here (:mod:`linalg_pc._backend.dask`). Importing this package registers the
implementations and does not import Dask: each module imports it inside its functions.
:func:`prepare_pcg` keeps A (and M) split over the workers for many PCG solves. See
docs/distributed.md.
"""

from __future__ import annotations

from . import batched, pcg, qr  # noqa: F401 - register the routines for Dask arrays
from .pcg import PreparedPCG, prepare_pcg

__all__ = ["prepare_pcg", "PreparedPCG"]
