"""CholeskyQR on a decoded copy of A works in that copy; a later fallback must see A again."""

import ml_dtypes
import numpy as np
import pytest

import linalg_pc as lpc
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
