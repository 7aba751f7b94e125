"""The solvers' precision policy, status codes, one stopping rule across engines, result records,
and the capability query that picks the Numba engines."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import scipy.sparse.linalg as spl

import linalg_pc as lpc
from linalg_pc._backend import to_numpy
from linalg_pc._kernels.capability import cpu_solver_kernels
from linalg_pc._kernels.cpu_pcg_small import run_pcg_small
from linalg_pc.precision import unit_roundoff
from linalg_pc.solvers import _status

U64 = unit_roundoff("fp64")
U32 = unit_roundoff("fp32")
# forward-error constant: ‖x̂ − x‖/‖x‖ <= ACC · u · κ(A) for the solves below (n <= 24); far
# below u32 for fp64 arithmetic (ACC·u64·κ ≈ 1e-10 at κ = 100)
ACC = 1e4
KAPPA = 100.0
N = 12


def spd(n, kappa, rng):
    Q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    return (Q * np.geomspace(1.0, 1.0 / kappa, n)) @ Q.T


def relerr(x, ref):
    x = np.asarray(to_numpy(x), dtype=np.float64)
    return np.linalg.norm(x - ref) / np.linalg.norm(ref)


# --------------------------------------------------------------------------- fp64 in: fp64
@pytest.mark.parametrize("form", ["dense", "sparse", "linop", "callable", "multi", "batched",
                                  "batched_xp"])
def test_pcg_fp64_input_computes_in_fp64(form, rng):
    A = spd(N, KAPPA, rng)
    b = rng.standard_normal(N)
    kw = {"rtol": 1e-13, "maxiter": 200}
    if form == "dense":
        res, ref = lpc.pcg(A, b, **kw), np.linalg.solve(A, b)
    elif form == "sparse":
        res, ref = lpc.pcg(sp.csr_matrix(A), b, **kw), np.linalg.solve(A, b)
    elif form == "linop":
        res, ref = lpc.pcg(spl.aslinearoperator(A), b, **kw), np.linalg.solve(A, b)
    elif form == "callable":
        res, ref = lpc.pcg(lambda v: A @ v, b, **kw), np.linalg.solve(A, b)
    elif form == "multi":
        B = rng.standard_normal((N, 3))
        res, ref = lpc.pcg(sp.csr_matrix(A), B, **kw), np.linalg.solve(A, B)
    else:
        As = np.stack([A, spd(N, KAPPA, rng)])
        B = rng.standard_normal((2, N))
        cb = None if form == "batched" else (lambda x: None)  # a callback: the generic engine
        res = lpc.pcg(As, B, callback=cb, **kw)
        ref = np.linalg.solve(As, B[..., None])[..., 0]
    assert np.all(res.status == "converged")
    assert res.x.dtype == np.float64
    assert relerr(res.x, ref) <= ACC * U64 * KAPPA


@pytest.mark.parametrize("form", ["dense", "sparse", "batched"])
def test_pcg_fp32_input_computes_and_returns_fp32(form, rng):
    A = spd(N, KAPPA, rng).astype(np.float32)
    b = rng.standard_normal(N).astype(np.float32)
    ref = np.linalg.solve(A.astype(np.float64), b.astype(np.float64))
    if form == "sparse":
        A = sp.csr_matrix(A)
    elif form == "batched":
        A, b, ref = A[None], b[None], ref[None]
    res = lpc.pcg(A, b, rtol=1e-5)
    assert res.x.dtype == np.float32
    assert np.all(res.status == "converged")
    assert relerr(res.x, ref) <= ACC * U32 * KAPPA


def test_pcg_compute_rule_over_several_inputs(xp, rng):
    """The widest of the inputs' default computes: fp64 if any input is fp64 or an integer."""
    A = spd(N, KAPPA, rng)
    b = rng.standard_normal(N)
    f32 = lpc.pcg(xp.asarray(A.astype(np.float32)), xp.asarray(b.astype(np.float32)))
    assert f32.x.dtype == xp.float32
    mixed = lpc.pcg(xp.asarray(A.astype(np.float32)), xp.asarray(b), rtol=1e-13)
    assert mixed.x.dtype == xp.float64
    ints = lpc.pcg(xp.asarray(np.eye(N, dtype=np.int64) * 2), xp.asarray(np.ones(N, np.int64)))
    assert ints.x.dtype == xp.float64 and ints.status == "converged"


