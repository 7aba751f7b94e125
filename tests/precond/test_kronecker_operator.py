"""KroneckerOperator: products and powers against numpy.kron formed in fp64 (k = 1, 2, 3
factors, identities, batches), eigen-representations, the fp64 retry of eigh, as pcg's M, and
bad input; on every namespace of the ``xp`` fixture.

Every tolerance is a multiple of the unit roundoff u of the format computed in:

- products (Higham, ASNA §3.5, products of matrices): each of the k mode products is an inner
  product of length d_i, so the computed Y = (F₁ ⊗ … ⊗ F_k) x satisfies, componentwise,
  |Y − K x| ≤ γ_{Σd_i} (|F₁| ⊗ … ⊗ |F_k|)|x|; the fp64 reference K x adds γ_N (|K||x|).
- powers: eigh is backward stable, ‖ΔF_i‖₂ ≤ c·d_i·u·‖F_i‖₂ (Golub & Van Loan §8.3), and a
  power of a symmetric positive definite matrix has relative condition number ≤ max(1, |p|)·κ
  (Higham, *Functions of Matrices*, §3.1, for λ^p), so ‖ΔK^p‖₂ ≲ max(1, |p|)·κ(K)·Σd_i·u·‖K^p‖₂.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import linalg_pc as lpc
import linalg_pc._backend as B
from linalg_pc.precision import unit_roundoff
from linalg_pc.precond import KroneckerOperator

U64 = unit_roundoff("fp64")
U32 = unit_roundoff("fp32")
#: safety factor on the first-order bounds of the module docstring (γ_n ≈ n·u; the measured
#: ratios stay below 0.2 of the bound without it, this leaves room for other BLAS kernels)
C_PROD = 2.0
#: safety factor on the power bound (the constant c of eigh's backward error)
C_POW = 4.0
#: ‖x − x*‖/‖x*‖ ≤ κ(A)·‖r‖/‖b‖ for the pcg solution; the constant covers the rounding of the
#: direct reference (κ·N·u, far below κ·rtol here)
C_SOL = 2.0


def to_np(a) -> np.ndarray:
    return np.asarray(B.to_numpy(a), dtype=np.float64)


def spd(rng, d: int, kappa: float, batch: tuple = ()) -> np.ndarray:
    """Random SPD (…, d, d) with eigenvalues log-uniform in [1, κ] (1 and κ included):
    distinct products, so that unpreconditioned CG sees a spread spectrum."""
    out = np.empty((*batch, d, d))
    for idx in np.ndindex(*batch):
        Q, _ = np.linalg.qr(rng.standard_normal((d, d)))
        w = np.exp(rng.uniform(0.0, math.log(kappa), d))
        w[0], w[-1] = 1.0, kappa
        out[idx] = (Q * w) @ Q.T
        out[idx] = 0.5 * (out[idx] + out[idx].T)
    return out


def kron_all(mats) -> np.ndarray:
    """numpy.kron of a list of (…, d, d) stacks, per batch entry (broadcast)."""
    batch = np.broadcast_shapes(*[m.shape[:-2] for m in mats])
    N = math.prod(m.shape[-1] for m in mats)
    out = np.empty((*batch, N, N))
    for idx in np.ndindex(*batch):
        K = np.ones((1, 1))
        for m in mats:
            mb = np.broadcast_to(m, (*batch, *m.shape[-2:]))
            K = np.kron(K, mb[idx])
        out[idx] = K
    return out


def spd_power(F: np.ndarray, p: float) -> np.ndarray:
    w, V = np.linalg.eigh(F)
    return (V * w[..., None, :] ** p) @ np.swapaxes(V, -1, -2)


def asx(xp, a, dtype=None):
    dt = xp.float64 if dtype is None else dtype
    return xp.asarray(np.ascontiguousarray(a), dtype=dt)


# --------------------------------------------------------------------------- products
@pytest.mark.parametrize("dims", [(5,), (3, 4), (4, 1), (2, 3, 4), (3, 1, 2)])
def test_apply_matvec_matmat_match_kron(xp, rng, dims):
    factors = [spd(rng, d, 10.0) for d in dims]
    op = KroneckerOperator([asx(xp, f) for f in factors])
    N = math.prod(dims)
    K = kron_all(factors)
    assert op.shape == (N, N) and op.dims == dims and op.batch_shape == ()
    assert op.dtype == xp.float64

    X = rng.standard_normal(dims)
    Y = op.apply(asx(xp, X))
    assert B.namespace_name(B.array_namespace(Y)) == B.namespace_name(xp)
    assert tuple(Y.shape) == dims and Y.dtype == xp.float64
    bound = C_PROD * (sum(dims) + N) * U64 * (np.abs(K) @ np.abs(X.ravel()))
    assert np.all(np.abs(to_np(Y).ravel() - K @ X.ravel()) <= bound)

    y = op.matvec(asx(xp, X.ravel()))
    assert np.all(np.abs(to_np(y) - K @ X.ravel()) <= bound)
    y2 = op @ asx(xp, X.ravel())
    assert np.all(np.abs(to_np(y2) - K @ X.ravel()) <= bound)

    Z = rng.standard_normal((N, 3))
    W = op.matmat(asx(xp, Z))
    boundZ = C_PROD * (sum(dims) + N) * U64 * (np.abs(K) @ np.abs(Z))
    assert tuple(W.shape) == (N, 3)
    assert np.all(np.abs(to_np(W) - K @ Z) <= boundZ)
    assert np.all(np.abs(to_np(op @ asx(xp, Z)) - K @ Z) <= boundZ)

    # the formed product is the entrywise products of the factors' entries: exact
    np.testing.assert_array_equal(to_np(op.todense()), K)


def test_general_factors_follow_the_vec_identity(xp, rng):
    """Products use the factors as given: (F₁ ⊗ F₂) vec(X) = vec(F₁ X F₂ᵀ), row-major vec, for
    non-symmetric factors too (a transposition slip would show here, not on SPD factors)."""
    dims = (3, 5, 4)
    factors = [rng.standard_normal((d, d)) for d in dims]
    op = KroneckerOperator([asx(xp, f) for f in factors])
    K = kron_all(factors)
    X = rng.standard_normal((2, *dims))
    Y = to_np(op.apply(asx(xp, X))).reshape(2, -1)
    Xf = X.reshape(2, -1)
    bound = C_PROD * (sum(dims) + K.shape[0]) * U64 * (np.abs(Xf) @ np.abs(K).T)
    assert np.all(np.abs(Y - Xf @ K.T) <= bound)
    F1, F2 = factors[0], factors[1]
    two = KroneckerOperator([asx(xp, F1), asx(xp, F2)])
    X2 = rng.standard_normal((3, 5))
    ref = F1 @ X2 @ F2.T
    assert np.all(np.abs(to_np(two.apply(asx(xp, X2))) - ref)
                  <= C_PROD * 8 * U64 * (np.abs(F1) @ np.abs(X2) @ np.abs(F2).T))


def test_fp32_products(xp, rng):
    dims = (6, 5)
    factors = [spd(rng, d, 10.0).astype(np.float32).astype(np.float64) for d in dims]
    op = KroneckerOperator([asx(xp, f, xp.float32) for f in factors])
    assert op.dtype == xp.float32
    X = rng.standard_normal(dims).astype(np.float32).astype(np.float64)
    Y = op.apply(asx(xp, X, xp.float32))
    assert Y.dtype == xp.float32
    K = kron_all(factors)
    bound = C_PROD * (sum(dims) * U32 + math.prod(dims) * U64) * (np.abs(K) @ np.abs(X.ravel()))
    assert np.all(np.abs(to_np(Y).ravel() - K @ X.ravel()) <= bound)
    # an fp64 input to an fp32 operator computes in fp64 (NumPy's promotion for @)
    assert op.apply(asx(xp, X)).dtype == xp.float64


def test_batched_factors_and_inputs(xp, rng):
    A = spd(rng, 3, 10.0, batch=(2,))        # a stack of 2
    Bm = spd(rng, 4, 10.0)                   # shared
    C = spd(rng, 2, 10.0, batch=(3, 1))      # broadcasts to (3, 2)
    op = KroneckerOperator([asx(xp, A), asx(xp, Bm), asx(xp, C)])
    assert op.batch_shape == (3, 2) and op.shape == (3, 2, 24, 24)
    K = kron_all([A, Bm, C])
    gamma = C_PROD * (3 + 4 + 2 + 24) * U64

    X = rng.standard_normal((3, 2, 3, 4, 2))        # one tensor per operator
    Y = to_np(op.apply(asx(xp, X)))
    ref = np.einsum("...ij,...j->...i", K, X.reshape(3, 2, 24))
    bound = gamma * np.einsum("...ij,...j->...i", np.abs(K), np.abs(X).reshape(3, 2, 24))
    assert Y.shape == X.shape and np.all(np.abs(Y.reshape(3, 2, 24) - ref) <= bound)

    x = rng.standard_normal(24)                     # one vector for the whole stack
    y = to_np(op.matvec(asx(xp, x)))
    assert y.shape == (3, 2, 24)
    assert np.all(np.abs(y - K @ x) <= gamma * (np.abs(K) @ np.abs(x)))

    Z = rng.standard_normal((2, 24, 5))             # blocks broadcasting over the first axis
    W = to_np(op.matmat(asx(xp, Z)))
    assert W.shape == (3, 2, 24, 5)
    assert np.all(np.abs(W - K @ Z) <= gamma * (np.abs(K) @ np.abs(Z)))
    np.testing.assert_array_equal(to_np(op.todense()), K)


def test_identity_factors(xp, rng):
    A = spd(rng, 3, 10.0)
    op = KroneckerOperator([4, asx(xp, A), None], dims=(4, 3, 2))
    K = kron_all([np.eye(4), A, np.eye(2)])
    np.testing.assert_array_equal(to_np(op.todense()), K)
    X = rng.standard_normal((4, 3, 2))
    bound = C_PROD * (9 + 24) * U64 * (np.abs(K) @ np.abs(X.ravel()))
    assert np.all(np.abs(to_np(op.apply(asx(xp, X))).ravel() - K @ X.ravel()) <= bound)
    # (I + εI)^p of an identity factor is the scalar (1 + ε)^p
    P = op.power(-0.5, eps=0.25)
    Kp = kron_all([np.eye(4) * 1.25 ** -0.5, spd_power(A + 0.25 * np.eye(3), -0.5),
                   np.eye(2) * 1.25 ** -0.5])
    tol = C_POW * 0.5 * np.linalg.cond(A) * 9 * U64 * np.linalg.norm(Kp, 2)
    assert np.linalg.norm(to_np(P.todense()) - Kp, 2) <= tol


# --------------------------------------------------------------------------- powers
@pytest.mark.parametrize("dims", [(6,), (4, 5), (3, 2, 4)])
@pytest.mark.parametrize("p", [-1.0, -0.5, -0.25, 0.5])
def test_power_matches_dense(xp, rng, dims, p):
    kappa_f = 20.0
    factors = [spd(rng, d, kappa_f) for d in dims]
    eps = 1e-3
    P = KroneckerOperator([asx(xp, f) for f in factors]).power(p, eps=eps)
    assert P.dtype == xp.float64 and P.dims == dims
    ref = kron_all([spd_power(f + eps * np.eye(f.shape[0]), p) for f in factors])
    kappa = kappa_f ** len(dims)
    tol = C_POW * max(1.0, abs(p)) * kappa * sum(dims) * U64 * np.linalg.norm(ref, 2)
    assert np.linalg.norm(to_np(P.todense()) - ref, 2) <= tol


def test_inverse_sqrt_squared_is_inverse(xp, rng):
    dims = (5, 4, 3)
    factors = [spd(rng, d, 30.0) for d in dims]
    op = KroneckerOperator([asx(xp, f) for f in factors])
    R = op.power(-0.5)
    inv = op.inverse()
    K = kron_all(factors)
    Kinv = np.linalg.inv(K)
    kappa = np.linalg.cond(K)
    tol = C_POW * kappa * sum(dims) * U64 * np.linalg.norm(Kinv, 2)
    X = rng.standard_normal((*dims, 2))
    Xf = X.reshape(-1, 2)
    RR = to_np(R.matmat(R.matmat(asx(xp, Xf))))
    I1 = to_np(inv.matmat(asx(xp, Xf)))
    xn = np.linalg.norm(Xf, 2)
    assert np.linalg.norm(RR - I1, 2) <= 2 * tol * xn
    assert np.linalg.norm(I1 - Kinv @ Xf, 2) <= tol * xn
    # the inverse of the inverse is the operator (two inversions, each within the bound)
    back = to_np(inv.inverse().todense())
    assert np.linalg.norm(back - K, 2) <= 2 * C_POW * kappa * sum(dims) * U64 \
        * np.linalg.norm(K, 2)


def test_batched_power(xp, rng):
    A = spd(rng, 4, 10.0, batch=(3,))
    Bm = spd(rng, 3, 10.0)
    P = KroneckerOperator([asx(xp, A), asx(xp, Bm)]).power(-0.25, eps=1e-2)
    ref = kron_all([spd_power(A + 1e-2 * np.eye(4), -0.25), spd_power(Bm + 1e-2 * np.eye(3),
                                                                       -0.25)])
    tol = C_POW * 100.0 * 7 * U64 * np.linalg.norm(ref, 2, axis=(-2, -1)).max()
    assert P.batch_shape == (3,)
    assert np.abs(to_np(P.todense()) - ref).max() <= tol


def test_power_fp32(xp, rng):
    factors = [spd(rng, d, 10.0) for d in (5, 6)]
    P = KroneckerOperator([asx(xp, f, xp.float32) for f in factors]).power(-0.5)
    assert P.dtype == xp.float32
    f32 = [f.astype(np.float32).astype(np.float64) for f in factors]
    ref = kron_all([spd_power(f, -0.5) for f in f32])
    tol = C_POW * 0.5 * 100.0 * 11 * U32 * np.linalg.norm(ref, 2)
    assert np.linalg.norm(to_np(P.todense()) - ref, 2) <= tol


def test_pseudo_inverse_of_singular_factor(xp, rng):
    G = rng.standard_normal((5, 3))
    A = G @ G.T                                  # rank 3
    Bm = spd(rng, 4, 10.0)
    op = KroneckerOperator([asx(xp, A), asx(xp, Bm)])
    K = np.kron(A, Bm)
    Kp = np.linalg.pinv(K, rcond=None, hermitian=True)
    w = np.linalg.eigvalsh(A)
    kappa_eff = w[-1] / w[2] * 10.0              # on the range of A ⊗ B
    tol = C_POW * kappa_eff * 9 * U64 * np.linalg.norm(Kp, 2)
    assert np.linalg.norm(to_np(op.inverse().todense()) - Kp, 2) <= tol
    # p = 0: the orthogonal projector onto the range
    P0 = to_np(op.power(0.0).todense())
    proj = K @ Kp
    assert np.linalg.norm(P0 - proj, 2) <= tol * np.linalg.norm(K, 2)
    # ε > 0: the regularized inverse (A + εI)⁻¹ ⊗ (B + εI)⁻¹ instead
    eps = 1e-2
    ref = np.kron(np.linalg.inv(A + eps * np.eye(5)), np.linalg.inv(Bm + eps * np.eye(4)))
    kappa = np.linalg.cond(A + eps * np.eye(5)) * np.linalg.cond(Bm + eps * np.eye(4))
    tol_e = C_POW * kappa * 9 * U64 * np.linalg.norm(ref, 2)
    assert np.linalg.norm(to_np(op.inverse(eps=eps).todense()) - ref, 2) <= tol_e


def test_eigh_retried_in_fp64(xp, rng, monkeypatch):
    real = B.eigh
    calls = []

    def flaky(S):
        calls.append(str(S.dtype))
        if "float32" in str(S.dtype):
            w, V = real(S)
            return w * float("nan"), V           # a non-finite fp32 result
        return real(S)

    monkeypatch.setattr(B, "eigh", flaky)
    factors = [spd(rng, d, 10.0) for d in (4, 3)]
    P = KroneckerOperator([asx(xp, f, xp.float32) for f in factors]).inverse()
    assert P.dtype == xp.float32 and len(calls) == 4
    f32 = [f.astype(np.float32).astype(np.float64) for f in factors]
    ref = np.linalg.inv(kron_all(f32))
    # the result is the fp64 eigendecomposition rounded once to fp32
    tol = C_POW * 100.0 * 7 * (U32 + 100.0 * U64) * np.linalg.norm(ref, 2)
    assert np.linalg.norm(to_np(P.todense()) - ref, 2) <= tol

    def broken(S):
        raise ValueError("Eigenvalues did not converge")

    monkeypatch.setattr(B, "eigh", broken)
    with pytest.raises(ValueError, match=r"factors\[0\]"):
        KroneckerOperator([asx(xp, f, xp.float32) for f in factors]).power(-0.5)


# --------------------------------------------------------------------------- from_eigen
def test_from_eigen_equals_from_factors(xp, rng, monkeypatch):
    dims = (4, 3)
    factors = [spd(rng, d, 10.0) for d in dims]
    eig = [np.linalg.eigh(f) for f in factors]
    E = KroneckerOperator.from_eigen(bases=[asx(xp, V) for _, V in eig],
                                     eigenvalues=[asx(xp, w) for w, _ in eig])
    F = KroneckerOperator([asx(xp, f) for f in factors])
    K = kron_all(factors)
    tol = C_POW * 7 * U64 * np.linalg.norm(K, 2)
    assert np.linalg.norm(to_np(E.todense()) - K, 2) <= tol
    X = rng.standard_normal(dims)
    assert np.linalg.norm(to_np(E.apply(asx(xp, X))) - to_np(F.apply(asx(xp, X)))) \
        <= 2 * tol * np.linalg.norm(X)

    def no_eigh(S):
        raise AssertionError("power of an eigen-representation must not call eigh")

    monkeypatch.setattr(B, "eigh", no_eigh)
    Pe = E.power(-0.5, eps=1e-3)
    ref = kron_all([spd_power(f + 1e-3 * np.eye(f.shape[0]), -0.5) for f in factors])
    tol_p = C_POW * 0.5 * 100.0 * 7 * U64 * np.linalg.norm(ref, 2)
    assert np.linalg.norm(to_np(Pe.todense()) - ref, 2) <= tol_p


def test_from_eigen_low_rank(xp, rng):
    d, r = 6, 2
    Q, _ = np.linalg.qr(rng.standard_normal((d, r)))
    lam = np.array([3.0, 0.5])
    C = spd(rng, 3, 10.0)
    E = KroneckerOperator.from_eigen([asx(xp, Q), None], [asx(xp, lam), None], dims=(d, 3))
    F = (Q * lam) @ Q.T
    np.testing.assert_allclose(to_np(E.todense()), np.kron(F, np.eye(3)),
                               atol=C_POW * d * U64 * 3.0, rtol=0)
    eps = 0.1
    P = KroneckerOperator.from_eigen([asx(xp, Q), asx(xp, np.linalg.eigh(C)[1])],
                                     [asx(xp, lam), asx(xp, np.linalg.eigh(C)[0])]).power(
        -1.0, eps=eps)
    ref = np.kron(np.linalg.inv(F + eps * np.eye(d)), np.linalg.inv(C + eps * np.eye(3)))
    kappa = np.linalg.cond(F + eps * np.eye(d)) * np.linalg.cond(C + eps * np.eye(3))
    tol = C_POW * kappa * (d + 3) * U64 * np.linalg.norm(ref, 2)
    assert np.linalg.norm(to_np(P.todense()) - ref, 2) <= tol
    # ε = 0: the complement of range(Q) maps to 0 (pseudo-inverse)
    P0 = KroneckerOperator.from_eigen([asx(xp, Q)], [asx(xp, lam)]).inverse()
    pinv = (Q / lam) @ Q.T
    assert np.linalg.norm(to_np(P0.todense()) - pinv, 2) <= C_POW * 6 * d * U64 * 2.0


# --------------------------------------------------------------------------- pcg
def test_pcg_preconditioned_by_kronecker_inverse(xp, rng):
    d1, d2, kf = 12, 10, 100.0
    A1, A2 = spd(rng, d1, kf), spd(rng, d2, kf)
    N, delta = d1 * d2, 1e-2
    A = np.kron(A1, A2) + delta * np.eye(N)
    kappa = np.linalg.cond(A)
    b = rng.standard_normal(N)
    # the attainable relative residual is ≈ u·‖A‖‖x‖/‖b‖ ≤ u·κ(A); N·u·κ(A) leaves room
    rtol = 10 * N * U64 * kappa
    M = KroneckerOperator([asx(xp, A1), asx(xp, A2)]).inverse()
    plain = lpc.pcg(asx(xp, A), asx(xp, b), rtol=rtol)
    pre = lpc.pcg(asx(xp, A), asx(xp, b), M=M, rtol=rtol)
    assert plain.status == "converged" and pre.status == "converged"
    # M·A = I + δ·M has κ' ≤ 1 + δ·‖M‖₂: CG needs at most ½·√κ'·ln(2/rtol) + 1 steps
    kappa_pre = 1.0 + delta * np.linalg.norm(np.linalg.inv(np.kron(A1, A2)), 2)
    assert pre.iterations <= 0.5 * math.sqrt(kappa_pre) * math.log(2 / rtol) + 1
    assert 4 * pre.iterations < plain.iterations   # measured: 4 against 220-330
    xs = np.linalg.solve(A, b)
    err = np.linalg.norm(to_np(pre.x) - xs) / np.linalg.norm(xs)
    assert err <= C_SOL * kappa * rtol

    # several right-hand sides, and a batch of systems sharing M
    Bs = rng.standard_normal((N, 3))
    res = lpc.pcg(asx(xp, A), asx(xp, Bs), M=M, rtol=rtol)
    assert np.all(res.converged) and np.all(res.iterations <= pre.iterations + 3)
    Ab = np.stack([A, A + delta * np.eye(N)])
    bb = rng.standard_normal((2, N))
    resb = lpc.pcg(asx(xp, Ab), asx(xp, bb), M=M, rtol=rtol)
    assert np.all(resb.converged) and np.all(resb.iterations <= pre.iterations + 3)


def test_pcg_mixed_precision_refinement_with_kronecker_m(rng):
    A1, A2 = spd(rng, 8, 50.0), spd(rng, 9, 50.0)
    A = np.kron(A1, A2) + 1e-2 * np.eye(72)
    b = rng.standard_normal(72)
    M = KroneckerOperator([A1, A2]).inverse()
    kappa = np.linalg.cond(A)
    rtol = 10 * 72 * U64 * kappa
    res = lpc.pcg(A, b, M=M, rtol=rtol, compute="fp32")   # fp32 inner solves, fp64 M
    assert res.status == "converged" and res.x.dtype == np.float64
    xs = np.linalg.solve(A, b)
    assert np.linalg.norm(res.x - xs) <= C_SOL * kappa * rtol * np.linalg.norm(xs)


# --------------------------------------------------------------------------- bad input
def test_bad_factors(xp, rng):
    A = asx(xp, spd(rng, 3, 10.0))
    with pytest.raises(ValueError, match=r"factors\[1\] must be square"):
        KroneckerOperator([A, asx(xp, rng.standard_normal((3, 4)))])
    with pytest.raises(ValueError, match=r"factors\[0\] must be square"):
        KroneckerOperator([asx(xp, rng.standard_normal(3))])
    with pytest.raises(TypeError, match=r"factors\[1\] must be an array"):
        KroneckerOperator([A, [[1.0]]])
    with pytest.raises(TypeError, match="factors must be a list"):
        KroneckerOperator(A)
    with pytest.raises(ValueError, match="at least one factor"):
        KroneckerOperator([])
    with pytest.raises(ValueError, match="at least one array"):
        KroneckerOperator([3, 4])
    with pytest.raises(ValueError, match=r"factors\[1\] is None"):
        KroneckerOperator([A, None])
    with pytest.raises(ValueError, match=r"factors\[1\] has order 3 but dims\[1\] = 4"):
        KroneckerOperator([A, A], dims=(3, 4))
    with pytest.raises(ValueError, match=r"factors\[1\] must be a positive int"):
        KroneckerOperator([A, 0])
    bad = spd(rng, 3, 10.0)
    bad[0, 1] = np.nan
    with pytest.raises(ValueError, match=r"factors\[1\] has non-finite"):
        KroneckerOperator([A, asx(xp, bad)])
    with pytest.raises(ValueError, match="batch axes of the factors do not broadcast"):
        KroneckerOperator([asx(xp, spd(rng, 3, 10.0, (2,))), asx(xp, spd(rng, 2, 10.0, (3,)))])
    if xp is not B.array_namespace(np.zeros(1)):
        with pytest.raises(TypeError, match=r"factors\[1\] is a numpy array"):
            KroneckerOperator([A, spd(rng, 3, 10.0)])


def test_complex_rejected(rng):
    A = spd(rng, 3, 10.0)
    with pytest.raises(TypeError, match=r"factors\[0\] must be real"):
        KroneckerOperator([A + 0j, A])
    op = KroneckerOperator([A, A])
    with pytest.raises(TypeError, match="X must be real"):
        op.apply(np.ones((3, 3)) + 0j)
    with pytest.raises(TypeError, match="x must be real"):
        op.matvec(np.ones(9, dtype=complex))


def test_bad_inputs_to_products(xp, rng):
    op = KroneckerOperator([asx(xp, spd(rng, 3, 10.0)), asx(xp, spd(rng, 4, 10.0))])
    with pytest.raises(ValueError, match=r"X must have shape \(\.\.\., 3, 4\)"):
        op.apply(asx(xp, np.ones((4, 3))))
    with pytest.raises(ValueError, match=r"x must have shape \(\.\.\., 12\)"):
        op.matvec(asx(xp, np.ones(13)))
    with pytest.raises(ValueError, match=r"X must have shape \(\.\.\., 12, r\)"):
        op.matmat(asx(xp, np.ones(12)))
    with pytest.raises(TypeError, match="X must be an array"):
        op.apply([[1.0] * 4] * 3)
    if xp is not B.array_namespace(np.zeros(1)):
        with pytest.raises(TypeError, match="X is a numpy array"):
            op.apply(np.ones((3, 4)))
    stack = KroneckerOperator([asx(xp, spd(rng, 3, 10.0, (2,))), 4])
    with pytest.raises(ValueError, match="leading axes of X"):
        stack.apply(asx(xp, np.ones((3, 3, 4))))
    # integer input is taken as the operator's dtype
    Y = op.apply(xp.asarray(np.ones((3, 4), dtype=np.int64)))
    assert Y.dtype == xp.float64


def test_bad_power_and_eigen_arguments(xp, rng):
    op = KroneckerOperator([asx(xp, spd(rng, 3, 10.0))])
    with pytest.raises(ValueError, match="p must be finite"):
        op.power(float("nan"))
    with pytest.raises(TypeError, match="p must be a real number"):
        op.power("1/2")
    with pytest.raises(ValueError, match="eps must be >= 0"):
        op.power(-1, eps=-1e-3)
    with pytest.raises(ValueError, match="rtol must be >= 0"):
        op.power(-1, rtol=-1.0)
    Q = asx(xp, np.linalg.qr(rng.standard_normal((4, 2)))[0])
    with pytest.raises(ValueError, match=r"eigenvalues\[0\] must have shape \(\.\.\., 2\)"):
        KroneckerOperator.from_eigen([Q], [asx(xp, np.ones(3))])
    with pytest.raises(ValueError, match=r"bases\[0\] must be \(\.\.\., d, r\)"):
        KroneckerOperator.from_eigen([asx(xp, np.ones((2, 3)))], [asx(xp, np.ones(3))])
    with pytest.raises(ValueError, match="bases has 1 entries but eigenvalues has 2"):
        KroneckerOperator.from_eigen([Q], [asx(xp, np.ones(2)), None])
    with pytest.raises(ValueError, match=r"eigenvalues\[1\] must be None"):
        KroneckerOperator.from_eigen([Q, 3], [asx(xp, np.ones(2)), asx(xp, np.ones(3))])
    with pytest.raises(TypeError, match=r"eigenvalues\[0\] must be an array"):
        KroneckerOperator.from_eigen([Q], [None])
