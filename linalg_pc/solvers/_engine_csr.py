"""The CSR PCG engine: SciPy sparse A and NumPy vectors through the fused Numba passes of
:mod:`linalg_pc._kernels.cpu_csr`.

One right-hand side takes three passes over the data per iteration (the x/p update; the SpMV
with pᵀq; the r update with rᵀr, and for a diagonal M the Jacobi scaling fused into it): about
12·nnz + 84·n bytes per iteration (fp64, int32 indices; 4n of them the row pointers) against
≈ 12·nnz + 172·n for SciPy. It is driven by the loop's float steps (``init1`` ... ``update1``:
:func:`linalg_pc.solvers._loop.run_one`), with no (1,)-array per coefficient.
``s`` right-hand sides take the same three passes on row-major (n, s) blocks, reading A once per
iteration for all columns (12·nnz + 4n + 80·n·s bytes). The x update of a step is deferred to
the next pass over p. x and the work vectors come from the recycled memory of
:mod:`linalg_pc._buffers` (fresh pages cost 0.3 ms per 512 KiB vector to fault in, 1.7 ms per
call at 40³). Kernels are picked with the "stream" policy of
:data:`linalg_pc._kernels._twins.POLICIES`. Implements :class:`linalg_pc.solvers._loop.Engine`.
"""

from __future__ import annotations

import math

import numpy as np

from .. import _buffers
from .._backend import array_namespace
from .._kernels import cpu_csr as C
from .._kernels._twins import twins_of, use_parallel
from .._operators import Operator

__all__ = ["CsrEngine", "is_host_sparse", "sparse_entries_finite", "sum_squares"]


def is_host_sparse(A) -> bool:
    """Whether A is a SciPy sparse matrix or array (without importing SciPy when it is not
    loaded: then A cannot be one)."""
    import sys

    sp = sys.modules.get("scipy.sparse")
    return sp is not None and sp.issparse(A)


def sparse_entries_finite(A) -> bool:
    """Whether every stored entry of the SciPy sparse A is finite: one pass of ``np.sum`` over
    the stored values (pairwise, vectorized, on the calling thread: no BLAS threads to wake,
    which on a busy machine cost more than the pass itself); a NaN or inf makes the sum
    non-finite, and only a sum that overflows from finite entries (beyond the format's
    maximum) takes the entrywise test."""
    data = A.data if A.format in ("csr", "csc", "coo", "bsr") else A.tocsr().data
    with np.errstate(over="ignore", invalid="ignore"):
        if bool(np.isfinite(np.sum(data))):
            return True
    return bool(np.all(np.isfinite(data)))


def sum_squares(b) -> float | None:
    """bᵀb of a C-contiguous float64 NumPy vector by the chunked order of the engine's
    ``dot_chunked`` (so that it is bit for bit the engine's ‖r₀‖² when r₀ = b), or None when
    b is not such a vector or the sum is not finite or below ``2·n·tiny``.

    A finite sum means every entry is finite (a NaN or inf makes it NaN or inf), and a sum
    above ``2·n·tiny`` means some entry exceeds √tiny, so that no right-hand-side scaling is
    needed (:func:`linalg_pc.solvers._pcg_input.underflow_exponents`). One read of b replaces
    the finiteness test, the maximum of |b| and the sum of squares (each a pass with a
    temporary: 3 ms per call at 512 000 unknowns).
    """
    if not (isinstance(b, np.ndarray) and b.ndim == 1 and b.dtype == np.float64
            and b.flags.c_contiguous and b.shape[0] > 0):
        return None
    ss = _kernels(use_parallel(b.shape[0], "stream"))["dot_chunked"](b, b, np.empty(C.NCHUNKS))
    if not (math.isfinite(ss) and ss > 2.0 * b.shape[0] * np.finfo(np.float64).tiny):
        return None
    return ss


def _diagonal_of(M) -> np.ndarray | None:
    """The diagonal of a scipy.sparse M when M is diagonal, else None."""
    Mc = M.tocoo()
    if Mc.nnz and not np.all(Mc.row == Mc.col):
        return None
    return np.asarray(M.diagonal())