def test_pcg_compute_fp64_on_fp32_data(rng):
    """compute="fp64" runs fp32 data in fp64: the solution of the fp32-stored system to fp64
    accuracy, beyond what fp32 arithmetic reaches."""
    A = spd(N, KAPPA, rng).astype(np.float32)
    b = rng.standard_normal(N).astype(np.float32)
    ref = np.linalg.solve(A.astype(np.float64), b.astype(np.float64))
    for Aform in (A, sp.csr_matrix(A)):
        res = lpc.pcg(Aform, b, rtol=1e-13, compute="fp64")
        assert res.status == "converged" and res.x.dtype == np.float64
        assert relerr(res.x, ref) <= ACC * U64 * KAPPA


def _h(rng, batch=()):
    J = rng.standard_normal(batch + (40, 6))
    J[..., 4] *= 0.05
    return np.swapaxes(J, -1, -2) @ J


@pytest.mark.parametrize("engine", ["numba", "array_api"])
def test_dcreg_fp64_input_computes_in_fp64(engine, rng):
    H = _h(rng, (3,))
    b = rng.standard_normal((3, 6))
    kappa = np.linalg.cond(H).max()
    res = lpc.solve_degenerate(H, b, rtol=1e-14, atol=0.0, engine=engine)
    assert res.x.dtype == np.float64 and res.pcg_result.x.dtype == np.float64
    ref = np.linalg.solve(H, b[..., None])[..., 0]
    assert relerr(res.x, ref) <= ACC * U64 * kappa
    rep = lpc.block_degeneracy(H, engine=engine)
    SR_ref = H[:, :3, :3] - H[:, :3, 3:] @ np.linalg.solve(H[:, 3:, 3:], H[:, 3:, :3])
    assert rep.S_R.dtype == np.float64
    scale = np.abs(H).max()
    assert np.abs(np.asarray(rep.S_R) - SR_ref).max() <= ACC * U64 * kappa * scale
    lam_ref = np.linalg.eigvalsh(SR_ref)
    lam = np.sort(np.asarray(rep.eigvals_R), axis=-1)
    assert np.abs(lam - lam_ref).max() <= ACC * U64 * kappa * scale
    S_R, S_t = lpc.schur_complements(H, 3)
    assert S_R.dtype == np.float64 and np.abs(S_R - SR_ref).max() <= ACC * U64 * kappa * scale


@pytest.mark.parametrize("engine", ["numba", "array_api"])
def test_dcreg_fp32_in_fp32_out(engine, rng):
    H = _h(rng, (2,)).astype(np.float32)
    b = rng.standard_normal((2, 6)).astype(np.float32)
    res = lpc.solve_degenerate(H, b, engine=engine)
    assert res.x.dtype == np.float32 and res.report.S_R.dtype == np.float32
    assert lpc.schur_complements(H, 3)[0].dtype == np.float32


def test_woodbury_fp64_input_computes_in_fp64(rng):
    k, d, lam = 6, 30, 1e-2
    G = rng.standard_normal((k, d))
    F = lam * np.eye(d) + G.T @ G / k
    x = rng.standard_normal(d)
    kappa = np.linalg.cond(F)
    W = lpc.WoodburyInverse(lam, G)
    y = W.ihvp(x)
    assert y.dtype == np.float64
    assert relerr(y, np.linalg.solve(F, x)) <= ACC * U64 * kappa
    W32 = lpc.WoodburyInverse(lam, G.astype(np.float32))
    assert W32.ihvp(x.astype(np.float32)).dtype == np.float32
    W64 = lpc.WoodburyInverse(lam, G.astype(np.float32), compute="fp64")
    assert W64.ihvp(x).dtype == np.float64
    with pytest.raises(ValueError, match="compute"):
        lpc.WoodburyInverse(lam, G, compute="bf16")


def test_sherman_morrison_fp64_input_computes_in_fp64(rng):
    d = 10
    J = spd(d, KAPPA, rng)
    u = rng.standard_normal(d)
    ref = np.linalg.inv(J + np.outer(u, u))
    res = lpc.sherman_morrison_update(np.linalg.inv(J), u)
    assert res.inverse.dtype == np.float64
    kappa = np.linalg.cond(J + np.outer(u, u)) * np.linalg.cond(J)
    assert relerr(res.inverse, ref) <= ACC * U64 * kappa
    r32 = lpc.sherman_morrison_update(np.linalg.inv(J).astype(np.float32), u.astype(np.float32))
    assert r32.inverse.dtype == np.float32
    r64 = lpc.sherman_morrison_update(np.linalg.inv(J).astype(np.float32), u.astype(np.float32),
                                      compute="fp64")
    assert r64.inverse.dtype == np.float64


