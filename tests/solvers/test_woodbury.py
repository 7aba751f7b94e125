"""WoodburyInverse (M-FAC) and sherman_morrison_update against dense inverses."""

from __future__ import annotations

import doctest
import importlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import linalg_pc as lpc
from linalg_pc._backend import to_numpy
from linalg_pc.precision import unit_roundoff

# the products are backward stable through a Cholesky of T = mI + GGᵀ/λ: error ≲ c·k·u·κ(T)
WB_C = 50.0


def dense_fisher(lam, G, m=None):
    m = G.shape[0] if m is None else m
    return lam * np.eye(G.shape[1]) + G.T @ G / m


def kappa_T(lam, G, m=None):
    m = G.shape[0] if m is None else m
    return 1.0 + np.linalg.norm(G, 2) ** 2 / (m * lam)


def mfac_recursion(lam, G, m):
    """M-FAC's recursive Sherman–Morrison written literally (the reference)."""
    k, d = G.shape
    V = np.zeros((k, d))
    D = np.zeros(k)
    for i in range(k):
        v = G[i] / lam
        for j in range(i):
            v = v - (V[j] @ G[i]) / D[j] * V[j]
        V[i] = v
        D[i] = m + G[i] @ v
    return V, D


@pytest.mark.parametrize("lam", [1e-4, 1e-1, 10.0])
@pytest.mark.parametrize("k, d", [(1, 5), (8, 40), (32, 100)])
def test_ihvp_and_diagonal_vs_dense(lam, k, d, rng):
    G = rng.standard_normal((k, d))
    W = lpc.WoodburyInverse(lam, G)
    Finv = np.linalg.inv(dense_fisher(lam, G))
    tol = WB_C * k * unit_roundoff("fp64") * kappa_T(lam, G)
    x = rng.standard_normal(d)
    assert np.linalg.norm(W.ihvp(x) - Finv @ x) <= tol * np.linalg.norm(Finv, 2) * np.linalg.norm(x)
    X = rng.standard_normal((3, d))
    assert np.allclose(W.ihvp(X), X @ Finv, rtol=0, atol=tol * np.abs(Finv).max() * d)
    assert np.allclose(W.diagonal(), np.diagonal(Finv), rtol=0, atol=tol * np.abs(Finv).max())
    assert np.allclose(W.dense(), Finv, rtol=0, atol=tol * np.abs(Finv).max() * d)


def test_mfac_vectors_and_denominators(rng):
    lam, m = 0.3, 16.0
    G = rng.standard_normal((6, 20))
    W = lpc.WoodburyInverse(lam, G, m=m)
    V, D = mfac_recursion(lam, G, m)
    assert np.allclose(W.vectors, V, rtol=1e-10, atol=1e-12)
    assert np.allclose(W.denominators, D, rtol=1e-12)
    x = rng.standard_normal(20)
    ref = x / lam - sum((V[i] @ x) / D[i] * V[i] for i in range(6))
    assert np.allclose(W.ihvp(x), ref, rtol=1e-10)


def test_sliding_window_vs_rebuild(rng):
    lam, m, d = 1e-2, 8, 30
    G = rng.standard_normal((m, d))
    W = lpc.WoodburyInverse(lam, G)
    x = rng.standard_normal(d)
    g_new = rng.standard_normal(d)
    added = W.add(g_new)
    ref = lpc.WoodburyInverse(lam, np.vstack([G, g_new]), m=m)
    assert added.size == m + 1 and added.m == m
    assert np.allclose(added.ihvp(x), ref.ihvp(x), rtol=1e-10)
    removed = W.remove(3)
    ref = lpc.WoodburyInverse(lam, np.delete(G, 3, axis=0), m=m)
    assert np.allclose(removed.ihvp(x), ref.ihvp(x), rtol=1e-10)
    assert np.allclose(removed.diagonal(), ref.diagonal(), rtol=1e-10)
    # a long sliding window stays equal to rebuilding from the window's gradients
    cur, window = W, G.copy()
    for _ in range(20):
        g = rng.standard_normal(d)
        cur = cur.slide(g)
        window = np.vstack([window[1:], g])
    ref = lpc.WoodburyInverse(lam, window)
    assert np.allclose(cur.gradients, window)
    assert np.allclose(cur.ihvp(x), ref.ihvp(x), rtol=1e-9)
    Finv = np.linalg.inv(dense_fisher(lam, window))
    assert np.allclose(cur.ihvp(x), Finv @ x, rtol=1e-8)
    # removing everything leaves λ⁻¹I
    empty = W
    for _ in range(m):
        empty = empty.remove()
    assert empty.size == 0 and np.allclose(empty.ihvp(x), x / lam)


