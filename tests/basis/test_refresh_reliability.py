"""Reliability of the column refresh: the default method of a 16-bit basis (no drift out of the
input check), overflow of K·Q_J near the format's maximum, clean null-space columns."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

import linalg_pc as lpc
from linalg_pc.analysis.basis_study import DriftingFactor, orthogonality_loss_2
from linalg_pc.basis import state as S
from linalg_pc.precision import to_storage, unit_roundoff

sys.path.insert(0, str(Path(__file__).parent))
from _helpers import loss_2, np64, orthogonal  # noqa: E402

U_FP32 = unit_roundoff("fp32")


def _lib_array(lib, a):
    if lib == "torch":
        torch = pytest.importorskip("torch")
        return torch.from_numpy(np.ascontiguousarray(a))
    return a


# --------------------------------------------------------------------------- 16-bit default
@pytest.mark.parametrize("lib", ["numpy", "torch"])
@pytest.mark.parametrize("fmt,expected", [("bf16", "project"), ("fp16", "project"),
                                          ("fp32", "rotate"), ("fp64", "rotate")])
def test_default_method_by_storage_format(rng, lib, fmt, expected):
    d = 12
    K = _lib_array(lib, (lambda G: G @ G.T)(rng.standard_normal((d, d))).astype(np.float32))
    Q32 = orthogonal(d, rng, np.float32)
    Q = (to_storage(_lib_array(lib, Q32), fmt) if fmt in ("bf16", "fp16")
         else _lib_array(lib, Q32.astype(np.float64) if fmt == "fp64" else Q32))
    res = lpc.subspace_refresh(K, Q, [1, 2, 3])
    assert res.info.method == expected
    # the state's "dense" scheme (which keeps Q's own format) takes the same default
    _, up = S.update(S.init(Q), K, [1, 2, 3])
    assert up.info.method == expected
    # an explicit method is still honoured
    assert lpc.subspace_refresh(K, Q, [1, 2, 3], method="rotate").info.method == "rotate"


def test_bf16_basis_default_refresh_does_not_drift():
    """600 refreshes of a BF16 basis with the default method (topk-cyclic, whose dominant
    columns are re-rounded at every step): plain rotate drifted from the one-rounding floor
    0.0040 to 0.088 in 500 refreshes (and is rejected by the input check past 0.1); the default
    stays at the floor."""
    d, k, steps = 32, 8, 600
    fac = DriftingFactor(d, rng=0)
    _, V = np.linalg.eigh(fac.K.astype(np.float64))
    Q = to_storage(V[:, ::-1].astype(np.float32), "bf16")
    floor = orthogonality_loss_2(Q)
    est = np.zeros(d)
    for step in range(steps):
        J = lpc.select_columns("topk-cyclic", k, step=step, estimates=est)
        res = lpc.subspace_refresh(fac.step(), Q, J)
        Q = res.Q
        est[J] = np.asarray(res.eigenvalues)
    assert orthogonality_loss_2(Q) < 2.0 * floor


# --------------------------------------------------------------------------- overflow
def _huge_problem(rng, d, top):
    """A finite fp32 SPD K whose largest entry is ``top`` and a random orthonormal fp32 Q."""
    G = rng.standard_normal((d, d))
    K = G @ G.T
    return (K / np.abs(K).max() * top).astype(np.float32), orthogonal(d, rng, np.float32)


@pytest.mark.parametrize("lib", ["numpy", "torch"])
@pytest.mark.parametrize("method", ["rotate", "project"])
@pytest.mark.parametrize("qfmt", ["fp32", "bf16"])
def test_finite_k_near_fp32_max_gives_a_finite_basis(rng, lib, method, qfmt):
    """Issue: K with entries up to 3e38 gave a NaN Q with only a RuntimeWarning. K Q_J is linear
    in K: a power-of-two scale changes no mantissa, so Q equals that of the scaled-down K to
    O(u), the eigenvalues are scaled back exactly, and the scaling is reported."""
    d, J = 16, [0, 1, 2, 3, 9]
    Kh, Qh = _huge_problem(rng, d, 3e38)
    K, Q = _lib_array(lib, Kh), _lib_array(lib, Qh)
    if qfmt == "bf16":
        Q = to_storage(Q, "bf16")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no RuntimeWarning either
        res = lpc.subspace_refresh(K, Q, J, method=method)
    Kr = _lib_array(lib, Kh * np.float32(2.0**-100))
    ref = lpc.subspace_refresh(Kr, Q, J, method=method)
    assert res.info.scale_log2 > 0 and ref.info.scale_log2 == 0
    q, qr_ = np64(res.Q), np64(ref.Q)
    assert np.all(np.isfinite(q))
    assert np.abs(q - qr_).max() < 10 * d * U_FP32 * (256 if qfmt == "bf16" else 1)
    assert loss_2(res.Q) < max(10 * d * U_FP32, 2 * loss_2(Q))
    ev, ev_ref = np64(res.eigenvalues), np64(ref.eigenvalues) * 2.0**100
    finite = np.isfinite(ev)
    assert res.info.eigenvalues_finite == bool(finite.all())
    np.testing.assert_allclose(ev[finite], ev_ref[finite], rtol=10 * d * U_FP32)
    # a Rayleigh quotient beyond the fp32 maximum is +inf (reported), never NaN
    assert np.all(ev_ref[~finite] > np.finfo(np.float32).max) and not np.isnan(ev).any()


@pytest.mark.parametrize("scheme", ["fp32", "bf16", "bf16-rectify", "block-rotation"])
def test_stored_basis_update_with_huge_k(rng, scheme):
    d = 16
    Kh, Qh = _huge_problem(rng, d, 3e38)
    sb = lpc.StoredBasis(Qh, scheme, block_size=4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        up = sb.update(Kh, sb.blocks()[1] if scheme == "block-rotation" else [4, 5, 6, 7])
    assert up.info.scale_log2 > 0
    assert np.all(np.isfinite(np64(sb.materialize())))
    assert loss_2(sb.materialize()) < 0.1
    assert not np.isnan(np64(up.eigenvalues)).any()


def test_nonfinite_k_still_raises_naming_k(rng):
    Kh, Qh = _huge_problem(rng, 8, 1.0)
    Kh[2, 3] = np.nan
    with pytest.raises(ValueError, match="K has non-finite"):
        lpc.subspace_refresh(Kh, Qh, [0, 1])
    with pytest.raises(ValueError, match="K has non-finite"):
        lpc.subspace_refresh(lambda X: X * np.inf, Qh, [0, 1])


# --------------------------------------------------------------------------- null space
def _dead_unit_problem(rng, d, dead):
    """K = G Gᵀ with ``dead`` zero rows of G (dead ReLUs) and a basis from a full refresh."""
    G = rng.standard_normal((d, 2 * d))
    G[rng.choice(d, dead, replace=False)] = 0.0
    K = (G @ G.T).astype(np.float32)
    Q = np.linalg.qr(K @ orthogonal(d, rng, np.float32))[0].astype(np.float32)
    return K, Q


@pytest.mark.parametrize("lib", ["numpy", "torch"])
@pytest.mark.parametrize("method", ["rotate", "project"])
def test_rank_deficient_k_leaves_no_subnormal(rng, lib, method):
    """Issue: rotate on a K with dead units left hundreds of entries below 1e-30 (subnormals
    among them: later products run at subnormal speed). Entries below FLUSH_C·u·‖q‖/√d are
    flushed; the basis stays orthonormal to O(u). "project" used to lose orthogonality
    altogether here (loss 1 at the 14th refresh: the null directions of K Q_J were left to the
    arbitrary columns of a QR, which the projection annihilated)."""
    d, k = 128, 16
    Kh, Qh = _dead_unit_problem(rng, d, 40)
    K, Q = _lib_array(lib, Kh), _lib_array(lib, Qh)
    for step in range(30):
        J = lpc.select_columns("cyclic", k, step=step, ncols=d)
        Q = lpc.subspace_refresh(K, Q, J, method=method).Q
    q = np.asarray(np64(Q), dtype=np.float32)
    a = np.abs(q)
    assert not np.any((a > 0) & (a < np.finfo(np.float32).tiny))  # no subnormal
    # no entry between zero and the flush threshold in the refreshed columns
    assert not np.any((a > 0) & (a < 0.5 * U_FP32 / np.sqrt(d)))
    assert loss_2(Q) < 30 * d * U_FP32
