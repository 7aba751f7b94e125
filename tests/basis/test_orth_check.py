"""The orthonormality check of the basis routines (``_common.check_orthonormal``) against the
exact ‖UᵀU − I‖₂ of an fp64 eigensolver: what it guarantees (never rejects a basis within the
tolerance, accepts only what its bounds allow) on every namespace, batched, and through the
public entries (issue 12, "Cost of checks": no host eigensolver)."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest

import linalg_pc as lpc
from linalg_pc.basis._common import POWER_STEPS, check_orthonormal
from linalg_pc.precision import round_to, unit_roundoff

sys.path.insert(0, str(Path(__file__).parent))
from _helpers import orthogonal  # noqa: E402

TOL = 0.1
#: The power-iteration estimate ρ of ‖E‖₂ after POWER_STEPS steps on the gap-free E of the
#: noise-like families below is at least this fraction of ‖E‖₂ (measured ≥ 0.91, see
#: ``POWER_STEPS``); the test holds it with a margin.
NOISE_RATIO = 0.85


def _exact(U64):
    """(‖E‖₂, ‖E‖_F, ‖E‖_∞) of E = UᵀU − I in fp64 (max over a batch), the reference."""
    E = np.swapaxes(U64, -1, -2) @ U64 - np.eye(U64.shape[-1])
    two = float(np.max(np.abs(np.linalg.eigvalsh(E))))
    fro = float(np.max(np.linalg.norm(E, axis=(-2, -1))))
    inf = float(np.max(np.abs(E).sum(axis=-1)))
    return two, fro, inf


def _families(d, rng):
    """U (d×d, fp64) with losses on both sides of TOL: noise-like E (no spectral gap: the
    power iteration's hardest case) and E with a dominant eigenvalue."""
    Q = orthogonal(d, rng)
    err = round_to(Q, "bf16") - Q
    N = rng.standard_normal((d, d))
    u = Q[:, :1] @ Q[:, 1:2].T
    return {
        "bf16 rounding": Q + err,                 # loss ≈ 5e-3, cheap bound ≈ 0.02 (d = 128)
        "bf16 x8 (band)": Q + 8 * err,            # cheap bound > TOL, loss ≈ 0.04
        "noise 0.06": Q + 0.06 / (2 * math.sqrt(d)) * N,
        "noise 0.2": Q + 0.2 / (2 * math.sqrt(d)) * N,
        "rank-one 0.09": Q + 0.09 * u,            # dominant eigenvalue, just below TOL
        "rank-one 0.11": Q + 0.11 * u,            # just above
        "scaled 2Q": 2.0 * Q,
    }


def _check(xp, U, tol=TOL):
    return check_orthonormal(xp, xp.asarray(U), argname="Q", tol=tol)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_decision_against_exact_loss(xp, rng, dtype):
    d = 128
    c = 4 * d * unit_roundoff(np.dtype(dtype).name.replace("float", "fp"))  # rounding of E
    for name, U in _families(d, rng).items():
        two, fro, inf = _exact(U)
        Uc = U.astype(dtype)
        if two > TOL / NOISE_RATIO + c:
            with pytest.raises(ValueError, match=r"Q is not orthonormal.*= [0-9.e+-]+ \(a lower"):
                _check(xp, Uc)
            continue
        if two > TOL + c:  # noqa: SIM114 - a loss just above tol may pass only by ρ < tol
            try:
                got = _check(xp, Uc)
            except ValueError:
                continue
            assert NOISE_RATIO * two - c <= got <= TOL, name
            continue
        got = _check(xp, Uc)  # never rejected within the tolerance
        upper = min(fro, inf)
        if upper <= TOL - c:
            assert two - c <= got <= upper + c, name  # the upper bound is reported
        else:  # the band: the power-iteration estimate, a lower bound close to ‖E‖₂
            assert NOISE_RATIO * two - c <= got <= two + c, name
        assert got <= math.sqrt(d) * TOL + c  # what an accepted basis is guaranteed


def test_families_cover_the_band(rng):
    """The families above exercise both branches: a cheap bound that decides, one that does
    not (the power iteration decides), and rejections of both kinds."""
    fam = _families(128, rng)
    two, fro, inf = _exact(fam["bf16 x8 (band)"])
    assert two < TOL < min(fro, inf)
    two, fro, inf = _exact(fam["rank-one 0.11"])
    assert TOL < two < min(fro, inf)
    two, fro, inf = _exact(fam["noise 0.2"])
    assert two > TOL / NOISE_RATIO


def test_batched_reports_the_worst_and_rejects_any_bad_element(xp, rng):
    d = 48
    fam = _families(d, rng)
    good = np.stack([fam["bf16 rounding"], fam["bf16 x8 (band)"]])
    got = _check(xp, good)
    two = max(_exact(U)[0] for U in good)
    assert NOISE_RATIO * two <= got <= math.sqrt(d) * TOL
    bad = np.stack([fam["bf16 rounding"], fam["scaled 2Q"], fam["bf16 x8 (band)"]])
    with pytest.raises(ValueError, match=r"Q is not orthonormal.*= 3 "):
        _check(xp, bad)


def test_non_finite_and_overflow_are_told_apart(xp, rng):
    U = orthogonal(16, rng).astype(np.float32)
    for v in (np.nan, np.inf):
        Un = U.copy()
        Un[3, 5] = v
        with pytest.raises(ValueError, match="Q has non-finite entries"):
            _check(xp, Un)
    # a finite U whose Gram matrix (or its square) overflows fp32 is not a basis: said so,
    # not "non-finite"
    for s in (1e25, 1e15):
        with pytest.raises(ValueError, match=r"Q is not orthonormal: QᵀQ − I overflows"):
            _check(xp, U * np.float32(s))
    with pytest.raises(ValueError, match=r"Q is not orthonormal.*= 1e\+12"):
        _check(xp, U * np.float32(1e6))


def test_degenerate_shapes_and_skipped_check(xp):
    assert _check(xp, np.zeros((5, 0))) == 0.0
    assert _check(xp, np.zeros((0, 5, 3))) == 0.0
    assert math.isnan(_check(xp, 2 * np.eye(3), tol=None))
    assert math.isnan(_check(xp, 2 * np.eye(3), tol=math.inf))
    assert _check(xp, np.eye(1)) == 0.0
    with pytest.raises(ValueError, match="= 1 "):
        _check(xp, np.zeros((4, 2)))  # E = −I


def test_public_entries_accept_the_band_and_report_the_estimate(rng):
    """A drifted BF16 basis whose cheap bound exceeds the tolerance while its loss does not is
    accepted by subspace_refresh, complete_basis and state.init; input_loss is the estimate."""
    d = 128
    U = _families(d, rng)["bf16 x8 (band)"]
    two, fro, inf = _exact(U)
    assert two < TOL < min(fro, inf)
    Qb = lpc.to_storage(U, "bf16")
    two_b = _exact(np.asarray(lpc.from_storage(Qb, "fp64")))[0]
    K = np.diag(np.linspace(1.0, 2.0, d)).astype(np.float32)
    res = lpc.subspace_refresh(K, Qb, np.arange(d))
    assert NOISE_RATIO * two_b <= res.info.input_loss <= two_b * (1 + 1e-3)
    lpc.complete_basis(U[:, : d // 2])
    lpc.basis.state.init(U)
    assert POWER_STEPS >= 4
