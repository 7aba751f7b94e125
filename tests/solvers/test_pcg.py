"""pcg: SciPy agreement, multi-RHS, batches, mixed precision, status reporting, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import scipy.sparse.linalg as spl
from hypothesis import given, settings
from hypothesis import strategies as st

import linalg_pc as lpc
from linalg_pc._backend import to_numpy
from linalg_pc.precision import unit_roundoff

# ±5% on iteration counts against scipy.sparse.linalg.cg (docs/solvers.md)
ITER_TOL = 0.05
# solution error of a CG solve stopped at ‖r‖ < rtol‖b‖: ‖x − x*‖/‖x*‖ <= κ(A)·rtol; the constant
# leaves room for the rounding of the direct reference
SOL_FACTOR = 2.0


def poisson(n: int, dim: int) -> sp.csr_matrix:
    """Dirichlet Laplacian on an n^dim grid as a Kronecker sum (7-point stencil in 3-D)."""
    T = sp.diags([-np.ones(n - 1), 2 * np.ones(n), -np.ones(n - 1)], [-1, 0, 1], format="csr")
    eye = sp.identity(n, format="csr")
    A = T
    for _ in range(dim - 1):
        A = sp.kron(A, eye, format="csr") + sp.kron(sp.identity(A.shape[0], format="csr"), T,
                                                      format="csr")
    return A.tocsr()


def poisson_kappa(n: int) -> float:
    return 1.0 / np.tan(np.pi / (2 * (n + 1))) ** 2


def scipy_iterations(A, b, **kw) -> tuple[np.ndarray, int]:
    count = [0]

    def cb(_xk):
        count[0] += 1

    x, info = spl.cg(A, b, callback=cb, **kw)
    return x, count[0]


# --------------------------------------------------------------------------- test truths
@pytest.mark.parametrize("n, dim", [(12, 2), (6, 3)])
def test_poisson_kappa_formula(n, dim):
    A = poisson(n, dim).toarray()
    ev = np.linalg.eigvalsh(A)
    assert ev[-1] / ev[0] == pytest.approx(poisson_kappa(n), rel=1e-10)
    lap = spl.LaplacianNd((n,) * dim, boundary_conditions="dirichlet")
    ev2 = np.sort(-lap.eigenvalues())
    assert ev2[-1] / ev2[0] == pytest.approx(poisson_kappa(n), rel=1e-10)


@pytest.mark.parametrize("n, dim", [(64, 2), (16, 3), (24, 3)])
@pytest.mark.parametrize("form", ["csr", "linop"])
def test_poisson_iterations_match_scipy(n, dim, form, rng):
    A = poisson(n, dim)
    b = rng.standard_normal(A.shape[0])
    x_ref, k_ref = scipy_iterations(A, b, rtol=1e-8)
    Aop = A if form == "csr" else spl.aslinearoperator(A)
    res = lpc.pcg(Aop, b, rtol=1e-8)
    assert res.status == "converged" and res.converged
    assert abs(res.iterations - k_ref) <= ITER_TOL * k_ref
    # ≈ 4.7–5.8·√κ iterations to 1e-8 (measured with SciPy's cg; the classical A-norm bound
    # 2·((√κ − 1)/(√κ + 1))^k gives ≈ ½·√κ·ln(2/rtol) ≈ 9.6·√κ): a sanity band on the test truth
    assert 3.0 * np.sqrt(poisson_kappa(n)) <= res.iterations <= 7.0 * np.sqrt(poisson_kappa(n))
    assert res.true_residual_norm < 1e-8 * np.linalg.norm(b)
    x_direct = spl.spsolve(A.tocsc(), b)
    err = np.linalg.norm(res.x - x_direct) / np.linalg.norm(x_direct)
    assert err <= SOL_FACTOR * poisson_kappa(n) * 1e-8
    assert len(res.residual_norms) == res.iterations + 1
    assert res.residual_norms[0] == pytest.approx(np.linalg.norm(b), rel=1e-12)


@pytest.mark.slow
def test_measured_iteration_counts_reference():
    """Measured with SciPy's cg: 2-D 64² → 199, 3-D 32³ → 120 iterations to 1e-8 (random b;
    docs/solvers.md)."""
    g = np.random.default_rng(0)
    for n, dim, ref in [(64, 2, 199), (32, 3, 120)]:
        A = poisson(n, dim)
        b = g.standard_normal(A.shape[0])
        _, k = scipy_iterations(A, b, rtol=1e-8)
        res = lpc.pcg(A, b, rtol=1e-8)
        assert abs(res.iterations - k) <= ITER_TOL * k
        assert abs(res.iterations - ref) <= 0.1 * ref


def test_iterates_match_scipy_callback(rng):
    A = poisson(10, 2)
    b = rng.standard_normal(A.shape[0])
    ours, theirs = [], []
    spl.cg(A, b, rtol=1e-10, callback=lambda xk: theirs.append(xk.copy()))
    res = lpc.pcg(A, b, rtol=1e-10, callback=lambda xk: ours.append(np.array(xk)),
                  check_every=10**6)
    assert len(ours) == res.iterations == len(theirs)
    for a, c in zip(ours, theirs):
        assert np.linalg.norm(a - c) <= 1e3 * unit_roundoff("fp64") * np.linalg.norm(c) * 10


def test_jacobi_preconditioner_fused_vs_operator(rng):
    A = poisson(20, 2)
    d = np.linspace(1.0, 5.0, A.shape[0])
    A = (sp.diags(d) @ A @ sp.diags(d)).tocsr()
    b = rng.standard_normal(A.shape[0])
    Mdiag = sp.diags(1.0 / A.diagonal())
    _, k_ref = scipy_iterations(A, b, rtol=1e-9, M=Mdiag)
    fused = lpc.pcg(A, b, M=Mdiag, rtol=1e-9)
    generic = lpc.pcg(A, b, M=spl.aslinearoperator(Mdiag), rtol=1e-9)
    dense = lpc.pcg(A.toarray(), b, M=Mdiag.toarray(), rtol=1e-9)
    for r in (fused, generic, dense):
        assert r.status == "converged"
        assert abs(r.iterations - k_ref) <= ITER_TOL * k_ref
    assert np.allclose(fused.x, generic.x, rtol=1e-7, atol=0)


@pytest.mark.parametrize("s", [None, 5, 8])
@pytest.mark.parametrize("precond", [None, "jacobi"])
def test_csr_kernels_serial_equals_parallel(precond, s, rng, monkeypatch):
    """The fused CSR passes give the same bits with the serial and the parallel kernels
    (fixed chunked reductions), true-residual replacement included; one and several
    right-hand sides."""
    from linalg_pc._kernels import _twins

    A = poisson(14, 3)
    b = rng.standard_normal(A.shape[0] if s is None else (A.shape[0], s))
    M = None if precond is None else sp.diags(1.0 / np.linspace(5.0, 7.0, A.shape[0]))
    out = []
    for threads in (10**6, 1):  # serial kernels, then parallel ones at any size
        monkeypatch.setitem(_twins.POLICIES, "stream", (0, threads))
        monkeypatch.setitem(_twins.POLICIES, "dense", (0, 1))
        out.append(lpc.pcg(A, b, M=M, rtol=1e-10, check_every=7))
    ser, par = out
    assert np.all(ser.status == "converged") and np.all(par.status == "converged")
    assert np.array_equal(ser.iterations, par.iterations)
    assert np.array_equal(ser.x, par.x)
    assert np.array_equal(ser.residual_norms, par.residual_norms)
    assert np.array_equal(ser.true_residual_norm, par.true_residual_norm)
    for j in range(1 if s is None else s):
        bj = b if s is None else b[:, j]
        xj = ser.x if s is None else ser.x[:, j]
        x_ref, _ = spl.cg(A, bj, rtol=1e-10, M=M)
        assert np.linalg.norm(xj - x_ref) <= 1e-6 * np.linalg.norm(x_ref)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("s", [3, 8, 16])
@pytest.mark.parametrize("precond", [None, "jacobi"])
def test_multi_rhs_csr_bitwise_equals_columns(dtype, s, precond, rng):
    """Each column of a multi-RHS CSR solve runs the one-column operations in the same order:
    while no column finishes (each finishing column triggers a true-residual check on all active
    columns), iterates, histories and true residuals are the one-column solves' bit for bit."""
    A = poisson(10, 3).astype(dtype)
    n = A.shape[0]
    B = rng.standard_normal((n, s)).astype(dtype)
    M = None if precond is None else sp.diags((1.0 / np.linspace(5.0, 7.0, n)).astype(dtype))
    multi = lpc.pcg(A, B, M=M, rtol=1e-30, maxiter=30, check_every=7)
    assert np.all(multi.status == "maxiter")
    for j in range(s):
        col = lpc.pcg(A, B[:, j], M=M, rtol=1e-30, maxiter=30, check_every=7)
        assert col.iterations == multi.iterations[j] == 30
        assert np.array_equal(col.x, multi.x[:, j])
        assert np.array_equal(col.residual_norms, multi.residual_norms[:, j])
        assert col.true_residual_norm == multi.true_residual_norm[j]


