"""The one-system loop on floats (``_loop.run_one``) against the array loop (``_loop.run``) on
the same CSR engine: the same iterates, history, iteration count, status and true residual,
bit for bit, through every stopping rule (convergence, maxiter, replacement of the recursive
residual, stall "breakdown", "indefinite", "nonfinite"), with and without a preconditioner."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

import linalg_pc as lpc
from linalg_pc._policy import Precision
from linalg_pc.solvers import _loop
from linalg_pc.solvers._engine_csr import CsrEngine
from linalg_pc.solvers._status import STOP_RULE
from linalg_pc.solvers.pcg import _setup


def _poisson2d(n):
    T = sp.diags([-np.ones(n - 1), 2 * np.ones(n), -np.ones(n - 1)], [-1, 0, 1])
    eye = sp.identity(n)
    return (sp.kron(T, eye) + sp.kron(eye, T)).tocsr()


def _both(A, b, *, M=None, x0=None, rtol=1e-8, maxiter=500, check_every=25, callback=False):
    pb, refine = _setup(A, b, M, x0, rtol, 0.0, Precision())
    assert not refine
    out = []
    for scalar in (False, True):
        eng = CsrEngine(pb.opA, pb.opM, np.asarray(pb.B), pb.X0, pb.zero, np.dtype(pb.dtype))
        eng.single = True
        assert eng.scalar_steps  # one right-hand side: the float steps are available
        seen = []
        cb = (lambda xk, seen=seen: seen.append(float(np.linalg.norm(xk)))) if callback else None
        if scalar:
            res = _loop.run_one(eng, float(pb.tol[0]), maxiter, check_every, cb, STOP_RULE,
                                pb.u)
        else:
            eng.scalar_steps = False  # the array loop on the same engine
            res = _loop.run(eng, pb.tol, maxiter, check_every, cb, STOP_RULE, pb.u)
        out.append((res, seen))
    return out


def _assert_same(pair):
    (a, ca), (b, cb) = pair
    np.testing.assert_array_equal(a.X, b.X)
    np.testing.assert_array_equal(a.hist, b.hist)
    np.testing.assert_array_equal(a.iters, b.iters)
    np.testing.assert_array_equal(a.status, b.status)
    np.testing.assert_array_equal(a.tnorm, b.tnorm)
    assert ca == cb
    return a


@pytest.mark.parametrize("check_every", [1, 3, 25])
def test_converges_like_the_array_loop(check_every):
    A = _poisson2d(24)
    b = np.random.default_rng(0).standard_normal(A.shape[0])
    res = _assert_same(_both(A, b, check_every=check_every))
    assert res.status[0] == 0 and res.iters[0] > 10


def test_jacobi_general_m_x0_and_callback():
    rng = np.random.default_rng(1)
    A = _poisson2d(16) + sp.diags(rng.uniform(0, 3, 256))
    A = A.tocsr()
    b = rng.standard_normal(256)
    x0 = rng.standard_normal(256)
    D = sp.diags(1.0 / A.diagonal()).tocsr()
    _assert_same(_both(A, b, M=D, x0=x0, check_every=4, callback=True))
    # a non-diagonal M goes through the generic preconditioner application
    L = sp.tril(A).tocsr()
    Msym = (L @ sp.diags(1.0 / A.diagonal()) @ L.T).tocsr()
    Minv = sp.csr_matrix(np.linalg.inv(Msym.toarray()))
    _assert_same(_both(A, b, M=Minv, check_every=5))


def test_maxiter_and_stall():
    A = _poisson2d(30)
    b = np.random.default_rng(2).standard_normal(A.shape[0])
    res = _assert_same(_both(A, b, maxiter=7))
    assert lpc.solvers._status.STATUS_NAMES[res.status[0]] == "maxiter"
    # rtol below the attainable accuracy of fp32: the stall rule ends the solve
    A32 = A.astype(np.float32)
    b32 = b.astype(np.float32)
    res = _assert_same(_both(A32, b32, rtol=1e-30, maxiter=4000, check_every=10))
    assert lpc.solvers._status.STATUS_NAMES[res.status[0]] == "breakdown"


def test_indefinite_and_zero_rhs():
    A = sp.diags(np.r_[np.ones(20), -np.ones(5)]).tocsr() + sp.eye(25, k=1) * 0.1
    A = ((A + A.T) * 0.5).tocsr()
    b = np.random.default_rng(4).standard_normal(25)
    res = _assert_same(_both(A, b))
    assert lpc.solvers._status.STATUS_NAMES[res.status[0]] == "indefinite"
    res = _assert_same(_both(_poisson2d(5), np.zeros(25)))
    assert res.status[0] == 0 and res.iters[0] == 0


def test_nonfinite():
    # entries whose products overflow: pᵀAp becomes inf at the first step
    A = sp.diags(np.full(10, 1e300)).tocsr()
    b = np.full(10, 1e10)
    res = _assert_same(_both(A, b))
    assert lpc.solvers._status.STATUS_NAMES[res.status[0]] == "nonfinite"


def test_public_pcg_matches_scipy_iterates():
    # through lpc.pcg (the float loop): SciPy's iterates with no check before the end
    import scipy.sparse.linalg as spl

    A = _poisson2d(20)
    b = np.random.default_rng(5).standard_normal(A.shape[0])
    res = lpc.pcg(A, b, rtol=1e-30, maxiter=40, check_every=1000)
    x, _ = spl.cg(A, b, rtol=1e-30, maxiter=40)
    assert res.iterations == 40 and res.status == "maxiter"
    err = np.linalg.norm(res.x - x) / np.linalg.norm(x)
    assert err < 1e3 * np.finfo(np.float64).eps


@pytest.mark.parametrize("parallel", [True, False])
def test_p_update_and_matvec_passes_equal_numpy_and_scipy(parallel):
    """update_xp is x += alpha_prev·p then p = z + beta·p elementwise, and csr_matvec_dot's q
    is A @ p of scipy.sparse (rows summed in the same order), bit for bit; pᵀq within the
    rounding of a sum of n terms."""
    from linalg_pc._kernels import _twins
    from linalg_pc._kernels import cpu_csr as C

    rng = np.random.default_rng(7)
    n = 5000
    A = sp.random(n, n, density=0.002, random_state=np.random.default_rng(8))
    A = (A + A.T + sp.identity(n) * 4.0).tocsr()
    A.sort_indices()
    ip, ix = A.indptr.view(np.uint32), A.indices.view(np.uint32)
    x, p, z = (rng.standard_normal(n) for _ in range(3))
    alpha_prev, beta = 0.37, -1.25

    def twin(f):
        t = _twins.twins_of(f)
        return t.parallel if parallel else t.serial

    part = np.empty(C.NCHUNKS)
    x1, p1 = x.copy(), p.copy()
    q1 = np.empty(n)
    twin(C.update_xp)(x1, p1, z, alpha_prev, beta)
    np.testing.assert_array_equal(x1, x + alpha_prev * p)
    np.testing.assert_array_equal(p1, z + beta * p)
    pq = twin(C.csr_matvec_dot)(ip, ix, A.data, p1, q1, part)
    np.testing.assert_array_equal(q1, A @ p1)
    ref = float(np.dot(p1, q1))
    assert abs(pq - ref) <= 2 * n * np.finfo(np.float64).eps * float(np.abs(p1) @ np.abs(q1))
