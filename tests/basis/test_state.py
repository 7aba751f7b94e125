"""The functional BasisState: init / update / apply / materialize / rebase on every namespace,
batched (against a per-matrix NumPy fp64 reference), in place or pure; fp64 inputs of every
public basis function computed in fp64 by default (the precision policy)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

import linalg_pc as lpc
import linalg_pc._backend as B
from linalg_pc.basis import state as S
from linalg_pc.precision import unit_roundoff

sys.path.insert(0, str(Path(__file__).parent))
from _helpers import LAPACK_RATIO, loss_1, np64, orthogonal, spd_with_spectrum  # noqa: E402

U64 = unit_roundoff("fp64")
U32 = unit_roundoff("fp32")
U_BF16 = unit_roundoff("bf16")


def _ref_rotate(K, Q, J):
    """Q_J P qr(Pᵀ Q_Jᵀ K Q_J P).Q in fp64, diag(R) ≥ 0, P sorting diag(M) descending."""
    QJ = Q[:, J]
    M = QJ.T @ K @ QJ
    M = 0.5 * (M + M.T)
    perm = np.argsort(-np.diag(M), kind="stable")
    W, R = np.linalg.qr(M[np.ix_(perm, perm)])
    W = W * np.where(np.diag(R) < 0, -1.0, 1.0)
    out = Q.copy()
    out[:, J] = QJ[:, perm] @ W
    return out, perm


def _problem(rng, n, d, m=None):
    m = d if m is None else m
    Ks = np.stack([spd_with_spectrum(rng.uniform(0.1, 5.0, d), rng) for _ in range(n)])
    Qs = np.stack([orthogonal(d, rng)[:, :m] for _ in range(n)])
    return Ks, Qs


# --------------------------------------------------------------------------- every namespace
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_dense_state_every_namespace(xp, rng, dtype):
    """"dense" keeps the input format; update/apply/materialize agree with the fp64 formula."""
    d = 20
    K, Q = (a[0] for a in _problem(rng, 1, d))
    u = unit_roundoff("fp32" if dtype == "float32" else "fp64")
    Qx = xp.asarray(Q.astype(dtype))
    s = S.init(Qx)
    assert s.scheme == "dense" and B.format_of(s.Q) == B.format_of(Qx)
    assert s.nbytes == d * d * (4 if dtype == "float32" else 8)
    J = np.array([1, 2, 7, 12])
    s2, up = S.update(s, xp.asarray(K.astype(dtype)), J)
    assert up.info.scheme == "dense" and up.info.compute == ("fp32" if dtype == "float32"
                                                              else "fp64")
    # pure: the old state and the caller's Q are untouched
    np.testing.assert_array_equal(np64(s.Q), np64(Qx))
    ref, perm = _ref_rotate(K, np64(Qx), J)
    Qm = np64(S.materialize(s2))
    assert np.abs(Qm - ref).max() < LAPACK_RATIO * d * u
    np.testing.assert_array_equal(np.asarray(B.to_numpy(up.permutation))[J], J[perm])
    X = rng.standard_normal((d, 3))
    for transpose in (False, True):
        got = np64(S.apply(s2, xp.asarray(X.astype(dtype)), transpose=transpose))
        op = Qm.T if transpose else Qm
        assert np.abs(got - op @ X).max() < LAPACK_RATIO * d * u * np.abs(X).max()


def test_fp32_scheme_array_api_strict_and_inplace_fallback(rng):
    """array_api_strict has no in-place column write: inplace=True returns a new array."""
    import array_api_strict as xs

    d = 16
    K, Q = (a[0] for a in _problem(rng, 1, d))
    s = S.init(xs.asarray(Q.astype(np.float32)), "fp32")
    s2, _ = S.update(s, xs.asarray(K.astype(np.float32)), [0, 5], inplace=True)
    ref = S.update(S.init(Q.astype(np.float32), "fp32"), K.astype(np.float32), [0, 5])[0]
    np.testing.assert_allclose(np64(s2.Q), np64(ref.Q), atol=20 * d * U32)
    assert loss_1(S.materialize(s2)) < LAPACK_RATIO * d * U32


# --------------------------------------------------------------------------- batched (torch)
@pytest.mark.parametrize("scheme", ["dense", "fp32", "bf16", "bf16-project", "bf16-rectify",
                                    "block-rotation"])
def test_batched_torch_matches_per_matrix_numpy(rng, scheme):
    """A stack of 3 bases on torch: every operation equals the per-matrix NumPy state (same
    scheme), and the refreshed columns match the fp64 formula to the storage precision."""
    torch = pytest.importorskip("torch")
    n, d, k = 3, 16, 4
    Ks, Qs = _problem(rng, n, d)
    Ks, Qs = Ks.astype(np.float32), Qs.astype(np.float32)
    st = S.init(torch.from_numpy(Qs), scheme, block_size=k)
    singles = [S.init(Qs[i], scheme, block_size=k) for i in range(n)]
    J = [4, 5, 6, 7]  # a block of the block-rotation partition
    st, up = S.update(st, torch.from_numpy(Ks), J, inplace=True)
    assert tuple(up.permutation.shape) == (n, d) and tuple(up.eigenvalues.shape) == (n, k)
    X = rng.standard_normal((d, 2)).astype(np.float32)
    tol = 60 * d * U32
    for i in range(n):
        s1, u1 = S.update(singles[i], Ks[i], J)
        np.testing.assert_allclose(np64(S.materialize(st))[i], np64(S.materialize(s1)),
                                   atol=tol if scheme in ("dense", "fp32", "block-rotation")
                                   else 2 * U_BF16)
        np.testing.assert_allclose(np64(up.eigenvalues)[i], np64(u1.eigenvalues), rtol=1e-4)
        np.testing.assert_array_equal(B.to_numpy(up.permutation)[i], u1.permutation)
        for transpose in (False, True):
            np.testing.assert_allclose(
                np64(S.apply(st, torch.from_numpy(X), transpose=transpose))[i],
                np64(S.apply(s1, X, transpose=transpose)), atol=tol)
        ref, _ = _ref_rotate(Ks[i].astype(np.float64), Qs[i].astype(np.float64), np.array(J))
        err = np.abs(np64(S.materialize(st))[i][:, J] - ref[:, J]).max()
        # Q₀ of block-rotation is bf16: the formula on the fp32 basis holds to its rounding
        assert err < (LAPACK_RATIO * d * U32 if scheme in ("dense", "fp32")
                      else 12 * U_BF16), err
    if scheme == "block-rotation":
        rb = S.rebase(st)
        assert rb.offset == k // 2 and st.offset == 0
        for i in range(n):
            one = S.rebase(S.update(singles[i], Ks[i], J)[0])
            np.testing.assert_array_equal(B.to_numpy(rb.Q)[i].view(np.uint16),
                                          B.to_numpy(one.Q).view(np.uint16))
        np.testing.assert_array_equal(np64(rb.W), np.broadcast_to(np.eye(k), (n, d // k, k, k)))


# --------------------------------------------------------------------------- in place
@pytest.mark.parametrize("lib", ["numpy", "torch"])
@pytest.mark.parametrize("scheme", ["dense", "bf16", "bf16-project", "block-rotation"])
def test_inplace_equals_pure_and_writes_own_buffers(rng, lib, scheme):
    d, k = 24, 6
    K, Q = (a[0] for a in _problem(rng, 1, d))
    K, Q = K.astype(np.float32), Q.astype(np.float32)
    if lib == "torch":
        torch = pytest.importorskip("torch")
        K, Qx = torch.from_numpy(K), torch.from_numpy(Q.copy())
    else:
        Qx = Q.copy()
    s = S.init(Qx, scheme, block_size=k)
    for J in ([6, 7, 8, 9, 10, 11], [0, 1, 2, 3, 4, 5]):
        pure, up_p = S.update(s, K, J)
        keep = np64(s.Q).copy(), None if s.W is None else np64(s.W).copy()
        inpl, up_i = S.update(s, K, J, inplace=True)
        np.testing.assert_array_equal(np64(S.materialize(pure)), np64(S.materialize(inpl)))
        np.testing.assert_array_equal(np64(up_p.eigenvalues), np64(up_i.eigenvalues))
        # in place: the state's own arrays hold the result; the caller's Q never changes
        same = (inpl.W is s.W) if scheme == "block-rotation" else (inpl.Q is s.Q)
        assert same
        changed = np64(s.W) if scheme == "block-rotation" else np64(s.Q)
        assert not np.array_equal(changed, keep[1] if scheme == "block-rotation" else keep[0])
        np.testing.assert_array_equal(np64(Qx), Q)
        s = inpl


# --------------------------------------------------------------------------- fp64 by default
def test_fp64_input_fp64_arithmetic_by_default(rng):
    """fp64 in -> fp64 arithmetic, for every public basis function (c·u_fp64 of a fp64
    reference); before the precision policy subspace_refresh computed fp64 input in fp32."""
    d = 32
    K, Q = (a[0] for a in _problem(rng, 1, d))
    J = np.array([0, 3, 4, 9, 20, 31])
    tol = LAPACK_RATIO * d * U64
    ref, perm = _ref_rotate(K, Q, J)
    for method in ("rotate", "project"):
        res = lpc.subspace_refresh(K, Q, J, method=method)
        assert res.Q.dtype == np.float64 and res.info.compute == "fp64"
        assert np.abs(res.Q - ref).max() < tol
        np.testing.assert_array_equal(res.permutation[J], J[perm])
        rq = np.einsum("ij,ij->j", ref[:, J], K @ ref[:, J])
        assert np.abs(res.eigenvalues - rq).max() < tol * np.abs(K).sum(axis=1).max()
    # complete_basis
    W = lpc.complete_basis(Q[:, :10])
    assert W.dtype == np.float64
    assert loss_1(np.concatenate([Q[:, :10], W], axis=1)) < tol
    # column_scores / select_columns ("residual" and "topk" from K and Q)
    M = Q.T @ K @ Q
    off = (M**2).sum(axis=0) - np.diag(M) ** 2
    scores = lpc.basis.subspace.column_scores("residual", K=K, Q=Q)
    assert np.abs(scores - off).max() < tol * np.abs(M).max() ** 2
    rho = lpc.basis.subspace.column_scores("topk", K=K, Q=Q)
    assert np.abs(rho - np.diag(M)).max() < tol * np.abs(M).max()
    np.testing.assert_array_equal(lpc.select_columns("topk", 4, K=K, Q=Q),
                                  np.sort(np.argsort(-np.diag(M), kind="stable")[:4]))
    # eigenbasis_quality
    q = lpc.eigenbasis_quality(K, Q)
    refq = np.linalg.norm(M - np.diag(np.diag(M))) / np.linalg.norm(M)
    assert abs(q - refq) < tol
    # the basis state ("dense" keeps fp64)
    s = S.init(Q)
    s2, up = S.update(s, K, J)
    assert up.info.compute == "fp64" and S.materialize(s2).dtype == np.float64
    assert np.abs(S.materialize(s2) - ref).max() < tol
    X = rng.standard_normal((d, 3))
    assert np.abs(S.apply(s2, X, transpose=True) - ref.T @ X).max() < tol * np.abs(X).max() * d


def test_compute_fp32_still_available(rng):
    d = 16
    K, Q = (a[0] for a in _problem(rng, 1, d))
    res = lpc.subspace_refresh(K, Q, [1, 2, 3], compute="fp32")
    assert res.Q.dtype == np.float64 and res.info.compute == "fp32"
    ref, _ = _ref_rotate(K, Q, np.array([1, 2, 3]))
    err = np.abs(res.Q - ref).max()
    assert LAPACK_RATIO * d * U64 < err < LAPACK_RATIO * d * U32


# --------------------------------------------------------------------------- records, errors
def test_refresh_info_is_a_typed_record(rng):
    d = 8
    K, Q = (a[0] for a in _problem(rng, 1, d))
    info = lpc.subspace_refresh(K, Q, [0, 1]).info
    assert isinstance(info, lpc.RefreshInfo)
    dct = info.as_dict()
    assert set(dct) == {"method", "compute", "k", "sorted", "input_loss", "min_r_ratio",
                        "rank_deficient", "scheme", "rebased", "scale_log2",
                        "eigenvalues_finite"}
    assert dct["k"] == 2 and dct["scheme"] is None
    with pytest.raises(AttributeError):
        info.k = 3  # frozen


def test_state_bad_input(rng):
    Q = orthogonal(8, rng)
    with pytest.raises(ValueError, match="scheme"):
        S.init(Q, "fp8")
    with pytest.raises(ValueError, match="m <= d"):
        S.init(Q[:4, :], "dense")
    with pytest.raises(ValueError, match=r"Q is not orthonormal"):
        S.init(2 * Q)
    with pytest.raises(TypeError, match="Q must be an array"):
        S.init([[1.0]])
    s = S.init(Q)
    with pytest.raises(ValueError, match="only for scheme 'block-rotation'"):
        S.rebase(s)
    with pytest.raises(ValueError, match="needs 8 rows"):
        S.apply(s, np.ones((7, 2)))
    with pytest.raises(ValueError, match="K must be square"):
        S.update(s, np.ones((8, 7)), [0])
    with pytest.raises(ValueError, match="batch shape"):
        S.update(S.init(np.stack([Q, Q])), np.stack([np.eye(8)] * 3), [0])