# --------------------------------------------------------------------------- multi-RHS, batches
@pytest.mark.parametrize("form", ["csr", "dense", "jacobi"])
def test_multi_rhs_equals_columns(form, rng):
    A = poisson(12, 2)
    n = A.shape[0]
    B = rng.standard_normal((n, 5))
    B[:, 2] *= 1e-3  # different scales: different iteration counts per column
    B[:, 4] = 0.0  # a zero column converges at once
    M = sp.diags(1.0 / A.diagonal()) if form == "jacobi" else None
    Aop = A.toarray() if form == "dense" else A
    multi = lpc.pcg(Aop, B, M=M, rtol=1e-9)
    assert multi.x.shape == B.shape
    assert multi.residual_norms.shape == (int(multi.iterations.max()) + 1, 5)
    for j in range(5):
        col = lpc.pcg(Aop, B[:, j], M=M, rtol=1e-9)
        assert multi.iterations[j] == col.iterations
        assert multi.status[j] == col.status == "converged"
        scale = max(np.linalg.norm(col.x), 1e-300)
        assert np.linalg.norm(multi.x[:, j] - col.x) <= 1e-10 * scale
    assert multi.iterations[4] == 0 and np.all(multi.x[:, 4] == 0)


@pytest.mark.parametrize("n", [4, 6, 40])
def test_batched_equals_loop(n, rng):
    N = 7
    J = rng.standard_normal((N, 3 * n, n))
    A = J.transpose(0, 2, 1) @ J + 1e-2 * np.eye(n)
    b = rng.standard_normal((N, n))
    Mb = np.linalg.inv(A + np.eye(n))  # a crude SPD preconditioner per system
    for M in (None, Mb):
        res = lpc.pcg(A, b, M=M, rtol=1e-10)
        assert res.x.shape == (N, n)
        for i in range(N):
            one = lpc.pcg(A[i], b[i], M=None if M is None else M[i], rtol=1e-10)
            assert res.iterations[i] == one.iterations
            assert res.status[i] == one.status == "converged"
            assert np.allclose(res.x[i], one.x, rtol=1e-8, atol=1e-12)
        kmax = int(res.iterations.max())
        assert res.residual_norms.shape == (kmax + 1, N)


