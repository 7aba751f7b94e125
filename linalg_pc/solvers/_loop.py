"""The one PCG loop: stopping test, true-residual checks and replacement, stall detection, history
and status, over any engine that does the arithmetic.

An :class:`Engine` holds the vectors of K systems (K right-hand sides of one A, or K independent
systems) in its own layout and library and exposes the five steps of Hestenes–Stiefel PCG as
SciPy's ``cg`` orders them; :func:`run` owns every decision. Engines today: the generic array-API
engine (:mod:`linalg_pc.solvers._engine_xp`: dense, operator and batched systems in any
namespace) and the fused Numba CSR passes (:mod:`linalg_pc.solvers._engine_csr`). The batched
small-system kernel (:mod:`linalg_pc._kernels.cpu_pcg_small`) runs the same rules inside Numba,
with the codes and constants of :mod:`linalg_pc.solvers._status` passed in.

:class:`Stopping` is the state of the rules (active mask, status, best true residual, stall
counts); the iterative refinement of ``pcg(compute="fp32")`` uses it for its outer loop as well.

The rules, per system (van der Vorst & Ye, SISC 22, 2000 for the residual replacement):

1. Before each step, the recursive residual ‖r‖ is tested against max(rtol·‖b‖, atol); a pass,
   or every ``check_every`` steps, triggers a true-residual check: ``b − A x`` is recomputed and
   convergence is declared only when *it* passes the test. It replaces r where r passed the test
   and it did not, and where r has drifted from it by more than both ``u^replace_power·‖r‖``
   (van der Vorst & Ye's criterion, ε̂ = √u) and ``gap_ratio·tol`` (a drift below it cannot
   keep the true residual from passing the test once ‖r‖ < (1 − gap_ratio)·tol); see
   :class:`linalg_pc.solvers._status.StopRule`. An r that has not drifted is kept: replacing
   it only perturbs the recurrence and costs iterations.
2. At a check, the stall rule of :class:`linalg_pc.solvers._status.StopRule` counts stalled
   checks; ``stall_limit`` of them in a row end the system with "breakdown"; a non-finite true
   residual ends it with "nonfinite".
3. ``rho = rᵀz`` and ``pᵀAp`` must be finite ("nonfinite" otherwise) and positive
   ("indefinite"); a non-finite updated residual ends the system with "nonfinite".
4. A system still running after ``maxiter`` steps ends with "maxiter".
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple, Protocol

import numpy as np

from ._status import BREAKDOWN, CONVERGED, INDEFINITE, MAXITER, NONFINITE, STOP_RULE, StopRule

__all__ = ["Engine", "ScalarSteps", "Stopping", "LoopResult", "run", "run_one", "trim_history"]


class Engine(Protocol):
    """The arithmetic of PCG on K systems; every method takes/returns float64 NumPy arrays (K,).

    ``active`` masks the systems still iterating (an engine must leave the others unchanged).
    """

    def init(self) -> np.ndarray:
        """Set x = x0 (0 for a zero right-hand side), r = b − A x, p = 0; return ‖r‖."""

    def true_residual(self) -> tuple[np.ndarray, np.ndarray]:
        """Compute and keep rt = b − A x; return (‖rt‖, ‖r − rt‖)."""

    def replace(self, mask: np.ndarray) -> None:
        """Replace r by the rt of the last :meth:`true_residual` where ``mask``."""

    def precondition(self, active: np.ndarray) -> np.ndarray:
        """z = M r (z = r without M); return rho = rᵀz."""

    def direction(self, beta: np.ndarray, active: np.ndarray) -> np.ndarray:
        """p = z + beta p where active; q = A p; return pᵀq."""

    def update(self, alpha: np.ndarray, active: np.ndarray) -> np.ndarray:
        """x += alpha p, r −= alpha q where active; return ‖r‖."""

    def current_x(self) -> Any:
        """A copy of the current iterate in the caller's shape (for a callback, which may
        write to it)."""

    def X(self) -> Any:
        """The final iterate in the engine's layout."""


class LoopResult(NamedTuple):
    """What :func:`run` returns: X in the engine's layout; per system (K,) iterations, int8
    status codes and true residual norms; the history (k + 1, K)."""

    X: Any
    iters: np.ndarray
    hist: np.ndarray
    status: np.ndarray
    tnorm: np.ndarray


