"""The DCReg solve pipeline: analyse, precondition the flagged directions, PCG, direct fallback.

For each system H x = b (H SPD, typically a 6×6 Gauss–Newton Hessian of point-to-plane ICP):

1. :func:`block_degeneracy` — Schur complements, axis-aligned eigenpairs, degeneracy mask;
2. :func:`targeted_preconditioner` — P with only the flagged eigenvalues raised to
   λ_max/κ_target;
3. :func:`pcg` with M = P, stopping at ‖r‖ <= rtol·max(1, ‖b‖) (DCReg's rule: ``atol`` defaults
   to ``rtol``), with true-residual checks;
4. where PCG does not converge (maxiter, breakdown, indefinite, nonfinite), a Householder-QR
   direct solve replaces the iterate and ``pcg_result.fallback`` says so; for a numerically
   singular H (|R_ii| <= RANK_FACTOR·n·u·max|R_jj|) the QR solve is truncated (x_i = 0 for
   those i: a least-squares solution), in both engines.

NumPy float32/float64 input runs all four steps in one Numba kernel with ``prange`` over the
batch; other libraries run the batched array-API versions of the same steps.

Reference: Hu et al., arXiv:2509.06285 (2025), §IV (Schur-complement degeneracy detection and
targeted preconditioning). Cost per 6×6 system: ≈ 2·10³ flops for the analysis (dominated by the
Jacobi eigensolvers) plus ≈ 150 flops per CG iteration; at most 10·n iterations by default.
Error bound: converged systems satisfy the stopping rule on the true residual; a fallback
solution is backward stable, ‖b − H x‖ <= c·n²·u·‖H‖‖x‖ (Higham, ASNA Thm 19.5).

Examples
--------
>>> import numpy as np, linalg_pc as lpc
>>> rng = np.random.default_rng(0)
>>> J = rng.standard_normal((200, 6)); J[:, 3] *= 1e-3      # x barely observed
>>> H = J.T @ J
>>> x, rep, res = lpc.solve_degenerate(H, np.ones(6))
>>> rep.flagged_axes(), res.status
(('x',), 'converged')
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from .._backend import array_namespace, check_finite, solve_triangular, to_numpy
from .._backend.dask import dispatch
from ._loop import trim_history
from ._status import CONVERGED, STATUS_NAMES, status_names
from .pcg import PCGResult, _check_scalar, pcg
from .schur import (
    RANK_FACTOR,
    DegeneracyReport,
    _check_params,
    _labels,
    _report_from_kernel,
    _report_xp,
    _run_kernel,
    _use_numba,
    _validate_H,
    targeted_preconditioner,
)

__all__ = ["solve_degenerate", "DegenerateSolveResult"]


class DegenerateSolveResult(NamedTuple):
    """Result of :func:`solve_degenerate`; unpacks as ``x, report, pcg_result``.

    Attributes
    ----------
    x : array (..., n)
        The solution: the PCG iterate where PCG converged, the QR solution elsewhere.
    report : DegeneracyReport
        The analysis the preconditioner was built from.
    pcg_result : PCGResult
        The PCG run (its ``x`` is the PCG iterate); ``fallback`` marks the systems whose
        solution came from the direct solve. Scalars for a single system, arrays over the
        (flattened) batch otherwise.
    """

    x: Any
    report: DegeneracyReport
    pcg_result: PCGResult


def solve_degenerate(H, b, *, split: int = 3, threshold: float = 10.0,
                     kappa_target: float = 10.0, rtol: float = 1e-6, atol: float | None = None,
                     maxiter: int | None = None, check_every: int = 25, labels=None,
                     engine: str = "auto") -> DegenerateSolveResult:
    """Solve H x = b for one or many SPD systems with the DCReg pipeline.

    Parameters
    ----------
    H : array (..., n, n)
        Symmetric positive (semi)definite matrices, batched over leading dimensions.
    b : array (..., n)
        Right-hand sides, ``b.shape == H.shape[:-1]``.
    split, threshold, kappa_target, labels
        As in :func:`block_degeneracy`.
    rtol, atol : float
        PCG stops when ‖r‖ < max(rtol·‖b‖, atol); ``atol=None`` means ``atol = rtol``, i.e.
        DCReg's ‖r‖ <= rtol·max(1, ‖b‖).
    maxiter : int, optional
        Default 10·n (DCReg allows at least n).
    check_every : int
        True-residual period of the PCG.
    engine : "auto", "numba" or "array_api"

    Returns
    -------
    DegenerateSolveResult
        ``(x, report, pcg_result)``: the solution (PCG iterate where it converged, QR solution
        elsewhere), the :class:`DegeneracyReport`, and the :class:`PCGResult` of the PCG run
        (``fallback`` marks the systems solved directly). Computed in the format of H (fp64 in:
        fp64 arithmetic; fp32 or 16-bit in: fp32).

    Raises
    ------
    ValueError
        As :func:`block_degeneracy`, plus b of the wrong shape or with NaN/inf entries.

    Examples
    --------
    >>> import numpy as np, linalg_pc as lpc
    >>> H = np.stack([np.eye(6) * (i + 1) for i in range(4)])
    >>> x, rep, res = lpc.solve_degenerate(H, np.ones((4, 6)))
    >>> bool(np.allclose(x[3], 0.25)), res.status.tolist()
    (True, ['converged', 'converged', 'converged', 'converged'])
    """
    if (dist := dispatch("solve_degenerate", H, b)) is not None:  # Dask arrays
        return dist(H, b, split=split, threshold=threshold, kappa_target=kappa_target,
                    rtol=rtol, atol=atol, maxiter=maxiter, check_every=check_every,
                    labels=labels, engine=engine)
    _check_params(threshold, kappa_target)
    _check_scalar("rtol", rtol)
    _check_scalar("atol", atol)
    _check_scalar("maxiter", maxiter, integer=True)
    _check_scalar("check_every", check_every, integer=True, positive=True)
    if engine not in ("auto", "numba", "array_api"):
        raise ValueError(f"engine must be 'auto', 'numba' or 'array_api', got {engine!r}")
    xp, Hs, u = _validate_H(H, split)
    if not hasattr(b, "shape"):
        raise TypeError(f"b must be an array, got {type(b).__name__}")
    if array_namespace(b) is not xp:
        raise TypeError("H and b must be arrays of the same library")
    if tuple(b.shape) != tuple(Hs.shape[:-1]):
        raise ValueError(f"b must have shape {tuple(Hs.shape[:-1])} (H.shape[:-1]), got "
                         f"{tuple(b.shape)}")
    check_finite(xp, b, "b")
    n = Hs.shape[-1]
    labs = _labels(labels, n, split)
    atol = rtol if atol is None else atol
    maxiter = 10 * n if maxiter is None else int(maxiter)
    batch = tuple(Hs.shape[:-2])
    single = not batch
    bs = xp.astype(b, Hs.dtype) if b.dtype != Hs.dtype else b
    if _use_numba(xp, Hs, split, engine):
        an, so = _run_kernel(Hs, np.asarray(bs), split, threshold, kappa_target, u, rtol, atol,
                             maxiter, check_every)
        report = _report_from_kernel(an, batch, labs, split, threshold, kappa_target)
        hist = trim_history(so.history, so.iterations)
        x = so.solution.reshape(batch + (n,))
        xres = so.x.reshape(batch + (n,))
        status, iters, tnorm, fb = so.status, so.iterations, so.true_residual_norm, so.fallback
    else:
        report = _report_xp(xp, Hs, split, threshold, kappa_target, labs)
        P = targeted_preconditioner(report)
        Hf = xp.reshape(Hs, (-1, n, n))
        bf = xp.reshape(bs, (-1, n))
        Pf = xp.reshape(P, (-1, n, n))
        res = pcg(Hf, bf, M=Pf, rtol=rtol, atol=atol, maxiter=maxiter,
                  check_every=check_every)
        status = np.array([STATUS_NAMES.index(s) for s in res.status], dtype=np.int8)
        iters, tnorm, hist = res.iterations, res.true_residual_norm, res.residual_norms
        fail = status != CONVERGED
        xf = res.x
        fb = np.zeros(fail.shape, dtype=bool)
        if fail.any():
            xq = _qr_fallback(xp, Hf, bf, RANK_FACTOR * n * u)
            okq = np.asarray(to_numpy(xp.all(xp.isfinite(xq), axis=-1)), dtype=bool)
            fb = fail & okq
            dev = getattr(xf, "device", None)
            m = xp.asarray(fb, device=dev) if dev is not None else xp.asarray(fb)
            x = xp.where(m[:, None], xq, xf)
        else:
            x = xf
        x = xp.reshape(x, batch + (n,))
        xres = xp.reshape(xf, batch + (n,))
    names = status_names(status)
    conv = status == CONVERGED
    if single:
        result = PCGResult(xres, bool(conv[0]), int(iters[0]), hist[:, 0], float(tnorm[0]),
                           str(names[0]), bool(fb[0]))
    else:
        result = PCGResult(xres, conv, np.asarray(iters), hist, np.asarray(tnorm), names,
                           np.asarray(fb, dtype=bool))
    return DegenerateSolveResult(x, report, result)


def _qr_fallback(xp, H, b, rank_tol):
    """x = H⁻¹ b by Householder QR for the batch H (N, n, n), b (N, n); a diagonal entry of R
    with |R_ii| <= rank_tol·max_j |R_jj| (H numerically singular) is treated as zero: x_i = 0
    and row i is dropped (the truncated, basic least-squares solution; the rule of the Numba
    kernel's fallback)."""
    Q, R = xp.linalg.qr(H)
    y = xp.matmul(xp.matrix_transpose(Q), b[..., None])
    d = xp.abs(xp.linalg.diagonal(R))
    small = d <= rank_tol * xp.max(d, axis=-1, keepdims=True)
    n = H.shape[-1]
    dev = getattr(H, "device", None)
    eye = xp.eye(n, dtype=H.dtype, device=dev) if dev is not None else xp.eye(n, dtype=H.dtype)
    R = xp.where(small[..., :, None], eye, R)
    y = xp.where(small[..., None], xp.zeros_like(y), y)
    return solve_triangular(R, y, lower=False)[..., 0]