def test_batched_numba_vs_array_api_path(rng):
    """The small-system Numba kernel against the generic path (forced through a callback)."""
    N, n = 20, 6
    J = rng.standard_normal((N, 10, n))
    A = J.transpose(0, 2, 1) @ J
    b = rng.standard_normal((N, n))
    fast = lpc.pcg(A, b, rtol=1e-12)
    slow = lpc.pcg(A, b, rtol=1e-12, callback=lambda xk: None)
    assert np.array_equal(fast.iterations, slow.iterations)
    assert np.allclose(fast.x, slow.x, rtol=1e-9, atol=0)
    assert np.allclose(fast.residual_norms, slow.residual_norms, rtol=1e-6, atol=1e-11)


# --------------------------------------------------------------------------- mixed precision
def test_fp32_refinement_reaches_fp64_residual(rng):
    A = poisson(32, 2)
    b = rng.standard_normal(A.shape[0])
    rtol = 1e-12
    ref = lpc.pcg(A, b, rtol=rtol)
    mixed = lpc.pcg(A, b, rtol=rtol, compute="fp32")
    assert ref.status == "converged" and mixed.status == "converged"
    assert mixed.x.dtype == np.float64
    assert mixed.true_residual_norm < rtol * np.linalg.norm(b)
    assert np.linalg.norm(b - A @ mixed.x) < rtol * np.linalg.norm(b)
    assert len(mixed.residual_norms) == mixed.iterations + 1
    # plain fp32 cannot reach that residual and must not claim it did
    plain = lpc.pcg(A.astype(np.float32), b.astype(np.float32), rtol=rtol, maxiter=3000)
    assert plain.status in ("breakdown", "maxiter")
    true32 = np.linalg.norm(b - A @ plain.x.astype(np.float64))
    assert true32 > rtol * np.linalg.norm(b)


