"""Tests of linalg_pc.analysis.metrics against independent dense formulas in float64."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import linalg_pc as lpc
from linalg_pc import _backend as B
from linalg_pc.analysis.metrics import LAPACK_THRESHOLD, NORMS

U64 = 2.0**-53
#: The metrics and the reference formulas both round in float64; they may differ by a few
#: units of u64 times the dimension (different summation orders, SVD vs eigvalsh).
C_AGREE = 16.0


def _ref_norm(X, norm):
    if norm == "2":
        return np.linalg.norm(X, 2)
    if norm == "fro":
        return np.linalg.norm(X, "fro")
    if norm == "1":
        return np.linalg.norm(X, 1)
    return np.max(np.abs(X))


def _haar(rng, m, n):
    Q, R = np.linalg.qr(rng.standard_normal((m, n)))
    return Q * np.sign(np.diagonal(R))


# --------------------------------------------------------------------------- orthogonality_loss
@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("shape", [(1, 1), (5, 3), (7, 7), (40, 12), (3, 5)])
def test_orthogonality_loss_matches_dense_formula(rng, norm, shape):
    Q = rng.standard_normal(shape)
    ref = _ref_norm(Q.T @ Q - np.eye(shape[1]), norm)
    got = lpc.orthogonality_loss(Q, norm=norm)
    assert isinstance(got, float)
    assert got == pytest.approx(ref, rel=C_AGREE * max(shape) * U64, abs=0)


@pytest.mark.parametrize("norm,expected", [("2", 3.0), ("fro", 3.0), ("max", 3.0), ("1", 3.0)])
def test_orthogonality_loss_known_matrix(norm, expected):
    # QᵀQ − I = diag(0, 3) exactly
    assert lpc.orthogonality_loss(np.array([[1.0, 0.0], [0.0, 2.0], [0.0, 0.0]]), norm) == expected


def test_orthogonality_loss_scaled_orthonormal(rng):
    # Q = (1 + δ)·Haar: QᵀQ − I = (2δ + δ²)·I up to rounding of the Haar factor
    n, d = 6, 2.0**-20
    Q = (1 + d) * _haar(rng, 15, n)
    exact = 2 * d + d * d
    tol = C_AGREE * 15 * U64
    assert lpc.orthogonality_loss(Q, "2") == pytest.approx(exact, abs=tol)
    assert lpc.orthogonality_loss(Q, "fro") == pytest.approx(math.sqrt(n) * exact, abs=tol)
    assert lpc.orthogonality_loss(Q, "max") == pytest.approx(exact, abs=tol)


def test_orthogonality_loss_of_orthonormal_is_at_fp64_level(rng):
    Q = _haar(rng, 50, 20)
    assert lpc.orthogonality_loss(Q) <= C_AGREE * 50 * U64


def test_orthogonality_loss_batched(rng):
    Q = rng.standard_normal((3, 2, 6, 4))
    got = lpc.orthogonality_loss(Q, "fro")
    assert isinstance(got, np.ndarray) and got.shape == (3, 2) and got.dtype == np.float64
    for idx in np.ndindex(3, 2):
        assert got[idx] == lpc.orthogonality_loss(Q[idx], "fro")


def test_orthogonality_loss_empty():
    assert lpc.orthogonality_loss(np.zeros((4, 0))) == 0.0
    assert lpc.orthogonality_loss(np.zeros((0, 0))) == 0.0
    z = lpc.orthogonality_loss(np.zeros((2, 4, 0)))
    assert z.shape == (2,) and np.all(z == 0)
    # m == 0 < n: QᵀQ = 0, so the loss is ||I||
    assert lpc.orthogonality_loss(np.zeros((0, 3)), "2") == 1.0


def test_orthogonality_loss_non_finite_gives_inf_never_nan(rng):
    Q = _haar(rng, 6, 3)
    bad = Q.copy()
    bad[2, 1] = np.nan
    assert lpc.orthogonality_loss(bad) == math.inf
    huge = Q * 1e200  # the Gram matrix overflows
    assert lpc.orthogonality_loss(huge, "fro") == math.inf
    batch = np.stack([Q, bad])
    r = lpc.orthogonality_loss(batch)
    assert r[0] < 1e-14 and r[1] == math.inf


def test_orthogonality_loss_namespaces(xp, rng):
    Q = rng.standard_normal((9, 4))
    ref = lpc.orthogonality_loss(Q)
    for fmt in ("fp64", "fp32"):
        dt = B.native_dtype(xp, fmt)
        Qx = xp.asarray(Q, dtype=dt)
        host = B.to_numpy(Qx).astype(np.float64)
        assert lpc.orthogonality_loss(Qx) == pytest.approx(lpc.orthogonality_loss(host),
                                                           rel=C_AGREE * 9 * U64)
    assert lpc.orthogonality_loss(xp.asarray(Q)) == pytest.approx(ref, rel=C_AGREE * 9 * U64)


@pytest.mark.parametrize("lib", ["numpy", "torch"])
@pytest.mark.parametrize("fmt", ["bf16", "fp16"])
def test_orthogonality_loss_of_rounded_orthonormal(rng, lib, fmt):
    """One rounding of an orthonormal Q: ||Q̂ᵀQ̂ − I||₂ ≤ 2u·sqrt(n) + u²n, measured exactly."""
    m, n = 64, 16
    Q = _haar(rng, m, n)
    if lib == "torch":
        torch = pytest.importorskip("torch")
        Qs = lpc.to_storage(torch.from_numpy(Q.astype(np.float32)), fmt)
    else:
        Qs = lpc.to_storage(Q, fmt)
    u = lpc.unit_roundoff(fmt)
    loss = lpc.orthogonality_loss(Qs)
    decoded = B.to_numpy(Qs).astype(np.float64)
    assert loss == pytest.approx(lpc.orthogonality_loss(decoded), rel=C_AGREE * m * U64)
    assert loss <= 2 * u * math.sqrt(n) + u * u * n
    assert loss > 1e-3 * u  # rounding to a 16-bit format is visible, not fp64-level


def test_orthogonality_loss_bad_input(rng):
    Q = rng.standard_normal((4, 3))
    with pytest.raises(ValueError, match="norm"):
        lpc.orthogonality_loss(Q, norm="inf")
    with pytest.raises(ValueError, match="Q"):
        lpc.orthogonality_loss(np.ones(3))
    with pytest.raises(TypeError, match="Q"):
        lpc.orthogonality_loss(np.ones((3, 2), dtype=np.int64))
    with pytest.raises(TypeError, match="Q"):
        lpc.orthogonality_loss(np.ones((3, 2), dtype=np.complex128))
    with pytest.raises(TypeError, match="Q"):
        lpc.orthogonality_loss([[1.0, 0.0], [0.0, 1.0]])


# --------------------------------------------------------------------------- factorization_error
@pytest.mark.parametrize("norm", NORMS)
def test_factorization_error_matches_dense_formula(rng, norm):
    A = rng.standard_normal((12, 5))
    Q, R = np.linalg.qr(A)
    Q = Q + 1e-7 * rng.standard_normal(Q.shape)
    ref = _ref_norm(A - Q @ R, norm) / _ref_norm(A, norm)
    got = lpc.factorization_error(A, Q, R, norm=norm)
    assert got == pytest.approx(ref, rel=1e-6)  # numerator known to ~1e-16/1e-7 relative


def test_factorization_error_exact_perturbation(rng):
    # Q = [I; 0], A = [R; E2]: A − QR = [0; E2] with no rounding anywhere
    m, n = 9, 4
    R = rng.standard_normal((n, n))
    E2 = np.zeros((m - n, n))
    E2[1, 2] = 2.0**-30
    E2[3, 0] = -(2.0**-31)
    Q = np.eye(m, n)
    A = np.vstack([R, E2])
    expect = np.linalg.norm(E2) / math.sqrt(np.sum(R**2) + np.sum(E2**2))
    assert lpc.factorization_error(A, Q, R) == pytest.approx(expect, rel=4 * U64)
    assert lpc.factorization_error(A, Q, R, "max") == 2.0**-30 / np.max(np.abs(A))


def test_factorization_error_is_scale_invariant_near_overflow(rng):
    A = rng.standard_normal((10, 6))
    Q, R = np.linalg.qr(A)
    Q32 = Q.astype(np.float32).astype(np.float64)
    base = lpc.factorization_error(A, Q32, R)
    s = 2.0**1000
    with np.errstate(over="ignore"):
        assert not np.isfinite(np.linalg.norm(A * s))  # the naive formula overflows
    for norm in NORMS:
        assert lpc.factorization_error(A * s, Q32, R * s, norm) == \
            lpc.factorization_error(A, Q32, R, norm)
    assert lpc.factorization_error(A * 2.0**-1000, Q32, R * 2.0**-1000) == base


def test_factorization_error_zero_A_is_absolute():
    A = np.zeros((3, 2))
    Q = np.eye(3, 2)
    R = np.array([[0.0, 3.0], [4.0, 0.0]])
    assert lpc.factorization_error(A, Q, R) == 5.0
    assert lpc.factorization_error(A, Q, np.zeros((2, 2))) == 0.0


def test_factorization_error_batched_and_broadcast(rng):
    A = rng.standard_normal((4, 7, 3))
    Q, R = np.linalg.qr(A)
    R = R + 1e-6
    got = lpc.factorization_error(A, Q, R)
    assert got.shape == (4,)
    for i in range(4):
        assert got[i] == lpc.factorization_error(A[i], Q[i], R[i])
    # a single A against a batch of factorizations
    got = lpc.factorization_error(A[0], Q[:1].repeat(3, axis=0), R[:1].repeat(3, axis=0))
    assert got.shape == (3,) and np.all(got == got[0])


def test_factorization_error_non_finite_gives_inf(rng):
    A = rng.standard_normal((5, 3))
    Q, R = np.linalg.qr(A)
    R[1, 1] = np.inf
    assert lpc.factorization_error(A, Q, R) == math.inf


def test_factorization_error_namespaces_and_formats(xp, rng):
    A = rng.standard_normal((8, 3))
    Q, R = np.linalg.qr(A)
    ref = lpc.factorization_error(A, Q, R)
    got = lpc.factorization_error(xp.asarray(A), xp.asarray(Q), xp.asarray(R))
    assert got == pytest.approx(ref, rel=C_AGREE * 8 * U64, abs=C_AGREE * 8 * U64)


@pytest.mark.parametrize("lib", ["numpy", "torch"])
@pytest.mark.parametrize("fmt", ["bf16", "fp16"])
def test_factorization_error_16bit_factors(rng, lib, fmt):
    """Rounded factors of an exact QR: ||A − Q̂R̂||_F/||A||_F ≤ (2u + u²)·sqrt(n)·... bound."""
    m, n = 32, 8
    A = rng.standard_normal((m, n))
    Q, R = np.linalg.qr(A)
    if lib == "torch":
        torch = pytest.importorskip("torch")
        Qs = lpc.to_storage(torch.from_numpy(Q), fmt)
        Rs = lpc.to_storage(torch.from_numpy(R), fmt)
        As = torch.from_numpy(A)
    else:
        Qs, Rs, As = lpc.to_storage(Q, fmt), lpc.to_storage(R, fmt), A
    u = lpc.unit_roundoff(fmt)
    err = lpc.factorization_error(As, Qs, Rs)
    Qh = B.to_numpy(Qs).astype(np.float64)
    Rh = B.to_numpy(Rs).astype(np.float64)
    assert err == pytest.approx(np.linalg.norm(A - Qh @ Rh) / np.linalg.norm(A), rel=1e-12)
    # Q̂ = Q + E, R̂ = R + F with |E| ≤ u|Q|, |F| ≤ u|R|:
    # ||A − Q̂R̂||_F ≤ ||E||_F||R||_2 + ||Q̂||_2||F||_F ≤ u·sqrt(n)||R||_2 + (1 + u·sqrt(n))u||R||_F
    bound = u * math.sqrt(n) * np.linalg.norm(R, 2) + (1 + u * math.sqrt(n)) * u * np.linalg.norm(R)
    assert err <= bound / np.linalg.norm(A)


def test_factorization_error_bad_input(rng):
    A = rng.standard_normal((6, 3))
    Q, R = np.linalg.qr(A)
    with pytest.raises(ValueError, match="Q"):
        lpc.factorization_error(A, Q[:5], R)
    with pytest.raises(ValueError, match="R"):
        lpc.factorization_error(A, Q, R[:2])
    with pytest.raises(ValueError, match="R"):
        lpc.factorization_error(A, Q, R[:, :2])
    with pytest.raises(ValueError, match="A"):
        lpc.factorization_error(A[0], Q, R)
    with pytest.raises(ValueError, match="Q"):
        lpc.factorization_error(np.stack([A] * 3), np.stack([Q] * 2), R)
    with pytest.raises(ValueError, match="R"):
        lpc.factorization_error(np.stack([A] * 3), Q, np.stack([R] * 2))
    with pytest.raises(ValueError, match="norm"):
        lpc.factorization_error(A, Q, R, norm="nuc")
    with pytest.raises(TypeError, match="R"):
        lpc.factorization_error(A, Q, R.astype(np.int32))


# --------------------------------------------------------------------------- lapack_ratios
def test_lapack_ratios_exact_perturbation(rng):
    m, n = 8, 3
    u = lpc.unit_roundoff("fp32")
    R = rng.standard_normal((n, n))
    delta = 2.0**-40
    A = np.vstack([R, np.zeros((m - n, n))])
    A[n, 2] = delta  # with Q = [I; 0], A − QR has the single entry δ, formed exactly
    Q = np.eye(m, n)
    r = lpc.lapack_ratios(A, Q, R, "fp32")
    anorm = max(np.abs(R[:, 0]).sum(), np.abs(R[:, 1]).sum(), np.abs(R[:, 2]).sum() + delta)
    assert r["resid"] == pytest.approx(delta / (m * anorm * u), rel=4 * U64)
    assert r["orth"] == 0.0
    assert set(r) == {"resid", "orth"}
    # QᵀQ − I = [[0, η, 0], [η, η², 0], [0, 0, 0]]: ||·||₁ = η + η² (η² below fp64's
    # resolution beside the 1 on the diagonal, hence the tolerance)
    eta = 2.0**-20
    Q[0, 1] = eta
    r = lpc.lapack_ratios(A, Q, R, "fp32")
    assert r["orth"] == pytest.approx((eta + eta * eta) / (m * u), rel=4 * U64)
    assert r["resid"] == pytest.approx(
        np.abs(A - Q @ R).sum(axis=0).max() / (m * anorm * u), rel=4 * U64)


@pytest.mark.parametrize("fmt", ["fp64", "fp32"])
def test_lapack_ratios_pass_for_lapack_qr_on_the_suite(fmt):
    """LAPACK's own Householder QR (via NumPy) passes LAPACK's test on every suite matrix."""
    for m, n in [(0, 0), (1, 1), (3, 2), (2, 3), (10, 10), (50, 10), (10, 50)]:
        for t in lpc.matrix_suite(m, n, dtype=fmt, rng=m * 100 + n):
            Q, R = np.linalg.qr(t.A)
            r = lpc.lapack_ratios(t.A, Q, R, fmt)
            assert r["resid"] < LAPACK_THRESHOLD, (t.name, m, n, r)
            assert r["orth"] < LAPACK_THRESHOLD, (t.name, m, n, r)


def test_lapack_ratios_detect_a_low_precision_q():
    """fp64 factors rounded to bf16 pass against bf16's u, and fail against fp64's."""
    t = lpc.randsvd(40, 10, 100.0, rng=3)
    Q, R = np.linalg.qr(t.A)
    Qs, Rs = lpc.to_storage(Q, "bf16"), lpc.to_storage(R, "bf16")
    ok = lpc.lapack_ratios(t.A, Qs, Rs, "bf16")
    assert ok["resid"] < LAPACK_THRESHOLD and ok["orth"] < LAPACK_THRESHOLD
    bad = lpc.lapack_ratios(t.A, Qs, Rs, "fp64")
    assert bad["resid"] > 1e6 * LAPACK_THRESHOLD and bad["orth"] > 1e6 * LAPACK_THRESHOLD


def test_lapack_ratios_zero_A_and_empty():
    A = np.zeros((4, 2))
    Q = np.eye(4, 2)
    u = lpc.unit_roundoff("bf16")
    r = lpc.lapack_ratios(A, Q, np.zeros((2, 2)), "bf16")
    assert r == {"resid": 0.0, "orth": 0.0}
    R = np.array([[0.0, 2.0**-10], [0.0, 0.0]])
    assert lpc.lapack_ratios(A, Q, R, "bf16")["resid"] == 2.0**-10 / u
    r = lpc.lapack_ratios(np.zeros((0, 3)), np.zeros((0, 0)), np.zeros((0, 3)), "fp32")
    assert r == {"resid": 0.0, "orth": 0.0}


def test_lapack_ratios_batched(rng):
    A = rng.standard_normal((5, 6, 4))
    Q, R = np.linalg.qr(A)
    r = lpc.lapack_ratios(A, Q, R, "fp64")
    assert r["resid"].shape == (5,) and r["orth"].shape == (5,)
    for i in range(5):
        ri = lpc.lapack_ratios(A[i], Q[i], R[i], "fp64")
        assert r["resid"][i] == ri["resid"] and r["orth"][i] == ri["orth"]
    # one Q shared by a batch of A, R: orth broadcast over the batch
    r = lpc.lapack_ratios(A, Q[0], np.swapaxes(Q[0], -2, -1) @ A, "fp64")
    assert r["orth"].shape == (5,) and np.all(r["orth"] == r["orth"][0])


def test_lapack_ratios_namespaces(xp, rng):
    A = rng.standard_normal((7, 4))
    Q, R = np.linalg.qr(A)
    ref = lpc.lapack_ratios(A, Q, R, "fp32")
    got = lpc.lapack_ratios(xp.asarray(A), xp.asarray(Q), xp.asarray(R), "fp32")
    for key in ("resid", "orth"):
        assert got[key] == pytest.approx(ref[key], abs=1e-6)


def test_lapack_ratios_bad_input(rng):
    A = rng.standard_normal((6, 3))
    Q, R = np.linalg.qr(A)
    with pytest.raises(ValueError, match="fmt"):
        lpc.lapack_ratios(A, Q, R, "fp8")
    with pytest.raises(ValueError, match="R"):
        lpc.lapack_ratios(A, Q, R.T[:, :2], "fp32")


# --------------------------------------------------------------------------- kappa
def test_kappa_matches_numpy_cond(rng):
    for shape in [(1, 1), (4, 4), (20, 5), (5, 20)]:
        A = rng.standard_normal(shape)
        assert lpc.kappa(A) == pytest.approx(np.linalg.cond(A, 2), rel=1e-12)


def test_kappa_exact_cases():
    assert lpc.kappa(np.diag([4.0, -2.0, 0.5])) == 8.0
    assert lpc.kappa(np.eye(3)) == 1.0
    assert lpc.kappa(np.array([[1.0, 0.0], [0.0, 0.0]])) == math.inf
    assert lpc.kappa(np.zeros((3, 2))) == math.inf
    assert lpc.kappa(np.zeros((0, 3))) == 1.0
    assert lpc.kappa(np.diag([2.0**1000, 2.0**990])) == 2.0**10
    assert lpc.kappa(np.diag([2.0**-1000, 2.0**-1010])) == 2.0**10


def test_kappa_batched_and_namespaces(xp, rng):
    A = rng.standard_normal((3, 5, 4))
    k = lpc.kappa(A)
    assert k.shape == (3,)
    np.testing.assert_allclose(k, np.linalg.cond(A, 2), rtol=1e-12)
    assert lpc.kappa(xp.asarray(A[0])) == pytest.approx(k[0], rel=1e-12)


def test_kappa_16bit(rng):
    A = rng.standard_normal((6, 6))
    for fmt in ("bf16", "fp16"):
        As = lpc.to_storage(A, fmt)
        assert lpc.kappa(As) == pytest.approx(np.linalg.cond(B.to_numpy(As).astype(float), 2),
                                              rel=1e-12)


def test_kappa_bad_input():
    with pytest.raises(ValueError, match="A"):
        lpc.kappa(np.array([[1.0, np.nan], [0.0, 1.0]]))
    with pytest.raises(ValueError, match="A"):
        lpc.kappa(np.ones(3))
    with pytest.raises(TypeError, match="A"):
        lpc.kappa(np.eye(2, dtype=np.int8))


def test_docstring_examples():
    import doctest

    from linalg_pc.analysis import metrics

    res = doctest.testmod(metrics, optionflags=doctest.ELLIPSIS)
    assert res.attempted > 0 and res.failed == 0


def test_extreme_scales_give_finite_exact_answers():
    big = np.array([[1e308, 1e308]])
    assert lpc.lapack_ratios(big, np.eye(1), big, "fp64") == {"resid": 0.0, "orth": 0.0}
    assert lpc.factorization_error(big, np.eye(1), big * (1 + 2.0**-52)) == \
        pytest.approx(2.0**-52, rel=1e-12)
    tiny = np.array([[5e-324, 1e-323]])  # subnormal: A − QR = [0, 5e-324] exactly
    assert lpc.factorization_error(tiny, np.eye(1), np.array([[5e-324, 5e-324]])) == \
        pytest.approx(1 / math.sqrt(5), rel=1e-15)
    assert lpc.kappa(np.diag([5e-324, 5e-324])) == 1.0
    assert lpc.kappa(np.diag([1.7e308, 1e-300])) == math.inf


# --------------------------------------------------------------------------- properties
@settings(max_examples=40, deadline=None)
@given(m=st.integers(0, 9), n=st.integers(0, 9), seed=st.integers(0, 2**32 - 1),
       e=st.integers(-300, 300))
def test_metrics_properties(m, n, seed, e):
    """Invariants: power-of-two scaling leaves the relative metrics unchanged; losses ≥ 0."""
    g = np.random.default_rng(seed)
    A = g.standard_normal((m, n))
    Q, R = np.linalg.qr(A)
    s = 2.0**e
    fe = lpc.factorization_error(A, Q, R)
    assert 0.0 <= fe <= C_AGREE * max(m, n, 1) * U64
    assert lpc.factorization_error(A * s, Q, R * s) == fe
    ol = lpc.orthogonality_loss(Q)
    assert 0.0 <= ol <= C_AGREE * max(m, 1) * U64
    r = lpc.lapack_ratios(A * s, Q, R * s, "fp64")
    assert r["resid"] < LAPACK_THRESHOLD and r["orth"] < LAPACK_THRESHOLD
    if min(m, n) > 0:
        assert lpc.kappa(A * s) == lpc.kappa(A) >= 1.0
