"""Recycled memory for the large NumPy arrays the conversion kernels return.

A conversion kernel (fp32 → bf16, bf16 → fp32, round-to-bf16) streams at memory speed: 16M
values in 2–3 ms on 2 cores. A *fresh* output of that size costs as much again, not to allocate
but to fault in: glibc hands every allocation above 32 MiB straight to ``mmap``, and the kernel
zeroes each new page on first touch (measured: 32 MiB bf16 output, 2.3 ms into a reused buffer,
5.4 ms into a fresh one). An optimizer converts the same-sized state every step, so the pages
of last step's result are exactly what this step needs.

This module keeps the memory of freed outputs and hands it out again, like a GPU caching
allocator. Its users: the NumPy conversion kernels (``_kernels/cpu.py``: ``to_storage``,
``from_storage``, ``round_to``), the CholeskyQR family's Q (whose decoded bf16 work array is
a ``from_storage`` result too) and the CSR PCG engine's x and work vectors
(``solvers/_engine_csr.py``, from 64 KiB: freed together after each solve, glibc would return
them to the system and the next solve would fault them in again).

- :func:`empty` returns an ordinary, writeable, C-contiguous ``numpy.ndarray``. Below
  ``MIN_BYTES``, or with the cache off, it is ``numpy.empty``. Otherwise its memory is a block
  from the cache (same byte size) or a new one; the array's ``base`` is a small owner object.
- When the array and every view of it are gone, the owner's ``__del__`` gives the block back.
  The owner is referenced by the array (``arr.base``) and by every view (NumPy keeps the chain
  up to an owner that is not an ndarray), so a block can never be handed out while anything can
  still reach it.
- At most ``max_bytes`` are kept idle (default ``DEFAULT_MAX_BYTES``, environment variable
  ``LINALG_PC_BUFFER_CACHE`` in bytes, :func:`set_max_bytes` at run time; 0 turns recycling off),
  at most ``MAX_PER_SIZE`` blocks of one size; when full, a freed block is released.

Differences from ``numpy.empty`` a user can notice: ``arr.flags.owndata`` is False (so
``arr.resize`` refuses; ``np.resize`` works) and up to ``max_bytes`` of freed memory stays with
the process.
"""

from __future__ import annotations

import math
import os
from collections import deque

import numpy as np

__all__ = ["empty", "set_max_bytes", "info", "clear", "DEFAULT_MAX_BYTES", "MIN_BYTES"]

#: Arrays smaller than this come from numpy.empty (glibc's heap reuses those pages already).
MIN_BYTES = 1 << 20
#: Idle bytes kept by default (a 16M-value fp32 array is 64 MiB).
DEFAULT_MAX_BYTES = 256 << 20
#: Idle blocks kept per byte size.
MAX_PER_SIZE = 2


def _env_max_bytes() -> int:
    raw = os.environ.get("LINALG_PC_BUFFER_CACHE", "").strip()
    if not raw:
        return DEFAULT_MAX_BYTES
    try:
        return max(0, int(float(raw)))
    except ValueError:
        return DEFAULT_MAX_BYTES


class _State:
    # deque append/pop are atomic under the GIL and in free-threaded builds: no lock, so a
    # __del__ that runs inside another allocation (garbage collection) cannot deadlock.
    free: dict[int, deque] = {}
    max_bytes: int = _env_max_bytes()
    hits: int = 0
    misses: int = 0


def _idle_bytes() -> int:
    return sum(n * len(q) for n, q in list(_State.free.items()))


class _Owner:
    """Owns one block while an array (or a view of it) uses it; gives it back on deletion."""

    __slots__ = ("_block", "__array_interface__", "__weakref__")

    def __init__(self, block: np.ndarray):
        self._block = block
        self.__array_interface__ = {"shape": (block.size,), "typestr": "|u1",
                                    "data": (block.ctypes.data, False), "version": 3}

    def __del__(self):
        try:
            block = self._block
            n = block.size
            if n <= 0 or _State.max_bytes <= 0:
                return
            q = _State.free.setdefault(n, deque())
            if len(q) < MAX_PER_SIZE and _idle_bytes() + n <= _State.max_bytes:
                q.append(block)
        except Exception:  # noqa: BLE001 - interpreter shutdown: module globals may be gone
            pass


def empty(shape, dtype, min_bytes: int = MIN_BYTES) -> np.ndarray:
    """An uninitialized C-contiguous array, its memory recycled from freed outputs when possible.

    Parameters
    ----------
    shape : int or tuple of int
    dtype : NumPy dtype (ml_dtypes' bfloat16 included)
    min_bytes : int
        Smaller arrays come from ``numpy.empty``. A caller whose arrays are freed together
        lowers it: glibc returns a freed run of blocks at the top of its heap to the system,
        so the next call faults those pages in again (the PCG work vectors: 6 × 512 KiB at
        64 000 unknowns cost 1.7 ms per call fresh).

    Returns
    -------
    numpy.ndarray
        Writeable and C-contiguous; ``owndata`` is False for a recycled block.
    """
    dtype = np.dtype(dtype)
    if isinstance(shape, (int, np.integer)):
        shape = (int(shape),)
    else:
        shape = tuple(int(s) for s in shape)
    nbytes = math.prod(shape) * dtype.itemsize
    if nbytes < min_bytes or _State.max_bytes <= 0:
        return np.empty(shape, dtype=dtype)
    block = None
    q = _State.free.get(nbytes)
    if q:
        try:
            block = q.pop()
            _State.hits += 1
        except IndexError:  # emptied by another thread
            block = None
    if block is None:
        _State.misses += 1
        block = np.empty(nbytes, dtype=np.uint8)
    return np.asarray(_Owner(block)).view(dtype).reshape(shape)


def set_max_bytes(max_bytes: int) -> int:
    """Set how many idle bytes are kept (0: recycling off, idle blocks released); returns the
    previous limit."""
    if not isinstance(max_bytes, (int, np.integer)) or isinstance(max_bytes, bool) \
            or max_bytes < 0:
        raise ValueError(f"max_bytes must be an integer >= 0, got {max_bytes!r}")
    prev = _State.max_bytes
    _State.max_bytes = int(max_bytes)
    if _State.max_bytes == 0:
        clear()
    else:
        while _idle_bytes() > _State.max_bytes:
            size = max(n for n, q in _State.free.items() if q)
            _State.free[size].popleft()
    return prev


def clear() -> None:
    """Release every idle block."""
    for q in list(_State.free.values()):
        q.clear()


def info() -> dict:
    """``{"max_bytes", "idle_bytes", "idle_blocks", "hits", "misses"}`` of the cache."""
    return {"max_bytes": _State.max_bytes, "idle_bytes": _idle_bytes(),
            "idle_blocks": sum(len(q) for q in list(_State.free.values())),
            "hits": _State.hits, "misses": _State.misses}