@pytest.mark.parametrize("shape", ["multi", "batched"])
def test_fp32_refinement_multi_and_batched(shape, rng):
    rtol = 1e-11
    if shape == "multi":
        A = poisson(10, 2)
        b = rng.standard_normal((A.shape[0], 3))
        res = lpc.pcg(A.toarray(), b, rtol=rtol, compute="fp32")
        r = b - A @ res.x
        nb = np.linalg.norm(b, axis=0)
        assert np.all(np.linalg.norm(r, axis=0) < rtol * nb)
    else:
        J = rng.standard_normal((5, 30, 8))
        A = J.transpose(0, 2, 1) @ J
        b = rng.standard_normal((5, 8))
        res = lpc.pcg(A, b, rtol=rtol, compute="fp32")
        r = b - (A @ res.x[..., None])[..., 0]
        assert np.all(np.linalg.norm(r, axis=1) < rtol * np.linalg.norm(b, axis=1))
    assert np.all(res.status == "converged")


def test_fp32_never_false_convergence(rng):
    """Whatever the status, "converged" means the true residual passes the test."""
    A = poisson(40, 2).astype(np.float32)
    b = rng.standard_normal(A.shape[0]).astype(np.float32)
    for rtol in (1e-4, 1e-6, 1e-7, 1e-9):
        res = lpc.pcg(A, b, rtol=rtol, check_every=1000)
        r = b.astype(np.float64) - A.astype(np.float64) @ res.x.astype(np.float64)
        if res.status == "converged":
            # the fp32 evaluation of the residual is itself accurate to ≈ nnz_row·u32·‖|A||x|‖
            slack = 8 * 5 * unit_roundoff("fp32") * np.linalg.norm(abs(A) @ abs(res.x))
            assert np.linalg.norm(r) < rtol * np.linalg.norm(b) + slack
        else:
            assert res.status in ("breakdown", "maxiter")


# --------------------------------------------------------------------------- status reporting
def test_indefinite_A_reported():
    A = np.diag([1.0, 2.0, -3.0, 4.0])
    res = lpc.pcg(A, np.ones(4))
    assert res.status == "indefinite" and not res.converged
    assert np.all(np.isfinite(res.x))


def test_indefinite_M_reported():
    A = np.diag([1.0, 2.0, 3.0])
    M = np.diag([1.0, -1.0, 1.0])
    res = lpc.pcg(A, np.array([0.0, 1.0, 0.0]), M=M)
    assert res.status == "indefinite"


def test_nonfinite_reported():
    calls = [0]
    d = np.arange(1.0, 6.0)

    def bad(x):
        calls[0] += 1
        y = d * x
        if calls[0] > 2:
            y = y * np.nan
        return y

    res = lpc.pcg(bad, np.ones(5))
    assert res.status == "nonfinite" and not res.converged
    assert np.all(np.isfinite(res.x))


