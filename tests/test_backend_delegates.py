"""Each delegate of the backend against the generic array-API implementation of its primitive,
on every namespace of the ``xp`` fixture (a namespace without a delegate runs the generic code
on both sides, which checks the generic code against itself and the reference values)."""

from __future__ import annotations

import contextlib

import ml_dtypes
import numpy as np
import pytest

import linalg_pc._backend as B
from linalg_pc._backend import _core
from linalg_pc.qr_methods import apply_q, householder_factor

# backward-stable triangular solve: ||x - x_ref|| / ||x_ref|| <= c * kappa * u (Higham Thm 8.5)
C_TRSV = 50.0
# Householder QR, O(u) per entry of Q and R·‖A‖ for well-conditioned test matrices
C_QR = 1e3


def _np(a):
    return np.asarray(B.to_numpy(a), dtype=np.float64)


@contextlib.contextmanager
def generic(xp, primitive: str):
    """Run ``primitive`` without xp's delegate (the generic array-API implementation)."""
    B.delegate(xp, primitive)  # load the library's delegates first
    key = (B.namespace_name(xp), primitive)
    saved = _core._DELEGATES.pop(key, None)
    try:
        yield
    finally:
        if saved is not None:
            _core._DELEGATES[key] = saved


def _upper(rng, n, grade=1.0):
    R = np.triu(rng.standard_normal((n, n))) * grade ** np.arange(n)[None, :]
    idx = np.arange(n)
    R[idx, idx] = (2.0 + np.abs(R[idx, idx])) * grade ** idx
    return R


def test_dtype_kind(xp):
    cases = {"float": xp.float32, "int": xp.int32, "bool": xp.bool}
    for kind, dt in cases.items():
        x = xp.zeros(3, dtype=dt)
        with generic(xp, "dtype_kind"):
            assert B.dtype_kind(x) == kind
        assert B.dtype_kind(x) == kind
    if B.has_dtype(xp, "bf16"):
        assert B.dtype_kind(xp.zeros(2, dtype=B.native_dtype(xp, "bf16"))) == "float"
    if hasattr(xp, "complex64"):
        assert B.dtype_kind(xp.zeros(2, dtype=xp.complex64)) == "complex"


def test_bf16_dtype_only_through_delegates(xp):
    if B.delegate(xp, "bf16_dtype") is None:
        assert not B.has_dtype(xp, "bf16")
        with pytest.raises(TypeError, match="bfloat16"):
            B.native_dtype(xp, "bf16")
        return
    with generic(xp, "bf16_dtype"), pytest.raises(TypeError, match="bfloat16"):
        B.native_dtype(xp, "bf16")
    assert B.format_of(xp.zeros(1, dtype=B.native_dtype(xp, "bf16"))).name == "bf16"


@pytest.mark.parametrize("bad", [None, np.nan, np.inf, -np.inf])
def test_check_finite(xp, bad):
    x = np.random.default_rng(1).standard_normal((7, 5))
    if bad is not None:
        x[6, 4] = bad
    fmts = ["fp32", "fp64"] + (["bf16"] if B.has_dtype(xp, "bf16") else [])
    for f in fmts:
        if f == "bf16":
            a = B.to_namespace(x.astype(ml_dtypes.bfloat16), xp)
        else:
            a = xp.asarray(x, dtype=B.native_dtype(xp, f))
        for run in (contextlib.nullcontext, lambda: generic(xp, "all_finite")):
            with run():
                if bad is None:
                    B.check_finite(xp, a, "A")
                else:
                    with pytest.raises(ValueError, match=r"\bA\b"):
                        B.check_finite(xp, a, "A")


@pytest.mark.parametrize("bad", [None, np.nan, np.inf, -np.inf])
def test_finite_flag(xp, bad):
    """The flag stays in x's namespace (a 0-d boolean array) and agrees with the generic
    all(isfinite(x)) and with check_finite."""
    x = np.random.default_rng(3).standard_normal((6, 4))
    if bad is not None:
        x[2, 3] = bad
    fmts = ["fp32", "fp64"] + (["bf16"] if B.has_dtype(xp, "bf16") else [])
    for f in fmts:
        a = (B.to_namespace(x.astype(ml_dtypes.bfloat16), xp) if f == "bf16"
             else xp.asarray(x, dtype=B.native_dtype(xp, f)))
        for run in (contextlib.nullcontext, lambda: generic(xp, "finite_flag")):
            with run():
                flag = B.finite_flag(xp, a)
            assert B.namespace_name(B.array_namespace(flag)) == B.namespace_name(xp)
            assert tuple(flag.shape) == () and B.dtype_kind(flag) == "bool"
            assert bool(flag) == (bad is None)


