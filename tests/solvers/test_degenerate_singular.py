"""DCReg on singular H: the QR fallback is taken and reported by both engines, the analysis
reports the singular blocks, and schur_complements raises a clear error naming H.

Before: the Numba engine returned status "indefinite" with no fallback and a relative residual
of 0.9 on diag(1, …, 5, 0); the array-API engine and schur_complements raised NumPy's
LinAlgError from inside linalg.solve.
"""

from __future__ import annotations

import numpy as np
import pytest

import linalg_pc as lpc
from linalg_pc.precision import unit_roundoff

ENGINES = ["numba", "array_api"]
# the truncated QR solve of a singular system: its residual is the least-squares residual up to
# rounding (c·n·u·‖H‖‖x‖ with a generous c)
LS_SLACK = 1e3


def _lstsq_residual(H, b):
    x = np.linalg.lstsq(H, b, rcond=None)[0]
    return np.linalg.norm(H @ x - b)


def _singular_cases():
    g = np.random.default_rng(5)
    out = [("diag(1..5, 0)", np.diag([1.0, 2.0, 3.0, 4.0, 5.0, 0.0]), np.ones(6))]
    for t in range(3):
        Q, _ = np.linalg.qr(g.standard_normal((6, 6)))
        H = (Q * np.r_[1.0, 2.0, 3.0, 4.0, 5.0, 0.0]) @ Q.T
        out.append((f"rotated rank 5 #{t}", 0.5 * (H + H.T), g.standard_normal(6)))
    return out


@pytest.mark.parametrize("case", _singular_cases(), ids=lambda c: c[0])
@pytest.mark.parametrize("engine", ENGINES)
def test_singular_H_takes_and_reports_the_qr_fallback(case, engine):
    _, H, b = case
    x, rep, res = lpc.solve_degenerate(H, b, engine=engine)
    assert res.status != "converged" and not res.converged
    assert res.fallback is True
    assert np.all(np.isfinite(x))
    r = np.linalg.norm(H @ x - b)
    slack = LS_SLACK * 6 * unit_roundoff("fp64") * np.linalg.norm(H) * np.linalg.norm(x)
    assert r <= _lstsq_residual(H, b) + slack


def test_engines_agree_on_a_singular_batch():
    cases = _singular_cases()
    H = np.stack([c[1] for c in cases])
    b = np.stack([c[2] for c in cases])
    out = [lpc.solve_degenerate(H, b, engine=e) for e in ENGINES]
    (xa, repa, resa), (xb, repb, resb) = out
    assert np.array_equal(resa.fallback, resb.fallback) and resa.fallback.all()
    assert np.array_equal(repa.blocks_pd, repb.blocks_pd)
    for s in range(H.shape[0]):
        ra = np.linalg.norm(H[s] @ xa[s] - b[s])
        rb = np.linalg.norm(H[s] @ xb[s] - b[s])
        slack = LS_SLACK * 6 * unit_roundoff("fp64") * np.linalg.norm(H[s]) * (
            np.linalg.norm(xa[s]) + np.linalg.norm(xb[s]))
        assert abs(ra - rb) <= slack


@pytest.mark.parametrize("engine", ENGINES)
def test_consistent_singular_system_still_converges(engine):
    g = np.random.default_rng(6)
    J = g.standard_normal((20, 6))
    J[:, 5] = J[:, 4]  # rank 5: H_tt singular
    H = J.T @ J
    b = H @ g.standard_normal(6)
    x, rep, res = lpc.solve_degenerate(H, b, engine=engine)
    # whether the rounded H_tt (κ ≈ 1e16) still admits a Cholesky factor, and so whether the
    # analysis reports its blocks positive definite, depends on the BLAS kernel's rounding: the
    # promise is the solve
    assert res.status == "converged"
    assert np.linalg.norm(H @ x - b) < 1e-6 * max(1.0, np.linalg.norm(b))


@pytest.mark.parametrize("engine", ENGINES)
def test_block_degeneracy_reports_a_singular_block(engine):
    rep = lpc.block_degeneracy(np.diag([1.0, 2.0, 3.0, 4.0, 5.0, 0.0]), engine=engine)
    assert not bool(rep.blocks_pd)
    assert rep.flagged_axes() == lpc.solvers.schur.DCREG_LABELS
    assert np.all(np.isfinite(np.asarray(rep.S_R))) and np.all(np.isfinite(np.asarray(rep.S_t)))


def test_schur_complements_of_a_singular_block_raise_naming_H():
    with pytest.raises(ValueError, match=r"H: the diagonal block H_tt"):
        lpc.schur_complements(np.diag([1.0, 2.0, 3.0, 4.0, 5.0, 0.0]), 3)
    with pytest.raises(ValueError, match=r"H: the diagonal block H_RR"):
        lpc.schur_complements(np.diag([0.0, 2.0, 3.0, 4.0, 5.0, 1.0]), 3)
    # an indefinite but invertible block is fine
    S_R, S_t = lpc.schur_complements(np.diag([1.0, -2.0, 3.0, 4.0, -5.0, 1.0]), 3)
    assert np.allclose(np.diag(S_R), [1.0, -2.0, 3.0])
