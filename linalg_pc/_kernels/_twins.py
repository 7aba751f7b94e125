"""The kernel-call convention: every Numba kernel compiled twice, parallel and serial, and one
rule (with all thresholds in one table) that picks which runs.

A loop written with ``prange`` runs in parallel under ``njit(parallel=True)`` and as a plain
``range`` under ``njit()``. Small inputs take the serial twin (thread start-up would cost more
than it saves), and memory-bound kernels need enough threads to gain bandwidth. The twin must be
a separate Python function under its own qualified name: Numba's on-disk cache
(``cache=True``) keys its entries on the function's qualified name and signature, not on the
compilation options, so two compilations of the *same* function share one cache entry and a
later process loads whichever was written first for both.

Threads. Importing linalg_pc *loads* Numba's OpenMP threading layer (:func:`start_threads`,
about 3 ms, no thread created) with the wait policy set to passive, so its workers *sleep*
between parallel regions: by default GNU OpenMP workers spin for a while after each region, and
on a small machine they take the cores from the BLAS call that usually follows one of our
kernels (a 200000×64 fp32 SYRK right after the parallel bf16 decode measured 16–20 ms against
8.5 ms alone; bf16 CholeskyQR2 53 ms against 41 ms). The worker threads themselves start at the
first parallel kernel. The layer must be loaded at import, not at that first kernel: GNU OpenMP
reads its wait policy once, when the library is loaded, and a library imported in between (a
PyTorch wheel ships its own ``libgomp.so.1``, which Numba then binds to) would fix the spinning
policy first (measured: bf16 CholeskyQR2 of 50000×64 after ``import torch``, 28 ms against
12.5 ms). A program that imports PyTorch *before* linalg_pc gets PyTorch's policy; set
``OMP_WAIT_POLICY=PASSIVE`` in the environment to choose it for every library.
"""

from __future__ import annotations

import contextlib
import os
import types
from typing import Any, NamedTuple

from numba import njit

__all__ = ["twins", "Twins", "twins_of", "pick", "use_parallel", "start_threads", "thread_limit",
           "load_threading_layer", "POLICIES"]

#: kind of kernel -> (entries per call below which the serial twin runs, Numba threads needed
#: before the parallel twin runs). The one table of these choices; results never depend on it
#: (the kernels use fixed chunked reductions).
#:
#: - "convert": elementwise format conversions (fp32<->bf16, fused rounding).
#: - "dense": compute-bound batched small dense algebra (Schur/DCReg, batched small PCG).
#: - "stream": memory-bound passes (CSR SpMV and the CG vector updates). On an idle 2-core
#:   machine one thread streams about 10 GB/s and two about 17 GB/s (a 100³ CG iteration 16 ms
#:   serial against 8–10 ms on 2 threads); on a loaded machine 2 threads can be slower.
#: - "columns": column gather / fused copy-and-scatter of a basis, memory bound with little work
#:   per byte: on a shared 2-core machine the parallel copy of a 2048×2048 fp32 basis measured
#:   8–12 ms against 1.6 ms serial, so it goes parallel only with 4 threads or more.
#: - "batch": batched small QR, counted in matrices per call.
POLICIES: dict[str, tuple[int, int]] = {
    "convert": (1 << 16, 1),
    "dense": (1 << 17, 1),
    "stream": (1 << 17, 2),
    "columns": (1 << 18, 4),
    "batch": (1 << 10, 1),
}

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


class Twins(NamedTuple):
    """The parallel and serial compilations of one kernel body and its kind (see POLICIES)."""

    parallel: Any
    serial: Any
    kind: str

    def pick(self, size: int):
        """The twin to call for ``size`` entries (see :func:`use_parallel`)."""
        return self.parallel if use_parallel(size, self.kind) else self.serial


#: parallel kernel's module.qualname -> its Twins (for :func:`pick` on a parallel dispatcher, which
#: is what other kernels call and what callers hold)
_REGISTRY: dict[str, Twins] = {}


def use_parallel(size: int, kind: str) -> bool:
    """Whether a kernel of ``kind`` should run its parallel twin on ``size`` entries.

    True when ``size`` reaches the kind's threshold and Numba has enough threads (and the
    threading layer is loaded, :func:`load_threading_layer`, if it was not yet).
    """
    min_size, min_threads = POLICIES[kind]
    if size < min_size:
        return False
    if min_threads > 1:
        import numba

        if numba.get_num_threads() < min_threads:
            return False
    if not _STARTED:
        load_threading_layer()
    return True


@contextlib.contextmanager
def thread_limit(n: int):
    """Run the parallel twins on at most ``n`` Numba threads in this thread (Numba's
    ``set_num_threads`` is per calling thread), restoring the count after. A Dask worker with
    one thread runs the serial twins this way instead of oversubscribing the cores that its
    neighbour workers use."""
    import numba

    old = numba.get_num_threads()
    numba.set_num_threads(max(1, min(int(n), old)))
    try:
        yield
    finally:
        numba.set_num_threads(old)


def pick(kernel, size: int, kind: str | None = None):
    """The twin of ``kernel`` (a :class:`Twins` or the parallel dispatcher that :func:`twins`
    made) to call on ``size`` entries; ``kind`` overrides the kernel's own kind."""
    t = kernel if isinstance(kernel, Twins) else twins_of(kernel)
    return t.parallel if use_parallel(size, kind or t.kind) else t.serial


def twins_of(kernel) -> Twins:
    """The :class:`Twins` that ``kernel`` (a parallel or serial dispatcher) belongs to."""
    key = _key(kernel.py_func)
    return _REGISTRY[key[:-4] if key.endswith("_seq") else key]


_STARTED = False


def _key(f) -> str:
    return f"{f.__module__}.{f.__qualname__}"


def load_threading_layer() -> None:
    """Load Numba's threading layer with sleeping workers (:func:`start_threads`), once; never
    raises (a layer that is not installed raises at the first parallel call instead, with
    Numba's own message). Called when linalg_pc is imported."""
    global _STARTED
    _STARTED = True
    try:
        start_threads()
    except Exception:  # noqa: BLE001 - e.g. NUMBA_THREADING_LAYER names a layer that is not
        pass  # installed: importing must not fail


def twins(f, kind: str = "dense", **options) -> Twins:
    """:class:`Twins` of ``f``: parallel and serial compilations with separate cache entries.

    ``kind`` is a key of :data:`POLICIES`; ``options`` go to both ``njit`` calls
    (``cache=True`` is always set). The serial twin is a copy of ``f`` named ``<name>_seq``.
    """
    if kind not in POLICIES:
        raise ValueError(f"kind must be one of {sorted(POLICIES)}, got {kind!r}")
    g = types.FunctionType(f.__code__, f.__globals__, f.__name__ + "_seq", f.__defaults__,
                           f.__closure__)
    g.__qualname__ = f.__qualname__ + "_seq"
    g.__doc__ = f.__doc__
    g.__module__ = f.__module__
    t = Twins(njit(parallel=True, cache=True, **options)(f), njit(cache=True, **options)(g), kind)
    _REGISTRY[_key(f)] = t
    return t