def test_bf16_exchange_through_delegates(xp):
    s = np.random.default_rng(2).standard_normal(9).astype(ml_dtypes.bfloat16)
    if B.delegate(xp, "from_bf16_bits") is None:
        with pytest.raises(TypeError, match="bfloat16"):
            B.to_namespace(s, xp)
        return
    t = B.to_namespace(s, xp)
    assert B.format_of(t).name == "bf16"
    np.testing.assert_array_equal(B.to_numpy(t).view(np.uint16), s.view(np.uint16))


@pytest.mark.parametrize("own", [False, True])
@pytest.mark.parametrize("cond", [None, 1.0, 1e6])
@pytest.mark.parametrize("dtype", ["fp32", "fp64"])
def test_solve_triangular_right_side(xp, own, cond, dtype):
    """X R⁻¹ with the delegate's in-place / inverse-based paths against substitution."""
    rng = np.random.default_rng(3)
    R = _upper(rng, 12)
    X = rng.standard_normal((40, 12))
    dt = B.native_dtype(xp, dtype)
    ref = np.linalg.solve(R.T, X.T).T
    kap = np.linalg.cond(R)
    u = 2.0**-24 if dtype == "fp32" else 2.0**-53
    outs = []
    for run in (contextlib.nullcontext, lambda: generic(xp, "solve_triangular")):
        with run():
            Xa = xp.asarray(X.copy(), dtype=dt)  # may be overwritten
            Y = B.solve_triangular(xp.asarray(R, dtype=dt), Xa, lower=False, side="right",
                                   overwrite_b=own, cond=cond)
            assert Y.dtype == dt and Y.shape == (40, 12)
            outs.append(_np(Y))
    for Y in outs:
        assert np.linalg.norm(Y - ref) <= C_TRSV * kap * u * np.linalg.norm(ref)


