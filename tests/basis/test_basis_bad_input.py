"""Bad input to every public function of ``linalg_pc.basis`` (its ``__all__``, plus the
functional ``basis.state`` API): a clear exception naming the argument before any work, or a
correct result. NaN/inf, empty, wrong rank, dtype and library, read-only and aliased inputs
(issue 12). tests/basis/test_bad_input_gaps.py holds the issue's individual gaps.

The results that must work are compared with the same call on fresh copies (aliasing,
read-only) or with fp64 formulas (Rayleigh quotients, orthonormality) at c·u tolerances.
"""

from __future__ import annotations

import numpy as np
import pytest

import linalg_pc as lpc
import linalg_pc._backend as B
from linalg_pc.basis import bjorck_step
from linalg_pc.basis import state as S

D = 8
_rng = np.random.default_rng(11)
Q = np.linalg.qr(_rng.standard_normal((D, D)))[0]
_G = _rng.standard_normal((D, D))
K = _G @ _G.T + np.eye(D)
_v = _rng.standard_normal(D)
H = np.eye(D) - 2.0 * np.outer(_v, _v) / (_v @ _v)  # symmetric and orthogonal: a K and a Q
U64 = 2.0**-53


def _ro(a):
    a = np.array(a, copy=True)
    a.flags.writeable = False
    return a


def _with(a, idx, val):
    a = np.array(a, copy=True, dtype=np.float64)
    a[idx] = val
    return a


def _torch():
    return pytest.importorskip("torch")


