"""pcg on hard input: right-hand sides whose squares underflow, complex operators, operators
that misbehave, callbacks that write, and SciPy's argument forms (atol/rtol None, x0="Mb")."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import scipy.sparse as sp
import scipy.sparse.linalg as spl

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


# --------------------------------------------------------------------------- complex operators
def _complex_forms(A):
    return {
        "LinearOperator of complex dtype": spl.LinearOperator(
            A.shape, matvec=lambda x: A @ x, dtype=np.complex128),
        "real-typed LinearOperator returning complex": spl.LinearOperator(
            A.shape, matvec=lambda x: (A @ x) * (1 + 1j), dtype=np.float64),
        "callable returning complex": lambda x: (A @ x) * (1 + 1j),
    }


@pytest.mark.parametrize("which", ["A", "M"])
@pytest.mark.parametrize("form", list(_complex_forms(np.eye(2))))
def test_complex_operator_or_callable_is_refused(which, form):
    """Such an operator used to be cast to real (a ComplexWarning only) and the wrong answer
    reported as converged."""
    A = spd(8, 10.0, 3)
    b = np.ones(8)
    op = _complex_forms(A)[form]
    kw = {"A": op, "M": None} if which == "A" else {"A": A, "M": op}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no ComplexWarning on the way to the error
        with pytest.raises(TypeError, match=rf"{which}.*(real|complex)"):
            lpc.pcg(kw["A"], b, M=kw["M"])


# --------------------------------------------------------------------------- misbehaving operators
_BAD_OUTPUTS = {
    "None": (lambda A: (lambda x: None), TypeError, "returned None"),
    "too long": (lambda A: (lambda x: np.ones(A.shape[0] + 1)), ValueError, "returned shape"),
    "a matrix": (lambda A: (lambda x: np.ones((A.shape[0], 2))), ValueError, "returned shape"),
    "a string": (lambda A: (lambda x: "abc"), (TypeError, ValueError), "returned"),
}


@pytest.mark.parametrize("which", ["A", "M"])
@pytest.mark.parametrize("bad", list(_BAD_OUTPUTS))
@pytest.mark.parametrize("wrap", ["callable", "LinearOperator"])
def test_operator_with_a_bad_result_names_the_argument(which, bad, wrap):
    A = spd(6, 10.0, 4)
    make, exc, msg = _BAD_OUTPUTS[bad]
    f = make(A)
    op = f if wrap == "callable" else spl.LinearOperator(A.shape, matvec=f, dtype=np.float64)
    if wrap == "LinearOperator":  # SciPy's matvec checks the result first: its error, named
        exc, msg = (TypeError, ValueError), "returned"
    args = (op, np.ones(6), None) if which == "A" else (A, np.ones(6), op)
    with pytest.raises(exc, match=rf"^{which}[.(].*{msg}"):
        lpc.pcg(args[0], args[1], M=args[2])


def test_operator_result_as_a_column_or_a_list_is_accepted():
    A = spd(6, 10.0, 5)
    b = np.ones(6)
    ref = lpc.pcg(A, b, rtol=1e-10).x
    for op in (lambda x: (A @ x)[:, None], lambda x: list(A @ x)):
        res = lpc.pcg(op, b, rtol=1e-10)
        assert res.status == "converged"
        assert np.allclose(res.x, ref, rtol=1e-8, atol=0)


def test_woodbury_refuses_arrays_of_another_library():
    torch = pytest.importorskip("torch")
    W = lpc.WoodburyInverse(1.0, np.random.default_rng(0).standard_normal((3, 5)))
    with pytest.raises(TypeError, match=r"x is a torch array.*numpy"):
        W.ihvp(torch.ones(5, dtype=torch.float64))
    with pytest.raises(TypeError, match=r"g is a torch array.*numpy"):
        W.add(torch.ones(5, dtype=torch.float64))


# --------------------------------------------------------------------------- callback
@pytest.mark.parametrize("form", ["dense", "csr", "batched", "refine"])
def test_callback_writing_its_argument_does_not_change_the_solve(form):
    """The callback used to receive a view of the live iterate: zeroing it changed x."""
    A = spd(10, 100.0, 6)
    b = np.random.default_rng(7).standard_normal(10)
    kw = {"rtol": 1e-10}
    if form == "csr":
        A = sp.csr_matrix(A)
    elif form == "batched":
        A, b = np.stack([A, A]), np.stack([b, -b])
    elif form == "refine":
        kw["compute"] = "fp32"

    def zero(xk):
        xk[...] = 0

    ref = lpc.pcg(A, b, callback=lambda xk: None, **kw)
    res = lpc.pcg(A, b, callback=zero, **kw)
    assert np.array_equal(res.x, ref.x)
    assert np.array_equal(np.asarray(res.iterations), np.asarray(ref.iterations))


# --------------------------------------------------------------------------- SciPy's forms
@pytest.mark.parametrize("name", ["atol", "rtol"])
def test_tolerance_none_is_a_clear_error(name):
    """SciPy raises for atol=None too (its legacy value); we used to crash in float(None)."""
    with pytest.raises(TypeError, match=rf"{name} must be a real"):
        lpc.pcg(np.eye(3), np.ones(3), **{name: None})


def test_x0_mb_starts_from_m_b_as_scipy():
    A = spd(20, 1e3, 8)
    b = np.random.default_rng(9).standard_normal(20)
    M = np.diag(1.0 / np.diag(A))
    count = [0]
    x_ref, info = spl.cg(A, b, x0="Mb", M=M, rtol=1e-10,
                         callback=lambda xk: count.__setitem__(0, count[0] + 1))
    res = lpc.pcg(A, b, x0="Mb", M=M, rtol=1e-10)
    assert info == 0 and res.status == "converged"
    assert abs(res.iterations - count[0]) <= 0.05 * count[0] + 1
    assert np.linalg.norm(res.x - x_ref) <= 1e3 * 20 * 2.0**-53 * 1e3 * np.linalg.norm(x_ref)
    # the first iterate: x0 = M b (callback sees x1; the history starts at b − A M b)
    assert res.residual_norms[0] == pytest.approx(np.linalg.norm(b - A @ (M @ b)), rel=1e-12)
    # without M, x0 = b
    res_b = lpc.pcg(A, b, x0="Mb", rtol=1e-10)
    assert res_b.residual_norms[0] == pytest.approx(np.linalg.norm(b - A @ b), rel=1e-12)
    # batched systems with a batched M
    Ab, bb, Mb = np.stack([A, A]), np.stack([b, 2 * b]), np.stack([M, M])
    rb = lpc.pcg(Ab, bb, x0="Mb", M=Mb, rtol=1e-10)
    assert np.all(rb.status == "converged")
    assert rb.residual_norms[0, 1] == pytest.approx(np.linalg.norm(2 * (b - A @ (M @ b))),
                                                    rel=1e-12)


def test_x0_other_string_names_x0():
    with pytest.raises(ValueError, match=r"x0 must be an array, None or 'Mb'"):
        lpc.pcg(np.eye(3), np.ones(3), x0="zeros")
