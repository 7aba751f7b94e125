"""Row-block passes over a tall-skinny NumPy matrix: the streamed CholeskyQR passes on the CPU.

A CholeskyQR pass needs, of its m×n operand X = (A·2^e)·R₁⁻¹···R_k⁻¹, either the Gram matrix
XᵀX or X itself in the output format. :class:`RowPasses` computes both one block of rows at a
time: the block is read from A into a scratch in the compute dtype (bf16 decoded exactly on its
bit patterns, fp16 cast exactly, scaled by the power of two 2^e when asked), the solves
X_b ← X_b·R_j⁻¹ run on it while it is in cache (BLAS TRSM), and then the block either adds its
Gram matrix into the pass's (BLAS SYRK, beta = 1) or is written to its rows of the output,
encoded into the output format (bf16 round to nearest even, bit for bit the conversion of
``_kernels/cpu.py``). Every pass thus reads A in its own format (2 bytes an entry for bf16) and
writes nothing but the output: no compute-dtype copy of A is ever made. Extra memory: one
scratch block per thread and one n×n Gram matrix per segment (at most ``SEGMENTS``), that is
O(block·n + n²).

When the output has the compute dtype, a Gram pass can also *materialize* X into it (the block
is written where Q will be, its Gram matrix taken while it is in cache); the next passes then
start from the output, in place. This is how fp32 CholeskyQR2 reads A once for G₁, reads A and
writes Q₁ once for G₂, and finishes Q = Q₁R₂⁻¹ in place.

Threads. The rows are split into at most ``SEGMENTS`` segments of whole blocks (fixed by m and
the block size, never by the thread count), each with its own Gram matrix; the segments' Gram
matrices are summed in segment order, so the result does not depend on the number of threads.
``t`` threads (the BLAS thread count NumPy's BLAS is set to; the calling thread is one of them)
take segments from a shared counter, each running single-threaded BLAS calls on its own blocks:
no barrier between the threads, so a core taken away by another process delays only the segment
running on it. While a pass runs, NumPy's BLAS is set to one thread per call and restored
afterwards (what scikit-learn's ``threadpool_limits`` does around its own threaded loops).

The BLAS routines are those of the library NumPy loaded (found and self-checked by
:mod:`linalg_pc._kernels.cpu_blas`); where they are not reachable :func:`available` is False and
the callers keep their array-at-once path.

Cost of a pass: k·mn² flops for k solves, + mn² for the Gram matrix; the block size
``BLOCK_BYTES`` keeps a block in the per-core L2 cache.
"""

from __future__ import annotations

import ctypes
import functools
import itertools
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from numba import njit

from . import cpu_blas
from .cpu import _rne_bits

__all__ = ["available", "RowPasses", "BLOCK_BYTES", "SEGMENTS"]

#: Bytes of one scratch block (compute dtype): a block and its solves stay in the L2 cache.
BLOCK_BYTES = 512 << 10
#: At least this many rows per block (a BLAS call on fewer rows is mostly overhead).
MIN_BLOCK_ROWS = 64
#: At most this many segments (own Gram matrices) per pass.
SEGMENTS = 24

# CBLAS enum values (cblas.h)
_ROW_MAJOR, _RIGHT, _UPPER, _NO_TRANS, _TRANS, _NON_UNIT = 101, 142, 121, 111, 112, 131

#: (symbol suffix, integer type) in the order tried (the 64-bit-integer build first).
_SUFFIXES = (("64_", ctypes.c_int64), ("", ctypes.c_int))


