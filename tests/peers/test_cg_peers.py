"""The cases of SciPy's iterative-solver tests for CG, written as our own tests of ``lpc.pcg``.

Source of the cases and semantics: SciPy's ``scipy/sparse/linalg/_isolve/tests/
test_iterative.py`` (its matrix collection restricted to the cases CG runs on, ``test_maxiter``,
``test_convergence``, ``test_precond_dummy``, ``test_precond_inverse``, ``test_atol``,
``test_zero_rhs``, ``test_x0_working``, ``test_x0_equals_Mb``,
``test_x0_solves_problem_exactly``, ``test_positional_error``, ``test_invalid_atol``). SciPy's
``info`` is our ``status``: 0 is "converged", a positive count "maxiter". The stopping rule is
the same, ‖b − A x‖ ≤ max(rtol·‖b‖, atol), except that ours is tested on the true residual.

Differences, each documented in docs/solvers.md ("SciPy's CG tests"): complex Hermitian systems
are refused (TypeError), a LinearOperator's ``psolve`` attribute is not read (pass ``M``), and a
tolerance of the wrong type (None, "legacy") is a TypeError where SciPy raises ValueError.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import scipy.sparse as sp
import scipy.sparse.linalg as spl

import linalg_pc as lpc

# SciPy's own fudge factor on max(atol, rtol·‖b‖) in test_atol (rounding of A x − b)
ATOL_FUDGE = 1.00025


# --------------------------------------------------------------------------- the collection
def _poisson1d(n=40):
    T = sp.diags([2.0 * np.ones(n), -np.ones(n - 1), -np.ones(n - 1)], [0, -1, 1])
    return T.tocsr()


def _rand_sym_pd():
    data = np.random.RandomState(1234).rand(9, 9)
    return data @ data.T


def _cases():
    """SciPy's SPD cases (the ones CG is not skipped on), b = arange(n)."""
    P1 = _poisson1d()
    P2 = sp.kronsum(P1, P1).tocsr()
    R = _rand_sym_pd()
    return {
        "poisson1d": P1, "poisson1d-F": P1.astype(np.float32),
        "poisson2d": P2, "poisson2d-F": P2.astype(np.float32),
        "rand-sym-pd": R, "rand-sym-pd-F": R.astype(np.float32),
    }


CASES = _cases()


def _b(A):
    """SciPy's b = arange(n) in float64 for every case, the "-F" (float32 A) ones included: the
    solve then runs in float64 (the widest input's format, docs/precision.md), as SciPy's."""
    return np.arange(A.shape[0], dtype=np.float64)


def _res(A, x, b):
    """‖A x − b‖ in float64 (our test is on the working-precision true residual)."""
    A64 = A.astype(np.float64)
    return np.linalg.norm(A64 @ x.astype(np.float64) - b.astype(np.float64))


def _slack(A, x):
    """Rounding of the working-precision (fp64: b is float64) residual: n·u·‖|A||x|‖
    (Higham, ASNA §3.5)."""
    u = np.finfo(np.float64).eps / 2
    return A.shape[0] * u * np.linalg.norm(abs(A.astype(np.float64)) @ abs(x.astype(np.float64)))


# --------------------------------------------------------------------------- test_maxiter
@pytest.mark.parametrize("name", list(CASES))
def test_maxiter_one_step(name):
    A = CASES[name]
    b = _b(A)
    seen = []
    res = lpc.pcg(A, b, x0=0 * b, rtol=1e-12, maxiter=1, callback=lambda xk: seen.append(xk))
    assert len(seen) == 1
    assert res.status == "maxiter" and res.iterations == 1 and not res.converged


# --------------------------------------------------------------------------- test_convergence
@pytest.mark.parametrize("name", list(CASES))
def test_convergence(name):
    A = CASES[name]
    b = _b(A)
    rtol = 1e-8 if A.dtype == np.float64 else 1e-2
    x0 = 0 * b
    res = lpc.pcg(A, b, x0=x0, rtol=rtol)
    assert np.array_equal(x0, 0 * b)  # x0 not overwritten
    assert res.status == "converged"
    assert _res(A, res.x, b) <= np.linalg.norm(b) * rtol + _slack(A, res.x)


# --------------------------------------------------------------------------- preconditioners
@pytest.mark.parametrize("name", list(CASES))
def test_precond_dummy(name):
    A = CASES[name]
    b = _b(A)

    def identity(v):
        return v

    M = spl.LinearOperator(A.shape, matvec=identity, rmatvec=identity, dtype=A.dtype)
    res = lpc.pcg(A, b, M=M, x0=0 * b, rtol=1e-8)
    assert res.status == "converged"
    assert _res(A, res.x, b) <= np.linalg.norm(b) * 1e-8 + _slack(A, res.x)
    # SciPy also reads a ``psolve`` attribute of a LinearOperator A; we do not (documented):
    # with the identity it is the same solve
    Aop = spl.aslinearoperator(A)
    Aop.psolve = identity
    res2 = lpc.pcg(Aop, b, x0=0 * b, rtol=1e-8)
    assert res2.status == "converged"
    assert _res(A, res2.x, b) <= np.linalg.norm(b) * 1e-8 + _slack(A, res2.x)