# ----------------------------------------------------------------------------- the table
def _cases():
    """(label, call, expected exception, match); torch-dependent calls build lazily."""
    ref = lambda: lpc.subspace_refresh  # noqa: E731 - short alias for the table
    sel = lpc.select_columns
    return [
        # subspace_refresh(K, Q, cols)
        ("K nan", lambda: ref()(_with(K, (2, 3), np.nan), Q, [0, 1]), ValueError,
         r"K has non-finite"),
        ("K inf", lambda: ref()(_with(K, (0, 0), np.inf), Q, [0, 1]), ValueError,
         r"K has non-finite"),
        ("Q nan in cols", lambda: ref()(K, _with(Q, (1, 0), np.nan), [0, 1]), ValueError,
         r"Q has non-finite"),
        ("Q inf outside cols", lambda: ref()(K, _with(Q, (1, 6), np.inf), [0, 1]), ValueError,
         r"Q has non-finite"),
        ("K 1-D", lambda: ref()(K[0], Q, [0]), ValueError, r"K must be square"),
        ("Q 1-D", lambda: ref()(K, Q[0], [0]), ValueError, r"Q must have shape \(\.\.\., d, m\)"),
        ("Q 0-d", lambda: ref()(K, np.array(1.0), [0]), ValueError, r"Q must have shape"),
        ("Q wide", lambda: ref()(K[:4, :4], Q[:4], [0]), ValueError, r"Q must have m <= d"),
        ("K wrong d", lambda: ref()(K[:6, :6], Q, [0]), ValueError, r"does not match Q"),
        ("Q no columns", lambda: ref()(K, Q[:, :0], [0]), ValueError, r"out of range \[0, 0\)"),
        ("cols empty", lambda: ref()(K, Q, []), ValueError, r"cols must name at least one"),
        ("K complex", lambda: ref()(K.astype(complex), Q, [0]), TypeError, r"K must be real"),
        ("Q complex", lambda: ref()(K, Q.astype(complex), [0]), TypeError,
         r"Q must have a real floating dtype"),
        ("Q int", lambda: ref()(K, np.eye(D, dtype=int), [0]), TypeError, r"Q must have a real"),
        ("Q bool", lambda: ref()(K, np.eye(D, dtype=bool), [0]), TypeError, r"Q must have a "),
        ("Q list", lambda: ref()(K, Q.tolist(), [0]), TypeError, r"Q must be an array, got list"),
        ("K list", lambda: ref()(K.tolist(), Q, [0]), TypeError, r"K must be an array, a call"),
        ("K torch, Q numpy", lambda: ref()(_torch().from_numpy(K), Q, [0]), TypeError,
         r"K is a torch array but Q is a numpy array"),
        ("Q torch, K numpy", lambda: ref()(K, _torch().from_numpy(Q), [0]), TypeError,
         r"K is a numpy array but Q is a torch array"),
        ("compute bf16", lambda: ref()(K, Q, [0], compute="bf16"), ValueError, r"compute"),
        # complete_basis(U)
        ("U nan", lambda: lpc.complete_basis(_with(Q[:, :3], (0, 0), np.nan)), ValueError,
         r"U has non-finite"),
        ("U 1-D", lambda: lpc.complete_basis(Q[:, 0]), ValueError,
         r"U must have shape \(\.\.\., d, k\): at least 2 dimensions"),
        ("U wide", lambda: lpc.complete_basis(Q[:3]), ValueError, r"U must have k <= d"),
        ("U complex", lambda: lpc.complete_basis(Q[:, :3].astype(complex)), TypeError,
         r"U must have a real floating dtype"),
        ("U int", lambda: lpc.complete_basis(np.eye(D, 2, dtype=int)), TypeError, r"U must"),
        ("U list", lambda: lpc.complete_basis(Q[:, :3].tolist()), TypeError,
         r"U must be an array, got list"),
        ("U not a basis", lambda: lpc.complete_basis(2 * Q[:, :3]), ValueError,
         r"U is not orthonormal"),
        # eigenbasis_quality(K, Q)
        ("quality Q nan", lambda: lpc.eigenbasis_quality(K, _with(Q, (2, 2), np.nan)),
         ValueError, r"Q has non-finite"),
        ("quality K inf", lambda: lpc.eigenbasis_quality(_with(K, (2, 2), np.inf), Q),
         ValueError, r"K has non-finite"),
        ("quality Q list", lambda: lpc.eigenbasis_quality(K, Q.tolist()), TypeError,
         r"Q must be an array, got list"),
        ("quality Q 1-D", lambda: lpc.eigenbasis_quality(K, Q[0]), ValueError,
         r"Q must have shape"),
        ("quality Q int", lambda: lpc.eigenbasis_quality(K, np.eye(D, dtype=int)), TypeError,
         r"Q must have a real"),
        ("quality K complex", lambda: lpc.eigenbasis_quality(K.astype(complex), Q), TypeError,
         r"K must be real"),
        ("quality mix", lambda: lpc.eigenbasis_quality(_torch().from_numpy(K), Q), TypeError,
         r"pass arrays of one library"),
        # select_columns(policy, k, ...)
        ("est complex", lambda: sel("topk", 1, estimates=np.ones(3, complex)), TypeError,
         r"estimates must be real numbers"),
        ("est str", lambda: sel("topk", 1, estimates=["a", "b"]), TypeError, r"estimates must"),
        ("est bool", lambda: sel("topk-cyclic", 2, step=0, estimates=np.ones(4, bool)),
         TypeError, r"estimates must be real numbers"),
        ("est ragged", lambda: sel("topk", 1, estimates=[[1.0], [1.0, 2.0]]), TypeError,
         r"estimates must be real numbers"),
        ("est empty", lambda: sel("topk", 1, estimates=[]), ValueError,
         r"estimates must have shape \(\.\.\., m\) with m >= 1"),
        ("est 0-d", lambda: sel("topk", 1, estimates=np.float64(2.0)), ValueError,
         r"estimates must have shape"),
        ("est nan", lambda: sel("topk", 1, estimates=[1.0, np.nan]), ValueError,
         r"estimates .*non-finite"),
        ("est inf", lambda: sel("topk-cyclic", 2, step=1, estimates=[1.0, np.inf, 0.0]),
         ValueError, r"estimates .*non-finite"),
        ("k bool", lambda: sel("cyclic", True, step=0, ncols=4), ValueError, r"k must be"),
        ("k float", lambda: sel("cyclic", 2.0, step=0, ncols=4), ValueError, r"k must be"),
        ("k too big", lambda: sel("random", 5, ncols=4), ValueError, r"k must be .*\[1, 4\]"),
        ("ncols 0", lambda: sel("cyclic", 1, step=0, ncols=0), ValueError,
         r"ncols must be an integer >= 1"),
        ("ncols float", lambda: sel("cyclic", 1, step=0, ncols=2.5), ValueError, r"ncols must"),
        ("step float", lambda: sel("cyclic", 1, step=1.5, ncols=4), ValueError,
         r"needs a non-negative step"),
        ("step nan", lambda: sel("topk-cyclic", 2, step=float("nan"), estimates=[1.0] * 4),
         ValueError, r"needs a non-negative step"),
        ("step str", lambda: sel("cyclic", 1, step="1", ncols=4), ValueError, r"non-negative"),
        ("step negative", lambda: sel("cyclic", 1, step=-1, ncols=4), ValueError,
         r"non-negative"),
        ("rng str", lambda: sel("random", 2, ncols=4, rng="x"), TypeError, r"rng must be"),
        ("residual Q nan", lambda: sel("residual", 2, K=K, Q=_with(Q, (0, 0), np.nan)),
         ValueError, r"Q has non-finite"),
        ("residual K nan", lambda: sel("residual", 2, K=_with(K, (0, 0), np.nan), Q=Q),
         ValueError, r"K has non-finite"),
        ("residual Q 1-D", lambda: sel("residual", 2, K=K, Q=Q[0]), ValueError,
         r"Q must have shape"),
        ("residual Q int", lambda: sel("residual", 2, K=K, Q=np.eye(D, dtype=int)), TypeError,
         r"Q must have a real"),
        ("residual mix", lambda: sel("residual", 2, K=_torch().from_numpy(K), Q=Q), TypeError,
         r"pass arrays of one library"),
        ("sizes differ", lambda: sel("topk", 2, Q=Q, estimates=np.ones(4)), ValueError,
         r"4 entries, expected m=8"),
        # bjorck_step(V)
        ("V list", lambda: bjorck_step(Q.tolist()), TypeError, r"V must be an array"),
        ("V 1-D", lambda: bjorck_step(Q[0]), ValueError, r"V must have shape"),
        ("V complex", lambda: bjorck_step(Q.astype(complex)), TypeError, r"V must have a real"),
        ("V bool", lambda: bjorck_step(Q > 0), TypeError, r"V must have a real"),
        ("V bf16", lambda: bjorck_step(lpc.to_storage(Q, "bf16")), TypeError,
         r"V must be fp32 or fp64"),
        # StoredBasis(Q, scheme) and its methods
        ("stored nan", lambda: lpc.StoredBasis(_with(Q, (0, 0), np.nan)), ValueError,
         r"Q has non-finite"),
        ("stored 3-D", lambda: lpc.StoredBasis(np.stack([Q, Q])), ValueError, r"Q must be 2-D"),
        ("stored complex", lambda: lpc.StoredBasis(Q.astype(complex)), TypeError,
         r"Q must have a real"),
        ("stored list", lambda: lpc.StoredBasis(Q.tolist()), TypeError, r"Q must be an array"),
        ("stored scheme", lambda: lpc.StoredBasis(Q, "fp8"), ValueError, r"scheme must be"),
        ("update K mix", lambda: lpc.StoredBasis(Q).update(_torch().from_numpy(K), [0]),
         TypeError, r"pass arrays of one library"),
        ("update K nan", lambda: lpc.StoredBasis(Q).update(_with(K, (1, 1), np.nan), [0]),
         ValueError, r"K has non-finite"),
        ("apply X mix", lambda: lpc.StoredBasis(Q).apply(_torch().from_numpy(Q)), TypeError,
         r"X must come from the same array library"),
        ("apply X rows", lambda: lpc.StoredBasis(Q).apply(np.ones((D + 1, 2))), ValueError,
         r"X needs 8 rows"),
        ("apply X complex", lambda: lpc.StoredBasis(Q).apply(Q.astype(complex)), TypeError,
         r"X must have a real"),
        ("apply X list", lambda: lpc.StoredBasis(Q).apply([1.0] * D), TypeError,
         r"X must be an array"),
        ("apply side", lambda: lpc.StoredBasis(Q).apply(Q, side="middle"), ValueError,
         r"side must be"),
        # basis.state
        ("init nan", lambda: S.init(_with(Q, (3, 3), np.inf)), ValueError, r"Q has non-finite"),
        ("init 1-D", lambda: S.init(Q[0]), ValueError, r"Q must have shape"),
        ("init wide", lambda: S.init(Q[:3]), ValueError, r"Q must have m <= d"),
        ("init int", lambda: S.init(np.eye(D, dtype=int)), TypeError, r"Q must have a real"),
        ("init list", lambda: S.init(Q.tolist()), TypeError, r"Q must be an array"),
        ("init not a basis", lambda: S.init(3 * Q), ValueError, r"Q is not orthonormal"),
        ("state update mix", lambda: S.update(S.init(Q), _torch().from_numpy(K), [0]),
         TypeError, r"pass arrays of one library"),
        ("state update cols", lambda: S.update(S.init(Q), K, [D]), ValueError,
         r"cols has indices out of range"),
    ]


