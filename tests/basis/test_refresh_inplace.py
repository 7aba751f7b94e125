"""subspace_refresh(inplace=True): the refreshed columns written into the caller's Q, the same
values as the copying refresh bit for bit, nothing written when the refresh raises."""

from __future__ import annotations

import numpy as np
import pytest

import linalg_pc as lpc
from linalg_pc import _backend as B


def _problem(d=64, seed=0, dtype=np.float32):
    rng = np.random.default_rng(seed)
    G = rng.standard_normal((d, d // 2))
    K = (G @ G.T / d + 0.01 * np.eye(d)).astype(dtype)
    Q = np.linalg.qr(rng.standard_normal((d, d)))[0].astype(dtype)
    return K, Q


@pytest.mark.parametrize("method", ["rotate", "project"])
@pytest.mark.parametrize("cols", [np.arange(8), np.array([3, 10, 11, 40, 63])])
@pytest.mark.parametrize("orth_tol", [None, 0.1])
def test_inplace_numpy_equals_copy(method, cols, orth_tol):
    K, Q = _problem()
    ref = lpc.subspace_refresh(K, Q, cols, method=method, orth_tol=orth_tol)
    Qw = Q.copy()
    res = lpc.subspace_refresh(K, Qw, cols, method=method, orth_tol=orth_tol, inplace=True)
    assert res.Q is Qw
    np.testing.assert_array_equal(Qw, ref.Q)
    np.testing.assert_array_equal(res.eigenvalues, ref.eigenvalues)
    np.testing.assert_array_equal(res.permutation, ref.permutation)
    np.testing.assert_equal(res.info.as_dict(), ref.info.as_dict())  # NaN input_loss alike
    keep = np.setdiff1d(np.arange(Q.shape[1]), cols)
    np.testing.assert_array_equal(Qw[:, keep], Q[:, keep])
    # the copying refresh left its input alone
    assert not np.array_equal(ref.Q[:, cols], Q[:, cols])


def test_inplace_torch_and_strict():
    K, Q = _problem(seed=1)
    cols = np.arange(5, 13)
    ref = lpc.subspace_refresh(K, Q, cols)
    torch = pytest.importorskip("torch")
    Qt = torch.tensor(Q)
    res = lpc.subspace_refresh(torch.tensor(K), Qt, cols, inplace=True)
    assert res.Q is Qt
    np.testing.assert_allclose(Qt.numpy(), ref.Q, atol=50 * np.finfo(np.float32).eps)
    xs = pytest.importorskip("array_api_strict")
    Qs = xs.asarray(Q)
    res = lpc.subspace_refresh(xs.asarray(K), Qs, cols, inplace=True)
    # no item assignment of columns there: a new array, the input unchanged
    np.testing.assert_array_equal(B.to_numpy(Qs), Q)
    np.testing.assert_allclose(B.to_numpy(res.Q), ref.Q, atol=50 * np.finfo(np.float32).eps)


def test_inplace_writes_nothing_when_the_refresh_raises():
    K, Q = _problem(seed=2)
    Kbad = K.copy()
    Kbad[5, 7] = np.nan
    Qw = Q.copy()
    with pytest.raises(ValueError, match="K"):
        lpc.subspace_refresh(Kbad, Qw, np.arange(8), inplace=True)
    np.testing.assert_array_equal(Qw, Q)
    Qw[40, 50] = np.inf  # a non-finite column outside cols is still rejected
    with pytest.raises(ValueError, match="non-finite"):
        lpc.subspace_refresh(K, Qw, np.arange(8), inplace=True)
    with pytest.raises(ValueError, match="non-finite"):
        lpc.subspace_refresh(K, Qw, np.arange(8), inplace=True, orth_tol=None)
    Qx = Q.copy()
    Qx[:, 2] *= 3.0  # not orthonormal
    with pytest.raises(ValueError, match="orthonormal"):
        lpc.subspace_refresh(K, Qx, np.arange(8), inplace=True)


def test_finite_check_does_not_reject_large_finite_entries_outside_cols():
    # finite entries whose sum overflows fp32 are not "non-finite": the exact test decides
    K, Q = _problem(seed=3)
    Qw = Q.copy()
    Qw[:, 40:] = 3e38
    res = lpc.subspace_refresh(K, Qw, np.arange(8), inplace=True)
    assert np.all(np.isfinite(res.Q[:, :8]))
    res = lpc.subspace_refresh(K, Qw, np.arange(8), orth_tol=None)
    assert np.all(np.isfinite(res.Q[:, :8]))


def test_inplace_must_be_bool():
    K, Q = _problem()
    with pytest.raises(TypeError, match="inplace"):
        lpc.subspace_refresh(K, Q, [0, 1], inplace="yes")