# --------------------------------------------------------------------------- BLAS bindings
class _Blas:
    """SYRK and TRSM (fp32, fp64) and the thread-count calls of NumPy's OpenBLAS."""

    def __init__(self, lib, suffix: str, int_t):
        self.int_t = int_t
        self.syrk, self.trsm = {}, {}
        for t, dt, sc in (("s", np.dtype(np.float32), ctypes.c_float),
                          ("d", np.dtype(np.float64), ctypes.c_double)):
            f = getattr(lib, f"scipy_cblas_{t}syrk{suffix}")
            f.argtypes = [ctypes.c_int] * 3 + [int_t, int_t, sc, ctypes.c_void_p, int_t, sc,
                                               ctypes.c_void_p, int_t]
            f.restype = None
            self.syrk[dt] = f
            g = getattr(lib, f"scipy_cblas_{t}trsm{suffix}")
            g.argtypes = [ctypes.c_int] * 5 + [int_t, int_t, sc, ctypes.c_void_p, int_t,
                                               ctypes.c_void_p, int_t]
            g.restype = None
            self.trsm[dt] = g
        self.get_threads = getattr(lib, f"scipy_openblas_get_num_threads{suffix}")
        self.get_threads.argtypes = []
        self.get_threads.restype = ctypes.c_int
        self.set_threads = getattr(lib, f"scipy_openblas_set_num_threads{suffix}")
        self.set_threads.argtypes = [ctypes.c_int]
        self.set_threads.restype = None

    def self_check(self) -> bool:
        """A 5×3 Gram matrix and solve against NumPy, in both dtypes."""
        rng = np.random.default_rng(0)
        for dt in self.syrk:
            X = rng.standard_normal((5, 3)).astype(dt)
            C = np.zeros((3, 3), dtype=dt)
            self.syrk[dt](_ROW_MAJOR, _UPPER, _TRANS, 3, 5, 1.0, X.ctypes.data, 3, 0.0,
                          C.ctypes.data, 3)
            R = np.triu(rng.standard_normal((3, 3))).astype(dt) + 3 * np.eye(3, dtype=dt)
            Y = X.copy()
            self.trsm[dt](_ROW_MAJOR, _RIGHT, _UPPER, _NO_TRANS, _NON_UNIT, 5, 3, 1.0,
                          R.ctypes.data, 3, Y.ctypes.data, 3)
            want = X.astype(np.float64) @ np.linalg.inv(R.astype(np.float64))
            if not (np.allclose(np.triu(C), np.triu(X.T.astype(np.float64) @ X), rtol=1e-5)
                    and np.allclose(Y, want, rtol=1e-5, atol=1e-6)):
                return False
        return 1 <= self.get_threads() < 1 << 16


@functools.cache
def _blas() -> _Blas | None:
    if not cpu_blas.available(np.float32) or cpu_blas.library_name() is None:
        return None
    for path in cpu_blas._library_files():
        if path.name != cpu_blas.library_name():
            continue
        try:
            lib = ctypes.CDLL(str(path))
        except OSError:
            return None
        for suffix, int_t in _SUFFIXES:
            try:
                b = _Blas(lib, suffix, int_t)
            except AttributeError:
                continue
            return b if b.self_check() else None
    return None


def available(dtype) -> bool:
    """Whether the row-block passes run for compute dtype ``dtype`` (fp32 or fp64)."""
    b = _blas()
    return b is not None and np.dtype(dtype) in b.syrk


# --------------------------------------------------------------------------- block kernels
@njit(cache=True, nogil=True)
def _decode_bf16(src, dst):
    """dst[i, j] = the fp32 value of the bf16 pattern src[i, j] (exact)."""
    for i in range(src.shape[0]):
        for j in range(src.shape[1]):
            dst[i, j] = np.uint32(src[i, j]) << np.uint32(16)


@njit(cache=True, nogil=True)
def _encode_bf16(src, dst):
    """dst[i, j] = the bf16 pattern of fp32 pattern src[i, j], round to nearest even."""
    for i in range(src.shape[0]):
        for j in range(src.shape[1]):
            dst[i, j] = _rne_bits(src[i, j])


_POOL: ThreadPoolExecutor | None = None
_POOL_PID = 0
_LOCK = threading.Lock()
#: [passes running, NumPy's BLAS thread count to restore when the last one ends]
_ACTIVE = [0, 1]


def _pool(workers: int) -> ThreadPoolExecutor:
    """The helper threads (idle between passes), grown to ``workers``; a new pool in a forked
    child (the parent's threads do not exist there)."""
    global _POOL, _POOL_PID
    with _LOCK:
        if _POOL is None or _POOL._max_workers < workers or _POOL_PID != os.getpid():
            old, _POOL = _POOL, ThreadPoolExecutor(workers, thread_name_prefix="linalg_pc-rows")
            if old is not None and _POOL_PID == os.getpid():
                old.shutdown(wait=False)
            _POOL_PID = os.getpid()
        return _POOL


