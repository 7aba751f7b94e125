"""Schur complements, degeneracy analysis, targeted preconditioner and the DCReg solve."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import linalg_pc as lpc
from linalg_pc._backend import to_numpy
from linalg_pc._kernels.cpu_dense_small import jacobi_eigh
from linalg_pc.precision import unit_roundoff

U64 = unit_roundoff("fp64")
# identities hold to c·κ·u; the constant covers the block solves and the product with J
IDENT_C = 100.0


def rotation(axis_angles):
    """Rotation matrix from successive rotations (i, j, angle in degrees) in the (i, j) plane."""
    R = np.eye(3)
    for i, j, deg in axis_angles:
        t = np.deg2rad(deg)
        G = np.eye(3)
        G[i, i] = G[j, j] = np.cos(t)
        G[i, j], G[j, i] = -np.sin(t), np.sin(t)
        R = G @ R
    return R


def hessian_with_complements(S_R, S_t, coupling=0.3, rng=None):
    """An SPD H whose Schur complements are exactly S_R and S_t (through H⁻¹'s diagonal blocks).

    H⁻¹ = [[S_R⁻¹, E], [Eᵀ, S_t⁻¹]] with a small coupling E keeping it SPD.
    """
    rng = np.random.default_rng(0) if rng is None else rng
    A, C = np.linalg.inv(S_R), np.linalg.inv(S_t)
    LA, LC = np.linalg.cholesky(A), np.linalg.cholesky(C)
    W = rng.standard_normal((3, 3))
    W *= coupling / np.linalg.norm(W, 2)
    E = LA @ W @ LC.T  # ‖LA⁻¹ E LC⁻ᵀ‖ < 1 keeps the inverse SPD
    Hinv = np.block([[A, E], [E.T, C]])
    H = np.linalg.inv(Hinv)
    return 0.5 * (H + H.T)


def random_jacobian(rng, m=60, weak=None, scale=1e-3):
    J = rng.standard_normal((m, 6))
    if weak is not None:
        J[:, weak] *= scale
    return J


# --------------------------------------------------------------------------- identities
def test_schur_formula_and_inverse_blocks(rng):
    J = random_jacobian(rng)
    H = J.T @ J
    res = lpc.schur_complements(H, 3)
    assert isinstance(res, lpc.SchurComplements) and res.S_R is res[0] and res.S_t is res[1]
    S_R, S_t = res
    Hinv = np.linalg.inv(H)
    kappa = np.linalg.cond(H)
    assert np.allclose(S_R, H[:3, :3] - H[:3, 3:] @ np.linalg.inv(H[3:, 3:]) @ H[3:, :3],
                       rtol=0, atol=IDENT_C * kappa * U64 * np.abs(H).max())
    assert np.linalg.norm(np.linalg.inv(S_R) - Hinv[:3, :3]) <= IDENT_C * kappa * U64 * (
        np.linalg.norm(Hinv))
    assert np.linalg.norm(np.linalg.inv(S_t) - Hinv[3:, 3:]) <= IDENT_C * kappa * U64 * (
        np.linalg.norm(Hinv))


def test_schur_projector_identity(rng):
    """S_R = J_Rᵀ(I − P_t)J_R with P_t the orthogonal projector onto range(J_t)."""
    J = random_jacobian(rng, weak=4, scale=1e-2)
    H = J.T @ J
    S_R, S_t = lpc.schur_complements(H, 3)
    Q, _ = np.linalg.qr(J[:, 3:])
    JR = J[:, :3]
    ref = JR.T @ JR - (JR.T @ Q) @ (Q.T @ JR)
    assert np.linalg.norm(S_R - ref) <= IDENT_C * np.linalg.cond(H) * U64 * np.linalg.norm(H)
    Qr, _ = np.linalg.qr(JR)
    Jt = J[:, 3:]
    ref_t = Jt.T @ Jt - (Jt.T @ Qr) @ (Qr.T @ Jt)
    assert np.linalg.norm(S_t - ref_t) <= IDENT_C * np.linalg.cond(H) * U64 * np.linalg.norm(H)


@pytest.mark.parametrize("s", [1e-3, 0.5, 7.0, 1e3])
def test_translation_rescaling(s, rng):
    """Rescaling translation units: S_R unchanged, S_t scaled by s² (H' = D H D)."""
    J = random_jacobian(rng)
    H = J.T @ J
    D = np.diag([1, 1, 1, s, s, s])
    S_R, S_t = lpc.schur_complements(H, 3)
    S_R2, S_t2 = lpc.schur_complements(D @ H @ D, 3)
    tol = IDENT_C * np.linalg.cond(H) * U64
    assert np.linalg.norm(S_R2 - S_R) <= tol * np.linalg.norm(S_R)
    assert np.linalg.norm(S_t2 - s * s * S_t) <= tol * s * s * np.linalg.norm(S_t)
    r1 = lpc.block_degeneracy(H)
    r2 = lpc.block_degeneracy(D @ H @ D)
    assert np.array_equal(r1.degenerate, r2.degenerate)
    assert np.allclose(r2.eigvals_t, s * s * r1.eigvals_t, rtol=1e-8)


@pytest.mark.parametrize("engine", ["numba", "array_api"])
def test_unclamped_preconditioner_is_block_inverse(engine, rng):
    J = random_jacobian(rng, weak=2)
    H = J.T @ J
    rep = lpc.block_degeneracy(H, threshold=1e12, engine=engine)
    assert not np.any(rep.degenerate)
    P = lpc.targeted_preconditioner(rep)
    Hinv = np.linalg.inv(H)
    ref = np.zeros_like(H)
    ref[:3, :3], ref[3:, 3:] = Hinv[:3, :3], Hinv[3:, 3:]
    assert np.linalg.norm(P - ref) <= IDENT_C * np.linalg.cond(H) * U64 * np.linalg.norm(ref)


def test_clamped_preconditioner_raises_only_flagged(rng):
    lam_R = np.array([50.0, 40.0, 0.2])  # axis "yaw" weak
    lam_t = np.array([30.0, 25.0, 20.0])
    S_R, S_t = np.diag(lam_R), np.diag(lam_t)
    H = hessian_with_complements(S_R, S_t, coupling=0.0)
    rep = lpc.block_degeneracy(H, kappa_target=10.0)
    assert rep.flagged_axes() == ("yaw",)
    P = lpc.targeted_preconditioner(rep)
    assert P[2, 2] == pytest.approx(1.0 / (50.0 / 10.0), rel=1e-12)
    assert P[0, 0] == pytest.approx(1 / 50.0, rel=1e-12)
    assert P[3, 3] == pytest.approx(1 / 30.0, rel=1e-12)
    P2 = lpc.targeted_preconditioner(rep, kappa_target=100.0)
    assert P2[2, 2] == pytest.approx(1.0 / 0.5, rel=1e-12)


# --------------------------------------------------------------------------- flags
@pytest.mark.parametrize("engine", ["numba", "array_api"])
@pytest.mark.parametrize("block, axis, angle", [("R", 0, 40.0), ("R", 2, 44.0), ("t", 1, 40.0),
                                                 ("t", 0, 44.0), ("t", 2, 0.0)])
def test_known_weak_axis_flagged_near_45_degrees(engine, block, axis, angle):
    """The weak eigenvector sits `angle` degrees from its axis toward the next axis: the weak
    axis, and only it, is flagged, and the label does not move to the neighbour."""
    nxt = (axis + 1) % 3
    R = rotation([(axis, nxt, angle), ((axis + 2) % 3, nxt, 3.0)])
    lam = np.array([100.0, 100.0, 100.0])
    lam[axis] = 1.0
    lam[nxt] = 80.0
    S_weak = R @ np.diag(lam) @ R.T
    S_ok = np.diag([60.0, 70.0, 90.0])
    S_R, S_t = (S_weak, S_ok) if block == "R" else (S_ok, S_weak)
    H = hessian_with_complements(S_R, S_t)
    rep = lpc.block_degeneracy(H, engine=engine)
    want = np.zeros(6, dtype=bool)
    want[axis + (0 if block == "R" else 3)] = True
    assert np.array_equal(np.asarray(rep.degenerate), want)
    ev = np.asarray(rep.eigvals_R if block == "R" else rep.eigvals_t)
    assert ev[axis] == pytest.approx(1.0, rel=1e-9)
    V = np.asarray(rep.eigvecs_R if block == "R" else rep.eigvecs_t)
    assert np.all(np.diagonal(V) >= 0)
    assert np.allclose(V.T @ V, np.eye(3), atol=1e-12)
    C = np.asarray(rep.contributions_R if block == "R" else rep.contributions_t)
    assert np.allclose(C.sum(axis=0), 1.0)
    assert C[axis, axis] == pytest.approx(np.cos(np.deg2rad(angle)) ** 2, rel=1e-8)


def greedy_by_eigenvector(V):
    """DCReg's reference matching: each eigenvector takes its largest-|component| axis."""
    return [int(np.argmax(np.abs(V[:, j]))) for j in range(V.shape[1])]


def test_optimal_assignment_beats_greedy(rng):
    """Find rotations where the greedy matching gives two eigenvectors the same axis; the
    optimal assignment is a permutation with the largest total squared overlap."""
    found = 0
    for _ in range(400):
        Q, _ = np.linalg.qr(rng.standard_normal((3, 3)))
        g = greedy_by_eigenvector(Q)
        if len(set(g)) == 3:
            continue
        found += 1
        lam = np.array([1.0, 20.0, 50.0])
        S = Q @ np.diag(lam) @ Q.T
        H = hessian_with_complements(S, np.diag([5.0, 6.0, 7.0]), coupling=0.0)
        for engine in ("numba", "array_api"):
            rep = lpc.block_degeneracy(H, engine=engine)
            V = np.asarray(rep.eigvecs_R)
            score = np.sum(np.diagonal(V) ** 2)
            best = max(sum(Q[i, p[i]] ** 2 for i in range(3))
                       for p in itertools.permutations(range(3)))
            assert score == pytest.approx(best, rel=1e-10)
            # every eigenvalue appears exactly once
            assert np.allclose(np.sort(np.asarray(rep.eigvals_R)), lam, rtol=1e-9)
        if found >= 10:
            break
    assert found >= 3


def test_icp_like_degenerate_direction(rng):
    """Planes all parallel to the x axis: translation along x unobservable."""
    m = 300
    normals = rng.standard_normal((m, 3))
    normals[:, 0] *= 1e-3
    normals /= np.linalg.norm(normals, axis=1, keepdims=True)
    pts = rng.uniform(-5, 5, (m, 3))
    J = np.hstack([np.cross(pts, normals), normals])
    rep = lpc.block_degeneracy(J.T @ J)
    assert "x" in rep.flagged_axes()
    assert not any(a in rep.flagged_axes() for a in ("y", "z"))


# --------------------------------------------------------------------------- engines, batches
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_numba_equals_array_api(dtype, rng):
    N = 200
    J = rng.standard_normal((N, 40, 6))
    J[: N // 2, :, 4] *= 1e-2
    H = (J.transpose(0, 2, 1) @ J).astype(dtype)
    a = lpc.block_degeneracy(H, engine="numba")
    b = lpc.block_degeneracy(H, engine="array_api")
    u = unit_roundoff("fp64" if dtype == np.float64 else "fp32")
    kap = np.asarray(a.cond_H, dtype=np.float64)[:, None, None]
    for f in ("S_R", "S_t"):
        A_, B_ = getattr(a, f), getattr(b, f)
        assert np.all(np.abs(A_ - B_) <= IDENT_C * kap * u * np.abs(B_).max(axis=(1, 2),
                                                                          keepdims=True))
    for f in ("eigvals_R", "eigvals_t"):
        A_, B_ = getattr(a, f), getattr(b, f)
        assert np.all(np.abs(A_ - B_) <= IDENT_C * kap[:, :, 0] * u * np.abs(B_).max(
            axis=1, keepdims=True))
    for f in ("eigvecs_R", "eigvecs_t"):
        assert np.allclose(getattr(a, f), getattr(b, f), atol=1e4 * u)
    assert np.array_equal(a.degenerate, b.degenerate)
    assert np.allclose(a.cond_R, b.cond_R, rtol=1e3 * u * 100)
    assert np.allclose(a.cond_H, b.cond_H, rtol=IDENT_C * float(kap.max()) * u)
    assert np.all(np.asarray(a.degenerate)[: N // 2, 4])


def test_batched_shapes_and_general_split(rng):
    J = rng.standard_normal((2, 3, 30, 6))
    H = J.swapaxes(-1, -2) @ J
    rep = lpc.block_degeneracy(H)
    assert rep.S_R.shape == (2, 3, 3, 3) and rep.degenerate.shape == (2, 3, 6)
    assert rep.batch_shape == (2, 3)
    one = lpc.block_degeneracy(H[1, 2])
    assert np.allclose(rep.S_R[1, 2], one.S_R)
    P = lpc.targeted_preconditioner(rep)
    assert P.shape == (2, 3, 6, 6)
    # split 2 of a 5×5, and split 7 of a 9×9 (the Hungarian path in array_api)
    J5 = rng.standard_normal((20, 5))
    rep5 = lpc.block_degeneracy(J5.T @ J5, split=2)
    assert rep5.labels == ("r0", "r1", "t0", "t1", "t2")
    J9 = rng.standard_normal((4, 40, 9))
    H9 = J9.swapaxes(-1, -2) @ J9
    rep9 = lpc.block_degeneracy(H9, split=7)
    Hinv = np.linalg.inv(H9)
    S_R = np.linalg.inv(Hinv[:, :7, :7])
    assert np.allclose(rep9.S_R, S_R, rtol=1e-8, atol=1e-8)
    assert np.allclose(np.linalg.eigvalsh(rep9.S_R), np.sort(rep9.eigvals_R, axis=-1))


def test_every_namespace(xp, rng):
    J = rng.standard_normal((5, 30, 6))
    J[:, :, 1] *= 1e-2
    H = J.transpose(0, 2, 1) @ J
    b = rng.standard_normal((5, 6))
    ref = lpc.block_degeneracy(H)
    rep = lpc.block_degeneracy(xp.asarray(H))
    assert type(rep.S_R) is type(xp.asarray(H))
    assert np.allclose(to_numpy(rep.S_R), ref.S_R, rtol=1e-10, atol=1e-10)
    assert np.array_equal(to_numpy(rep.degenerate), ref.degenerate)
    assert np.allclose(to_numpy(rep.eigvecs_t), ref.eigvecs_t, atol=1e-8)
    P = lpc.targeted_preconditioner(rep)
    assert np.allclose(to_numpy(P), lpc.targeted_preconditioner(ref), rtol=1e-9, atol=1e-12)
    x, rep2, res = lpc.solve_degenerate(xp.asarray(H), xp.asarray(b))
    xs = np.linalg.solve(H, b[..., None])[..., 0]
    assert np.allclose(to_numpy(x), xs, rtol=1e-5, atol=1e-8)
    assert np.all(res.status == "converged")


# --------------------------------------------------------------------------- solve_degenerate
@pytest.mark.parametrize("engine", ["numba", "array_api"])
def test_solve_degenerate_matches_direct(engine, rng):
    N = 50
    J = rng.standard_normal((N, 40, 6))
    J[::3, :, 3] *= 1e-4
    H = J.transpose(0, 2, 1) @ J
    b = rng.standard_normal((N, 6))
    x, rep, res = lpc.solve_degenerate(H, b, rtol=1e-10, engine=engine)
    xs = np.linalg.solve(H, b[..., None])[..., 0]
    kap = np.asarray(rep.cond_H)
    err = np.linalg.norm(x - xs, axis=1) / np.linalg.norm(xs, axis=1)
    assert np.all(err <= 2 * kap * (1e-10 * np.maximum(1, np.linalg.norm(b, axis=1))
                                    / np.linalg.norm(b, axis=1) + 100 * U64))
    assert np.all(res.status == "converged") and not np.any(res.fallback)
    r = b - (H @ x[..., None])[..., 0]
    assert np.all(np.linalg.norm(r, axis=1) < 1e-10 * np.maximum(1, np.linalg.norm(b, axis=1)))
    assert np.all(res.iterations <= 12)


def test_solve_degenerate_engines_agree(rng):
    J = rng.standard_normal((30, 25, 6))
    J[:, :, 5] *= 1e-3
    H = J.transpose(0, 2, 1) @ J
    b = rng.standard_normal((30, 6))
    x1, _, r1 = lpc.solve_degenerate(H, b, engine="numba")
    x2, _, r2 = lpc.solve_degenerate(H, b, engine="array_api")
    assert np.array_equal(r1.iterations, r2.iterations)
    assert np.allclose(x1, x2, rtol=1e-7, atol=1e-10)


@pytest.mark.parametrize("engine", ["numba", "array_api"])
def test_solve_degenerate_fallback(engine, rng):
    J = rng.standard_normal((4, 30, 6))
    H = J.transpose(0, 2, 1) @ J
    H[2] = np.diag([1.0, 2.0, -3.0, 4.0, 5.0, 6.0])  # indefinite: PCG must stop, QR solves it
    b = rng.standard_normal((4, 6))
    x, rep, res = lpc.solve_degenerate(H, b, maxiter=1, engine=engine)
    assert np.all(res.fallback == (res.status != "converged"))
    assert res.fallback[2] and res.status[2] == "indefinite"
    xs = np.linalg.solve(H, b[..., None])[..., 0]
    assert np.allclose(x, xs, rtol=1e-9, atol=1e-12)
    assert rep.degenerate[2].any()


def test_solve_degenerate_single_system(rng):
    J = rng.standard_normal((50, 6))
    H = J.T @ J
    b = rng.standard_normal(6)
    x, rep, res = lpc.solve_degenerate(H, b)
    assert x.shape == (6,) and isinstance(res.status, str) and isinstance(res.iterations, int)
    assert np.allclose(H @ x, b, atol=1e-6 * max(1, np.linalg.norm(b)))


# --------------------------------------------------------------------------- kernels
@settings(max_examples=40, deadline=None)
@given(k=st.integers(1, 7), seed=st.integers(0, 2**31 - 1), logc=st.floats(0, 10))
def test_jacobi_eigh_matches_lapack(k, seed, logc):
    g = np.random.default_rng(seed)
    Q, _ = np.linalg.qr(g.standard_normal((k, k)))
    lam = np.logspace(0, logc, k) * g.choice([-1.0, 1.0], k)
    A = (Q * lam) @ Q.T
    A = 0.5 * (A + A.T)
    W, V = A.copy(), np.empty((k, k))
    jacobi_eigh(W, V, k, U64, True)
    ev = np.diagonal(W)
    nrm = np.abs(lam).max()
    assert np.allclose(np.sort(ev), np.sort(np.linalg.eigvalsh(A)), rtol=0, atol=50 * k * U64 * nrm)
    assert np.allclose(V.T @ V, np.eye(k), atol=50 * k * U64)
    assert np.linalg.norm(A @ V - V * ev) <= 50 * k * U64 * nrm
    assert np.allclose(np.triu(W, 1), 0)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), weak=st.integers(0, 5), logs=st.floats(-6, 0))
def test_property_engines_agree(seed, weak, logs):
    g = np.random.default_rng(seed)
    J = g.standard_normal((30, 6))
    J[:, weak] *= 10.0**logs
    H = J.T @ J
    a = lpc.block_degeneracy(H, engine="numba")
    b = lpc.block_degeneracy(H, engine="array_api")
    margin = np.abs(np.log(np.max(b.eigvals_R) / b.eigvals_R / 10.0))
    margin_t = np.abs(np.log(np.max(b.eigvals_t) / b.eigvals_t / 10.0))
    close = np.concatenate([margin, margin_t]) < 1e-6  # a ratio at the threshold may go either way
    assert np.array_equal(a.degenerate[~close], b.degenerate[~close])
    assert np.allclose(a.eigvals_R, b.eigvals_R, rtol=1e-6)


# --------------------------------------------------------------------------- bad input
def test_bad_input():
    H = np.eye(6)
    with pytest.raises(ValueError, match="H"):
        lpc.block_degeneracy(np.ones((6, 5)))
    A = np.eye(6)
    A[0, 1] = 1.0
    with pytest.raises(ValueError, match="symmetric"):
        lpc.block_degeneracy(A)
    bad = H.copy()
    bad[2, 2] = np.nan
    with pytest.raises(ValueError, match="H"):
        lpc.block_degeneracy(bad)
    with pytest.raises(ValueError, match="split"):
        lpc.block_degeneracy(H, split=6)
    with pytest.raises(ValueError, match="threshold"):
        lpc.block_degeneracy(H, threshold=0.5)
    with pytest.raises(ValueError, match="labels"):
        lpc.block_degeneracy(H, labels=["a", "b"])
    with pytest.raises(ValueError, match="b"):
        lpc.solve_degenerate(H, np.ones(5))
    with pytest.raises(ValueError, match="b"):
        lpc.solve_degenerate(H, np.array([1.0, np.nan, 0, 0, 0, 0]))
    with pytest.raises(ValueError, match="split"):
        lpc.schur_complements(H, 0)
    with pytest.raises(TypeError):
        lpc.targeted_preconditioner(H)


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 9), seed=st.integers(0, 2**31 - 1), logc=st.floats(0, 12),
       kind=st.sampled_from(["spd", "indefinite", "diagonal", "clustered"]))
def test_sym_eigvals_matches_lapack(n, seed, logc, kind):
    """The tridiagonal-QL eigenvalues used for cond(H) in the DCReg kernel."""
    from linalg_pc._kernels.cpu_dense_small import sym_eigvals

    g = np.random.default_rng(seed)
    Q, _ = np.linalg.qr(g.standard_normal((n, n)))
    lam = np.logspace(0, logc, n)
    if kind == "indefinite":
        lam *= g.choice([-1.0, 1.0], n)
    if kind == "clustered":
        lam = 1.0 + 1e-9 * g.standard_normal(n)
    A = np.diag(lam) if kind == "diagonal" else (Q * lam) @ Q.T
    A = 0.5 * (A + A.T)
    d, e = np.empty(n), np.empty(n)
    assert sym_eigvals(A.copy(), d, e, n, U64)
    ref = np.linalg.eigvalsh(A)
    assert np.allclose(np.sort(d), ref, rtol=0, atol=20 * n * U64 * np.abs(ref).max())


def test_cond_lanes_kernel(rng):
    """κ(H) from the lane-vectorized Jacobi used by the DCReg kernel, ragged last group."""
    from linalg_pc._kernels import cpu_dense_small as K

    N, n = 37, 6
    J = rng.standard_normal((N, 12, n))
    J[::4, :, 2] *= 1e-5
    H = J.transpose(0, 2, 1) @ J
    H[5] = np.diag([1.0, 2.0, 3.0, -1.0, 5.0, 6.0])
    out = np.empty(N)
    L = K.LANES
    K.cond_lanes(H, 0, N, out, np.empty((n, n, L)), np.empty(L), np.empty(L), np.empty(L),
                 np.empty((n, n)), np.empty(n), np.empty(n), U64)
    ev = np.linalg.eigvalsh(H)
    ref = np.where(ev[:, 0] > 0, ev[:, -1] / ev[:, 0], np.inf)
    fin = np.isfinite(ref)
    assert np.array_equal(np.isfinite(out), fin)
    assert np.allclose(out[fin], ref[fin], rtol=IDENT_C * ref[fin].max() * U64)