def test_maxiter_status_and_history(rng):
    A = poisson(16, 2)
    b = rng.standard_normal(A.shape[0])
    res = lpc.pcg(A, b, rtol=1e-12, maxiter=7)
    assert res.status == "maxiter" and res.iterations == 7
    assert len(res.residual_norms) == 8
    assert res.true_residual_norm == pytest.approx(np.linalg.norm(b - A @ res.x), rel=1e-10)


def test_zero_rhs_and_exact_x0(rng):
    A = poisson(6, 2)
    res = lpc.pcg(A, np.zeros(A.shape[0]))
    assert res.status == "converged" and res.iterations == 0 and not np.any(res.x)
    x = rng.standard_normal(A.shape[0])
    res = lpc.pcg(A, A @ x, x0=x)
    assert res.status == "converged" and res.iterations == 0
    assert np.array_equal(res.x, x)


def test_callback_and_operator_forms(rng):
    A = poisson(8, 2)
    b = rng.standard_normal(A.shape[0])
    seen = []
    res = lpc.pcg(lambda v: A @ v, b, rtol=1e-10, callback=lambda xk: seen.append(xk.shape))
    assert res.status == "converged" and len(seen) == res.iterations
    assert all(s == b.shape for s in seen)
    ref = lpc.pcg(A, b, rtol=1e-10)
    assert abs(res.iterations - ref.iterations) <= 1
    assert np.allclose(res.x, ref.x, rtol=1e-7)


# --------------------------------------------------------------------------- namespaces
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_dense_every_namespace(xp, dtype, rng):
    n = 30
    J = rng.standard_normal((60, n))
    A = J.T @ J / 60 + 0.1 * np.eye(n)
    b = rng.standard_normal(n)
    dt = getattr(xp, dtype)
    rtol = 1e-10 if dtype == "float64" else 1e-5
    res = lpc.pcg(xp.asarray(A, dtype=dt), xp.asarray(b, dtype=dt), rtol=rtol)
    assert res.status == "converged"
    assert type(res.x) is type(xp.asarray(b, dtype=dt))
    assert res.x.dtype == dt
    x = to_numpy(res.x).astype(np.float64)
    u = unit_roundoff("fp64" if dtype == "float64" else "fp32")
    kappa = np.linalg.cond(A)
    xs = np.linalg.solve(A, b)
    assert np.linalg.norm(x - xs) <= 2 * kappa * (rtol + 50 * n * u) * np.linalg.norm(xs)
    # multi-RHS and batches in the namespace
    B = rng.standard_normal((n, 3))
    res = lpc.pcg(xp.asarray(A, dtype=dt), xp.asarray(B, dtype=dt), rtol=rtol)
    assert np.all(res.status == "converged")
    Ab = np.stack([A, A + np.eye(n)])
    bb = rng.standard_normal((2, n))
    res = lpc.pcg(xp.asarray(Ab, dtype=dt), xp.asarray(bb, dtype=dt), rtol=rtol,
                  M=xp.asarray(np.linalg.inv(Ab), dtype=dt))
    assert np.all(res.status == "converged") and np.all(res.iterations <= 3)


def test_refinement_every_namespace(xp, rng):
    n = 25
    J = rng.standard_normal((40, n))
    A = J.T @ J + 0.5 * np.eye(n)
    b = rng.standard_normal(n)
    res = lpc.pcg(xp.asarray(A), xp.asarray(b), rtol=1e-13, compute="fp32")
    assert res.status == "converged"
    x = to_numpy(res.x)
    assert np.linalg.norm(b - A @ x) < 1e-13 * np.linalg.norm(b)


@pytest.mark.gpu
def test_cupy_sparse():
    cupy = pytest.importorskip("cupy")
    import cupyx.scipy.sparse as csp

    A = poisson(20, 2)
    b = np.random.default_rng(0).standard_normal(A.shape[0])
    res = lpc.pcg(csp.csr_matrix(A), cupy.asarray(b), rtol=1e-9)
    _, k = scipy_iterations(A, b, rtol=1e-9)
    assert res.status == "converged" and abs(res.iterations - k) <= ITER_TOL * k


