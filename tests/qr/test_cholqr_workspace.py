"""CholeskyQR on a decoded copy of A works in that copy; a later fallback must see A again."""

import ml_dtypes
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import linalg_pc as lpc
from linalg_pc.analysis import orthogonality_loss
from linalg_pc.analysis.bounds import qr_bound
from linalg_pc.qr_methods import cholesky


def _bf16(m, n, seed=0):
    return np.random.default_rng(seed).standard_normal((m, n)).astype(ml_dtypes.bfloat16)


@pytest.mark.parametrize("dtype", ["bf16", "fp16", "fp64->fp32"])
def test_input_is_not_written(dtype):
    A = _bf16(2000, 16)
    if dtype == "fp16":
        A = A.astype(np.float16)
    kw = {}
    if dtype == "fp64->fp32":
        A = A.astype(np.float64)
        kw["compute"] = "fp32"
    A0 = A.copy()
    Q, R, info = lpc.qr(A, **kw)
    assert info.method == "cholqr2"
    np.testing.assert_array_equal(A.view(np.uint8), A0.view(np.uint8))


def test_householder_fallback_after_an_overwriting_pass_factors_the_input(monkeypatch):
    """Cholesky succeeds in pass 1 (which overwrites the decoded copy) and fails from pass 2 on:
    the Householder fallback must factor A, not the half-orthogonalized work array."""
    A = _bf16(3000, 12, seed=3)
    calls = {"n": 0}
    real = cholesky._chol

    def flaky(ctx, G, s):
        calls["n"] += 1
        L, info = real(ctx, G, s)
        return (L, info) if calls["n"] == 1 else (L, 1)

    monkeypatch.setattr(cholesky, "_chol", flaky)
    Q, R, info = lpc.qr(A, method="cholqr2", storage="fp32")
    assert info.method == "householder"
    assert any("householder" in f for f in info.fallbacks)
    A64 = A.astype(np.float64)
    err = np.linalg.norm(A64 - Q.astype(np.float64) @ R) / np.linalg.norm(A64)
    assert err <= 50 * 2.0**-24  # a QR of A (a QR of A·R₁⁻¹ would miss by O(1))


def test_one_pass_cholqr_past_its_limit_falls_back_instead_of_returning_garbage():
    """κ = 1.4e4 in fp32 (35× past CholQR's u^(-1/2)/10): one pass would leave ‖I − QᵀQ‖ ≈ 90.
    Whether Cholesky of the Gram matrix breaks down, the κ estimate of R flags it, or the check
    of the result does depends on the BLAS's rounding; the promise is the same on every
    machine: a fallback is taken and recorded, and Q is O(u)."""
    from linalg_pc.analysis import randsvd

    kappa = float(np.logspace(0, np.log10(0.1 / lpc.unit_roundoff("fp32")), 10)[6])  # 1.41e4
    T = randsvd(2000, 50, kappa, dtype="fp32", rng=106)
    res = lpc.qr(T.A, method="cholqr")
    assert res.info.method != "cholqr" and res.info.fallbacks
    assert res.info.fallbacks[0].startswith("cholqr -> ")
    assert orthogonality_loss(res.Q) < 100 * lpc.unit_roundoff("fp32")
    # inside its range one pass stays one pass (u·κ² = 0.01 at the limit)
    T = randsvd(2000, 50, 400.0, dtype="fp32", rng=1)
    res = lpc.qr(T.A, method="cholqr")
    assert res.info.method == "cholqr" and res.info.passes == 1 and not res.info.fallbacks


@st.composite
def _tall_16bit(draw):
    n = draw(st.integers(1, 10))
    m = draw(st.integers(4 * n, 60))
    dtype = draw(st.sampled_from([ml_dtypes.bfloat16, np.float16]))
    vals = draw(hnp.arrays(np.float32, (m, n), elements=st.floats(-100, 100, width=32)))
    return vals.astype(dtype)


@settings(max_examples=60, deadline=None)
@given(A=_tall_16bit(), method=st.sampled_from(["auto", "cholqr2", "scholqr3"]))
def test_property_16bit_input_in_place_passes(A, method):
    """Any 16-bit tall A (rank-deficient and zero columns included, which send the passes to
    their fallbacks after the work array was overwritten): A untouched, and fp32 Q, R that are
    a backward-stable QR of A. (One-pass ``cholqr`` promises only u·κ², so it is not here.)"""
    m, n = A.shape
    A0 = A.copy()
    Q, R, info = lpc.qr(A, method=method, storage="fp32")
    np.testing.assert_array_equal(A.view(np.uint16), A0.view(np.uint16))
    assert np.array_equal(R, np.triu(R))
    assert orthogonality_loss(Q) <= qr_bound("householder", m, n, 1.0, "fp32")
    A64 = A.astype(np.float64)
    err = np.linalg.norm(A64 - Q.astype(np.float64) @ R.astype(np.float64))
    assert err <= qr_bound(method, m, n, 1.0, "fp32", quantity="resid") * max(
        np.linalg.norm(A64), 1e-300)
