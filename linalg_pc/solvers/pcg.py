"""Preconditioned conjugate gradients for dense, sparse, operator, multi-RHS and batched systems.

The iteration is Hestenes–Stiefel PCG written exactly as SciPy's ``scipy.sparse.linalg.cg``
(the convergence test at the top of each step on the recursive residual, ``rho = rᵀz``,
``p = z + (rho/rho_prev) p``, ``alpha = rho / pᵀAp``) so that a SciPy user gets the same iterates
and iteration counts, with four additions:

* **True-residual checks.** Every ``check_every`` iterations, and whenever the recursive residual
  passes the test, ``b − A x`` is recomputed and replaces the recursive residual (residual
  replacement, van der Vorst & Ye, SISC 2000). Convergence is declared only on the true residual,
  so low precision cannot report false convergence (the failure mode of cupyx's cg, cupy#7512).
  When the true residual fails the test ``STALL_LIMIT`` times in a row without halving, the
  attainable accuracy of the working precision has been reached: status ``"breakdown"``.
* **Status instead of exceptions.** ``pᵀAp <= 0`` (A not positive definite on the Krylov space)
  or ``rᵀz <= 0`` (M not positive definite) stop that system with ``"indefinite"``; a NaN/inf
  coefficient stops it with ``"nonfinite"``; ``x`` is then the last finite iterate.
* **Several systems at once.** ``b`` of shape (n, s) solves s right-hand sides with one A,
  each column with its own α, β and convergence mask; A of shape (N, n, n) with b (N, n) solves
  N independent systems the same way.
* **Mixed precision.** ``precision="fp32"``: inner PCG in float32 on the scaled residual equation,
  outer iterative refinement with the residual computed in float64 (Wilkinson; Carson & Higham,
  SISC 2018), reaching the float64 residual for κ(A)·u₃₂ ≪ 1.

Cost per iteration: one application of A and of M, 2 dot products and 3 vector updates (5n
flops + the matvec); memory 5 vectors per right-hand side. For scipy.sparse input on the CPU the
iteration runs in three fused Numba passes over the data (linalg_pc._kernels.cpu_solvers), on
all Numba threads from 2 of them (the "stream" policy of linalg_pc._kernels._twins): about
12·nnz + 84·n bytes per iteration (fp64, int32 indices) against ≈ 12·nnz + 172·n for SciPy.
``s`` right-hand sides take the same three passes on row-major (n, s) blocks, reading A once
per iteration for all columns (12·nnz + 4n + 80·n·s bytes).

Error bound: the computed x satisfies ‖b − A x‖ < max(rtol·‖b‖, atol) on the *true* residual
evaluated in the working precision, i.e. up to the rounding of that evaluation,
≈ γ_{nnz_row}·(‖|A||x|‖ + ‖b‖) (Higham, ASNA §7.1), which also limits the reachable rtol.

References
----------
Hestenes & Stiefel, J. Res. NBS 49 (1952); Saad, *Iterative Methods for Sparse Linear Systems*,
2nd ed., Alg. 9.1; van der Vorst & Ye, SISC 22 (2000) on residual replacement.

Examples
--------
>>> import numpy as np, scipy.sparse as sp, linalg_pc as lpc
>>> n = 50
>>> A = sp.diags([-np.ones(n - 1), 2 * np.ones(n), -np.ones(n - 1)], [-1, 0, 1], format="csr")
>>> res = lpc.pcg(A, np.ones(n), rtol=1e-10)
>>> res.status, res.iterations <= n
('converged', True)
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from .._backend import array_namespace, check_finite, device_of, is_numpy, to_numpy
from .._kernels import cpu_solvers as K
from .._kernels._twins import pick
from .._operators import Operator, as_operator, host_or_device_ok
from .._operators import is_complex_dtype as _is_complex
from .._operators import is_integer_dtype as _is_integer

__all__ = ["pcg", "PCGResult", "INNER_RTOL", "STALL_LIMIT", "GAP_RATIO"]

STATUS_NAMES = K.STATUS_NAMES
STALL_LIMIT = K.STALL_LIMIT
GAP_RATIO = K.GAP_RATIO
# inner relative tolerance of the fp32 solves inside iterative refinement: each outer step gains
# about log10(1/INNER_RTOL) ≈ 3.9 digits while staying well above fp32's attainable accuracy.
INNER_RTOL = 2.0**-13
# outer refinement steps at most (each needs a float64 residual)
MAX_REFINE = 40
# batched dense systems up to this size run in the Numba small-system kernel (NumPy input)
SMALL_N = 32


class PCGResult(NamedTuple):
    """Result of :func:`pcg`.

    Attributes
    ----------
    x : array
        The solution, in the caller's library, shape of ``b``.
    converged : bool or numpy.ndarray of bool
        Per system for multi-RHS / batched input.
    iterations : int or numpy.ndarray of int
        CG steps taken (per system).
    residual_norms : numpy.ndarray
        ‖r_k‖ for k = 0..iterations (r₀ included); shape (k+1,) or (k_max+1, s | N), a finished
        column repeating its final value. Entries are the recursive residuals except where a
        true residual replaced them.
    true_residual_norm : float or numpy.ndarray
        ‖b − A x‖ of the returned x, computed in the working precision (float64 with
        ``precision="fp32"``).
    status : str or numpy.ndarray of str
        "converged", "maxiter", "breakdown", "indefinite" or "nonfinite".
    fallback : bool or numpy.ndarray of bool
        Whether a direct solve replaced the PCG iterate (only :func:`solve_degenerate` does).
    """

    x: Any
    converged: Any
    iterations: Any
    residual_norms: np.ndarray
    true_residual_norm: Any
    status: Any
    fallback: Any = False


# --------------------------------------------------------------------------- the driver
class _Raw(NamedTuple):
    X: Any  # internal layout array
    iters: np.ndarray
    hist: np.ndarray  # (k+1, K)
    status: np.ndarray  # int codes
    tnorm: np.ndarray


def _drive(ops, tol: np.ndarray, maxiter: int, check_every: int, callback) -> _Raw:
    """The PCG control loop, shared by every engine (ops does the arithmetic)."""
    Kn = tol.shape[0]
    rn = ops.init()
    hist = [rn.copy()]
    active = np.ones(Kn, dtype=bool)
    status = np.full(Kn, K.MAXITER, dtype=np.int8)
    iters = np.zeros(Kn, dtype=np.int64)
    tnorm = np.full(Kn, -1.0)
    stall = np.zeros(Kn, dtype=np.int64)
    best = np.full(Kn, np.inf)
    rho_prev = np.ones(Kn)
    k = 0
    with np.errstate(all="ignore"):
        while True:
            cand = active & ((rn < tol) | (rn == 0))
            periodic = k > 0 and k % check_every == 0
            if cand.any() or periodic:
                was = active.copy()
                tn, gap = ops.true_residual(active)
                ok = cand & ((tn < tol) | (tn == 0))
                status[ok] = K.CONVERGED
                tnorm[ok] = tn[ok]
                active &= ~ok
                stall = np.where(tn <= 0.5 * best, 0,
                                 np.where(gap >= GAP_RATIO * tn, stall + 1, stall))
                best = np.minimum(best, tn)
                brk = active & (stall >= STALL_LIMIT)
                status[brk] = K.BREAKDOWN
                tnorm[brk] = tn[brk]
                active &= ~brk
                nf = active & ~np.isfinite(tn)
                status[nf] = K.NONFINITE
                active &= ~nf
                rn = np.where(was & np.isfinite(tn), tn, rn)
                hist[-1] = rn.copy()
            if not active.any() or k >= maxiter:
                break
            rho = ops.precondition(active)
            bad = active & ~np.isfinite(rho)
            status[bad] = K.NONFINITE
            active &= ~bad
            bad = active & (rho <= 0)
            status[bad] = K.INDEFINITE
            active &= ~bad
            if not active.any():
                break
            beta = np.where(active, rho / rho_prev, 0.0) if k > 0 else np.zeros(Kn)
            beta = np.where(np.isfinite(beta), beta, 0.0)
            pq = ops.direction(beta, active)
            bad = active & ~np.isfinite(pq)
            status[bad] = K.NONFINITE
            active &= ~bad
            bad = active & (pq <= 0)
            status[bad] = K.INDEFINITE
            active &= ~bad
            if not active.any():
                break
            alpha = np.where(active, rho / pq, 0.0)
            rn_new = ops.update(alpha, active)
            rho_prev = np.where(active, rho, rho_prev)
            k += 1
            iters[active] = k
            rn = np.where(active, rn_new, rn)
            hist.append(rn.copy())
            bad = active & ~np.isfinite(rn)
            status[bad] = K.NONFINITE
            active &= ~bad
            if callback is not None:
                callback(ops.current_x())
        need = tnorm < 0
        if need.any():
            tn, _ = ops.true_residual(np.zeros(Kn, dtype=bool))
            tnorm = np.where(need, tn, tnorm)
    return _Raw(ops.X(), iters, np.asarray(hist, dtype=np.float64), status, tnorm)


# --------------------------------------------------------------------------- generic engine
class _XpOps:
    """Array-API arithmetic for the driver: layouts "cols" (n, s) and "batch" (N, n)."""

    def __init__(self, xp, opA: Operator, opM: Operator | None, B, X0, layout, zero):
        self.xp, self.A, self.M, self.B, self.layout = xp, opA, opM, B, layout
        self.axis = 0 if layout == "cols" else 1
        self.dev = device_of(B)
        self.X0 = X0
        self.zero = zero
        self.single = False

    def _coef(self, c):
        c = self.xp.asarray(np.asarray(c, dtype=np.float64), device=self.dev)
        c = self.xp.astype(c, self.B.dtype)
        return c[None, :] if self.layout == "cols" else c[:, None]

    def _mask(self, m):
        m = self.xp.asarray(np.asarray(m, dtype=bool), device=self.dev)
        return m[None, :] if self.layout == "cols" else m[:, None]

    def _norms(self, R):
        xp = self.xp
        return np.sqrt(np.asarray(to_numpy(xp.sum(R * R, axis=self.axis)), dtype=np.float64))

    def _dots(self, U, V):
        return np.asarray(to_numpy(self.xp.sum(U * V, axis=self.axis)), dtype=np.float64)

    def _matvec(self, X):
        return self.A.apply(self.xp, X, self.layout)

    def init(self):
        xp = self.xp
        zm = self._mask(self.zero)
        if self.X0 is None:
            self.x = xp.zeros_like(self.B)
            self.r = self.B * 1
        else:
            self.x = xp.where(zm, xp.zeros_like(self.X0), self.X0)
            self.r = self.B - self._matvec(self.x)
        self.r = xp.where(zm, xp.zeros_like(self.r), self.r)
        self.p = xp.zeros_like(self.B)
        self.z = self.r
        return self._norms(self.r)

    def true_residual(self, replace):
        rt = self.B - self._matvec(self.x)
        gap = self._norms(self.r - rt)
        if np.any(replace):
            self.r = self.xp.where(self._mask(replace), rt, self.r)
        return self._norms(rt), gap

    def precondition(self, active):
        if self.M is None:
            self.z = self.r
        else:
            self.z = self.M.apply(self.xp, self.r, self.layout)
        return self._dots(self.r, self.z)

    def direction(self, beta, active):
        xp = self.xp
        am = self._mask(active)
        self.p = xp.where(am, self.z + self._coef(beta) * self.p, self.p)
        self.q = self._matvec(self.p)
        return self._dots(self.p, self.q)

    def update(self, alpha, active):
        xp = self.xp
        am = self._mask(active)
        a = self._coef(alpha)
        self.x = xp.where(am, self.x + a * self.p, self.x)
        self.r = xp.where(am, self.r - a * self.q, self.r)
        return self._norms(self.r)

    def current_x(self):
        return self.x[:, 0] if self.single else self.x

    def X(self):
        return self.x


# --------------------------------------------------------------------------- fused CSR engine
def _diagonal_of(M) -> np.ndarray | None:
    """The diagonal of a scipy.sparse M when M is diagonal, else None."""
    Mc = M.tocoo()
    if Mc.nnz and not np.all(Mc.row == Mc.col):
        return None
    return np.asarray(M.diagonal())


class _CsrOps:
    """Fused Numba kernels for scipy.sparse A on NumPy vectors (layout "cols")."""

    def __init__(self, opA: Operator, opM: Operator | None, B, X0, zero, dtype):
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
        self.M = opM
        self.dinv = None
        if opM is not None and opM.kind == "scipy_sparse":
            d = _diagonal_of(opM.obj)
            if d is not None:
                self.dinv = np.ascontiguousarray(d, dtype=dtype)
        shp = (K.NCHUNKS,) if self.vec else (K.NCHUNKS, self.s)
        self.part = np.empty(shp)
        self.part2 = np.empty(shp)
        self._rho_cached = None
        self.single = True
        size = Acsr.nnz * self.s
        self.pending = 0.0  # deferred x += pending · p (one right-hand side)
        # several: x[:, t] += pend[t] · p[:, t] deferred where pmask[t]
        self.pend = np.zeros(self.s)
        self.pmask = np.zeros(self.s, dtype=np.uint8)
        names = ("update_xp", "csr_matvec_dot", "update_r", "update_r_jacobi", "axpy",
                 "csr_residual", "csr_residual_gap", "dot_chunked", "update_xp_multi",
                 "axpy_multi", "csr_matmat_dot", "csr_matmat8_dot", "update_r_multi",
                 "update_r_jacobi_multi", "csr_residual_multi", "csr_residual_gap_multi",
                 "dot_multi")
        self.k = {nm: pick(getattr(K, nm), size, "stream") for nm in names}

    def _residual(self, out):
        k = self.k
        if self.vec:
            return np.array([k["csr_residual"](self.indptr, self.indices, self.data, self.B,
                                               self.x, out, self.part)])
        return k["csr_residual_multi"](self.indptr, self.indices, self.data, self.B, self.x,
                                       out, self.part)

    def init(self):
        B = self.B
        self.x = np.zeros_like(B) if self.X0 is None else self.X0.copy()
        if self.vec:
            if self.zero[0]:
                self.x[:] = 0
        else:
            self.x[:, self.zero] = 0
        if self.X0 is None:  # r = b − A·0 = b exactly: no matvec
            self.r = B.copy()
            rn = self._dot(self.r, self.r)
        else:
            self.r = np.empty_like(B)
            rn = self._residual(self.r)
        self.rt = np.empty_like(B)
        self.p = np.zeros_like(B)  # updated in place
        self.q = np.empty_like(B)
        self.z = self.r if (self.M is None) else np.empty_like(B)
        self._rho_cached = None
        return np.sqrt(rn)

    def _sync(self):
        if self.vec and self.pending != 0.0:
            self.k["axpy"](self.x, self.pending, self.p)
        if not self.vec and self.pmask.any():
            self.k["axpy_multi"](self.x, self.pend, self.p, self.pmask)
        self.pending = 0.0
        self.pmask[:] = 0

    def true_residual(self, replace):
        self._sync()
        if self.vec:
            rr, gg = self.k["csr_residual_gap"](self.indptr, self.indices, self.data, self.B,
                                                self.x, self.r, self.rt, self.part, self.part2)
            if replace[0]:
                self.r, self.rt = self.rt, self.r
                # rᵀr of the new r, summed as dot_chunked would (only M = None has rho = rᵀr)
                self._rho_cached = np.array([rr]) if self.M is None else None
            return np.sqrt(np.array([rr])), np.sqrt(np.array([gg]))
        rr, gg = self.k["csr_residual_gap_multi"](self.indptr, self.indices, self.data, self.B,
                                                  self.x, self.r, self.rt, self.part, self.part2)
        if np.any(replace):
            if np.all(replace):
                self.r, self.rt = self.rt, self.r
            else:
                self.r[:, replace] = self.rt[:, replace]
            # as for one column: rᵀr of the replaced columns from the residual pass (the other
            # columns are finished and their rho is not used)
            self._rho_cached = rr.copy() if self.M is None else None
        return np.sqrt(rr), np.sqrt(gg)

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
            # pass 1: x += alpha_prev p (deferred from the previous step), p = z + beta p;
            # pass 2: q = A p and pᵀq
            k["update_xp"](self.x, self.p, self.z, self.pending, float(beta[0]))
            self.pending = 0.0
            return np.array([k["csr_matvec_dot"](self.indptr, self.indices, self.data, self.p,
                                                 self.q, self.part)])
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

    def current_x(self):
        self._sync()
        return self.x

    def X(self):
        self._sync()
        return self.x[:, None] if self.vec else self.x


# --------------------------------------------------------------------------- validation
def _work_dtype(xp, dts):
    """float64 if any input is float64, else float32 (16-bit inputs compute in float32)."""
    f64 = xp.float64
    for dt in dts:
        if dt is None:
            continue
        if dt == f64 or str(dt) in ("float64", "torch.float64"):
            return f64
        if _is_integer(xp, dt):
            return f64
    return xp.float32


def _check_scalar(name, v, *, integer=False, positive=False):
    if v is None:
        return
    if integer:
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            raise TypeError(f"{name} must be an integer, got {type(v).__name__}")
    elif not isinstance(v, (int, float, np.integer, np.floating)) or isinstance(v, bool):
        raise TypeError(f"{name} must be a real number, got {type(v).__name__}")
    if not np.isfinite(float(v)) or v < 0 or (positive and v == 0):
        raise ValueError(f"{name} must be {'positive' if positive else 'non-negative'} and "
                         f"finite, got {v!r}")


class _Problem(NamedTuple):
    xp: Any
    opA: Operator
    opM: Operator | None
    B: Any
    X0: Any
    layout: str
    shape: str  # "single", "multi", "batched"
    dtype: Any
    tol: np.ndarray
    zero: np.ndarray
    n: int


def _setup(A, b, M, x0, rtol, atol) -> _Problem:
    if b is None or not hasattr(b, "shape"):
        raise TypeError(f"b must be an array, got {type(b).__name__}")
    xp = array_namespace(b)
    if _is_complex(xp, b.dtype):
        raise TypeError(f"b must be real; complex dtype {b.dtype} is not supported")
    opA = as_operator(A, argname="A", xp=xp)
    host_or_device_ok(xp, opA, "A")
    if opA.kind == "batched":
        N, n = opA.obj.shape[0], opA.n
        if b.ndim != 2 or tuple(b.shape) != (N, n):
            raise ValueError(f"b must have shape ({N}, {n}) for A of shape {tuple(opA.obj.shape)}"
                             f", got {tuple(b.shape)}")
        layout, shape = "batch", "batched"
    else:
        if b.ndim not in (1, 2):
            raise ValueError(f"b must be (n,) or (n, s), got shape {tuple(b.shape)}")
        n = b.shape[0]
        if opA.kind == "callable":
            opA.n = n
        if opA.n != n:
            raise ValueError(f"b has {n} rows but A is {opA.n}×{opA.n}")
        layout, shape = "cols", ("single" if b.ndim == 1 else "multi")
    if not _is_integer(xp, b.dtype):
        check_finite(xp, b, "b")
    opM = None
    if M is not None:
        opM = as_operator(M, argname="M", xp=xp, n=n)
        host_or_device_ok(xp, opM, "M")
        if opM.kind == "batched" and (layout != "batch" or opM.obj.shape[0] != b.shape[0]):
            raise ValueError(f"M of shape {tuple(opM.obj.shape)} is a batch of matrices but A/b "
                             f"are not a batch of {b.shape[0]} systems")
    if x0 is not None:
        if tuple(x0.shape) != tuple(b.shape):
            raise ValueError(f"x0 must have the shape of b {tuple(b.shape)}, got "
                             f"{tuple(x0.shape)}")
        if not _is_integer(xp, x0.dtype):
            check_finite(xp, x0, "x0")
    dt = _work_dtype(xp, [b.dtype, None if opA.kind == "callable" else opA.dtype,
                          None if x0 is None else x0.dtype])
    B = xp.astype(b, dt) if b.dtype != dt else b
    B = B[:, None] if shape == "single" else B
    X0 = None
    if x0 is not None:
        X0 = xp.astype(x0, dt) if x0.dtype != dt else x0
        X0 = X0[:, None] if shape == "single" else X0
    if opA.kind in ("dense", "batched") and opA.obj.dtype != dt:
        opA = opA.astype(xp, dt)
    if opM is not None and opM.kind in ("dense", "batched") and opM.obj.dtype != dt:
        opM = opM.astype(xp, dt)
    axis = 0 if layout == "cols" else 1
    bnorm = np.sqrt(np.asarray(to_numpy(xp.sum(B * B, axis=axis)), dtype=np.float64))
    tol = np.maximum(float(atol), float(rtol) * bnorm)
    return _Problem(xp, opA, opM, B, X0, layout, shape, dt, tol, bnorm == 0, n)


def _engine(pb: _Problem, callback, maxiter) -> str:
    xp = pb.xp
    if not is_numpy(xp) or np.dtype(pb.dtype) not in (np.float32, np.float64):
        return "xp"
    if pb.opA.kind == "scipy_sparse" and pb.layout == "cols":
        return "csr"
    if (pb.opA.kind == "batched" and pb.n <= SMALL_N and callback is None
            and (pb.opM is None or pb.opM.kind in ("batched", "dense"))
            and pb.B.shape[0] * (maxiter + 1) <= 50_000_000):
        return "small"
    return "xp"


def _solve(pb: _Problem, maxiter, check_every, callback, tol=None) -> _Raw:
    tol = pb.tol if tol is None else tol
    eng = _engine(pb, callback, maxiter)
    if eng == "small":
        return _solve_small(pb, maxiter, check_every, tol)
    if eng == "csr":
        ops = _CsrOps(pb.opA, pb.opM, np.asarray(pb.B), pb.X0, pb.zero, np.dtype(pb.dtype))
    else:
        ops = _XpOps(pb.xp, pb.opA, pb.opM, pb.B, pb.X0, pb.layout, pb.zero)
    ops.single = pb.shape == "single"
    return _drive(ops, tol, maxiter, check_every, callback)


def _solve_small(pb: _Problem, maxiter, check_every, tol) -> _Raw:
    """Batched small dense systems in the Numba kernel."""
    A = np.ascontiguousarray(pb.opA.obj)
    B = np.ascontiguousarray(pb.B)
    N, n = B.shape
    if pb.opM is None:
        Mm, use_m = np.zeros((1, n, n), dtype=A.dtype), False
    elif pb.opM.kind == "dense":
        Mm, use_m = np.broadcast_to(np.asarray(pb.opM.obj), (N, n, n)), True
    else:
        Mm, use_m = np.ascontiguousarray(pb.opM.obj), True
    x = np.zeros_like(B) if pb.X0 is None else np.array(pb.X0, dtype=B.dtype, copy=True)
    x[pb.zero] = 0
    iters = np.zeros(N, dtype=np.int64)
    status = np.zeros(N, dtype=np.int8)
    tnorm = np.zeros(N)
    hist = np.empty((N, maxiter + 1))
    kern = pick(K.pcg_small_batch, N * n * n * 8)
    kern(A, B, Mm, use_m, x, np.ascontiguousarray(tol, dtype=np.float64), int(maxiter),
         int(check_every), iters, status, tnorm, hist)
    return _Raw(x, iters, K.trim_history(hist, iters), status, tnorm)


# --------------------------------------------------------------------------- refinement
def _refine(pb: _Problem, maxiter, check_every, callback) -> _Raw:
    """fp32 inner PCG + fp64 residuals (iterative refinement)."""
    xp = pb.xp
    f32 = xp.float32
    opA32 = pb.opA.astype(xp, f32)
    opM32 = None if pb.opM is None else pb.opM.astype(xp, f32)
    axis = 0 if pb.layout == "cols" else 1
    Kn = pb.tol.shape[0]

    def coef(c, dtype):
        c = xp.astype(xp.asarray(np.asarray(c, dtype=np.float64), device=device_of(pb.B)), dtype)
        return c[None, :] if pb.layout == "cols" else c[:, None]

    def norms(R):
        return np.sqrt(np.asarray(to_numpy(xp.sum(R * R, axis=axis)), dtype=np.float64))

    X = xp.zeros_like(pb.B) if pb.X0 is None else pb.X0 * 1
    if pb.zero.any():
        X = X * coef(~pb.zero, pb.dtype)
    R = pb.B - pb.opA.apply(xp, X, pb.layout)
    rn = norms(R)
    hist = [rn.copy()]
    active = np.ones(Kn, dtype=bool)
    status = np.full(Kn, K.MAXITER, dtype=np.int8)
    iters = np.zeros(Kn, dtype=np.int64)
    stall = np.zeros(Kn, dtype=np.int64)
    with np.errstate(all="ignore"):
        for _outer in range(MAX_REFINE):
            ok = active & ((rn < pb.tol) | (rn == 0))
            status[ok] = K.CONVERGED
            active &= ~ok
            remaining = maxiter - (int(iters[active].max()) if active.any() else 0)
            if not active.any() or remaining <= 0:
                break
            scale = np.where(active, rn, 1.0)
            R32 = xp.astype(R * coef(np.where(active, 1.0 / scale, 0.0), pb.dtype), f32)
            zero = ~active
            inner = _Problem(xp, opA32, opM32, R32, None, pb.layout, pb.shape, f32,
                             np.zeros(Kn), zero, pb.n)
            raw = _solve(inner, remaining, check_every, None,
                         tol=np.where(active, INNER_RTOL, 0.0))
            D = xp.astype(raw.X, pb.dtype) * coef(np.where(active, scale, 0.0), pb.dtype)
            X = X + D
            it = np.where(active, raw.iters, 0)
            iters += it
            h = raw.hist[1:] * scale[None, :]
            h = np.where(active[None, :], h, rn[None, :])
            hist.extend(list(h))
            bad = active & np.isin(raw.status, (K.INDEFINITE, K.NONFINITE))
            status[bad] = raw.status[bad]
            active &= ~bad
            R = pb.B - pb.opA.apply(xp, X, pb.layout)
            new = norms(R)
            stall = np.where(active & ~(new <= 0.5 * rn), stall + 1, 0)
            brk = active & (stall >= STALL_LIMIT) & ~(new < pb.tol)
            status[brk] = K.BREAKDOWN
            active &= ~brk
            rn = np.where(np.isfinite(new), new, rn)
            if len(hist) > 1:
                hist[-1] = rn.copy()
            if callback is not None:
                callback(X[:, 0] if pb.shape == "single" else X)
        ok = active & ((rn < pb.tol) | (rn == 0))
        status[ok] = K.CONVERGED
    return _Raw(X, iters, np.asarray(hist, dtype=np.float64), status, rn)


# --------------------------------------------------------------------------- public
def pcg(A, b, *, M=None, x0=None, rtol: float = 1e-5, atol: float = 0.0, maxiter=None,
        callback=None, check_every: int = 25, precision=None) -> PCGResult:
    """Solve A x = b for symmetric positive definite A by preconditioned conjugate gradients.

    Parameters
    ----------
    A : array (n, n) or (N, n, n), scipy.sparse / cupyx sparse matrix, LinearOperator, callable
        The operator. A dense (N, n, n) array is a batch of N independent systems (then b is
        (N, n)). A callable maps a vector (n,) to A x (called once per column for b (n, s)).
    b : array (n,), (n, s) or (N, n)
        Right-hand side(s), in any supported library (NumPy for SciPy operators, CuPy for cupyx
        sparse).
    M : same kinds as A, optional
        Preconditioner approximating A⁻¹ (SciPy's convention: z = M r). For batched systems a
        dense (N, n, n) batch, one dense (n, n) matrix shared by all, or a callable applied
        to each system's vector.
    x0 : array shaped like b, optional
        Starting guess (zero by default).
    rtol, atol : float
        Stop when ‖r‖ < max(rtol·‖b‖, atol), per right-hand side, SciPy's rule and defaults.
    maxiter : int, optional
        Iterations at most (per system); default 10·n as SciPy.
    callback : callable, optional
        ``callback(xk)`` after every iteration, xk the current iterate (shape of b).
    check_every : int
        Recompute the true residual ``b − A x`` every this many iterations (and always before
        declaring convergence). Costs one extra matvec per ``check_every`` iterations.
    precision : None, "fp64" or "fp32"
        "fp32": float32 inner iterations with float64 iterative refinement (float64 inputs).

    Returns
    -------
    PCGResult
        ``(x, converged, iterations, residual_norms, true_residual_norm, status, fallback)``;
        scalars for b (n,), NumPy arrays over the systems otherwise.

    Raises
    ------
    ValueError
        Non-square A or M, b or x0 of the wrong shape, NaN/inf entries in A, M, b or x0,
        negative tolerances, ``check_every < 1``.
    TypeError
        Complex data, or arrays of different libraries.

    Notes
    -----
    Iterations, convergence test and update order follow ``scipy.sparse.linalg.cg``; with
    ``check_every`` larger than the iteration count the iterates are SciPy's up to the order of
    floating-point summation. Unlike SciPy, a solve whose residual passes the test at exactly
    ``maxiter`` reports "converged". See the module docstring for the error bound and costs.

    Examples
    --------
    >>> import numpy as np, linalg_pc as lpc
    >>> A = np.array([[4.0, 1.0], [1.0, 3.0]])
    >>> res = lpc.pcg(A, np.array([1.0, 2.0]), rtol=1e-12)
    >>> bool(np.allclose(A @ res.x, [1.0, 2.0])), res.status
    (True, 'converged')
    """
    _check_scalar("rtol", rtol)
    _check_scalar("atol", atol)
    _check_scalar("maxiter", maxiter, integer=True)
    _check_scalar("check_every", check_every, integer=True, positive=True)
    if precision not in (None, "fp64", "fp32", "float64", "float32"):
        raise ValueError(f"precision must be None, 'fp64' or 'fp32', got {precision!r}")
    if callback is not None and not callable(callback):
        raise TypeError("callback must be callable")
    pb = _setup(A, b, M, x0, rtol, atol)
    xp = pb.xp
    if maxiter is None:
        maxiter = 10 * pb.n
    if precision in ("fp32", "float32") and pb.dtype == xp.float64:
        raw = _refine(pb, int(maxiter), int(check_every), callback)
    else:
        raw = _solve(pb, int(maxiter), int(check_every), callback)
    X = raw.X
    if not hasattr(X, "shape") or array_namespace(X) is not array_namespace(pb.B):
        X = xp.asarray(X, device=device_of(pb.B))
    names = np.array(STATUS_NAMES)[raw.status]
    conv = raw.status == K.CONVERGED
    if pb.shape == "single":
        return PCGResult(X[:, 0], bool(conv[0]), int(raw.iters[0]), raw.hist[:, 0],
                         float(raw.tnorm[0]), str(names[0]), False)
    return PCGResult(X, conv, raw.iters, raw.hist, raw.tnorm, names,
                     np.zeros(conv.shape, dtype=bool))
