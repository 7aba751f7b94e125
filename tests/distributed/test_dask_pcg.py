"""lpc.pcg with Dask arrays (dense and scipy.sparse row blocks, a Dask-backed operator) against
the local lpc.pcg on the same system."""

from __future__ import annotations

import dask
import numpy as np
import pytest
import scipy.sparse as sp
from _dask_cluster import client, da  # noqa: F401 - the fixture

import linalg_pc as lpc

pytestmark = pytest.mark.usefixtures("client")


def poisson2d(n):
    T = sp.diags([-1.0, 2.0, -1.0], [-1, 0, 1], shape=(n, n))
    return (sp.kron(T, sp.eye(n)) + sp.kron(sp.eye(n), T)).tocsr()


def sparse_rows(A, rows):
    blocks = [da.from_delayed(dask.delayed(A.__getitem__)(slice(i, min(i + rows, A.shape[0]))),
                              shape=(min(rows, A.shape[0] - i), A.shape[1]), dtype=A.dtype,
                              meta=sp.csr_matrix((0, 0)))
              for i in range(0, A.shape[0], rows)]
    return da.concatenate(blocks, axis=0)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_sparse_rows_history_matches_local(dtype):
    A = poisson2d(30).astype(dtype)
    b = np.random.default_rng(0).standard_normal(A.shape[0]).astype(dtype)
    res = lpc.pcg(sparse_rows(A, 300), da.from_array(b, chunks=300), maxiter=8, check_every=4)
    loc = lpc.pcg(A, b, maxiter=8, check_every=4)
    assert res.status == loc.status == "maxiter" and res.iterations == 8
    u = lpc.unit_roundoff("fp64" if dtype == np.float64 else "fp32")
    # the same recurrence, sums associated differently: O(u) apart after 8 steps (κ(A) ~ 400)
    np.testing.assert_allclose(res.residual_norms, loc.residual_norms, rtol=1e4 * u)
    x = res.x.compute()
    assert x.dtype == dtype
    np.testing.assert_allclose(x, loc.x, rtol=0, atol=1e4 * u * np.abs(loc.x).max())
    assert res.true_residual_norm == pytest.approx(loc.true_residual_norm, rel=1e4 * u)


def test_dense_rows_with_jacobi_and_x0():
    rng = np.random.default_rng(1)
    G = rng.standard_normal((300, 300))
    A = G @ G.T + 300 * np.diag(rng.uniform(1, 100, 300))
    b = rng.standard_normal(300)
    Minv = np.diag(1.0 / np.diag(A))
    x0 = rng.standard_normal(300)
    res = lpc.pcg(da.from_array(A, chunks=(100, 300)), da.from_array(b, chunks=100),
                  M=da.from_array(Minv, chunks=(100, 300)), x0=da.from_array(x0, chunks=100),
                  rtol=1e-10)
    loc = lpc.pcg(A, b, M=Minv, x0=x0, rtol=1e-10)
    assert res.status == loc.status == "converged"
    assert abs(res.iterations - loc.iterations) <= 2
    np.testing.assert_allclose(res.x.compute(), loc.x, rtol=0, atol=1e-8 * np.abs(loc.x).max())


def test_operator_converges_like_local():
    d = np.repeat(np.arange(1.0, 9.0), 50)  # 8 distinct eigenvalues: CG ends in 8 steps
    dd = da.from_array(d, chunks=100)

    def op(p):
        return dd * p

    b = np.ones(400)
    res = lpc.pcg(op, da.from_array(b, chunks=100), rtol=1e-8)
    loc = lpc.pcg(np.diag(d), b, rtol=1e-8)
    assert res.status == loc.status == "converged"
    assert abs(res.iterations - loc.iterations) <= 1
    np.testing.assert_allclose(res.x.compute(), 1.0 / d, rtol=1e-6)


def test_collections_engine_without_a_client_matches_local():
    """Under a local Dask scheduler (no distributed Client in use) the solve runs on Dask
    collections (DaskEngine) and still follows the local recurrence."""
    A = poisson2d(12)
    b = np.random.default_rng(2).standard_normal(A.shape[0])
    with dask.config.set(scheduler="threads"):
        res = lpc.pcg(sparse_rows(A, 48), da.from_array(b, chunks=48), maxiter=6, check_every=3)
    loc = lpc.pcg(A, b, maxiter=6, check_every=3)
    assert res.status == loc.status == "maxiter" and res.iterations == 6
    np.testing.assert_allclose(res.residual_norms, loc.residual_norms, rtol=1e4 * 2.0**-53)
