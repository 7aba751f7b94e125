"""Preconditioned conjugate gradients for dense, sparse, operator, multi-RHS and batched systems.

The iteration is Hestenes–Stiefel PCG written exactly as SciPy's ``scipy.sparse.linalg.cg``
(the convergence test at the top of each step on the recursive residual, ``rho = rᵀz``,
``p = z + (rho/rho_prev) p``, ``alpha = rho / pᵀAp``) so that a SciPy user gets the same iterates
and iteration counts, with four additions:

The loop (stopping test, checks, stall rule, status) is written once, in
``linalg_pc.solvers._loop``, over engines that do the arithmetic; status codes and constants are
those of ``linalg_pc.solvers._status``.

* **True-residual checks.** Every ``check_every`` iterations, and whenever the recursive residual
  passes the test, ``b − A x`` is recomputed; it replaces the recursive residual where that one
  passed the test and it did not, or where the two have drifted apart (van der Vorst & Ye,
  SISC 2000: drift > √u·‖r‖, and ≥ 10% of the tolerance), so that the checks cost no
  iterations against SciPy. Convergence is declared only on the true residual,
  so low precision cannot report false convergence (the failure mode of cupyx's cg, cupy#7512).
  When the true residual fails the test ``STALL_LIMIT`` times in a row without halving, the
  attainable accuracy of the working precision has been reached: status ``"breakdown"``.
* **Status instead of exceptions.** ``pᵀAp <= 0`` (A not positive definite on the Krylov space)
  or ``rᵀz <= 0`` (M not positive definite) stop that system with ``"indefinite"``; a NaN/inf
  coefficient stops it with ``"nonfinite"``; ``x`` is then the last finite iterate.
* **No flushing.** A right-hand side whose squares underflow (fp32 ‖b‖ = 5e-42) is scaled by a
  power of two (with x0 and atol) and the result scaled back: exact, where x = 0 "converged"
  was returned before.
* **Several systems at once.** ``b`` of shape (n, s) solves s right-hand sides with one A,
  each column with its own α, β and convergence mask; A of shape (N, n, n) with b (N, n) solves
  N independent systems the same way.
* **Mixed precision.** ``compute="fp32"`` on float64 data: inner PCG in float32 on the scaled
  residual equation, outer iterative refinement with the residual computed in float64
  (Wilkinson; Carson & Higham, SISC 2018), reaching the float64 residual for κ(A)·u₃₂ ≪ 1.

Cost per iteration: one application of A and of M, 2 dot products and 3 vector updates (5n
flops + the matvec); memory 5 vectors per right-hand side. For scipy.sparse input on the CPU the
iteration runs in three fused Numba passes over the data (linalg_pc._kernels.cpu_csr), on all
Numba threads from 2 of them (the "stream" policy of linalg_pc._kernels._twins): about
12·nnz + 84·n bytes per iteration (fp64, int32 indices) against ≈ 12·nnz + 172·n for SciPy;
the loop's rules run on Python floats for one right-hand side, and SciPy sparse A is checked
for finite entries by one vectorized sum. The work vectors come from recycled memory
(linalg_pc._buffers), so repeated solves of one size do not fault fresh pages in.
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

import warnings
from typing import Any, NamedTuple

import numpy as np

from .._backend import (
    array_namespace,
    check_finite,
    device_of,
    namespace_name,
    native_dtype,
    to_numpy,
)
from .._backend.dask import dispatch
from .._kernels.capability import cpu_solver_kernels
from .._kernels.cpu_pcg_small import run_pcg_small
from .._operators import Operator, as_operator, host_or_device_ok, is_array
from .._operators import is_complex_dtype as _is_complex
from .._operators import is_integer_dtype as _is_integer
from .._policy import Precision
from ._engine_csr import CsrEngine, is_host_sparse, sparse_entries_finite, sum_squares
from ._engine_xp import XpEngine
from ._loop import LoopResult, Stopping, run, trim_history
from ._pcg_input import m_times_b, times_pow2, underflow_exponents
from ._status import (
    CONVERGED,
    GAP_RATIO,
    INDEFINITE,
    KERNEL_CODES,
    NONFINITE,
    STALL_LIMIT,
    STATUS_NAMES,
    STOP_RULE,
    status_names,
)

__all__ = ["pcg", "PCGResult", "INNER_RTOL", "STALL_LIMIT", "GAP_RATIO", "STATUS_NAMES"]
# inner relative tolerance of the fp32 solves inside iterative refinement: each outer step gains
# about log10(1/INNER_RTOL) ≈ 3.9 digits while staying well above fp32's attainable accuracy.
INNER_RTOL = 2.0**-13
# unit roundoff of the inner fp32 solves
U32 = 2.0**-24
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
        ``compute="fp32"``).
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


# --------------------------------------------------------------------------- validation
def _formats(dts, compute: Precision):
    """(working format, refine) for input dtypes ``dts`` (None entries skipped) and the caller's
    ``compute``, by the rule of linalg_pc._policy over several inputs.

    The default compute of each input is its own format, at least fp32 (integers: fp64); the
    working format is the widest of them, or fp64 when ``compute="fp64"`` is asked. With
    ``compute="fp32"`` and an fp64 working format the solve is fp32 PCG inside fp64 iterative
    refinement (``refine`` True).
    """
    fmts = [Precision().resolve(dt).compute for dt in dts if dt is not None]
    work = min(fmts, key=lambda f: f.unit_roundoff)
    req = compute.compute
    if req is not None and req.unit_roundoff < work.unit_roundoff:
        work = req
    return work, (req is not None and req.unit_roundoff > work.unit_roundoff)


def _check_scalar(name, v, *, integer=False, positive=False, inf_ok=False):
    if v is None:
        return
    if integer:
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            raise TypeError(f"{name} must be an integer, got {type(v).__name__}")
    elif not isinstance(v, (int, float, np.integer, np.floating)) or isinstance(v, bool):
        raise TypeError(f"{name} must be a real number, got {type(v).__name__}")
    finite = np.isfinite(float(v)) or (inf_ok and float(v) == np.inf)
    if not finite or v < 0 or (positive and v == 0):
        raise ValueError(f"{name} must be {'positive' if positive else 'non-negative'} and "
                         f"{'not NaN' if inf_ok else 'finite'}, got {v!r}")


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
    u: float  # unit roundoff of the working format
    scale: np.ndarray  # (K,) int exponents e: B and X0 were multiplied by 2^e (0: none)
    bsq: float | None = None  # bᵀb by the CSR engine's chunked order (one host right-hand side)


def _setup(A, b, M, x0, rtol, atol, compute: Precision) -> tuple[_Problem, bool]:
    if b is None or not hasattr(b, "shape"):
        raise TypeError(f"b must be an array, got {type(b).__name__}")
    xp = array_namespace(b)
    if _is_complex(xp, b.dtype):
        raise TypeError(f"b must be real; complex dtype {b.dtype} is not supported")
    # SciPy sparse A: its entries are checked here by one vectorized sum (the generic check's
    # BLAS dot woke OpenBLAS's threads: 0.4 ms idle, 10 ms on a busy 2-core machine at 40³)
    host_sparse = is_host_sparse(A)
    opA = as_operator(A, argname="A", xp=xp, check_entries=not host_sparse)
    if host_sparse and not sparse_entries_finite(A):
        raise ValueError("A has non-finite entries (NaN or inf)")
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
    if any(int(s) == 0 for s in b.shape):
        raise ValueError(f"b is empty (shape {tuple(b.shape)}): there is no system to solve")
    # one float64 host vector for a SciPy sparse A: bᵀb in one pass checks b (a NaN or inf
    # makes it non-finite) and its scale, and is the engine's first ‖r‖² (None: the checks
    # below, for a b that fails or may need the underflow scaling)
    bsq = sum_squares(b) if host_sparse else None
    if bsq is None and not _is_integer(xp, b.dtype):
        check_finite(xp, b, "b")
    opM = None
    if M is not None:
        opM = as_operator(M, argname="M", xp=xp, n=n)
        host_or_device_ok(xp, opM, "M")
        if opM.kind == "batched" and (layout != "batch" or opM.obj.shape[0] != b.shape[0]):
            raise ValueError(f"M of shape {tuple(opM.obj.shape)} is a batch of matrices but A/b "
                             f"are not a batch of {b.shape[0]} systems")
    if x0 is not None:
        if not is_array(x0):
            raise TypeError(f"x0 must be None, an array or 'Mb', got {type(x0).__name__}")
        if namespace_name(array_namespace(x0)) != namespace_name(xp):
            raise TypeError(f"x0 is a {namespace_name(array_namespace(x0))} array but b is a "
                            f"{namespace_name(xp)} array; pass arrays of one library")
        if tuple(x0.shape) != tuple(b.shape):
            raise ValueError(f"x0 must have the shape of b {tuple(b.shape)}, got "
                             f"{tuple(x0.shape)}")
        if not _is_integer(xp, x0.dtype):
            check_finite(xp, x0, "x0")
    work, refine = _formats([b.dtype, None if opA.kind == "callable" else opA.dtype,
                             None if x0 is None else x0.dtype], compute)
    dt = native_dtype(xp, work)
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
    if bsq is not None and b.dtype == dt:  # b's entries are finite, their squares do not
        scale = np.zeros(1, dtype=np.int64)  # underflow: no scaling
        bnorm = np.array([np.sqrt(bsq)])
    else:
        bsq = None
        scale = underflow_exponents(xp, B, X0, axis, work)
        if np.any(scale != 0):
            B = times_pow2(xp, B, scale, layout)
            X0 = None if X0 is None else times_pow2(xp, X0, scale, layout)
        bnorm = np.sqrt(np.asarray(to_numpy(xp.sum(B * B, axis=axis)), dtype=np.float64))
    rel = np.where(bnorm > 0, float(rtol) * np.where(bnorm > 0, bnorm, 1.0), 0.0)
    tol = np.maximum(np.ldexp(float(atol), scale), rel)
    return (_Problem(xp, opA, opM, B, X0, layout, shape, dt, tol, bnorm == 0, n,
                     work.unit_roundoff, scale, bsq), refine)


def _engine(pb: _Problem, callback, maxiter) -> str:
    """"csr" (fused Numba passes), "small" (batched small systems in one Numba kernel) or "xp"
    (the generic array-API engine), by what the CPU kernels can take."""
    if not cpu_solver_kernels(pb.xp, pb.dtype):
        return "xp"
    if pb.opA.kind == "scipy_sparse" and pb.layout == "cols":
        return "csr"
    if (pb.opA.kind == "batched" and pb.n <= SMALL_N and callback is None
            and (pb.opM is None or pb.opM.kind in ("batched", "dense"))
            and pb.B.shape[0] * (maxiter + 1) <= 50_000_000):
        return "small"
    return "xp"


def _solve(pb: _Problem, maxiter, check_every, callback, tol=None) -> LoopResult:
    tol = pb.tol if tol is None else tol
    kind = _engine(pb, callback, maxiter)
    if kind == "small":
        return _solve_small(pb, maxiter, check_every, tol)
    if kind == "csr":
        eng = CsrEngine(pb.opA, pb.opM, np.asarray(pb.B), pb.X0, pb.zero, np.dtype(pb.dtype),
                        bsq=pb.bsq)
    else:
        eng = XpEngine(pb.xp, pb.opA, pb.opM, pb.B, pb.X0, pb.layout, pb.zero)
    eng.single = pb.shape == "single"
    return run(eng, tol, maxiter, check_every, callback, STOP_RULE, pb.u)


def _solve_small(pb: _Problem, maxiter, check_every, tol) -> LoopResult:
    """Batched small dense systems in the Numba kernel (the rules of the loop, in Numba)."""
    B = np.asarray(pb.B)
    x0 = np.zeros_like(B) if pb.X0 is None else np.asarray(pb.X0)
    x0 = np.where(pb.zero[:, None], 0, x0).astype(B.dtype)
    M = None if pb.opM is None else np.asarray(pb.opM.obj)
    o = run_pcg_small(np.asarray(pb.opA.obj), B, M, x0, tol, maxiter, check_every,
                      KERNEL_CODES, STOP_RULE)
    return LoopResult(o.x, o.iterations, trim_history(o.history, o.iterations), o.status,
                      o.true_residual_norm)


# --------------------------------------------------------------------------- refinement
def _refine(pb: _Problem, maxiter, check_every, callback) -> LoopResult:
    """fp32 inner PCG + fp64 residuals (iterative refinement); the outer steps are checks of
    :class:`linalg_pc.solvers._loop.Stopping` on the fp64 true residual, with the drift taken as
    unbounded (an outer step that does not halve the best residual counts as stalled)."""
    xp = pb.xp
    f32 = native_dtype(xp, "fp32")
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
    st = Stopping(pb.tol, STOP_RULE, best=rn)
    iters = np.zeros(Kn, dtype=np.int64)
    unbounded = np.full(Kn, np.inf)
    with np.errstate(all="ignore"):
        st.end(st.passes(rn), CONVERGED)
        for _outer in range(MAX_REFINE):
            active = st.active.copy()
            remaining = maxiter - (int(iters[active].max()) if active.any() else 0)
            if not active.any() or remaining <= 0:
                break
            scale = np.where(active, rn, 1.0)
            R32 = xp.astype(R * coef(np.where(active, 1.0 / scale, 0.0), pb.dtype), f32)
            inner = _Problem(xp, opA32, opM32, R32, None, pb.layout, pb.shape, f32,
                             np.zeros(Kn), ~active, pb.n, U32,
                             np.zeros(Kn, dtype=np.int64))
            raw = _solve(inner, remaining, check_every, None,
                         tol=np.where(active, INNER_RTOL, 0.0))
            D = xp.astype(raw.X, pb.dtype) * coef(np.where(active, scale, 0.0), pb.dtype)
            X = X + D
            iters += np.where(active, raw.iters, 0)
            h = raw.hist[1:] * scale[None, :]
            hist.extend(list(np.where(active[None, :], h, rn[None, :])))
            bad = active & np.isin(raw.status, (INDEFINITE, NONFINITE))
            st.status[bad] = raw.status[bad]
            st.active &= ~bad
            R = pb.B - pb.opA.apply(xp, X, pb.layout)
            new = norms(R)
            st.check(st.active.copy(), new, unbounded)
            rn = np.where(np.isfinite(new), new, rn)
            if len(hist) > 1:
                hist[-1] = rn.copy()
            if callback is not None:  # a copy: the callback may write to it
                callback(xp.asarray(X[:, 0] if pb.shape == "single" else X, copy=True))
    return LoopResult(X, iters, np.asarray(hist, dtype=np.float64), st.status, rn)


# --------------------------------------------------------------------------- public
def pcg(A, b, *, M=None, x0=None, rtol: float = 1e-5, atol: float = 0.0, maxiter=None,
        callback=None, check_every: int = 25, compute=None, precision=None,
        engine=None) -> PCGResult:
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
    x0 : array shaped like b, or "Mb", optional
        Starting guess (zero by default); "Mb" starts from M b (b without M), as SciPy.
    rtol, atol : float
        Stop when ‖r‖ < max(rtol·‖b‖, atol), per right-hand side, SciPy's rule and defaults
        (non-negative; inf stops at once).
    maxiter : int, optional
        Iterations at most (per system); default 10·n as SciPy.
    callback : callable, optional
        ``callback(xk)`` after every iteration, xk a copy of the current iterate (shape of b:
        writing to it does not change the solve).
    check_every : int
        Recompute the true residual ``b − A x`` every this many iterations (and always before
        declaring convergence). Costs one extra matvec per ``check_every`` iterations.
    compute : None, "fp32" or "fp64" (or a dtype / Format of those)
        The arithmetic (linalg_pc._policy, docs/precision.md). Default: the widest of the
        inputs' default computes (each input's own format, at least fp32; integers fp64), so
        fp64 in computes in fp64 and fp32 / 16-bit in computes in fp32. "fp64" on fp32 data
        computes in fp64. "fp32" on fp64 data: float32 inner iterations with float64 iterative
        refinement (the residual and x in float64). x comes back in the working format.
    precision : None, "fp64" or "fp32"
        Deprecated alias of ``compute`` (DeprecationWarning); passing both raises.
    engine : None, "actors", "tasks" or "collections"
        Dask arrays only: how the distributed iteration runs (docs/distributed.md). None picks
        the actors (fastest) when a ``distributed`` Client is in use and A, M are Dask arrays of
        NumPy or SciPy blocks; "tasks" keeps every step a Dask task, which Dask recomputes when
        a worker is lost. Any value other than None raises ValueError for local inputs.

    Returns
    -------
    PCGResult
        ``(x, converged, iterations, residual_norms, true_residual_norm, status, fallback)``;
        scalars for b (n,), NumPy arrays over the systems otherwise.

    Raises
    ------
    ValueError
        Non-square A or M, b or x0 of the wrong shape, NaN/inf entries in A, M, b or x0,
        negative tolerances, ``check_every < 1``, an unknown ``compute``, both ``compute`` and
        ``precision``, a string x0 other than "Mb"; an operator or callable A or M whose
        result has the wrong shape (at its first application).
    TypeError
        Complex data (arrays, or an operator of complex dtype; a callable or operator whose
        result is complex, at its first application), ``rtol`` or ``atol`` None, an operator
        returning None or arrays of another library, or arrays of different libraries.

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
    for name, v in (("rtol", rtol), ("atol", atol)):
        if v is None:  # SciPy's removed legacy atol=None: a clear error, as SciPy's own
            raise TypeError(f"{name} must be a real, non-negative number, got None (the "
                            f"default is {name}={1e-5 if name == 'rtol' else 0.0})")
    _check_scalar("rtol", rtol, inf_ok=True)  # inf: stop at once, as SciPy
    _check_scalar("atol", atol, inf_ok=True)
    _check_scalar("maxiter", maxiter, integer=True)
    _check_scalar("check_every", check_every, integer=True, positive=True)
    compute = _compute_arg(compute, precision)
    if (dist := dispatch("pcg", A, b, M, x0)) is not None:  # Dask arrays or operator
        return dist(A, b, M=M, x0=x0, rtol=rtol, atol=atol, maxiter=maxiter,
                    callback=callback, check_every=check_every, compute=compute,
                    engine=engine)
    if engine is not None:
        raise ValueError(f"engine={engine!r} applies to Dask arrays only (the distributed "
                         f"PCG); leave it None for local inputs")
    if isinstance(x0, str):
        if x0 != "Mb":
            raise ValueError(f"x0 must be an array, None or 'Mb' (SciPy's x0 = M b), got "
                             f"{x0!r}")
        x0 = m_times_b(A, b, M)
    if callback is not None and not callable(callback):
        raise TypeError("callback must be callable")
    pb, refine = _setup(A, b, M, x0, rtol, atol, compute)
    xp = pb.xp
    if maxiter is None:
        maxiter = 10 * pb.n
    scaled = bool(np.any(pb.scale != 0))
    if scaled and callback is not None:
        inv = -pb.scale
        user_cb = callback

        def callback(xk):
            if pb.shape == "single":
                user_cb(times_pow2(xp, xk[:, None], inv, "cols")[:, 0])
            else:
                user_cb(times_pow2(xp, xk, inv, pb.layout))
    if refine:
        raw = _refine(pb, int(maxiter), int(check_every), callback)
    else:
        raw = _solve(pb, int(maxiter), int(check_every), callback)
    if scaled:  # back to the caller's b (exact: powers of two)
        raw = raw._replace(hist=np.ldexp(raw.hist, -pb.scale[None, :]),
                           tnorm=np.ldexp(raw.tnorm, -pb.scale))
    X = raw.X
    if scaled:
        X = times_pow2(xp, X, -pb.scale, pb.layout)
    if not hasattr(X, "shape") or array_namespace(X) is not array_namespace(pb.B):
        X = xp.asarray(X, device=device_of(pb.B))
    names = status_names(raw.status)
    conv = raw.status == CONVERGED
    if pb.shape == "single":
        return PCGResult(X[:, 0], bool(conv[0]), int(raw.iters[0]), raw.hist[:, 0],
                         float(raw.tnorm[0]), str(names[0]), False)
    return PCGResult(X, conv, raw.iters, raw.hist, raw.tnorm, names,
                     np.zeros(conv.shape, dtype=bool))


def _compute_arg(compute, precision) -> Precision:
    """The caller's ``compute`` as a Precision; ``precision`` is its deprecated alias."""
    if precision is not None:
        if precision not in ("fp64", "fp32", "float64", "float32"):
            raise ValueError(f"precision must be None, 'fp64' or 'fp32', got {precision!r}")
        if compute is not None:
            raise ValueError("pass compute= only: precision= is its deprecated alias, and both "
                             f"were given (compute={compute!r}, precision={precision!r})")
        warnings.warn("pcg(precision=...) is deprecated; use compute=...", DeprecationWarning,
                      stacklevel=3)
        compute = precision
    return Precision(compute=compute)