#: Work vectors of at least this many bytes together come from the recycled memory of
#: :mod:`linalg_pc._buffers` (below it, glibc's heap reuses the pages already).
WORK_MIN_BYTES = 1 << 16
#: Names of the kernels of :mod:`linalg_pc._kernels.cpu_csr` the engine calls.
KERNELS = ("update_xp", "csr_matvec_dot", "update_r", "update_r_jacobi", "axpy", "csr_residual",
           "csr_residual_gap", "dot_chunked", "update_xp_multi", "axpy_multi", "csr_matmat_dot",
           "csr_matmat8_dot", "update_r_multi", "update_r_jacobi_multi", "csr_residual_multi",
           "csr_residual_gap_multi", "dot_multi")
_TWIN_SETS: dict[bool, dict] = {}


def _kernels(parallel: bool) -> dict:
    """The parallel or the serial twins of :data:`KERNELS`, by name (looked up once)."""
    ks = _TWIN_SETS.get(parallel)
    if ks is None:
        ks = {nm: getattr(twins_of(getattr(C, nm)), "parallel" if parallel else "serial")
              for nm in KERNELS}
        _TWIN_SETS[parallel] = ks
    return ks


class CsrEngine:
    """Fused Numba kernels for scipy.sparse A on NumPy vectors (layout "cols"); implements
    :class:`linalg_pc.solvers._loop.Engine`."""

    def __init__(self, opA: Operator, opM: Operator | None, B, X0, zero, dtype, bsq=None):
        Acsr = opA.obj if opA.obj.format == "csr" else opA.obj.tocsr()
        if not Acsr.has_sorted_indices:
            Acsr = Acsr.sorted_indices()
        # unsigned views: Numba skips the negative-index wraparound test on unsigned indices,
        # which otherwise costs about 2x in the SpMV inner loop
        self.indptr = Acsr.indptr.view(np.uint32 if Acsr.indptr.itemsize == 4 else np.uint64)
        self.indices = Acsr.indices.view(np.uint32 if Acsr.indices.itemsize == 4 else np.uint64)
        self.data = np.ascontiguousarray(Acsr.data, dtype=dtype)
        self.dtype = dtype
        self.n, self.s = B.shape
        self.vec = self.s == 1
        self.B = np.ascontiguousarray(B[:, 0] if self.vec else B, dtype=dtype)
        self.X0 = None if X0 is None else np.ascontiguousarray(X0[:, 0] if self.vec else X0,
                                                               dtype=dtype)
        self.zero = zero
        #: bᵀb by the chunked order of ``dot_chunked`` (one right-hand side), when the caller
        #: computed it already: r₀ = b needs no pass of its own then
        self.bsq = bsq
        self.M = opM
        self.dinv = None
        if opM is not None and opM.kind == "scipy_sparse":
            d = _diagonal_of(opM.obj)
            if d is not None:
                self.dinv = np.ascontiguousarray(d, dtype=dtype)
        shp = (C.NCHUNKS,) if self.vec else (C.NCHUNKS, self.s)
        self.part = np.empty(shp)
        self.part2 = np.empty(shp)
        self._rho_cached = None
        self.single = True
        #: one right-hand side: the loop drives the float steps (init1, ..., update1)
        self.scalar_steps = self.vec
        self.pending = 0.0  # deferred x += pending · p (one right-hand side)
        # several: x[:, t] += pend[t] · p[:, t] deferred where pmask[t]
        self.pend = np.zeros(self.s)
        self.pmask = np.zeros(self.s, dtype=np.uint8)
        self.k = _kernels(use_parallel(Acsr.nnz * self.s, "stream"))

    def _residual(self, out):
        k = self.k
        if self.vec:
            return np.array([k["csr_residual"](self.indptr, self.indices, self.data, self.B,
                                               self.x, out, self.part)])
        return k["csr_residual_multi"](self.indptr, self.indices, self.data, self.B, self.x,
                                       out, self.part)

    def init(self):
        B = self.B
        # x and the work vectors r, rt, p, q (and z with M) in recycled memory: fresh pages
        # cost more than a whole iteration at 40³ (each one faulted in on first touch)
        self.x = _buffers.empty(B.shape, self.dtype, WORK_MIN_BYTES)
        nwork = 4 if self.M is None else 5
        work = _buffers.empty((nwork, *B.shape), self.dtype, WORK_MIN_BYTES)
        if self.X0 is None:
            self.x[...] = 0
        else:
            np.copyto(self.x, self.X0)
        if self.vec:
            if self.zero[0]:
                self.x[:] = 0
        else:
            self.x[:, self.zero] = 0
        self.r, self.rt, self.p, self.q = work[0], work[1], work[2], work[3]
        if self.X0 is None:  # r = b − A·0 = b exactly: no matvec
            np.copyto(self.r, B)
            if self.vec and self.bsq is not None:
                rn = np.array([self.bsq])
            else:
                rn = self._dot(self.r, self.r)
        else:
            rn = self._residual(self.r)
        self.p[...] = 0  # updated in place
        self.z = self.r if (self.M is None) else work[4]
        self._rho_cached = None
        self._rho1 = None
        return np.sqrt(rn)

    def _sync(self):
        if self.vec and self.pending != 0.0:
            self.k["axpy"](self.x, self.pending, self.p)
        if not self.vec and self.pmask.any():
            self.k["axpy_multi"](self.x, self.pend, self.p, self.pmask)
        self.pending = 0.0
        self.pmask[:] = 0

    def true_residual(self):
        self._sync()
        if self.vec:
            rr, gg = self.k["csr_residual_gap"](self.indptr, self.indices, self.data, self.B,
                                                self.x, self.r, self.rt, self.part, self.part2)
            self._rr = np.array([rr])
            return np.sqrt(self._rr), np.sqrt(np.array([gg]))
        rr, gg = self.k["csr_residual_gap_multi"](self.indptr, self.indices, self.data, self.B,
                                                  self.x, self.r, self.rt, self.part, self.part2)
        self._rr = rr.copy()
        return np.sqrt(rr), np.sqrt(gg)

    def replace(self, mask):
        # rho of a replaced column: rᵀr from the residual pass (M = None), or recomputed as
        # precondition does; the other columns keep the rho of their update pass, so each
        # column's iterates stay those of its one-column solve
        cached = self._rho_cached
        if self.vec or np.all(mask):
            self.r, self.rt = self.rt, self.r
            self._rho_cached = self._rr.copy() if self.M is None else None
            return
        self.r[:, mask] = self.rt[:, mask]
        if cached is None or (self.M is not None and self.dinv is None):
            self._rho_cached = None
        elif self.M is None:
            self._rho_cached = np.where(mask, self._rr, cached)
        else:  # z of the kept columns is the fused pass's (from r before its rounding)
            self.z[:, mask] = self.dinv[:, None] * self.r[:, mask]
            self._rho_cached = np.where(mask, self._dot(self.r, self.z), cached)

    def precondition(self, active):
        if self.M is None:
            self.z = self.r
            if self._rho_cached is not None:  # rᵀr from the update pass
                return self._rho_cached
            return self._dot(self.r, self.r)
        if self.dinv is not None:
            if self._rho_cached is not None:
                return self._rho_cached
            if self.vec:
                np.multiply(self.dinv, self.r, out=self.z)
            else:
                np.multiply(self.dinv[:, None], self.r, out=self.z)
            return self._dot(self.r, self.z)
        xp = array_namespace(self.r)
        R = self.r[:, None] if self.vec else self.r
        Z = self.M.apply(xp, R, "cols")
        self.z = np.ascontiguousarray(Z[:, 0] if self.vec else Z, dtype=self.dtype)
        return self._dot(self.r, self.z)

    def _dot(self, u, v):
        if self.vec:
            return np.array([self.k["dot_chunked"](u, v, self.part)])
        return self.k["dot_multi"](u, v, self.part)

    def direction(self, beta, active):
        k = self.k
        if self.vec:
            return np.array([self.direction1(float(beta[0]))])
        # the same three passes per column; one read of A for all s columns
        act = np.asarray(active, dtype=np.uint8)
        k["update_xp_multi"](self.x, self.p, self.z, self.pend, self.pmask,
                             np.asarray(beta, dtype=np.float64), act)
        self.pmask[:] = 0
        if self.s % 8 == 0:
            m = self.s // 8
            return k["csr_matmat8_dot"](self.indptr, self.indices, self.data,
                                        self.p.reshape(self.n, m, 8),
                                        self.q.reshape(self.n, m, 8), self.part)
        return k["csr_matmat_dot"](self.indptr, self.indices, self.data, self.p, self.q,
                                   self.part)

    def update(self, alpha, active):
        k = self.k
        if self.vec:
            a = float(alpha[0])
            if self.dinv is not None:
                rr, rz = k["update_r_jacobi"](self.r, self.q, a, self.dinv, self.z, self.part,
                                              self.part2)
                self._rho_cached = np.array([rz])
            else:
                rr = k["update_r"](self.r, self.q, a, self.part)
                self._rho_cached = np.array([rr])
            self.pending = a  # x += a · p is applied by the next pass over p (or _sync)
            return np.sqrt(np.array([rr]))
        a = np.asarray(alpha, dtype=np.float64)
        act = np.asarray(active, dtype=np.uint8)
        if self.dinv is not None:
            rr, rz = k["update_r_jacobi_multi"](self.r, self.q, a, self.dinv, self.z, act,
                                                self.part, self.part2)
            self._rho_cached = rz
        else:
            rr = k["update_r_multi"](self.r, self.q, a, act, self.part)
            self._rho_cached = rr
        # x += a · p on the active columns is applied by the next pass over p (or _sync)
        self.pend[:] = a
        self.pmask[:] = act
        return np.sqrt(rr)

    # ------------------------------------------------------------ one system, Python floats
    # (linalg_pc.solvers._loop.ScalarSteps: the loop's run_one calls these; the array methods
    # above keep the multi-column path and the generic loop)
    def init1(self) -> float:
        return float(self.init()[0])

    def true_residual1(self):
        self._sync()
        rr, gg = self.k["csr_residual_gap"](self.indptr, self.indices, self.data, self.B,
                                            self.x, self.r, self.rt, self.part, self.part2)
        self._rr1 = rr
        return math.sqrt(rr), math.sqrt(gg)

    def replace1(self) -> None:
        self.r, self.rt = self.rt, self.r
        if self.M is None:
            self.z = self.r
            self._rho1 = self._rr1
        else:
            self._rho1 = None

    def precondition1(self) -> float:
        if self.M is None:
            self.z = self.r
            if self._rho1 is not None:  # rᵀr from the update pass
                return self._rho1
            return self.k["dot_chunked"](self.r, self.r, self.part)
        if self.dinv is not None:
            if self._rho1 is not None:
                return self._rho1
            np.multiply(self.dinv, self.r, out=self.z)
            return self.k["dot_chunked"](self.r, self.z, self.part)
        return float(self.precondition(None)[0])

    def direction1(self, beta: float) -> float:
        k = self.k
        # pass 1: x += alpha_prev p (deferred from the previous step), p = z + beta p;
        # pass 2: q = A p and pᵀq
        k["update_xp"](self.x, self.p, self.z, self.pending, beta)
        self.pending = 0.0
        return k["csr_matvec_dot"](self.indptr, self.indices, self.data, self.p, self.q,
                                   self.part)

    def update1(self, alpha: float) -> float:
        k = self.k
        if self.dinv is not None:
            rr, rz = k["update_r_jacobi"](self.r, self.q, alpha, self.dinv, self.z, self.part,
                                          self.part2)
            self._rho1 = rz
        else:
            rr = k["update_r"](self.r, self.q, alpha, self.part)
            self._rho1 = rr
        self.pending = alpha  # x += alpha · p is applied by the next pass over p (or _sync)
        return math.sqrt(rr)

    def current_x(self):
        self._sync()
        return self.x.copy()  # the callback may write to it without changing the solve

    def X(self):
        self._sync()
        return self.x[:, None] if self.vec else self.x