@pytest.mark.parametrize("n", [1, 6, 40])
def test_tri_cond_est(xp, n):
    """trcon's 1-norm estimate is a lower bound of κ₁ within a small factor (Higham, ASNA
    §15.3: the estimate is exact or within a factor 3 on most matrices)."""
    R = _upper(np.random.default_rng(4), n, grade=0.7)
    exact = np.linalg.cond(R, 1)
    with generic(xp, "tri_cond_est"):
        gen = B.tri_cond_est(xp.asarray(R))
    est = B.tri_cond_est(xp.asarray(R))
    np.testing.assert_allclose(gen, exact, rtol=1e-10)
    assert exact / 10 <= est <= exact * (1 + 1e-10)
    Rs = R.copy()
    Rs[n // 2, n // 2] = 0.0
    for run in (contextlib.nullcontext, lambda: generic(xp, "tri_cond_est")):
        with run():
            assert B.tri_cond_est(xp.asarray(Rs)) == float("inf")


@pytest.mark.parametrize("shape", [(9, 6), (6, 9), (5, 9, 6)])
@pytest.mark.parametrize("mode", ["reduced", "complete", "r"])
def test_qr_delegate_matches_reference(xp, shape, mode):
    A = np.random.default_rng(5).standard_normal(shape)
    impl = B.delegate(xp, "qr")
    if impl is None:
        pytest.skip("no native QR for this namespace (the reference Householder runs)")
    Q, R, backend = impl(xp.asarray(A), mode)
    assert backend in ("lapack", "torch", "cusolver")
    F = householder_factor(A)
    m, n = shape[-2:]
    k = min(m, n)
    rows = m if mode == "complete" else k
    Rref = F.R if rows == k else np.concatenate([F.R, np.zeros(shape[:-2] + (m - k, n))], -2)
    np.testing.assert_allclose(_np(R), Rref, atol=C_QR * 2.0**-53)
    if mode == "r":
        assert Q is None
        return
    E = np.broadcast_to(np.eye(m, rows), shape[:-2] + (m, rows))
    np.testing.assert_allclose(_np(Q), apply_q(F, E), atol=C_QR * 2.0**-53)


@pytest.mark.parametrize("dtype", ["fp32", "fp64"])
@pytest.mark.parametrize("mode", ["reduced", "complete", "r"])
def test_batched_qr_delegate_matches_reference(xp, dtype, mode):
    S = np.random.default_rng(6).standard_normal((2, 33, 7, 5))
    impl = B.delegate(xp, "batched_qr")
    out = None if impl is None else impl(xp.asarray(S, dtype=B.native_dtype(xp, dtype)), mode)
    if out is None:
        pytest.skip("no batched kernel for this namespace (the reference Householder runs)")
    Q, R, backend = out
    assert backend in ("numba", "cuda")
    assert B.array_namespace(R) is B.array_namespace(xp.zeros(1))
    u = 2.0**-24 if dtype == "fp32" else 2.0**-53
    F = householder_factor(S)
    rows = 7 if mode == "complete" else 5
    Rref = F.R if rows == 5 else np.concatenate([F.R, np.zeros((2, 33, 2, 5))], -2)
    np.testing.assert_allclose(_np(R), Rref, atol=C_QR * u * np.abs(S).max())
    if mode != "r":
        E = np.broadcast_to(np.eye(7, rows), (2, 33, 7, rows))
        np.testing.assert_allclose(_np(Q), apply_q(F, E), atol=C_QR * u)


def test_countsketch(xp):
    rng = np.random.default_rng(7)
    X = rng.standard_normal((50, 4))
    rows = rng.integers(0, 8, size=50)
    signs = rng.choice(np.array([-1.0, 1.0]), size=50)
    ref = np.zeros((8, 4))
    np.add.at(ref, rows, signs[:, None] * X)
    for run in (contextlib.nullcontext, lambda: generic(xp, "countsketch")):
        with run():
            Y = B.countsketch(xp.asarray(X), rows, signs, 8)
            assert Y.shape == (8, 4) and Y.dtype == xp.float64
            np.testing.assert_allclose(_np(Y), ref, atol=1e-13)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_column_sumsq(xp, dtype):
    """Column sums of squares of a stack (..., d, k), delegate and generic code, against fp64:
    each sum of d squares is within d·u of the exact one (recursive summation)."""
    X = np.random.default_rng(10).standard_normal((2, 300, 5)).astype(dtype)
    ref = np.sum(X.astype(np.float64) ** 2, axis=-2)
    u = np.finfo(dtype).eps / 2
    for run in (contextlib.nullcontext, lambda: generic(xp, "column_sumsq")):
        with run():
            s = B.column_sumsq(xp.asarray(X))
            assert tuple(s.shape) == (2, 5) and s.dtype == getattr(xp, dtype)
            np.testing.assert_allclose(_np(s), ref, rtol=2 * 300 * u)


def test_eigh(xp):
    G = np.random.default_rng(8).standard_normal((2, 6, 6))
    A = G + np.swapaxes(G, -1, -2)
    w, V = B.eigh(xp.asarray(A))
    w, V = _np(w), _np(V)
    np.testing.assert_allclose(w, np.linalg.eigvalsh(A), atol=1e-12)
    np.testing.assert_allclose((V * w[..., None, :]) @ np.swapaxes(V, -1, -2), A, atol=1e-12)


def test_uniform_same_draws_everywhere(xp):
    ref = np.random.default_rng(9).random((3, 4))
    x = B.uniform(xp, (3, 4), 9, dtype=xp.float64)
    np.testing.assert_array_equal(_np(x), ref)
    x32 = B.uniform(xp, (3, 4), np.random.default_rng(9), dtype=xp.float32)
    np.testing.assert_array_equal(_np(x32), ref.astype(np.float32))


def test_host_blas_and_supported(xp):
    assert B.supported(xp)
    x = xp.zeros((2, 2), dtype=xp.float64)
    assert B.host_blas(x) == (B.namespace_name(xp) == "numpy")
    assert not B.host_blas(xp.zeros((2, 2), dtype=xp.int32))
