"""One-pass CholeskyQR checks its result, and integer input reaches every fallback.

One-pass CholQR promises ‖I − QᵀQ‖ ≲ c·u·κ² only while κ ≲ u^(−1/2)/10 (docs/qr.md). Past that,
Cholesky of the rounded Gram matrix may succeed or fail, and the κ estimate of the computed R may
stay small (it is the factor of a rounded Gram matrix, not of A): the tests assert the promise
(an orthonormal Q, the fallback recorded), whichever of those paths the rounding took.
"""

from __future__ import annotations

import numpy as np
import pytest

import linalg_pc as lpc
from linalg_pc.analysis import factorization_error, orthogonality_loss, randsvd
from linalg_pc.analysis.bounds import qr_bound


def _assert_fell_back_with_promise(res, A, fmt):
    m, n = A.shape
    info = res.info
    assert info.requested == "cholqr" and info.method != "cholqr", info
    assert info.fallbacks and info.fallbacks[0].startswith("cholqr -> "), info
    Q = np.asarray(res.Q, dtype=np.float64)
    assert orthogonality_loss(Q) <= qr_bound("householder", m, n, 1.0, fmt), info
    A64 = np.asarray(A, dtype=np.float64)
    assert factorization_error(A64, Q, np.asarray(res.R, np.float64)) <= qr_bound(
        "householder", m, n, 1.0, fmt, quantity="resid"), info


def test_two_equal_columns_and_a_tiny_entry():
    """κ(A) ≈ 1.4e15 in fp64: Cholesky succeeds on the rounded Gram matrix and κ_est(R) ≈ 1e8
    stays near u^(−1/2), but Q = A R⁻¹ has ‖I − QᵀQ‖ = 1. The result check catches it."""
    A = np.array([[1.0, 1.0], [1.0, 1.0], [0.0, 1e-15]])
    _assert_fell_back_with_promise(lpc.qr(A, method="cholqr"), A, "fp64")
    _assert_fell_back_with_promise(lpc.cholqr(A), A, "fp64")


@pytest.mark.parametrize("seed", range(4))
def test_bf16_past_the_one_pass_range(seed):
    """bf16 A with stored κ ≈ 2e3-6e3 (fp32 arithmetic: u·κ² ≈ 0.3-2): one pass left
    ‖I − QᵀQ‖ up to 1.14 with no fallback; now the passes continue and Q is O(u)."""
    import ml_dtypes  # noqa: F401  (bf16 arrays)

    T = randsvd(2000, 50, 5.7e3, dtype="bf16", rng=seed)
    res = lpc.qr(T.A, method="cholqr", storage="fp32")
    _assert_fell_back_with_promise(res, T.A, "fp32")


@pytest.mark.parametrize("mode", ["reduced", "r", "complete"])
def test_result_check_in_every_mode(mode):
    A = np.array([[1.0, 1.0], [1.0, 1.0], [0.0, 1e-15], [0.0, 0.0]])
    res = lpc.qr(A, method="cholqr", mode=mode)
    assert res.info.method != "cholqr" and res.info.fallbacks
    R = np.asarray(res.R)
    _, R_ref, _ = lpc.qr(A, method="householder", mode=mode)
    np.testing.assert_allclose(np.abs(R), np.abs(R_ref), atol=4 * 2.0**-52 * np.abs(R_ref).max())


@pytest.mark.parametrize("kappa", [1.0, 10.0, 400.0])
def test_inside_its_range_one_pass_stays_one_pass(kappa):
    """u·κ² <= 0.01 in fp32: one pass, no fallback, and the u·κ² promise."""
    T = randsvd(2000, 50, kappa, dtype="fp32", rng=1)
    res = lpc.qr(T.A, method="cholqr")
    assert res.info.method == "cholqr" and res.info.passes == 1 and not res.info.fallbacks
    assert orthogonality_loss(res.Q) <= qr_bound("cholqr", 2000, 50, T.kappa_stored, "fp32")


def test_torch_one_pass_checks_its_result():
    torch = pytest.importorskip("torch")
    A = np.array([[1.0, 1.0], [1.0, 1.0], [0.0, 1e-15]])
    res = lpc.qr(torch.from_numpy(A.copy()), method="cholqr")
    assert res.info.method != "cholqr" and res.info.fallbacks
    assert orthogonality_loss(res.Q.numpy()) <= qr_bound("householder", 3, 2, 1.0, "fp64")


# ----------------------------------------------------------------------------- integer input
_INT_A = np.array([[0, 1, 0], [0, 1, 1], [0, 0, 0], [0, 0, 0]])


@pytest.mark.parametrize("dtype", [np.int64, np.int32, np.uint8, np.bool_])
@pytest.mark.parametrize("method", ["cholqr", "cholqr2", "scholqr3", "rand_cholqr", "mgs",
                                    "cgs2", "bcgs2", "tsqr", "auto"])
@pytest.mark.parametrize("opts", [{}, {"compute": "fp32"}, {"mode": "r"},
                                  {"emulate": "bf16"}])
def test_integer_input_through_the_householder_fallback(dtype, method, opts):
    """A rank-deficient integer A sends the CholeskyQR and Gram-Schmidt families to their
    Householder fallback, which must factor the cast input (it re-checked the raw integer array
    and raised TypeError)."""
    A = _INT_A.astype(dtype)
    Q, R, info = lpc.qr(A, method=method, rng=0, **opts)
    fmt = opts.get("compute", "fp64")
    R64 = np.asarray(R, np.float64)
    assert np.all(np.isfinite(R64))
    if Q is not None:
        Q64 = np.asarray(Q, np.float64)
        bound = qr_bound("householder", 4, 3, 1.0, opts.get("emulate", fmt), quantity="resid")
        assert factorization_error(A.astype(np.float64), Q64, R64) <= bound, info