@pytest.mark.parametrize("name", ["poisson1d", "poisson2d"])
def test_precond_inverse(name):
    """M = A⁻¹: converged at once, at most 3 products with A (x0's residual, one step, the
    confirming true residual)."""
    A0 = CASES[name]
    dense = A0.toarray()
    b = _b(A0)
    count = [0]

    def matvec(v):
        count[0] += 1
        return A0 @ v

    A = spl.LinearOperator(A0.shape, matvec=matvec, rmatvec=matvec, dtype=A0.dtype)
    M = spl.LinearOperator(A0.shape, matvec=lambda v: np.linalg.solve(dense, v),
                           dtype=A0.dtype)
    res = lpc.pcg(A, b, M=M, x0=0 * b, rtol=1e-8)
    assert res.status == "converged"
    assert _res(A0, res.x, b) <= np.linalg.norm(b) * 1e-8
    assert count[0] <= 3


# --------------------------------------------------------------------------- atol / rtol
def test_atol_rtol_semantics():
    """‖b − A x‖ ≤ max(rtol·‖b‖, atol) over SciPy's grid of tolerances (0, 1e-9 … 1e2, inf)
    and badly scaled preconditioners (1e-6·M0, 1e6·M0)."""
    rng = np.random.default_rng(168441431005389)
    A = rng.uniform(size=[10, 10])
    A = A @ A.T + 10 * np.eye(10)
    b = 1e3 * rng.uniform(size=10)
    b_norm = np.linalg.norm(b)
    tols = np.r_[0, np.logspace(-9, 2, 7), np.inf]
    M0 = rng.standard_normal(size=(10, 10))
    M0 = M0 @ M0.T
    for M, rtol, atol in itertools.product([None, 1e-6 * M0, 1e6 * M0], tols, tols):
        if rtol == 0 and atol == 0:
            continue
        res = lpc.pcg(A, b, M=M, rtol=float(rtol), atol=float(atol))
        assert res.status == "converged", (rtol, atol)
        err = np.linalg.norm(A @ res.x - b)
        assert err <= ATOL_FUDGE * max(atol, rtol * b_norm)


@pytest.mark.parametrize("atol", ["legacy", None, -1])
def test_invalid_atol(atol):
    """SciPy raises ValueError for all three; we raise TypeError for a value of the wrong type
    (None, a string) and ValueError for a negative one (documented)."""
    rng = np.random.default_rng(1685363802304750)
    A = rng.random(size=[10, 10])
    A = A @ A.T
    b = rng.random(10)
    exc = ValueError if atol == -1 else TypeError
    with pytest.raises(exc, match="atol"):
        lpc.pcg(A, b, atol=atol)


def test_positional_arguments_after_b_are_refused():
    rng = np.random.default_rng(1685363802304750)
    A = rng.random(size=[10, 10])
    A = A @ A.T
    b, x0 = rng.random(10), rng.random(10)
    with pytest.raises(TypeError):
        lpc.pcg(A, b, x0, 1e-5)


# --------------------------------------------------------------------------- zero rhs, x0
def test_zero_rhs():
    rng = np.random.default_rng(1684414984100503)
    A = rng.random(size=[10, 10])
    A = A @ A.T + 10 * np.eye(10)
    b = np.zeros(10)
    for tol in np.logspace(-10, 2, 7):
        for kw in ({}, {"x0": np.ones(10)}, {"x0": np.ones(10), "atol": 0.0},
                   {"atol": tol}, {"atol": 0.0}):
            res = lpc.pcg(A, b, rtol=tol, **kw)
            assert res.status == "converged"
            # SciPy allows |x| <= tol from x0 = ones; ours returns the exact solution 0
            assert np.array_equal(res.x, np.zeros(10))


def test_x0_working():
    rng = np.random.default_rng(1685363802304750)
    n = 10
    A = rng.random(size=[n, n])
    A = A @ A.T
    b, x0 = rng.random(n), rng.random(n)
    res = lpc.pcg(A, b, atol=0.0, rtol=1e-6)
    assert res.status == "converged"
    assert np.linalg.norm(A @ res.x - b) <= 1e-6 * np.linalg.norm(b)
    res = lpc.pcg(A, b, x0=x0, atol=0.0, rtol=1e-6)
    assert res.status == "converged"
    assert np.linalg.norm(A @ res.x - b) <= 1e-5 * np.linalg.norm(b)


@pytest.mark.parametrize("name", list(CASES))
def test_x0_equals_Mb(name):
    A = CASES[name]
    b = _b(A)
    x0 = "Mb"
    res = lpc.pcg(A, b, x0=x0, rtol=1e-8)
    assert x0 == "Mb"
    assert res.status == "converged"
    # SciPy asserts rtol·‖b‖ in the working precision also for the fp32 cases; ours holds on the
    # fp32 true residual, so the float64 check gets the rounding of its evaluation
    assert _res(A, res.x, b) <= 1e-8 * np.linalg.norm(b) + _slack(A, res.x)


def test_x0_solves_problem_exactly():
    rhs = np.array([-1.0, -1.0])
    res = lpc.pcg(np.eye(2), rhs, x0=rhs)
    assert np.array_equal(res.x, rhs)
    assert res.status == "converged" and res.iterations == 0


# --------------------------------------------------------------------------- documented differences
def test_complex_hermitian_cases_are_refused():
    """SciPy's rand-cmplx-sym-pd cases: CG on complex Hermitian systems is not supported."""
    rng = np.random.RandomState(1234)
    data = rng.rand(9, 9) + 1j * rng.rand(9, 9)
    H = data @ data.T.conj()
    b = np.arange(9, dtype=np.complex128)
    with pytest.raises(TypeError, match="real"):
        lpc.pcg(H, b.real)
    with pytest.raises(TypeError, match="real"):
        lpc.pcg(H.real, b)
