"""Namespace resolution and the linear-algebra primitives, against SciPy in fp64."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest
import scipy.linalg as sla

import linalg_pc as lpc
import linalg_pc._backend as B

U64 = 2.0**-53
# backward-stable triangular solve: ||x - x_ref|| / ||x_ref|| <= c * kappa * u (Higham Thm 8.5)
C_TRSV = 50.0


def _np(a):
    return np.asarray(B.to_numpy(a), dtype=np.float64)


def _tri(rng, n, lower, batch=()):
    T = rng.standard_normal(batch + (n, n))
    T = np.tril(T) if lower else np.triu(T)
    idx = np.arange(n)
    T[..., idx, idx] = 2.0 + np.abs(T[..., idx, idx])
    return T


def test_namespaces_of_16bit_arrays():
    a = np.ones(3, ml_dtypes.bfloat16)
    assert B.is_numpy(B.array_namespace(a))
    assert B.format_of(a).name == "bf16"
    torch = pytest.importorskip("torch")
    t = torch.ones(3, dtype=torch.bfloat16)
    assert B.is_torch(B.array_namespace(t))
    assert B.format_of(t).name == "bf16"
    with pytest.raises(TypeError):
        B.array_namespace(a, t)
    with pytest.raises(TypeError):
        B.array_namespace(3.0)


@pytest.mark.parametrize("lower", [True, False])
@pytest.mark.parametrize("trans", [False, True])
@pytest.mark.parametrize("side", ["left", "right"])
def test_solve_triangular_matches_scipy(xp, rng, lower, trans, side):
    n, k = 7, 3
    T = _tri(rng, n, lower)
    Bm = rng.standard_normal((n, k) if side == "left" else (k, n))
    X = B.solve_triangular(xp.asarray(T), xp.asarray(Bm), lower=lower, trans=trans, side=side)
    if side == "left":
        ref = sla.solve_triangular(T, Bm, lower=lower, trans=int(trans))
    else:
        ref = sla.solve_triangular(T, Bm.T, lower=lower, trans=int(not trans)).T
    kappa = np.linalg.cond(T)
    err = np.linalg.norm(_np(X) - ref) / np.linalg.norm(ref)
    assert err <= C_TRSV * kappa * U64


def test_solve_triangular_batched_and_unit(xp, rng):
    T = _tri(rng, 5, True, batch=(4,))
    Bm = rng.standard_normal((4, 5, 2))
    X = _np(B.solve_triangular(xp.asarray(T), xp.asarray(Bm), lower=True, unit_diagonal=True))
    for i in range(4):
        ref = sla.solve_triangular(T[i], Bm[i], lower=True, unit_diagonal=True)
        np.testing.assert_allclose(X[i], ref, rtol=1e-12, atol=1e-12)


def test_cholesky_success(xp, rng):
    G = rng.standard_normal((6, 6))
    A = G @ G.T + 6 * np.eye(6)
    L, info = B.cholesky(xp.asarray(A))
    assert info == 0
    np.testing.assert_allclose(_np(L), np.linalg.cholesky(A), rtol=1e-12, atol=1e-12)
    R, info = B.cholesky(xp.asarray(A), lower=False)
    assert info == 0
    np.testing.assert_allclose(_np(R), np.linalg.cholesky(A).T, rtol=1e-12, atol=1e-12)


def test_cholesky_reports_failure_as_value(xp):
    # leading minors of order 1, 2 positive, order 3 negative
    A = np.array([[4.0, 2, 0, 0], [2, 5, 3, 0], [0, 3, 1, 0], [0, 0, 0, 1]])
    L, info = B.cholesky(xp.asarray(A))
    assert info == 3
    bad = np.stack([np.eye(4), A, np.eye(4) * -1, np.full((4, 4), np.nan)])
    _, infos = B.cholesky(xp.asarray(bad))
    assert isinstance(infos, np.ndarray) and infos.shape == (4,)
    assert infos[0] == 0 and infos[2] == 1 and infos[3] > 0
    if not B.is_torch(xp):  # torch's cholesky_ex reports the same minor
        assert infos[1] == 3
    else:
        assert infos[1] > 0


def test_cho_solve(xp, rng):
    G = rng.standard_normal((5, 5))
    A = G @ G.T + 5 * np.eye(5)
    b = rng.standard_normal((5, 2))
    L, _ = B.cholesky(xp.asarray(A))
    x = _np(B.cho_solve(L, xp.asarray(b)))
    np.testing.assert_allclose(x, np.linalg.solve(A, b), rtol=1e-10)
    R, _ = B.cholesky(xp.asarray(A), lower=False)
    np.testing.assert_allclose(_np(B.cho_solve(R, xp.asarray(b), lower=False)),
                               np.linalg.solve(A, b), rtol=1e-10)


def test_fallback_cholesky_matches_lapack(rng):
    xs = pytest.importorskip("array_api_strict")
    G = rng.standard_normal((3, 6, 6))
    A = G @ np.swapaxes(G, -1, -2) + 6 * np.eye(6)
    L, info = B._cholesky_fallback(xs, xs.asarray(A))
    assert np.all(info == 0)
    np.testing.assert_allclose(_np(L), np.linalg.cholesky(A), rtol=1e-12, atol=1e-12)


def test_to_namespace_roundtrip_bf16():
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(0).standard_normal(10).astype(np.float32)
    s = lpc.to_storage(x, "bf16")
    t = B.to_namespace(s, torch)
    assert t.dtype == torch.bfloat16
    back = B.to_namespace(t, np)
    np.testing.assert_array_equal(back.view(np.uint16), s.view(np.uint16))
    t32 = B.to_namespace(x, torch.zeros(1))
    assert t32.dtype == torch.float32
    np.testing.assert_array_equal(t32.numpy(), x)


def test_check_finite_names_argument():
    xp = B.array_namespace(np.zeros(1))
    B.check_finite(xp, np.ones(3), "A")
    with pytest.raises(ValueError, match="A"):
        B.check_finite(xp, np.array([1.0, np.nan]), "A")
    with pytest.raises(ValueError, match="G"):
        B.check_finite(xp, np.array([1.0, np.inf]).astype(ml_dtypes.bfloat16), "G")


@pytest.mark.parametrize("shape", [(5, 3), (2, 4, 7), (600, 40), (2, 520, 30)])
def test_gram_is_the_symmetric_row_gram(xp, shape):
    """B.gram(X) = X Xᵀ (fp64 reference, to c·r·u·‖X‖²) and exactly symmetric, for a matrix and
    a stack, through each library's delegate (NumPy SYRK, blocked CPU torch product)."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal(shape).astype(np.float32)
    G = B.to_numpy(B.gram(xp.asarray(X)))
    X64 = X.astype(np.float64)
    ref = X64 @ np.swapaxes(X64, -1, -2)
    r = shape[-1]
    tol = 2 * r * 2.0**-24 * np.max(np.sum(X64 * X64, axis=-1))
    assert G.shape == ref.shape
    assert np.max(np.abs(G - ref)) <= tol
    if B.namespace_name(xp) in ("numpy", "torch"):
        assert np.array_equal(G, np.swapaxes(G, -1, -2))
