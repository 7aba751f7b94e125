"""Direct TRSM from NumPy's BLAS, the CholeskyQR paths with and without it, and the sleeping
OpenMP workers our kernels start with."""

import os
import subprocess
import sys

import numpy as np
import pytest
import scipy.linalg as sla
from hypothesis import given, settings
from hypothesis import strategies as st

import linalg_pc as lpc
from linalg_pc._kernels import cpu_blas
from linalg_pc.analysis.matrices import randsvd

needs_direct = pytest.mark.skipif(not cpu_blas.available(np.float32),
                                  reason="NumPy's BLAS has no reachable CBLAS TRSM here")


def _upper(n, dtype, rng, kappa=10.0):
    U, _ = np.linalg.qr(rng.standard_normal((n, n)))
    V, _ = np.linalg.qr(rng.standard_normal((n, n)))
    A = (U * np.logspace(0, -np.log10(kappa), n)) @ V.T
    R = np.linalg.qr(A, mode="r")
    return R.astype(dtype)


@needs_direct
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("m,n", [(0, 3), (1, 1), (3, 2), (50, 10), (1000, 64), (7, 33)])
def test_trsm_matches_scipy_within_backward_error(dtype, m, n):
    rng = np.random.default_rng(m * 100 + n)
    R = _upper(n, dtype, rng)
    X = rng.standard_normal((m, n)).astype(dtype)
    Rjunk = R + np.tril(np.full((n, n), 7.0, dtype), -1)  # strict lower part must not be read
    want = sla.solve_triangular(R.astype(np.float64), X.astype(np.float64).T, trans="T",
                                lower=False).T
    Y = X.copy()
    out = cpu_blas.trsm_right_upper(Y, Rjunk)
    assert out is Y
    u = np.finfo(dtype).eps / 2
    # backward stable solve: ‖Y − X R⁻¹‖ ≤ c·n·u·κ(R)·‖X R⁻¹‖ (Higham Thm 8.5 + perturbation)
    kap = np.linalg.cond(R.astype(np.float64)) if n else 1.0
    err = np.abs(Y - want).max() if m else 0.0
    assert err <= 4 * n * u * kap * max(np.abs(want).max() if m else 0.0, 1e-300) + 0.0


@needs_direct
def test_trsm_rejects_what_the_pointer_call_cannot_take():
    R = np.eye(3, dtype=np.float32)
    with pytest.raises(ValueError, match="C-contiguous"):
        cpu_blas.trsm_right_upper(np.ones((3, 4), np.float32).T.copy(order="F"), R)
    with pytest.raises(ValueError, match="dtype"):
        cpu_blas.trsm_right_upper(np.ones((4, 3), np.float64), R)
    with pytest.raises(ValueError, match=r"\(n, n\)"):
        cpu_blas.trsm_right_upper(np.ones((4, 2), np.float32), R)
    with pytest.raises(RuntimeError, match="float16"):
        cpu_blas.trsm_right_upper(np.ones((4, 3), np.float16), R.astype(np.float16))


@needs_direct
@settings(max_examples=40, deadline=None)
@given(m=st.integers(1, 60), n=st.integers(1, 12), seed=st.integers(0, 2**31 - 1),
       logk=st.floats(0, 6))
def test_trsm_hypothesis_fp64(m, n, seed, logk):
    rng = np.random.default_rng(seed)
    R = _upper(n, np.float64, rng, kappa=10.0 ** logk)
    X = rng.standard_normal((m, n))
    Y = cpu_blas.trsm_right_upper(X.copy(), R)
    # residual form of backward stability: ‖Y R − X‖ ≤ c·n·u·‖Y‖·‖R‖
    res = np.abs(Y @ R - X).max()
    assert res <= 8 * n * 2.0**-53 * np.abs(Y).max() * np.abs(R).sum(axis=0).max()


@pytest.mark.parametrize("direct", [True, False])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kappa", [1.0, 1e2, 1e3])
def test_cholqr2_same_quality_with_and_without_direct_trsm(monkeypatch, direct, dtype, kappa):
    if direct and not cpu_blas.available(dtype):
        pytest.skip("no direct TRSM")
    if not direct:
        monkeypatch.setattr(cpu_blas, "available", lambda dt: False)
    A = np.asarray(randsvd(3000, 20, kappa, dtype=np.dtype(dtype).name,
                           rng=np.random.default_rng(5)).A)
    A0 = A.copy()
    Q, R, info = lpc.qr(A, method="cholqr2")
    assert info.method == "cholqr2"
    np.testing.assert_array_equal(A, A0)  # the input is never written
    u = np.finfo(dtype).eps / 2
    Q64, R64 = Q.astype(np.float64), R.astype(np.float64)
    orth = np.linalg.norm(Q64.T @ Q64 - np.eye(20), 2)
    fact = np.linalg.norm(A.astype(np.float64) - Q64 @ R64) / np.linalg.norm(A.astype(np.float64))
    assert orth <= 6 * (3000 * 20 + 20 * 21) ** 0.5 * u  # well inside Yamamoto's 6(mnu + n(n+1)u)
    assert fact <= 5 * 20 * u


def test_direct_blas_can_be_turned_off_and_threads_start_quietly():
    code = ("import os, numpy as np, linalg_pc as lpc, numba\n"
            "from linalg_pc._kernels import cpu_blas\n"
            "lpc.to_storage(np.ones(1 << 20, np.float32), 'bf16')\n"
            "print(cpu_blas.available(np.float32), 'OMP_WAIT_POLICY' in os.environ,"
            " numba.threading_layer())\n")
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    env["LINALG_PC_DIRECT_BLAS"] = "0"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True).stdout.split()
    assert out[0] == "False"  # the switch works
    assert out[1] == "False"  # the wait policy is set for the OpenMP start only, then removed
    assert out[2] in ("omp", "tbb", "workqueue")
    env["OMP_WAIT_POLICY"] = "ACTIVE"
    code2 = "import os, linalg_pc._kernels.cpu\nprint(os.environ['OMP_WAIT_POLICY'])\n"
    out2 = subprocess.run([sys.executable, "-c", code2], env=env, capture_output=True, text=True,
                          check=True).stdout.strip()
    assert out2 == "ACTIVE"  # a user's own setting is kept


def test_import_survives_an_unavailable_threading_layer():
    env = dict(os.environ, NUMBA_THREADING_LAYER="tbb")
    code = "import importlib.util, linalg_pc; print(importlib.util.find_spec('tbb') is None)"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr  # tbb installed or not, the import works
