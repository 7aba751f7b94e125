"""sherman_morrison_update at the edges of the format: u, v near overflow are scaled (exact),
an updated inverse that cannot be represented is reported, never returned as NaN.

Before: sherman_morrison_update(Jinv, u·1e200, v·1e200) returned a NaN denominator,
singular=False and an all-NaN inverse.
"""

from __future__ import annotations

import numpy as np
import pytest

import linalg_pc as lpc
from linalg_pc.precision import unit_roundoff

# the update's error is about (1 + |s|)/|1 + s| · c·d·u relative to ‖J⁻¹‖ (Hager 1989); here
# |s| ≫ 1 so the amplification is ≈ 1
SM_C = 50.0


def _problem(d=6, seed=0):
    g = np.random.default_rng(seed)
    J = 2.0 * np.eye(d) + 0.1 * g.standard_normal((d, d))
    return np.linalg.inv(J), g.standard_normal(d), g.standard_normal(d)


def _limit(Jinv, u, v):
    """lim_{α→∞} of the update with u·α, v·α: J⁻¹ − (J⁻¹u)(vᵀJ⁻¹)/(vᵀJ⁻¹u)."""
    Ju, vJ = Jinv @ u, v @ Jinv
    return Jinv - np.outer(Ju, vJ) / (v @ Ju)


@pytest.mark.parametrize("scale", [1e160, 1e200, 1e300])
def test_huge_u_v_are_scaled_not_nan(scale):
    Jinv, u, v = _problem()
    res = lpc.sherman_morrison_update(Jinv, u * scale, v * scale)
    assert not res.singular
    assert np.all(np.isfinite(res.inverse))
    ref = _limit(Jinv, u, v)  # exact to working precision for α² ≫ 1/u
    tol = SM_C * 6 * unit_roundoff("fp64") * np.abs(ref).max()
    assert np.abs(res.inverse - ref).max() <= tol
    s0 = v @ Jinv @ u
    # 1 + s = 1 + scale²·s0 is beyond the format for every scale here: reported as ±inf
    assert 2 * np.log10(scale) + np.log10(abs(s0)) > np.log10(np.finfo(np.float64).max)
    assert res.denominator == np.copysign(np.inf, s0)


def test_tiny_u_v_leave_the_inverse_unchanged():
    Jinv, u, v = _problem(seed=1)
    res = lpc.sherman_morrison_update(Jinv, u * 1e-200, v * 1e-200)
    assert not res.singular and res.denominator == 1.0
    assert np.array_equal(res.inverse, Jinv)


def test_batched_mixed_scales_and_fp32():
    Jinv, u, v = _problem(seed=2)
    res = lpc.sherman_morrison_update(np.stack([Jinv, Jinv]), np.stack([u, u * 1e200]),
                                      np.stack([v, v * 1e200]))
    assert not res.singular.any() and np.all(np.isfinite(res.inverse))
    ref0 = Jinv - np.outer(Jinv @ u, v @ Jinv) / (1 + v @ Jinv @ u)
    assert np.abs(res.inverse[0] - ref0).max() <= SM_C * 6 * unit_roundoff("fp64")
    J32 = Jinv.astype(np.float32)
    r32 = lpc.sherman_morrison_update(J32, (u * 1e30).astype(np.float32),
                                      (v * 1e30).astype(np.float32))
    assert not r32.singular and np.all(np.isfinite(r32.inverse))
    ref = _limit(Jinv, u, v)
    assert np.abs(r32.inverse - ref).max() <= SM_C * 6 * unit_roundoff("fp32") * np.abs(ref).max()


def test_unrepresentable_update_is_reported():
    """J⁻¹ = 1e300·A with vᵀJ⁻¹u = 0: the true updated inverse has entries ≈ 1e600."""
    A = np.triu(np.ones((4, 4)))  # A[1, 0] = 0
    Jinv = 1e300 * A
    u, v = np.eye(4)[0], np.eye(4)[1]  # vᵀJ⁻¹u = Jinv[1, 0] = 0, J⁻¹u ⊗ vᵀJ⁻¹ ≈ 1e600
    res = lpc.sherman_morrison_update(Jinv, u, v)
    assert res.singular  # skipped and reported
    assert np.array_equal(res.inverse, Jinv)