# --------------------------------------------------------------------------- one stopping rule
def _status_problems(rng, dtype=np.float64):
    """Batched 8×8 problems that end in every status: converged (or maxiter with a small
    maxiter), indefinite A, indefinite M, nonfinite (‖b‖² overflows) and, in fp32, breakdown
    (the attainable accuracy reached before the tolerance)."""
    n = 8
    A = np.stack([spd(n, 1e3, rng) for _ in range(6)])
    A[2] = np.diag(np.r_[np.ones(n - 1), -1.0])
    M = np.stack([np.eye(n)] * 6)
    M[3] = -np.eye(n)
    b = rng.standard_normal((6, n))
    b[4] *= 1e200 if dtype == np.float64 else 1e30
    A[5], b[5] = np.eye(n), np.ones(n)  # one exact step: converged in any precision
    return A.astype(dtype), b.astype(dtype), M.astype(dtype)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_small_kernel_and_loop_give_the_same_statuses(dtype, rng):
    """The batched Numba kernel keeps its own loop; it must end every system with the status
    and iteration count of the shared loop (solvers._loop) on the same problems."""
    A, b, M = _status_problems(rng, dtype)
    seen = set()
    for maxiter in (40, 3):
        kw = {"M": M, "rtol": 1e-10 if dtype == np.float64 else 1e-9, "maxiter": maxiter,
              "check_every": 5}
        with np.errstate(over="ignore"):
            small = lpc.pcg(A, b, **kw)
            loop = lpc.pcg(A, b, callback=lambda x: None, **kw)  # the generic engine
        assert small.status.tolist() == loop.status.tolist()
        # the kernel's dot products accumulate fp32 data in fp64, NumPy's in fp32: where the
        # solve ends at the rounding-error level ("breakdown") the check it ends at may differ,
        # but it is a true-residual check of both (a multiple of check_every)
        brk = small.status == "breakdown"
        assert np.array_equal(small.iterations[~brk], loop.iterations[~brk])
        assert np.all(small.iterations[brk] % 5 == 0) and np.all(loop.iterations[brk] % 5 == 0)
        seen |= set(small.status.tolist())
    exp = {"converged", "maxiter", "indefinite", "nonfinite"}
    if dtype == np.float32:
        exp.add("breakdown")
    assert exp <= seen


def test_kernels_take_their_codes_from_the_caller(rng):
    """The small-system kernel defines no status codes: it reports the codes it is given."""
    A, b, M = _status_problems(rng, np.float32)
    with np.errstate(over="ignore"):
        tol = 1e-9 * np.linalg.norm(b.astype(np.float64), axis=1)
    base = run_pcg_small(A, b, M, np.zeros_like(b), tol, 40, 5, _status.KERNEL_CODES,
                         _status.STOP_RULE)
    shifted = tuple(c + 10 for c in _status.KERNEL_CODES)
    other = run_pcg_small(A, b, M, np.zeros_like(b), tol, 40, 5, shifted, _status.STOP_RULE)
    assert np.array_equal(other.status, base.status + 10)
    assert np.array_equal(other.iterations, base.iterations)


def test_status_names_are_defined_once():
    assert _status.STATUS_NAMES[_status.CONVERGED] == "converged"
    import importlib

    pcg_mod = importlib.import_module("linalg_pc.solvers.pcg")

    assert pcg_mod.STATUS_NAMES is _status.STATUS_NAMES
    assert pcg_mod.STALL_LIMIT == _status.STOP_RULE.stall_limit


# --------------------------------------------------------------------------- records, capability
def test_solve_degenerate_returns_a_record(rng):
    H = _h(rng)
    res = lpc.solve_degenerate(H, np.ones(6))
    assert isinstance(res, lpc.DegenerateSolveResult)
    x, rep, pres = res
    assert x is res.x and rep is res.report and pres is res.pcg_result
    assert isinstance(pres, lpc.PCGResult) and isinstance(rep, lpc.DegeneracyReport)


def test_capability_query(xp):
    import ml_dtypes

    np_ok = xp is np or getattr(xp, "__name__", "") == "array_api_compat.numpy"
    assert cpu_solver_kernels(xp, xp.float32, xp.float64) == np_ok
    assert not cpu_solver_kernels(np, np.dtype(ml_dtypes.bfloat16))
    assert not cpu_solver_kernels(np, np.float16)

