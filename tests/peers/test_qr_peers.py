"""The cases of NumPy's and SciPy's QR tests, as our own tests of ``lpc.qr``.

Sources (read, not copied): NumPy ``numpy/linalg/tests/test_linalg.py`` (``TestQR``: modes
complete / reduced / r on 2×2, 3×2, 2×3 in fp32 and fp64, empty matrices, stacks of matrices)
and SciPy ``scipy/linalg/tests/test_decomp.py`` (``TestQR``: simple, trapezoidal, tall and fat
matrices, the economic mode, random square / tall / trapezoidal matrices, empty matrices,
non-finite input). What NumPy and SciPy assert to a fixed number of decimals we assert to the
method's bound c·u (analysis/bounds.py). The cases we do not run, and why, are listed in
docs/qr.md ("Differences from numpy.linalg.qr and scipy.linalg.qr"): complex input, column
pivoting, ``mode="raw"``, ``qr_multiply``, ``lwork`` / ``overwrite_a`` / ``check_finite``, and
SciPy's default full mode (ours is ``"reduced"``, as NumPy's).
"""

from __future__ import annotations

import numpy as np
import pytest

import linalg_pc as lpc
from linalg_pc.analysis import factorization_error, orthogonality_loss
from linalg_pc.analysis.bounds import qr_bound

FMT = {np.dtype(np.float32): "fp32", np.dtype(np.float64): "fp64"}
ANY_SHAPE = ("auto", "householder", "batched")
TALL = ("cholqr2", "scholqr3", "cgs2", "bcgs2", "tsqr")


def _check_qr(a, method="auto"):
    """NumPy's check_qr: every mode, dtypes kept, shapes, Q orthonormal, A = QR, R upper
    triangular, mode "r" equal to the reduced R."""
    m, n = a.shape[-2:]
    k = min(m, n)
    fmt = FMT[a.dtype]
    orth = qr_bound("householder", m, n, 1.0, fmt)
    res = qr_bound("householder", m, n, 1.0, fmt, quantity="resid")
    outs = {}
    for mode, qcols, rrows in (("complete", m, m), ("reduced", k, k)):
        Q, R, info = lpc.qr(a, method=method, mode=mode)
        assert Q.dtype == a.dtype and R.dtype == a.dtype
        assert Q.shape[-2:] == (m, qcols) and R.shape[-2:] == (rrows, n)
        assert Q.shape[:-2] == a.shape[:-2] == R.shape[:-2]
        np.testing.assert_array_equal(np.triu(R), R)
        if m and n:
            assert np.max(orthogonality_loss(Q)) <= orth, (mode, info)
            assert np.max(factorization_error(a, Q, R)) <= res, (mode, info)
        else:  # an empty A: Q is the identity's first columns, R is zero
            np.testing.assert_array_equal(Q, np.broadcast_to(np.eye(m, qcols), Q.shape))
            assert not np.any(R)
        outs[mode] = R
    Q, R, info = lpc.qr(a, method=method, mode="r")
    assert Q is None and R.dtype == a.dtype and R.shape[-2:] == (k, n)
    np.testing.assert_allclose(R, outs["reduced"], rtol=0,
                               atol=4 * lpc.unit_roundoff(fmt) * max(np.abs(a).max(initial=0), 1))


# ----------------------------------------------------------------------------- NumPy TestQR
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("method", ANY_SHAPE)
def test_numpy_mode_all_but_economic(dtype, method):
    a = np.array([[1, 2], [3, 4]], dtype=dtype)
    b = np.array([[1, 2], [3, 4], [5, 6]], dtype=dtype)
    for x in (a, b, b.T):
        _check_qr(x, method)


@pytest.mark.parametrize("method", TALL)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_numpy_cases_tall_methods(dtype, method):
    for x in (np.array([[1, 2], [3, 4]], dtype=dtype),
              np.array([[1, 2], [3, 4], [5, 6]], dtype=dtype)):
        _check_qr(x, method)


@pytest.mark.parametrize("m,n", [(3, 0), (0, 3), (0, 0)])
@pytest.mark.parametrize("method", ANY_SHAPE)
def test_numpy_empty(m, n, method):
    _check_qr(np.empty((m, n)), method)