def _blas_single(blas: _Blas) -> int:
    """Set NumPy's BLAS to one thread per call; returns the count it had before the first of
    the passes now running (concurrent passes restore it once, when the last one ends)."""
    with _LOCK:
        if _ACTIVE[0] == 0:
            _ACTIVE[1] = int(blas.get_threads())
        _ACTIVE[0] += 1
        blas.set_threads(1)
        return _ACTIVE[1]


def _blas_restore(blas: _Blas) -> None:
    with _LOCK:
        _ACTIVE[0] -= 1
        if _ACTIVE[0] == 0:
            blas.set_threads(_ACTIVE[1])


def _is_bf16(dt) -> bool:
    return dt.kind == "V" and dt.itemsize == 2


class RowPasses:
    """Streamed passes over the rows of A (m×n) in compute dtype ``dtype``.

    Parameters
    ----------
    A : numpy.ndarray (m, n)
        bf16 (ml_dtypes), fp16, or of the compute dtype; any strides.
    dtype : fp32 or fp64 (see :func:`available`).
    block_rows : int, optional
        Rows per block (default: ``BLOCK_BYTES`` of the compute dtype, at least
        ``MIN_BLOCK_ROWS``).
    """

    def __init__(self, A: np.ndarray, dtype, block_rows: int | None = None):
        self.blas = _blas()
        self.A = A
        self.dtype = np.dtype(dtype)
        if self.blas is None or self.dtype not in self.blas.syrk:
            raise ValueError(f"no row-block passes for compute dtype {self.dtype}")
        m, n = A.shape
        self.m, self.n = m, n
        b = block_rows or max(MIN_BLOCK_ROWS, BLOCK_BYTES // max(1, n * self.dtype.itemsize))
        self.b = max(1, min(int(b), m))
        nblk = -(-m // self.b)
        self.nseg = max(1, min(SEGMENTS, nblk))
        # segment s covers blocks [bounds[s], bounds[s + 1])
        self.bounds = [s * nblk // self.nseg for s in range(self.nseg + 1)]
        self.bits = A.view(np.uint16) if _is_bf16(A.dtype) else None

    # ----------------------------------------------------------------- public passes
    def gram(self, chain=(), scale: int = 0, src=None, write=None):
        """G = XᵀX (n×n, compute dtype) of X = (src·2^scale)·R₁⁻¹···R_k⁻¹ (``chain``).

        ``src``: None (A) or an m×n C-contiguous array of the compute dtype (a materialized X;
        ``scale`` must then be 0). ``write``: None, or an m×n C-contiguous array of the compute
        dtype that receives X (may be ``src`` itself: the pass then runs in place).
        """
        Gs = np.zeros((self.nseg, self.n, self.n), dtype=self.dtype)  # SYRK writes the upper half
        self._run(self._segment_fn(chain, scale, src, write, Gs))
        G = Gs[0]
        for s in range(1, self.nseg):
            G += Gs[s]
        G = np.triu(G)
        return G + np.triu(G, 1).T

    def fill(self, out: np.ndarray, chain=(), scale: int = 0, src=None) -> np.ndarray:
        """out ← X in out's format (compute dtype, bf16, fp16, or any wider float), X as in
        :meth:`gram`. ``out`` may be ``src`` (in place)."""
        self._run(self._segment_fn(chain, scale, src, out, None))
        return out

    def absmax(self) -> float:
        """max |A| (for the power-of-two scaling; inf or nan when A has such entries)."""
        if self.bits is not None:
            mags = self.bits & np.uint16(0x7FFF)
            top = np.uint16(mags.max()) if mags.size else np.uint16(0)
            return float(np.array([top << np.uint32(16)], dtype=np.uint32).view(np.float32)[0])
        return float(np.max(np.abs(self.A))) if self.A.size else 0.0

    # ----------------------------------------------------------------- the block loop
    def _segment_fn(self, chain, scale, src, write, Gs):
        blas = self.blas
        dt = self.dtype
        n, b, m = self.n, self.b, self.m
        trsm, syrk = blas.trsm[dt], blas.syrk[dt]
        Rs = [np.ascontiguousarray(R, dtype=dt) for R in chain]
        rptr = [R.ctypes.data for R in Rs]
        f1 = f2 = None
        if scale:
            h = scale // 2
            f1, f2 = 2.0 ** h, 2.0 ** (scale - h)
        if src is not None and (src.dtype != dt or not src.flags.c_contiguous or scale):
            raise ValueError("src must be C-contiguous of the compute dtype, unscaled")
        base = self.A if src is None else src
        direct = (src is not None or base.dtype == dt and base.flags.c_contiguous
                  and not scale)  # rows of base are usable as they are
        out_dt = None if write is None else write.dtype
        inplace_out = write is not None and write.dtype == dt and write.flags.c_contiguous
        out_bits = write.view(np.uint16) if write is not None and _is_bf16(out_dt) else None
        bits = self.bits if src is None else None

        w_addr = write.ctypes.data if inplace_out else 0
        b_addr = base.ctypes.data if direct else 0
        w_rs = write.strides[0] if inplace_out else 0
        b_rs = base.strides[0] if direct else 0

        def load(i, k, scratch, s_addr):
            """Rows i:i+k of X before the solves (C-contiguous, rows of n entries) and their
            address: a writable array when it is solved or written (else a view of A)."""
            if inplace_out:
                dst, addr = write[i:i + k], w_addr + i * w_rs
                if write is base:
                    return dst, addr
            elif direct and not Rs:
                return base[i:i + k], b_addr + i * b_rs
            else:
                dst, addr = scratch[:k], s_addr
            if bits is not None:
                _decode_bf16(bits[i:i + k], dst.view(np.uint32))
            else:
                np.copyto(dst, base[i:i + k], casting="unsafe")
            if f1 is not None:
                dst *= f1
                dst *= f2
            return dst, addr

        def segment(s, scratch, s_addr):
            lo, hi = self.bounds[s] * b, min(m, self.bounds[s + 1] * b)
            G = None if Gs is None else Gs[s]
            g_addr = 0 if G is None else G.ctypes.data
            beta = 0.0
            for i in range(lo, hi, b):
                k = min(b, hi - i)
                X, x_addr = load(i, k, scratch, s_addr)
                for p in rptr:
                    trsm(_ROW_MAJOR, _RIGHT, _UPPER, _NO_TRANS, _NON_UNIT, k, n, 1.0, p, n,
                         x_addr, n)
                if G is not None:
                    syrk(_ROW_MAJOR, _UPPER, _TRANS, n, k, 1.0, x_addr, n, beta, g_addr, n)
                    beta = 1.0
                if write is not None and not inplace_out:
                    if out_bits is not None:
                        _encode_bf16(X.view(np.uint32), out_bits[i:i + k])
                    else:
                        with np.errstate(over="ignore", invalid="ignore"):
                            np.copyto(write[i:i + k], X, casting="unsafe")
            if G is not None and beta == 0.0:
                G[...] = 0

        return segment

    def _run(self, segment) -> None:
        """Run ``segment(s, scratch, address)`` for every segment on the BLAS's thread count."""
        blas = self.blas
        before = int(blas.get_threads()) if _ACTIVE[0] == 0 else _ACTIVE[1]
        threads = max(1, min(before, self.nseg))
        counter = itertools.count()

        def work():
            scratch = np.empty((self.b, self.n), dtype=self.dtype)
            s_addr = scratch.ctypes.data
            while True:
                s = next(counter)
                if s >= self.nseg:
                    return
                segment(s, scratch, s_addr)

        # The BLAS calls are single-threaded even when one thread runs every segment (one
        # segment, or a BLAS limited to one thread): a block's SYRK/TRSM is too small for
        # OpenBLAS's own threads, which spin-wait for a core and, when another process holds
        # it, made a one-block pass (2000×64) take 40 ms instead of 0.2 ms.
        _blas_single(blas)
        try:
            if threads == 1:
                work()
                return
            futs = [_pool(threads - 1).submit(work) for _ in range(threads - 1)]
            try:
                work()
            finally:
                for f in futs:
                    f.result()
        finally:
            _blas_restore(blas)