# --------------------------------------------------------------------------- bad input
def test_precision_is_a_deprecated_alias_of_compute(rng):
    """precision= still works, warns, and gives exactly the compute= result."""
    A = poisson(8, 2)
    b = rng.standard_normal(A.shape[0])
    new = lpc.pcg(A, b, rtol=1e-13, compute="fp32")
    with pytest.warns(DeprecationWarning, match="compute"):
        old = lpc.pcg(A, b, rtol=1e-13, precision="fp32")
    assert old.status == new.status and old.iterations == new.iterations
    assert np.array_equal(old.x, new.x)


def test_bad_input_names_argument():
    A = np.eye(3)
    with pytest.raises(ValueError, match="A"):
        lpc.pcg(np.ones((3, 4)), np.ones(3))
    with pytest.raises(ValueError, match="b"):
        lpc.pcg(A, np.ones(4))
    with pytest.raises(ValueError, match="b"):
        lpc.pcg(np.stack([A, A]), np.ones((3, 3)))
    bad = A.copy()
    bad[1, 1] = np.nan
    with pytest.raises(ValueError, match="A"):
        lpc.pcg(bad, np.ones(3))
    with pytest.raises(ValueError, match="b"):
        lpc.pcg(A, np.array([1.0, np.inf, 0.0]))
    with pytest.raises(ValueError, match="x0"):
        lpc.pcg(A, np.ones(3), x0=np.array([0.0, np.nan, 0.0]))
    with pytest.raises(ValueError, match="x0"):
        lpc.pcg(A, np.ones(3), x0=np.ones(2))
    with pytest.raises(ValueError, match="M"):
        lpc.pcg(A, np.ones(3), M=np.ones((2, 2)))
    with pytest.raises(ValueError, match="M"):
        lpc.pcg(A, np.ones(3), M=bad)
    with pytest.raises(ValueError, match="A"):
        lpc.pcg(sp.csr_matrix(np.ones((3, 4))), np.ones(3))
    with pytest.raises(ValueError, match="rtol"):
        lpc.pcg(A, np.ones(3), rtol=-1.0)
    with pytest.raises(ValueError, match="check_every"):
        lpc.pcg(A, np.ones(3), check_every=0)
    with pytest.raises(ValueError, match="precision"):
        lpc.pcg(A, np.ones(3), precision="fp8")
    with pytest.raises(ValueError, match="compute"):
        lpc.pcg(A, np.ones(3), compute="fp8")
    with pytest.raises(ValueError, match="compute"):
        lpc.pcg(A, np.ones(3), compute="bf16")
    with pytest.raises(ValueError, match="compute"):
        lpc.pcg(A, np.ones(3), compute="fp32", precision="fp32")
    with pytest.raises(TypeError):
        lpc.pcg(A, np.ones(3, dtype=complex))


# --------------------------------------------------------------------------- properties
@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 12), seed=st.integers(0, 2**31 - 1), logk=st.floats(0, 6))
def test_property_dense_solution(n, seed, logk):
    g = np.random.default_rng(seed)
    Q, _ = np.linalg.qr(g.standard_normal((n, n)))
    ev = np.logspace(0, logk, n)
    A = (Q * ev) @ Q.T
    A = 0.5 * (A + A.T)
    b = g.standard_normal(n)
    res = lpc.pcg(A, b, rtol=1e-10, maxiter=50 * n)
    x = np.linalg.solve(A, b)
    if res.status == "converged":
        assert np.linalg.norm(b - A @ res.x) < 1e-10 * np.linalg.norm(b)
        kappa = ev[-1] / ev[0]
        assert np.linalg.norm(res.x - x) <= 2 * kappa * (1e-10 + 100 * n * 2**-53) * (
            np.linalg.norm(x))
    else:
        assert res.status in ("breakdown", "maxiter")
        assert res.true_residual_norm == pytest.approx(np.linalg.norm(b - A @ res.x), rel=1e-6,
                                                       abs=1e-300)
