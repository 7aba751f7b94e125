"""Multi-RHS CSR CG kernels: serial twin vs parallel kernel bit for bit, and dense NumPy
references (the one-column operations applied column by column)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from linalg_pc._kernels import _twins
from linalg_pc._kernels import cpu_csr as K


def _matrix(n, rng, dtype):
    A = sp.random(n, n, density=0.05, random_state=np.random.default_rng(rng.integers(1 << 30)))
    A = (A + A.T + sp.identity(n) * 4.0).tocsr().astype(dtype)
    A.sort_indices()
    return A, A.indptr.view(np.uint32), A.indices.view(np.uint32)


def _both(name, make_args):
    """Run the parallel kernel and its serial twin on fresh copies of the same arguments."""
    outs = []
    par = getattr(K, name)
    t = _twins.twins_of(par)
    for kern in (par, t.serial):
        args = make_args()
        outs.append((kern(*args), args))
    return outs


def _same(a, b):
    if isinstance(a, tuple):
        return all(_same(u, v) for u, v in zip(a, b))
    if isinstance(a, np.ndarray):
        return np.array_equal(a, b)
    return a == b


def _check_twins(outs):
    (r1, a1), (r2, a2) = outs
    assert _same(r1, r2)
    for u, v in zip(a1, a2):
        if isinstance(u, np.ndarray):
            assert np.array_equal(u, v)


DTYPES = [np.float64, np.float32]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("s", [1, 5, 8])
def test_update_xp_multi(dtype, s, rng):
    n = 300
    x, p, z = (rng.standard_normal((n, s)).astype(dtype) for _ in range(3))
    ap, beta = rng.standard_normal(s), rng.standard_normal(s)
    xm = (rng.random(s) < 0.6).astype(np.uint8)
    am = (rng.random(s) < 0.6).astype(np.uint8)
    outs = _both("update_xp_multi", lambda: (x.copy(), p.copy(), z, ap, xm, beta, am))
    _check_twins(outs)
    _, (x1, p1, *_) = outs[0]
    for t in range(s):  # the one-column kernel's arithmetic: float64 coefficient, one rounding
        xr = (x[:, t] + ap[t] * p[:, t].astype(np.float64)).astype(dtype) if xm[t] else x[:, t]
        pr = (z[:, t] + beta[t] * p[:, t].astype(np.float64)).astype(dtype) if am[t] else p[:, t]
        assert np.array_equal(x1[:, t], xr) and np.array_equal(p1[:, t], pr)


@pytest.mark.parametrize("s", [3, 8])
def test_axpy_multi(s, rng):
    n = 200
    x, p = rng.standard_normal((n, s)), rng.standard_normal((n, s))
    a = rng.standard_normal(s)
    m = np.array([t % 2 for t in range(s)], dtype=np.uint8)
    outs = _both("axpy_multi", lambda: (x.copy(), a, p, m))
    _check_twins(outs)
    x1 = outs[0][1][0]
    ref = np.where(m.astype(bool)[None, :], x + a[None, :] * p, x)
    assert np.array_equal(x1, ref)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("s", [1, 5, 8, 16])
def test_csr_matmat_dot(dtype, s, rng):
    n = 500
    A, ip, ix = _matrix(n, rng, dtype)
    P = rng.standard_normal((n, s)).astype(dtype)
    names = ["csr_matmat_dot"] + (["csr_matmat8_dot"] if s % 8 == 0 else [])
    Ad = A.toarray().astype(np.float64)
    ref_q = (A @ P.astype(np.float64) if dtype == np.float64 else Ad @ P.astype(np.float64))
    for name in names:
        shape = (n, s // 8, 8) if name == "csr_matmat8_dot" else (n, s)

        def args(shape=shape):
            return (ip, ix, A.data, P.reshape(shape), np.empty(shape, dtype),
                    np.empty((K.NCHUNKS, s)))

        outs = _both(name, args)
        _check_twins(outs)
        pq, a = outs[0]
        Q = a[4].reshape(n, s)
        if dtype == np.float64:
            assert np.array_equal(Q, A @ P)  # rows summed in index order, as scipy.sparse
        else:
            assert np.allclose(Q, ref_q, rtol=1e-5, atol=1e-5)
        for t in range(s):  # bit for bit the one-column kernel
            q1 = np.empty(n, dtype)
            pq1 = K.csr_matvec_dot(ip, ix, A.data, np.ascontiguousarray(P[:, t]), q1,
                                   np.empty(K.NCHUNKS))
            assert np.array_equal(Q[:, t], q1) and pq[t] == pq1
        dense = np.einsum("ij,ij->j", P.astype(np.float64), ref_q)
        assert np.allclose(pq, dense, rtol=1e-10 if dtype == np.float64 else 1e-6, atol=0)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("jacobi", [False, True])
@pytest.mark.parametrize("s", [1, 6, 8])
def test_update_r_multi(dtype, jacobi, s, rng):
    n = 400
    r, q = (rng.standard_normal((n, s)).astype(dtype) for _ in range(2))
    alpha = rng.standard_normal(s)
    am = (rng.random(s) < 0.7).astype(np.uint8)
    d = rng.uniform(0.5, 2.0, n).astype(dtype)
    if jacobi:
        outs = _both("update_r_jacobi_multi",
                     lambda: (r.copy(), q, alpha, d, np.empty_like(r), am,
                              np.empty((K.NCHUNKS, s)), np.empty((K.NCHUNKS, s))))
    else:
        outs = _both("update_r_multi",
                     lambda: (r.copy(), q, alpha, am, np.empty((K.NCHUNKS, s))))
    _check_twins(outs)
    res, a = outs[0]
    r1 = a[0]
    for t in range(s):
        rc = r[:, t].copy()
        part = np.empty(K.NCHUNKS)
        if not am[t]:
            assert np.array_equal(r1[:, t], r[:, t])
            continue
        if jacobi:  # bit for bit the one-column kernel
            z1 = np.empty(n, dtype)
            rr, rz = K.update_r_jacobi(rc, np.ascontiguousarray(q[:, t]), float(alpha[t]), d,
                                       z1, part, np.empty(K.NCHUNKS))
            assert res[0][t] == rr and res[1][t] == rz and np.array_equal(a[4][:, t], z1)
        else:
            rr = K.update_r(rc, np.ascontiguousarray(q[:, t]), float(alpha[t]), part)
            assert res[t] == rr
        assert np.array_equal(r1[:, t], rc)
    rr_all = res[0] if jacobi else res
    ref = (r.astype(np.float64) - np.where(am.astype(bool), alpha, 0.0) * q).astype(dtype)
    tol = 1e-6 if dtype == np.float32 else 1e-15
    assert np.allclose(r1, ref, rtol=tol, atol=tol * np.abs(ref).max())
    assert np.allclose(rr_all, np.einsum("ij,ij->j", r1, r1, dtype=np.float64),
                       rtol=1e-6 if dtype == np.float32 else 1e-12)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("s", [1, 5, 8])
def test_csr_residual_gap_multi(dtype, s, rng):
    n = 500
    A, ip, ix = _matrix(n, rng, dtype)
    b, x, r = (rng.standard_normal((n, s)).astype(dtype) for _ in range(3))
    outs = _both("csr_residual_gap_multi",
                 lambda: (ip, ix, A.data, b, x, r, np.empty_like(b), np.empty((K.NCHUNKS, s)),
                          np.empty((K.NCHUNKS, s))))
    _check_twins(outs)
    (rr, gg), a = outs[0]
    rt = a[6]
    for t in range(s):  # bit for bit the one-column kernel
        rt1 = np.empty(n, dtype)
        r1, g1 = K.csr_residual_gap(ip, ix, A.data, np.ascontiguousarray(b[:, t]),
                                    np.ascontiguousarray(x[:, t]), np.ascontiguousarray(r[:, t]),
                                    rt1, np.empty(K.NCHUNKS), np.empty(K.NCHUNKS))
        assert rr[t] == r1 and gg[t] == g1 and np.array_equal(rt[:, t], rt1)
    ref = b.astype(np.float64) - A.toarray().astype(np.float64) @ x.astype(np.float64)
    tol = 1e-5 if dtype == np.float32 else 1e-13
    assert np.allclose(rt, ref, rtol=tol, atol=tol * np.abs(ref).max())
    assert np.allclose(rr, np.sum(ref**2, axis=0), rtol=10 * tol)
    assert np.allclose(gg, np.sum((r - ref) ** 2, axis=0), rtol=10 * tol)