CASES = _cases()


@pytest.mark.parametrize("label,call,exc,match", CASES, ids=[c[0] for c in CASES])
def test_bad_input_raises_naming_the_argument(label, call, exc, match):
    with pytest.raises(exc, match=match):
        call()


# ----------------------------------------------------------------------------- integer K
@pytest.mark.parametrize("dtype", [np.int64, bool])
def test_integer_and_boolean_k_is_cast(dtype):
    """K of an integer or boolean dtype is a factor with those values (cast to the compute
    format): the same refresh as the float K."""
    Ki = (np.rint(K * 3)).astype(dtype) if dtype is not bool else np.eye(D, dtype=bool)
    got = lpc.subspace_refresh(Ki, Q, [1, 3, 5])
    ref = lpc.subspace_refresh(Ki.astype(np.float64), Q, [1, 3, 5])
    np.testing.assert_array_equal(got.Q, ref.Q)
    np.testing.assert_array_equal(got.eigenvalues, ref.eigenvalues)
    assert lpc.eigenbasis_quality(Ki, Q) == lpc.eigenbasis_quality(Ki.astype(np.float64), Q)


# ----------------------------------------------------------------------------- empty
def test_empty_bases(xp):
    """d = 0, k = 0 and empty batches: results of the right shapes, no error."""
    z = xp.zeros((D, 0), dtype=xp.float64)
    W = lpc.complete_basis(z)  # the complement of nothing: an orthonormal basis of ℝ^D
    Wh = np.asarray(B.to_numpy(W))
    assert Wh.shape == (D, D)
    assert np.abs(Wh.T @ Wh - np.eye(D)).max() <= 50 * D * U64
    assert tuple(lpc.complete_basis(xp.zeros((0, 0), dtype=xp.float64)).shape) == (0, 0)
    assert tuple(lpc.complete_basis(xp.zeros((0, D, 2), dtype=xp.float64)).shape) == (0, D, D - 2)
    assert lpc.eigenbasis_quality(xp.zeros((0, 0), dtype=xp.float64),
                                  xp.zeros((0, 0), dtype=xp.float64)) == 0.0
    assert lpc.eigenbasis_quality(xp.asarray(K), xp.zeros((D, 0), dtype=xp.float64)) == 0.0
    s = S.init(xp.zeros((D, 0), dtype=xp.float64))
    assert s.shape == (D, 0)