def test_every_namespace(xp, rng):
    G = rng.standard_normal((5, 12))
    x = rng.standard_normal(12)
    W = lpc.WoodburyInverse(0.1, xp.asarray(G))
    y = W.ihvp(xp.asarray(x))
    assert type(y) is type(xp.asarray(x))
    Finv = np.linalg.inv(dense_fisher(0.1, G))
    assert np.allclose(to_numpy(y), Finv @ x, rtol=1e-9)
    assert np.allclose(to_numpy(W.diagonal()), np.diagonal(Finv), rtol=1e-9)
    W2 = W.slide(xp.asarray(rng.standard_normal(12)))
    assert W2.size == 5
    J = rng.standard_normal((12, 12)) + 12 * np.eye(12)
    u, v = rng.standard_normal(12), rng.standard_normal(12)
    res = lpc.sherman_morrison_update(xp.asarray(np.linalg.inv(J)), xp.asarray(u), xp.asarray(v))
    assert np.allclose(to_numpy(res.inverse), np.linalg.inv(J + np.outer(u, v)), rtol=1e-8,
                       atol=1e-12)


def test_float32_input(rng):
    G = rng.standard_normal((4, 16)).astype(np.float32)
    W = lpc.WoodburyInverse(0.5, G)
    x = rng.standard_normal(16).astype(np.float32)
    y = W.ihvp(x)
    assert y.dtype == np.float32
    ref = np.linalg.solve(dense_fisher(0.5, G.astype(np.float64)), x.astype(np.float64))
    tol = WB_C * 4 * unit_roundoff("fp32") * kappa_T(0.5, G.astype(np.float64))
    assert np.linalg.norm(y - ref) <= tol * np.linalg.norm(ref) * 10


# --------------------------------------------------------------------------- Sherman–Morrison
@settings(max_examples=40, deadline=None)
@given(d=st.integers(1, 20), seed=st.integers(0, 2**31 - 1), sym=st.booleans())
def test_sherman_morrison_property(d, seed, sym):
    g = np.random.default_rng(seed)
    J = g.standard_normal((d, d)) + 2 * np.sqrt(d) * np.eye(d)
    u = g.standard_normal(d)
    v = u if sym else g.standard_normal(d)
    Jinv = np.linalg.inv(J)
    res = lpc.sherman_morrison_update(Jinv, u, None if sym else v)
    J2 = J + np.outer(u, v)
    amp = (1 + abs(v @ Jinv @ u)) / abs(res.denominator)
    kap = np.linalg.cond(J2)
    if res.singular:
        assert np.array_equal(res.inverse, Jinv)
    else:
        err = np.linalg.norm(res.inverse @ J2 - np.eye(d))
        assert err <= 1e3 * d * unit_roundoff("fp64") * amp * kap


def test_sherman_morrison_batched_and_singular(rng):
    d = 6
    J = rng.standard_normal((4, d, d)) + 5 * np.eye(d)
    u = rng.standard_normal((4, d))
    v = rng.standard_normal((4, d))
    Jinv = np.linalg.inv(J)
    # make system 1 singular: choose v so that 1 + vᵀJ⁻¹u = 0
    w = Jinv[1] @ u[1]
    v[1] = -w / (w @ w)
    res = lpc.sherman_morrison_update(Jinv, u, v)
    assert res.singular.tolist() == [False, True, False, False]
    assert np.array_equal(res.inverse[1], Jinv[1])
    for i in (0, 2, 3):
        assert np.allclose(res.inverse[i], np.linalg.inv(J[i] + np.outer(u[i], v[i])),
                           rtol=1e-9, atol=1e-12)


def test_bad_input(rng):
    G = rng.standard_normal((3, 4))
    with pytest.raises(ValueError, match="lam"):
        lpc.WoodburyInverse(0.0, G)
    with pytest.raises(ValueError, match="G"):
        lpc.WoodburyInverse(1.0, np.ones(4))
    bad = G.copy()
    bad[0, 0] = np.inf
    with pytest.raises(ValueError, match="G"):
        lpc.WoodburyInverse(1.0, bad)
    W = lpc.WoodburyInverse(1.0, G)
    with pytest.raises(ValueError, match="x"):
        W.ihvp(np.ones(5))
    with pytest.raises(ValueError, match="g"):
        W.add(np.ones(3))
    with pytest.raises(ValueError, match="index"):
        W.remove(5)
    with pytest.raises(ValueError, match="Jinv"):
        lpc.sherman_morrison_update(np.ones((3, 4)), np.ones(3))
    with pytest.raises(ValueError, match="u"):
        lpc.sherman_morrison_update(np.eye(3), np.ones(4))
    with pytest.raises(ValueError, match="v"):
        lpc.sherman_morrison_update(np.eye(3), np.ones(3), np.array([1.0, np.nan, 0.0]))


@pytest.mark.parametrize("name", ["pcg", "schur", "degenerate", "woodbury"])
def test_docstring_examples(name):
    mod = importlib.import_module(f"linalg_pc.solvers.{name}")
    res = doctest.testmod(mod, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert res.failed == 0 and res.attempted > 0