class Stopping:
    """The stopping state of K systems under one :class:`StopRule` (see the module docstring).

    ``tnorm`` holds the true residual where a check ended a system, -1 elsewhere.
    """

    def __init__(self, tol: np.ndarray, rule: StopRule = STOP_RULE, best=None):
        K = tol.shape[0]
        self.tol = tol
        self.rule = rule
        self.active = np.ones(K, dtype=bool)
        self.status = np.full(K, MAXITER, dtype=np.int8)
        self.tnorm = np.full(K, -1.0)
        self.stall = np.zeros(K, dtype=np.int64)
        self.best = np.full(K, np.inf) if best is None else np.array(best, dtype=np.float64)

    def passes(self, rn: np.ndarray) -> np.ndarray:
        """The stopping test ‖r‖ < tol (or ‖r‖ = 0) on the active systems."""
        return self.active & ((rn < self.tol) | (rn == 0))

    def end(self, mask: np.ndarray, code: int, tn=None) -> None:
        """End the systems in ``mask`` with status ``code`` (recording ``tn`` if given)."""
        self.status[mask] = code
        if tn is not None:
            self.tnorm[mask] = tn[mask]
        self.active &= ~mask

    def check(self, cand: np.ndarray, tn: np.ndarray, gap: np.ndarray) -> None:
        """A true-residual check: candidates whose true residual ``tn`` passes converge; then the
        stall rule (``gap`` = ‖r − rt‖, the drift of the recursive residual) and the finiteness
        of ``tn`` are applied to the systems still active."""
        r = self.rule
        self.end(cand & ((tn < self.tol) | (tn == 0)), CONVERGED, tn)
        self.stall = np.where(tn <= r.improve * self.best, 0,
                              np.where(gap >= r.gap_ratio * tn, self.stall + 1, self.stall))
        self.best = np.minimum(self.best, tn)
        self.end(self.active & (self.stall >= r.stall_limit), BREAKDOWN, tn)
        self.end(self.active & ~np.isfinite(tn), NONFINITE)

    def positive(self, v: np.ndarray) -> None:
        """``rho`` or ``pᵀAp``: end active systems where it is not finite or not positive."""
        self.end(self.active & ~np.isfinite(v), NONFINITE)
        self.end(self.active & (v <= 0), INDEFINITE)

    def finite(self, rn: np.ndarray) -> None:
        """End active systems whose updated residual norm is not finite."""
        self.end(self.active & ~np.isfinite(rn), NONFINITE)


def run(eng: Engine, tol: np.ndarray, maxiter: int, check_every: int, callback=None,
        rule: StopRule = STOP_RULE, u: float = 2.0**-53) -> LoopResult:
    """PCG on the K systems of ``eng`` with absolute tolerances ``tol`` (K,) in a working
    format of unit roundoff ``u``: the loop every engine shares (see the module docstring for
    the rules). One system on an engine with the :class:`ScalarSteps` methods runs
    :func:`run_one`, the same rules on Python floats."""
    if tol.shape[0] == 1 and getattr(eng, "scalar_steps", False):
        return run_one(eng, float(tol[0]), maxiter, check_every, callback, rule, u)
    drift = rule.replace_threshold(u)
    Kn = tol.shape[0]
    rn = eng.init()
    hist = [rn.copy()]
    st = Stopping(tol, rule)
    iters = np.zeros(Kn, dtype=np.int64)
    rho_prev = np.ones(Kn)
    k = 0
    with np.errstate(all="ignore"):
        while True:
            cand = st.passes(rn)
            if cand.any() or (k > 0 and k % check_every == 0):
                was = st.active.copy()
                tn, gap = eng.true_residual()
                st.check(cand, tn, gap)
                over = (gap > drift * rn) & (gap > rule.gap_ratio * tol)
                rep = st.active & np.isfinite(tn) & (cand | over)
                if rep.any():
                    eng.replace(rep)
                # the history shows the true residual where it replaced r or ended the system
                rn = np.where((rep | (was & ~st.active)) & np.isfinite(tn), tn, rn)
                hist[-1] = rn.copy()
            if not st.active.any() or k >= maxiter:
                break
            rho = eng.precondition(st.active)
            st.positive(rho)
            if not st.active.any():
                break
            beta = np.where(st.active, rho / rho_prev, 0.0) if k > 0 else np.zeros(Kn)
            beta = np.where(np.isfinite(beta), beta, 0.0)
            pq = eng.direction(beta, st.active)
            st.positive(pq)
            if not st.active.any():
                break
            active = st.active
            alpha = np.where(active, rho / pq, 0.0)
            rn_new = eng.update(alpha, active)
            rho_prev = np.where(active, rho, rho_prev)
            k += 1
            iters[active] = k
            rn = np.where(active, rn_new, rn)
            hist.append(rn.copy())
            st.finite(rn)
            if callback is not None:
                callback(eng.current_x())
        tnorm = st.tnorm
        need = tnorm < 0
        if need.any():
            tn, _ = eng.true_residual()
            tnorm = np.where(need, tn, tnorm)
    return LoopResult(eng.X(), iters, np.asarray(hist, dtype=np.float64), st.status, tnorm)