# ----------------------------------------------------------------------------- NaN in products
def test_products_propagate_nan_instead_of_checking():
    """apply (StoredBasis, state) and bjorck_step are products: a NaN of X reaches the result's
    columns it multiplies (documented; no O(size) scan), never a finite wrong value."""
    sb = lpc.StoredBasis(Q, "fp32")
    X = np.ones((D, 3))
    X[2, 1] = np.nan
    for out in (sb.apply(X), sb.apply(X, transpose=True), S.apply(S.init(Q), X)):
        out = np.asarray(out)
        assert np.isnan(out[:, 1]).all() and np.isfinite(out[:, [0, 2]]).all()
    assert np.isnan(bjorck_step(_with(Q, (4, 4), np.nan))).all()


# ----------------------------------------------------------------------------- read-only
def test_read_only_inputs_work_and_are_not_written():
    Kr, Qr = _ro(K), _ro(Q)
    cols = [0, 2, 5]
    for method in ("rotate", "project"):
        got = lpc.subspace_refresh(Kr, Qr, cols, method=method)
        ref = lpc.subspace_refresh(K.copy(), Q.copy(), cols, method=method)
        np.testing.assert_array_equal(got.Q, ref.Q)
    np.testing.assert_array_equal(lpc.complete_basis(_ro(Q[:, :3])),
                                  lpc.complete_basis(Q[:, :3].copy()))
    assert lpc.eigenbasis_quality(Kr, Qr) == lpc.eigenbasis_quality(K.copy(), Q.copy())
    np.testing.assert_array_equal(lpc.select_columns("residual", 3, K=Kr, Q=Qr),
                                  lpc.select_columns("residual", 3, K=K.copy(), Q=Q.copy()))
    np.testing.assert_array_equal(
        lpc.select_columns("topk-cyclic", 4, step=2, estimates=_ro(np.arange(8.0))),
        lpc.select_columns("topk-cyclic", 4, step=2, estimates=np.arange(8.0)))
    np.testing.assert_array_equal(bjorck_step(Qr), bjorck_step(Q.copy()))
    for scheme in lpc.STORAGE_SCHEMES:
        kw = {"block_size": 4} if scheme == "block-rotation" else {}
        sb = lpc.StoredBasis(Qr, scheme, **kw)
        sb.update(Kr, [0, 1, 2, 3])
        sb.apply(_ro(np.ones((D, 2))))
    np.testing.assert_array_equal(Kr, K)
    np.testing.assert_array_equal(Qr, Q)