@pytest.mark.parametrize("size", [(3, 4), (4, 3), (4, 4), (3, 0), (0, 3)])
@pytest.mark.parametrize("outer", [(2, 2), (2,), (2, 3, 4)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("method", ANY_SHAPE)
def test_numpy_stacked(size, outer, dtype, method):
    a = np.random.default_rng(0).standard_normal(outer + size).astype(dtype)
    _check_qr(a, method)


def test_numpy_integer_input_is_fp64():
    """NumPy casts integer input to fp64; so do we."""
    Q, R, info = lpc.qr(np.array([[1, 2], [3, 4]]))
    assert Q.dtype == R.dtype == np.float64 and info.compute == "fp64"


def test_one_by_one():
    for method in ANY_SHAPE + TALL:
        _check_qr(np.array([[3.0]]), method)
        Q, R, _ = lpc.qr(np.array([[-2.0]], dtype=np.float32), method=method)
        assert abs(float(Q[0, 0])) == 1 and abs(float(R[0, 0])) == 2


# ----------------------------------------------------------------------------- SciPy TestQR
@pytest.mark.parametrize("method", ANY_SHAPE)
@pytest.mark.parametrize("a", [
    [[8, 2, 3], [2, 9, 3], [5, 3, 6]],  # simple
    [[8, 2, 3], [2, 9, 3]],  # trapezoidal (fat)
    [[8, 2], [2, 9], [5, 3]],  # tall
    [[8, 2, 5], [2, 9, 3]],  # fat
], ids=["simple", "trap", "tall", "fat"])
def test_scipy_simple_shapes(a, method):
    _check_qr(np.array(a, dtype=np.float64), method)


@pytest.mark.parametrize("method", ["cholqr2", "scholqr3", "cgs2", "mgs", "tsqr"])
def test_scipy_simple_tall_with_tall_methods(method):
    _check_qr(np.array([[8, 2], [2, 9], [5, 3]], dtype=np.float64), method)


@pytest.mark.parametrize("shape", [(20, 20), (200, 100), (100, 200)], ids=["square", "tall",
                                                                          "trap"])
@pytest.mark.parametrize("method", ANY_SHAPE)
def test_scipy_random(shape, method):
    rng = np.random.default_rng(1234)
    for _ in range(2):
        _check_qr(rng.random(shape), method)


@pytest.mark.parametrize("method", ("cholqr2", "scholqr3", "rand_cholqr", "bcgs2", "tsqr"))
def test_scipy_random_tall_every_method(method):
    a = np.random.default_rng(1234).random((200, 100))
    Q, R, info = lpc.qr(a, method=method, mode="reduced", rng=0)
    # random((200, 100)) has κ ≈ 1e2: every tall method is within Householder's bound
    assert orthogonality_loss(Q) <= qr_bound("householder", 200, 100, 1.0, "fp64")
    assert factorization_error(a, Q, R) <= qr_bound("householder", 200, 100, 1.0, "fp64",
                                                    quantity="resid")


@pytest.mark.parametrize("m,n", [(3, 0), (0, 3), (0, 0)])
def test_scipy_empty_complete_and_economic(m, n):
    """SciPy: an empty A has Q = I (full mode) and an empty R; economic mode m×k, k×n."""
    Q, R, _ = lpc.qr(np.empty((m, n)), mode="complete")
    np.testing.assert_array_equal(Q, np.eye(m))
    assert R.shape == (m, n)
    Q, R, _ = lpc.qr(np.empty((m, n)), mode="reduced")
    assert Q.shape == (m, min(m, n)) and R.shape == (min(m, n), n)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_scipy_check_finite(bad):
    """SciPy raises ValueError on non-finite input (check_finite=True, its default); we always
    check, and the message names A."""
    a = np.array([[8, 2, 3], [2, 9, 3], [5, 3, 6]], dtype=np.float64)
    a[1, 1] = bad
    with pytest.raises(ValueError, match="A"):
        lpc.qr(a)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_scipy_sign_convention_of_householder(dtype):
    """Householder follows LAPACK's xGEQRF signs, as SciPy and NumPy do: the same Q and R."""
    a = np.random.default_rng(3).random((30, 10)).astype(dtype)
    Q, R, _ = lpc.qr(a, method="householder")
    Qn, Rn = np.linalg.qr(a)
    tol = 4 * qr_bound("householder", 30, 10, 1.0, FMT[np.dtype(dtype)])
    np.testing.assert_allclose(Q, Qn, atol=tol)
    np.testing.assert_allclose(R, Rn, atol=tol * np.abs(a).max() * 10)


def test_not_offered_cases_raise_clearly():
    """Complex input, pivoting and SciPy/NumPy-only modes: a clear error, not a wrong answer."""
    a = np.array([[1.0, 2.0], [3.0, 4.0]])
    with pytest.raises(NotImplementedError):
        lpc.qr(a + 1j)
    with pytest.raises(TypeError, match="pivoting"):
        lpc.qr(a, pivoting=True)
    for mode in ("raw", "economic", "full"):
        with pytest.raises(ValueError, match="mode"):
            lpc.qr(a, mode=mode)
