"""pcg on hard input: right-hand sides whose squares underflow, complex operators, operators
that misbehave, callbacks that write, and SciPy's argument forms (atol/rtol None, x0="Mb")."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

import linalg_pc as lpc


def spd(n: int, kappa: float, seed: int) -> np.ndarray:
    g = np.random.default_rng(seed)
    Q, _ = np.linalg.qr(g.standard_normal((n, n)))
    return (Q * np.logspace(0.0, np.log10(kappa), n)) @ Q.T


KAPPA = 1e2
RTOL = 1e-5
# ‖x − x*‖ ≤ κ·rtol·‖x*‖ for a CG solve stopped at ‖r‖ < rtol‖b‖, doubled for the rounding of
# the reference
SOL_FACTOR = 2.0


# --------------------------------------------------------------------------- tiny b (scale)
@pytest.mark.parametrize("form", ["dense", "csr", "batched"])
@pytest.mark.parametrize("dtype, mag", [(np.float32, 5e-42), (np.float32, 1e-30),
                                        (np.float64, 1e-170), (np.float64, 1e-300)])
def test_tiny_rhs_is_scaled_not_flushed(form, dtype, mag):
    """‖b‖ = 5e-42 in fp32 (subnormal entries) used to give x = 0, "converged" and a true
    residual of 0 (‖b‖² underflows); SciPy returns the solution. A power-of-two scaling of b,
    x0 and the result solves the caller's system."""
    n = 30
    A = spd(n, KAPPA, 0).astype(dtype)
    g = np.random.default_rng(1)
    b0 = g.standard_normal(n)
    b = (b0 / np.linalg.norm(b0) * mag).astype(dtype)
    # the reference in float64 on the stored b, at unit scale (its own squares underflow)
    s = 1.0 / np.abs(b.astype(np.float64)).max()
    x_ref = np.linalg.solve(A.astype(np.float64), b.astype(np.float64) * s)
    if form == "csr":
        res = lpc.pcg(sp.csr_matrix(A), b, rtol=RTOL)
        x, status = res.x, res.status
    elif form == "batched":
        res = lpc.pcg(A[None], b[None], rtol=RTOL)
        x, status = res.x[0], res.status[0]
    else:
        res = lpc.pcg(A, b, rtol=RTOL)
        x, status = res.x, res.status
    assert status == "converged"
    assert x.dtype == dtype
    err = np.linalg.norm(x.astype(np.float64) * s - x_ref)
    # x itself rounds to the format's grid near the subnormal range: one spacing per entry
    grid = np.sqrt(n) * np.finfo(dtype).smallest_subnormal * s
    assert err <= SOL_FACTOR * KAPPA * RTOL * np.linalg.norm(x_ref) + grid
    hist = res.residual_norms if form != "batched" else res.residual_norms[:, 0]
    assert hist[0] == pytest.approx(np.linalg.norm(b.astype(np.float64)), rel=1e-5)


def test_tiny_rhs_atol_x0_and_callback_in_the_callers_units():
    A = spd(20, KAPPA, 2)
    S = 2.0**565  # b·S is O(1): the references are computed there (exact powers of two)
    b = np.random.default_rng(3).standard_normal(20) / S
    bnorm = np.linalg.norm(b * S) / S
    x_ref = np.linalg.solve(A, b * S) / S
    seen = []
    res = lpc.pcg(A, b, rtol=1e-10, callback=lambda xk: seen.append(np.array(xk)))
    assert res.status == "converged" and len(seen) == res.iterations
    assert np.array_equal(seen[-1], res.x)
    assert res.true_residual_norm < 1e-10 * bnorm
    # atol larger than ‖b − A x0‖: converged at once, x0 returned unchanged
    x0 = x_ref * 0.5
    res0 = lpc.pcg(A, b, x0=x0, atol=bnorm * 4, rtol=0.0)
    assert res0.status == "converged" and res0.iterations == 0
    assert np.array_equal(res0.x, x0)
    # a starting guess at the solution's scale converges to the solution
    res1 = lpc.pcg(A, b, x0=x0, rtol=1e-10)
    assert res1.status == "converged"
    err = np.linalg.norm((res1.x - x_ref) * S)
    assert err <= SOL_FACTOR * KAPPA * 1e-10 * np.linalg.norm(x_ref * S)