# ----------------------------------------------------------------------------- aliasing
@pytest.mark.parametrize("method", ["rotate", "project"])
def test_k_and_q_the_same_array(xp, method):
    """K and Q the same array (H = I − 2vvᵀ/vᵀv is symmetric and orthogonal): the refresh, the
    quality and the residual policy equal those on separate copies; H is not written."""
    Hx = xp.asarray(H)
    cols = [1, 4, 6]
    got = lpc.subspace_refresh(Hx, Hx, cols, method=method)
    ref = lpc.subspace_refresh(xp.asarray(H.copy()), xp.asarray(H.copy()), cols, method=method)
    np.testing.assert_array_equal(B.to_numpy(got.Q), B.to_numpy(ref.Q))
    np.testing.assert_array_equal(B.to_numpy(Hx), H)
    assert lpc.eigenbasis_quality(Hx, Hx) == lpc.eigenbasis_quality(xp.asarray(H.copy()),
                                                                    xp.asarray(H.copy()))
    np.testing.assert_array_equal(
        lpc.select_columns("residual", 3, K=Hx, Q=Hx),
        lpc.select_columns("residual", 3, K=xp.asarray(H.copy()), Q=xp.asarray(H.copy())))


@pytest.mark.parametrize("method_scheme", ["dense", "fp32"])
def test_k_aliasing_the_state_being_updated_in_place(method_scheme):
    """K is the state's own stored Q and the update writes into that array (inplace=True):
    every product with K happens before the write, so the result is that of a separate K."""
    s = S.init(H, method_scheme)
    s_ref = S.init(H, method_scheme)
    K_alias = s.Q  # the very buffer the in-place update writes
    K_sep = np.array(s.Q, copy=True)
    new, up = S.update(s, K_alias, [0, 2, 3], inplace=True)
    new_ref, up_ref = S.update(s_ref, K_sep, [0, 2, 3], inplace=False)
    np.testing.assert_array_equal(np.asarray(new.Q), np.asarray(new_ref.Q))
    np.testing.assert_array_equal(np.asarray(up.eigenvalues), np.asarray(up_ref.eigenvalues))


def test_stored_basis_update_with_its_own_materialized_basis():
    sb = lpc.StoredBasis(H, "fp32")
    ref = lpc.StoredBasis(H, "fp32")
    sb.update(sb.materialize(), [1, 2])
    ref.update(H.astype(np.float32), [1, 2])
    np.testing.assert_array_equal(sb.materialize(), ref.materialize())