class ScalarSteps(Protocol):
    """The steps of :class:`Engine` for one system on Python floats (an engine that has them
    sets ``scalar_steps = True``): no (1,)-array per coefficient, no mask."""

    scalar_steps: bool

    def init1(self) -> float:
        """:meth:`Engine.init`; returns ‖r‖."""

    def true_residual1(self) -> tuple[float, float]:
        """:meth:`Engine.true_residual`; returns (‖rt‖, ‖r − rt‖)."""

    def replace1(self) -> None:
        """:meth:`Engine.replace` of the one system."""

    def precondition1(self) -> float:
        """:meth:`Engine.precondition`; returns rᵀz."""

    def direction1(self, beta: float) -> float:
        """:meth:`Engine.direction`; returns pᵀq."""

    def update1(self, alpha: float) -> float:
        """:meth:`Engine.update`; returns ‖r‖."""


def run_one(eng: ScalarSteps, tol: float, maxiter: int, check_every: int, callback=None,
            rule: StopRule = STOP_RULE, u: float = 2.0**-53) -> LoopResult:
    """:func:`run` for one system, on Python floats: the same rules, tests and order of
    operations as :class:`Stopping` applies to a (1,)-array (NaN and inf behave alike: a
    comparison with NaN is False, ``best`` becomes NaN as ``np.minimum`` makes it), without
    the dozens of small-array operations per iteration that cost tens of microseconds, the
    time of a whole iteration of a 40³ Poisson problem."""
    drift = rule.replace_threshold(u)
    gap_tol = rule.gap_ratio * tol
    isfinite = math.isfinite
    rn = eng.init1()
    hist = [rn]
    active = True
    status = MAXITER
    tnorm = -1.0
    stall = 0
    best = math.inf
    rho_prev = 1.0
    k = 0
    while True:
        cand = active and (rn < tol or rn == 0)
        if cand or (k > 0 and k % check_every == 0):
            was = active
            tn, gap = eng.true_residual1()
            # Stopping.check
            if cand and (tn < tol or tn == 0):
                status, tnorm, active = CONVERGED, tn, False
            if tn <= rule.improve * best:
                stall = 0
            elif gap >= rule.gap_ratio * tn:
                stall += 1
            best = math.nan if (best != best or tn != tn) else min(best, tn)
            if active and stall >= rule.stall_limit:
                status, tnorm, active = BREAKDOWN, tn, False
            if active and not isfinite(tn):
                status, active = NONFINITE, False
            rep = active and isfinite(tn) and (cand or (gap > drift * rn and gap > gap_tol))
            if rep:
                eng.replace1()
            if (rep or (was and not active)) and isfinite(tn):
                rn = tn
            hist[-1] = rn
        if not active or k >= maxiter:
            break
        rho = eng.precondition1()
        if not isfinite(rho):
            status, active = NONFINITE, False
        elif rho <= 0:
            status, active = INDEFINITE, False
        if not active:
            break
        beta = rho / rho_prev if k > 0 else 0.0
        if not isfinite(beta):
            beta = 0.0
        pq = eng.direction1(beta)
        if not isfinite(pq):
            status, active = NONFINITE, False
        elif pq <= 0:
            status, active = INDEFINITE, False
        if not active:
            break
        rn = eng.update1(rho / pq)
        rho_prev = rho
        k += 1
        hist.append(rn)
        if not isfinite(rn):
            status, active = NONFINITE, False
        if callback is not None:
            callback(eng.current_x())
    if tnorm < 0:
        tnorm = eng.true_residual1()[0]
    return LoopResult(eng.X(), np.array([k], dtype=np.int64),
                      np.asarray(hist, dtype=np.float64)[:, None],
                      np.array([status], dtype=np.int8), np.array([tnorm]))


def trim_history(hist: np.ndarray, iters: np.ndarray) -> np.ndarray:
    """(k_max + 1, N) history from per-system rows hist (N, ≥ k_max + 1) valid up to iters[s],
    each row continued with its last value."""
    kmax = int(iters.max()) if iters.size else 0
    cols = np.minimum(np.arange(kmax + 1)[None, :], iters[:, None])
    return np.ascontiguousarray(np.take_along_axis(hist[:, : kmax + 1], cols, axis=1).T)
