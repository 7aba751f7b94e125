"""subspace_refresh, select_columns, eigenbasis_quality against independent fp64 formulas."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import linalg_pc as lpc
import linalg_pc._backend as B
from linalg_pc.precision import to_storage, unit_roundoff

sys.path.insert(0, str(Path(__file__).parent))
from _helpers import (  # noqa: E402
    LAPACK_RATIO,
    factor_types,
    loss_1,
    np64,
    orthogonal,
    spd_with_spectrum,
)


def _ref_rotate(K, Q, J, sort):
    """Q_J P qr(Pᵀ Q_Jᵀ K Q_J P).Q in fp64 with diag(R) >= 0 (the defining formula)."""
    QJ = Q[:, J]
    M = QJ.T @ K @ QJ
    M = 0.5 * (M + M.T)
    perm = np.argsort(-np.diag(M), kind="stable") if sort else np.arange(len(J))
    QJ = QJ[:, perm]
    W, R = np.linalg.qr(M[np.ix_(perm, perm)])
    W = W * np.where(np.diag(R) < 0, -1.0, 1.0)
    return QJ @ W, perm


@pytest.mark.parametrize("sort", [False, True])
@pytest.mark.parametrize("method", ["rotate", "project"])
def test_rotate_equals_formula(rng, sort, method):
    d = 40
    K = spd_with_spectrum(rng.uniform(0.1, 5.0, d), rng)
    Q = orthogonal(d, rng)
    J = np.array([3, 7, 8, 20, 33, 39])
    res = lpc.subspace_refresh(K, Q, J, method=method, compute="fp64", sort=sort)
    ref, perm = _ref_rotate(K, Q, J, sort)
    # the k×k QR is well conditioned here (κ(M) ≤ 50): agreement to a few hundred ulps
    assert np.linalg.cond(Q[:, J].T @ K @ Q[:, J]) < 50
    assert np.abs(res.Q[:, J] - ref).max() < LAPACK_RATIO * d * 2.0**-53
    np.testing.assert_array_equal(res.permutation[J], J[perm])
    rq = np.einsum("ij,ij->j", ref, K @ ref)
    np.testing.assert_allclose(np64(res.eigenvalues), rq, rtol=1e-12, atol=1e-12)


def test_untouched_columns_bit_for_bit(xp, rng):
    d = 30
    K = xp.asarray(spd_with_spectrum(rng.uniform(0.1, 2.0, d), rng).astype(np.float32))
    Qh = orthogonal(d, rng, np.float32)
    Q = xp.asarray(Qh)
    J = [0, 5, 6, 29]
    for method in ("rotate", "project"):
        res = lpc.subspace_refresh(K, Q, J, method=method)
        out = B.to_numpy(res.Q)
        rest = np.setdiff1d(np.arange(d), J)
        assert out.dtype == np.float32
        np.testing.assert_array_equal(out[:, rest].view(np.uint32), Qh[:, rest].view(np.uint32))
        assert not np.array_equal(out[:, J], Qh[:, J])


@pytest.mark.parametrize("lib", ["numpy", "torch"])
def test_untouched_columns_bf16(rng, lib):
    d = 32
    Kh = spd_with_spectrum(rng.uniform(0.1, 2.0, d), rng).astype(np.float32)
    Qh = orthogonal(d, rng, np.float32)
    if lib == "torch":
        torch = pytest.importorskip("torch")
        K, Q = torch.from_numpy(Kh), torch.from_numpy(Qh)
    else:
        K, Q = Kh, Qh
    Qb = to_storage(Q, "bf16")
    res = lpc.subspace_refresh(K, Qb, [1, 2, 3, 4], method="project")
    assert B.format_of(res.Q).name == "bf16"
    a = B.to_numpy(res.Q).view(np.uint16)
    b = B.to_numpy(Qb).view(np.uint16)
    rest = np.r_[0, 5:d]
    np.testing.assert_array_equal(a[:, rest], b[:, rest])


def test_permutation_reorders_eigenvectors(rng):
    """On an exact (shuffled) eigenbasis the refresh only reorders and re-signs columns."""
    d = 24
    w = np.linspace(1.0, 24.0, d)
    V = orthogonal(d, rng)
    K = (V * w) @ V.T
    shuffle = rng.permutation(d)
    Q = V[:, shuffle]
    J = np.array([2, 5, 9, 10, 17])
    for method in ("rotate", "project"):
        res = lpc.subspace_refresh(K, Q, J, method=method, compute="fp64")
        perm = np.asarray(res.permutation)
        assert sorted(perm[J].tolist()) == sorted(J.tolist())
        np.testing.assert_array_equal(perm[np.setdiff1d(np.arange(d), J)],
                                      np.setdiff1d(np.arange(d), J))
        for j in J:
            np.testing.assert_allclose(np.abs(res.Q[:, j]), np.abs(Q[:, perm[j]]), atol=1e-12)
        expected = np.sort(w[shuffle[J]])[::-1]
        np.testing.assert_allclose(res.eigenvalues, expected, rtol=1e-12)
        # a caller permuting its statistics with the permutation keeps them aligned
        stats = w[shuffle]
        np.testing.assert_allclose(stats[perm][J], expected, rtol=1e-12)


def test_operator_equals_array(rng):
    import scipy.sparse.linalg as spla

    d = 20
    K = spd_with_spectrum(rng.uniform(0.1, 2.0, d), rng).astype(np.float32)
    Q = orthogonal(d, rng, np.float32)
    J = [1, 4, 9]
    ref = lpc.subspace_refresh(K, Q, J)
    for op in (lambda X: K @ X, spla.aslinearoperator(K)):
        for method in ("rotate", "project"):
            r = lpc.subspace_refresh(op, Q, J, method=method)
            a = lpc.subspace_refresh(K, Q, J, method=method)
            np.testing.assert_array_equal(r.Q, a.Q)
            np.testing.assert_array_equal(r.eigenvalues, a.eigenvalues)
    np.testing.assert_array_equal(lpc.subspace_refresh(lambda X: K @ X, Q, J).Q, ref.Q)


def test_operator_low_rank_never_formed(rng):
    """K = Q diag(λ) Qᵀ + G Gᵀ applied as an operator matches the dense K."""
    d, n = 32, 4
    Q = orthogonal(d, rng)
    lam = rng.uniform(0.5, 2.0, d)
    G = rng.standard_normal((d, n))

    def op(X):
        return Q @ (lam[:, None] * (Q.T @ X)) + G @ (G.T @ X)

    K = (Q * lam) @ Q.T + G @ G.T
    J = [0, 1, 2, 3, 4, 5, 6, 7]
    a = lpc.subspace_refresh(op, Q, J, compute="fp64")
    b = lpc.subspace_refresh(K, Q, J, compute="fp64")
    np.testing.assert_allclose(a.Q, b.Q, atol=1e-12)


def test_batched_matches_single(xp, rng):
    d = 16
    Ks = np.stack([spd_with_spectrum(rng.uniform(0.1, 2.0, d), rng) for _ in range(3)])
    Qs = np.stack([orthogonal(d, rng) for _ in range(3)])
    J = [2, 3, 11]
    res = lpc.subspace_refresh(xp.asarray(Ks), xp.asarray(Qs), J, compute="fp64")
    assert tuple(res.Q.shape) == (3, d, d)
    assert tuple(res.permutation.shape) == (3, d)
    for i in range(3):
        one = lpc.subspace_refresh(Ks[i], Qs[i], J, compute="fp64")
        np.testing.assert_allclose(np64(res.Q)[i], one.Q, atol=1e-13)
        np.testing.assert_array_equal(B.to_numpy(res.permutation)[i], one.permutation)
        np.testing.assert_allclose(np64(res.eigenvalues)[i], one.eigenvalues, rtol=1e-12)


@pytest.mark.parametrize("method", ["rotate", "project"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_orthogonality_on_matrix_types(xp, rng, method, dtype):
    """O(u) of the compute format on LAPACK-style factors, every namespace (xQRT01 ratio)."""
    comp = "fp32" if dtype == "float32" else "fp64"
    u = unit_roundoff(comp)
    for d in (1, 2, 5, 10, 50):
        Q = orthogonal(d, rng).astype(dtype)
        J = np.sort(rng.permutation(d)[: max(1, d // 3)])
        for name, K in factor_types(d, rng).items():
            res = lpc.subspace_refresh(xp.asarray(K.astype(dtype)), xp.asarray(Q), J,
                                       method=method, compute=comp)
            ratio = loss_1(res.Q) / (d * u)
            assert ratio < LAPACK_RATIO, (d, name, ratio)
            assert np.all(np.isfinite(np64(res.eigenvalues))), (d, name)


def test_rank_deficient_flag(rng):
    d = 12
    Q = orthogonal(d, rng)
    res = lpc.subspace_refresh(np.zeros((d, d)), Q, [0, 1, 2], compute="fp64")
    assert res.info.rank_deficient
    assert loss_1(res.Q) < LAPACK_RATIO * d * 2.0**-53
    res = lpc.subspace_refresh(np.eye(d), Q, [0, 1, 2], compute="fp64")
    assert not res.info.rank_deficient
    assert res.info.method == "rotate" and res.info.k == 3


@settings(max_examples=40, deadline=None)
@given(d=st.integers(2, 30), seed=st.integers(0, 2**31 - 1), sort=st.booleans(),
       method=st.sampled_from(["rotate", "project"]))
def test_refresh_property(d, seed, sort, method):
    g = np.random.default_rng(seed)
    k = int(g.integers(1, d + 1))
    J = np.sort(g.permutation(d)[:k])
    K = spd_with_spectrum(g.uniform(-1, 3, d), g)
    Q = orthogonal(d, g)
    res = lpc.subspace_refresh(K, Q, J, method=method, compute="fp64", sort=sort)
    assert loss_1(res.Q) < LAPACK_RATIO * d * 2.0**-53
    # the span of the refreshed columns is the span of the old ones
    P_old = Q[:, J] @ Q[:, J].T
    P_new = res.Q[:, J] @ res.Q[:, J].T
    assert np.abs(P_old - P_new).max() < 1e-12
    if sort:
        ev = np.asarray(res.eigenvalues)
        # Rayleigh quotients after one QR step need not be sorted, but the pre-QR order was;
        # the permutation is a bijection of J
        assert sorted(np.asarray(res.permutation)[J].tolist()) == J.tolist()
        assert ev.shape == (k,)


# --------------------------------------------------------------------------- bad input
def test_bad_input(rng):
    d = 10
    K = spd_with_spectrum(rng.uniform(0.1, 1, d), rng)
    Q = orthogonal(d, rng)
    with pytest.raises(ValueError, match=r"cols has indices out of range \[0, 10\): \[10\]"):
        lpc.subspace_refresh(K, Q, [1, 10])
    with pytest.raises(ValueError, match="out of range"):
        lpc.subspace_refresh(K, Q, [-1, 2])
    with pytest.raises(ValueError, match=r"cols has repeated indices: \[2\]"):
        lpc.subspace_refresh(K, Q, [2, 3, 2])
    with pytest.raises(ValueError, match="at least one column"):
        lpc.subspace_refresh(K, Q, [])
    with pytest.raises(ValueError, match="1-D"):
        lpc.subspace_refresh(K, Q, [[1, 2]])
    with pytest.raises(ValueError, match="integer"):
        lpc.subspace_refresh(K, Q, [1.5, 2.0])
    with pytest.raises(ValueError, match="K must be square"):
        lpc.subspace_refresh(K[:, :9], Q, [1])
    with pytest.raises(ValueError, match="does not match Q"):
        lpc.subspace_refresh(K[:9, :9], Q, [1])
    with pytest.raises(ValueError, match=r"Q is not orthonormal.*measured loss.* = [0-9]"):
        lpc.subspace_refresh(K, 2.0 * Q, [1, 2])
    with pytest.raises(ValueError, match="K has non-finite"):
        Kn = K.copy()
        Kn[0, 0] = np.inf
        lpc.subspace_refresh(Kn, Q, [1])
    with pytest.raises(ValueError, match="method"):
        lpc.subspace_refresh(K, Q, [1], method="jacobi")
    with pytest.raises(ValueError, match="compute"):
        lpc.subspace_refresh(K, Q, [1], compute="bf16")
    with pytest.raises(TypeError, match="K must be an array, a callable"):
        lpc.subspace_refresh("K", Q, [1])
    with pytest.raises(ValueError, match=r"K\(X\) must return an array shaped like X"):
        lpc.subspace_refresh(lambda X: X[:-1], Q, [1])
    with pytest.raises(ValueError, match="m <= d"):
        lpc.subspace_refresh(K[:3, :3], Q[:3, :], [1])
    with pytest.raises(ValueError, match="batch shape"):
        lpc.subspace_refresh(np.stack([K, K]), np.stack([Q, Q, Q]), [1])
    torch = pytest.importorskip("torch")
    with pytest.raises(TypeError, match="torch array but Q is a numpy"):
        lpc.subspace_refresh(torch.from_numpy(K), Q, [1])
    # a nearly orthonormal Q (bf16-like error) is accepted; the loss is reported
    res = lpc.subspace_refresh(K, Q + 1e-4 * rng.standard_normal(Q.shape), [1, 2])
    assert 0 < res.info.input_loss < 0.1


# --------------------------------------------------------------------------- quality
def test_eigenbasis_quality(xp, rng):
    d = 12
    w = rng.uniform(0.1, 3.0, d)
    V = orthogonal(d, rng)
    K = (V * w) @ V.T
    assert lpc.eigenbasis_quality(xp.asarray(K), xp.asarray(V)) < 1e-14
    Q = orthogonal(d, rng)
    M = Q.T @ K @ Q
    ref = np.linalg.norm(M - np.diag(np.diag(M))) / np.linalg.norm(M)
    got = lpc.eigenbasis_quality(xp.asarray(K.astype(np.float32)), xp.asarray(Q))
    assert abs(got - ref) < 1e-6 * ref
    assert lpc.eigenbasis_quality(np.zeros((d, d)), Q) == 0.0
    assert abs(lpc.eigenbasis_quality(lambda X: K @ X, Q) - ref) < 1e-12
    batch = lpc.eigenbasis_quality(np.stack([K, K]), np.stack([V, Q]))
    assert batch.shape == (2,) and batch[0] < 1e-14 and abs(batch[1] - ref) < 1e-12


def test_eigenbasis_quality_bf16(rng):
    d = 16
    V = orthogonal(d, rng, np.float32)
    K = (V * np.linspace(1, 2, d)) @ V.T
    q = lpc.eigenbasis_quality(K, to_storage(V, "bf16"))
    assert 0 < q < 10 * unit_roundoff("bf16")


# --------------------------------------------------------------------------- selection
def test_select_cyclic_covers_and_shifts():
    m, k = 16, 4
    seen = np.zeros(m, int)
    for step in range(4):
        c = lpc.select_columns("cyclic", k, step=step, ncols=m)
        assert c.size == k and np.unique(c).size == k
        seen[c] += 1
    assert np.all(seen == 1)  # first sweep: a partition
    second = [lpc.select_columns("cyclic", k, step=s, ncols=m) for s in range(4, 8)]
    np.testing.assert_array_equal(second[0], [2, 3, 4, 5])  # shifted by k/2
    assert sorted(np.concatenate(second).tolist()) == list(range(m))


def test_select_topk_residual_random(rng):
    d = 20
    w = rng.uniform(1, 2, d)
    np.testing.assert_array_equal(lpc.select_columns("topk", 3, estimates=w),
                                  np.sort(np.argsort(-w)[:3]))
    V = orthogonal(d, rng)
    K = (V * w) @ V.T
    # topk without estimates uses the Rayleigh quotients diag(QᵀKQ)
    np.testing.assert_array_equal(lpc.select_columns("topk", 3, K=K, Q=V),
                                  np.sort(np.argsort(-w)[:3]))
    # perturb columns 3 and 11 by a rotation between them: they carry the residual
    Q = V.copy()
    c, s = np.cos(0.3), np.sin(0.3)
    Q[:, [3, 11]] = V[:, [3, 11]] @ np.array([[c, -s], [s, c]])
    assert lpc.select_columns("residual", 2, K=K, Q=Q).tolist() == [3, 11]
    M = Q.T @ K @ Q
    off = (M**2).sum(axis=0) - np.diag(M) ** 2
    np.testing.assert_allclose(lpc.basis.subspace.column_scores("residual", K=K, Q=Q), off,
                               atol=1e-12)
    r1 = lpc.select_columns("random", 5, ncols=d, rng=3)
    r2 = lpc.select_columns("random", 5, ncols=d, rng=3)
    np.testing.assert_array_equal(r1, r2)
    assert np.unique(r1).size == 5
    tc = lpc.select_columns("topk-cyclic", 6, step=0, estimates=w)
    assert set(np.argsort(-w)[:3].tolist()) <= set(tc.tolist()) and tc.size == 6


def test_select_bad_input():
    with pytest.raises(ValueError, match="policy"):
        lpc.select_columns("greedy", 2, ncols=5)
    with pytest.raises(ValueError, match="k must be"):
        lpc.select_columns("cyclic", 6, step=0, ncols=5)
    with pytest.raises(ValueError, match="needs a non-negative step"):
        lpc.select_columns("cyclic", 2, ncols=5)
    with pytest.raises(ValueError, match="needs both K and Q"):
        lpc.select_columns("residual", 2, ncols=5)
    with pytest.raises(ValueError, match="number of columns is unknown"):
        lpc.select_columns("random", 2)


@pytest.mark.parametrize("layout", ["C", "F", "strided"])
def test_numpy_layouts_and_scattered_columns(rng, layout):
    """The NumPy path (one-pass gather/scatter, product written into the result), any layout."""
    d = 48
    K = spd_with_spectrum(rng.uniform(0.1, 5.0, d), rng)
    Q0 = orthogonal(d, rng)
    Q = {"C": Q0, "F": np.asfortranarray(Q0),
         "strided": np.repeat(Q0, 2, axis=1)[:, ::2]}[layout]
    # 7 runs (gather + scatter kernels); one run inside, at the start, at the end (the product
    # is written straight into the result)
    for J in (np.array([0, 3, 4, 9, 10, 11, 20, 31, 40, 47]), np.arange(5, 17), np.arange(6),
              np.arange(40, d)):
        res = lpc.subspace_refresh(K, Q, J, compute="fp64")
        ref, perm = _ref_rotate(K, Q0, J, True)
        assert np.abs(res.Q[:, J] - ref).max() < LAPACK_RATIO * d * 2.0**-53
        rest = np.setdiff1d(np.arange(d), J)
        np.testing.assert_array_equal(res.Q[:, rest].view(np.uint64),
                                      Q0[:, rest].view(np.uint64))
        np.testing.assert_allclose(res.eigenvalues, np.einsum("ij,ij->j", ref, K @ ref),
                                   rtol=1e-12, atol=1e-12)
        np.testing.assert_array_equal(res.permutation[J], J[perm])
    batched = lpc.subspace_refresh(np.stack([K, 2 * K]), np.stack([Q, Q]), np.arange(5, 17),
                                   compute="fp64")
    np.testing.assert_allclose(batched.Q[0], lpc.subspace_refresh(
        K, Q, np.arange(5, 17), compute="fp64").Q, atol=1e-13)
    np.testing.assert_array_equal(batched.Q[1][:, :5].view(np.uint64), Q0[:, :5].view(np.uint64))
    J = np.array([0, 3, 4, 9, 10, 11, 20, 31, 40, 47])
    rest = np.setdiff1d(np.arange(d), J)
    Qb = to_storage(Q.astype(np.float32), "bf16")
    out = lpc.subspace_refresh(K.astype(np.float32), Qb, J).Q
    a, b = out.view(np.uint16), np.asarray(Qb).view(np.uint16)
    np.testing.assert_array_equal(a[:, rest], b[:, rest])
    assert not np.array_equal(a[:, J], b[:, J])
