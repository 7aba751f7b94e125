"""The Kronecker-factored transforms (SOAP, Shampoo, KL-Shampoo, KL-SOAP) as a policy: batched
stacks against one state per member, SOAP's permutation of the second moment at a refresh,
the failure policy (non-finite gradients, failed refreshes, the identity fallback), storage
and compute formats, the state record, ``refresh_tol``, and random hyperparameters
(Hypothesis); on every namespace of the ``xp`` fixture where the feature exists.

Tolerances are multiples of the unit roundoff u of the format involved (u = 2⁻²⁴ for fp32,
2⁻⁸ for bf16, from :func:`linalg_pc.precision.unit_roundoff`), each derived where it is
defined. "Bit for bit" compares the bit patterns of the arrays (signed zeros included).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import linalg_pc as lpc
import linalg_pc._backend as B
from linalg_pc.precision import get_format, unit_roundoff
from linalg_pc.precond import STATE_KINDS

U32 = unit_roundoff("fp32")
U16 = unit_roundoff("bf16")

METHODS = ("soap", "shampoo", "kl_shampoo", "kl_soap")
COUNTERS = ("count", "skipped", "step_ok")


# ---------------------------------------------------------------------------------- helpers
def make(method: str, **kw):
    """``lpc.precond.<method>(**kw)``."""
    return getattr(lpc.precond, method)(**kw)


def host(a) -> np.ndarray:
    """A host NumPy copy (bf16 stays ml_dtypes.bfloat16)."""
    return np.array(B.to_numpy(a), copy=True)


def f64(a) -> np.ndarray:
    return np.asarray(B.to_numpy(a), dtype=np.float64)


def snap(state) -> dict:
    """Host copies of every state array."""
    return {k: host(v) for k, v in state.arrays().items()}


def bits(a: np.ndarray) -> np.ndarray:
    a = np.ascontiguousarray(a)
    return a if a.dtype == np.bool_ else a.view(np.dtype(f"u{a.dtype.itemsize}"))


def same_bits(x, y) -> bool:
    x, y = np.asarray(x), np.asarray(y)
    return x.shape == y.shape and x.dtype == y.dtype and np.array_equal(bits(x), bits(y))


def assert_same_arrays(a: dict, b: dict, skip=(), what=""):
    assert set(a) == set(b), what
    for k in a:
        if k not in skip:
            assert same_bits(a[k], b[k]), f"{what}: {k} differs"


def all_finite(state) -> bool:
    return all(np.all(np.isfinite(f64(v))) for k, v in state.arrays().items()
               if k not in COUNTERS)


def ns_name(a) -> str:
    return B.namespace_name(B.array_namespace(a))


def gaussian(rng, shape, scale=1.0) -> np.ndarray:
    return (scale * rng.standard_normal(shape)).astype(np.float32)


# ------------------------------------------------------------------------- batched == looped
#: Shampoo's inverse roots amplify the rounding of small eigenvalues by (λ_max + ε_K)/(λ_min +
#: ε_K); the first factor of a non-square gradient is singular, so a regularizing ε_K keeps the
#: batched/looped comparison (different BLAS blockings on PyTorch) a comparison of roundings.
SHAMPOO_EPS = 1e-2
BATCH_STEPS, BATCH_T, BATCH_N = 30, 3, 3
#: array_api_strict runs the pure array-API Householder QR (tens of ms per refresh) for both
#: the stack and the members: fewer steps, refreshes and members keep the test short
STRICT_STEPS, STRICT_T, STRICT_N = 12, 4, 2


def _batched_vs_looped(xp, method, shape, n_members, rng, steps=BATCH_STEPS, T=BATCH_T):
    kw = dict(lr=1e-2, weight_decay=0.01, precondition_frequency=T)
    if method == "shampoo":
        kw["matrix_eps"] = SHAMPOO_EPS
    tx = make(method, **kw)
    p0 = gaussian(rng, (n_members, *shape))
    P = xp.asarray(p0)
    sb = tx.init(P, batched=True)
    ps = [xp.asarray(p0[i]) for i in range(n_members)]
    ss = [tx.init(p) for p in ps]
    ups_b, ups_l = [], []
    statuses = set()
    for _ in range(steps):
        g = gaussian(rng, (n_members, *shape))
        ub, sb = tx.update(xp.asarray(g), sb, P)
        P = P + ub
        ups_b.append(host(ub))
        row = []
        for i in range(n_members):
            u, ss[i] = tx.update(xp.asarray(g[i]), ss[i], ps[i])
            ps[i] = ps[i] + u
            row.append(host(u))
            assert ss[i].last_status == sb.last_status
        ups_l.append(np.stack(row))
        statuses.add(sb.last_status)
    assert "refresh" in statuses and sb.last_refresh == steps - 1 - (steps - 1) % T
    return sb, ss, np.stack(ups_b), np.stack(ups_l)


def _basis_sensitivity(K: np.ndarray) -> float:
    """How much a basis of K moves per unit relative perturbation of K: λ_max/gap for the
    eigenvectors of an eigh (Davis–Kahan), κ(K) = λ_max/λ_min for the Q of qr(K Q) (an
    orthogonal-iteration refresh); the larger of the two, from K's fp64 eigenvalues."""
    w = np.linalg.eigvalsh(K)
    floor = max(w[-1], np.finfo(np.float32).tiny) * U32
    return float(w[-1] / max(min(np.min(np.diff(w), initial=w[-1]), w[0]), floor))


@pytest.mark.parametrize("shape", [(5, 4), (3, 4, 2)], ids=["2d", "3d"])
@pytest.mark.parametrize("method", [
    "soap", "shampoo", "kl_shampoo", "kl_soap"])
def test_batched_equals_looped_bitwise_numpy(method, shape, rng):
    """On NumPy a stack (``batched=True``) gives each member the updates and state of its own
    unbatched run, bit for bit, over 30 steps with refreshes every 3."""
    xp = B.array_namespace(np.zeros(1))
    sb, ss, ub, ul = _batched_vs_looped(xp, method, shape, BATCH_N, rng)
    assert same_bits(ub, ul)
    arrays_b = snap(sb)
    for i, s in enumerate(ss):
        for k, v in snap(s).items():
            if k not in COUNTERS:
                assert same_bits(arrays_b[k][i], v), f"member {i}: {k}"
            else:
                assert same_bits(arrays_b[k], v), k


@pytest.mark.parametrize("shape", [(5, 4), (3, 4, 2)], ids=["2d", "3d"])
@pytest.mark.parametrize("method", METHODS)
def test_batched_matches_looped(xp, method, shape, rng):
    """Every namespace: batched and looped runs agree to rounding.

    The two differ only in the blocking of the products and in the QR kernel of the refresh
    (batched BLAS and batched kernels may sum in another order). Per step each update entry is
    a chain of O(d) products of length ≤ d (projections, back-projections, the Gram matrices,
    the Householder QR of a refresh), each within γ_d ≈ d·u of the other ordering; the EMAs
    contract old differences (β < 1) but the refreshes and Adam's ratio m/√v (relative
    condition 3/2) pass them on, so over n steps the normwise difference stays below
    ``C_AMP·n·d·u`` with C_AMP = 8 (measured: ≤ 1 on PyTorch). A basis moves more: by its
    factor's sensitivity (:func:`_basis_sensitivity`) times that.
    """
    C_AMP = 8
    steps, T, n_members = BATCH_STEPS, BATCH_T, BATCH_N
    if B.namespace_name(xp) == "array_api_strict":
        steps, T, n_members = STRICT_STEPS, STRICT_T, STRICT_N
    sb, ss, ub, ul = _batched_vs_looped(xp, method, shape, n_members, rng, steps, T)
    tol = C_AMP * steps * max(shape) * U32
    for t in range(steps):
        for i in range(n_members):
            ref = ul[t, i].astype(np.float64)
            err = np.max(np.abs(ub[t, i].astype(np.float64) - ref))
            assert err <= tol * max(np.max(np.abs(ref)), np.finfo(np.float32).tiny), (t, i)
    arrays_b = {k: f64(v) for k, v in sb.arrays().items()}
    for i, s in enumerate(ss):
        for k, v in s.arrays().items():
            if k in COUNTERS:
                continue
            ref = f64(v)
            scale = max(np.max(np.abs(ref)), np.finfo(np.float32).tiny)
            if k.startswith("basis"):
                scale *= _basis_sensitivity(f64(s.factors[int(k[5:])]))
            assert np.max(np.abs(arrays_b[k][i] - ref)) <= tol * scale, (i, k)
    assert int(B.to_float(sb.count)) == int(B.to_float(ss[0].count)) == steps - 1


# --------------------------------------------------------------- SOAP: v follows its column
def test_soap_refresh_permutes_second_moment(xp):
    """A refresh that reorders SOAP's eigenbasis moves ``exp_avg_sq`` with its columns.

    The parameter is 3×5 with only axis 0 factored (``max_precond_dim=4``), and every gradient
    has its three rows on disjoint column sets: the factor K₀ = EMA(G Gᵀ) is diagonal, so every
    basis column is ±e_r for some row r (the eigh of a diagonal matrix and the QR of a scaled
    signed permutation are exact up to O(u) off-diagonal entries), and the coordinates of G
    in the basis are G's rows. The second moment that belongs to the column now at position i
    is then the EMA of the squares of row r(i) = argmaxₖ |Q[k, i]|, computed here in fp64.
    The row magnitudes change from (4, 2, 1) to (1, 3, 8) after four steps, so the Rayleigh
    quotients reorder and the refresh permutes the columns (checked); dropping the permutation
    of v leaves v's rows with the columns' old rows and fails by O(1).

    Tolerance: every term of the EMA is positive, so fp32 accumulation over n steps is within
    c·n·u relatively (c = 3: product, sum, and the rounding of G̃²); the O(u) off-diagonal
    entries of Q leak (u·|G|)² into entries whose reference is 0, bounded by u·max(v_ref).
    """
    C_EMA = 3
    C_UNIT = 4  # a QR of K Q with O(u) off-diagonal K Q: a few u off ±e_r (measured 2u)
    beta1, beta2 = 0.9, 0.8
    tx = lpc.precond.soap(betas=(beta1, beta2), shampoo_beta=0.5, precondition_frequency=3,
                          max_precond_dim=4, weight_decay=0.0)
    mask = np.array([[1, 1, 0, 0, 0], [0, 0, 1, 1, 0], [0, 0, 0, 0, 1]], np.float64)
    w = np.array([1.0, 0.5, 1.0, 0.75, 1.0])
    signs = np.random.default_rng(3).choice([-1.0, 1.0], size=(14, 3, 5))
    p = xp.asarray(np.zeros((3, 5), np.float32))
    state = tx.init(p)
    assert state.layout.factored == (True, False)
    hist = []
    reorders = 0
    for t in range(14):
        a = np.array([4.0, 2.0, 1.0]) if t < 4 else np.array([1.0, 3.0, 8.0])
        G = (a[:, None] * w * mask * signs[t]).astype(np.float32)
        rows_before = np.argmax(np.abs(f64(state.bases[0].Q)), axis=0)
        _, state = tx.update(xp.asarray(G), state, p)
        Q = f64(state.bases[0].Q)
        rows = np.argmax(np.abs(Q), axis=0)
        assert sorted(rows) == [0, 1, 2]
        assert np.max(np.abs(np.abs(Q) - np.eye(3)[rows].T)) <= C_UNIT * U32  # ±e_r columns
        if state.last_status == "refresh" and not np.array_equal(rows, rows_before):
            reorders += 1
        if t == 0:
            continue  # the first gradient only builds K and Q
        hist.append(G.astype(np.float64))
        n = len(hist)
        ref = sum((1 - beta2) * beta2 ** (n - 1 - j) * h * h for j, h in enumerate(hist))[rows]
        v = f64(state.moments["exp_avg_sq"])
        bound = C_EMA * n * U32 * ref + U32 * np.max(ref)
        assert np.all(np.abs(v - ref) <= bound), (t, rows, v, ref)
    assert reorders >= 1  # the scenario does reorder the columns


# --------------------------------------------------------------- failure policy: gradients
#: (kind of bad value, positions in the clean sequence before which it is inserted)
BAD_CASES = [("nan", (0,)), ("inf", (3,)), ("-inf", (2, 2))]
POLICY_T, POLICY_STEPS = 3, 10


def _bad(g: np.ndarray, kind: str, rng) -> np.ndarray:
    out = g.copy()
    out[tuple(rng.integers(0, s) for s in g.shape)] = float(kind)
    return out


@pytest.mark.parametrize("kind,positions", BAD_CASES,
                         ids=[f"{k}@{'+'.join(map(str, p))}" for k, p in BAD_CASES])
@pytest.mark.parametrize("method", METHODS)
def test_nonfinite_gradient_skips_step(xp, method, kind, positions, rng):
    """A gradient with one non-finite entry is skipped: the update is zero, every state array
    keeps its bits except the counters (``skipped`` + 1, ``step_ok`` False, ``count`` kept), and
    the following finite steps are those of a run that never saw it, bit for bit, including
    the refreshes (T = 3: skipping at position 2 or 3 makes the host's step hint reach a
    refresh step before the device count does; position 0 skips the initializing step)."""
    tx = make(method, lr=1e-2, weight_decay=0.01, precondition_frequency=POLICY_T)
    shape = (4, 3)
    p0 = gaussian(rng, shape)
    clean = [gaussian(rng, shape) for _ in range(POLICY_STEPS)]
    dirty: list = []
    for i, g in enumerate(clean):
        dirty += [None] * positions.count(i)
        dirty.append(g)
    pa, pb = xp.asarray(p0), xp.asarray(p0)
    sa, sb = tx.init(pa), tx.init(pb)
    i = 0
    n_bad = 0
    refreshes = 0
    for g in dirty:
        if g is None:
            before = snap(sb)
            init_before = sb.initialized
            u, sb = tx.update(xp.asarray(_bad(clean[i], kind, rng)), sb, pb)
            n_bad += 1
            assert np.all(f64(u) == 0) and tuple(u.shape) == shape
            after = snap(sb)
            assert_same_arrays(before, after, skip=("skipped", "step_ok"), what="skipped step")
            assert int(after["skipped"]) == int(before["skipped"]) + 1
            assert not bool(after["step_ok"])
            assert sb.initialized == init_before
            pb = pb + u
            continue
        ua, sa = tx.update(xp.asarray(g), sa, pa)
        ub, sb = tx.update(xp.asarray(g), sb, pb)
        pa, pb = pa + ua, pb + ub
        i += 1
        assert same_bits(host(ua), host(ub)), f"update after {i} finite steps"
        assert_same_arrays(snap(sa), snap(sb), skip=("skipped",), what=f"step {i}")
        assert int(B.to_float(sb.skipped)) == n_bad and bool(B.to_float(sb.step_ok))
        for f in ("initialized", "last_refresh", "refresh_failures", "fallbacks",
                  "consecutive", "last_status"):
            assert getattr(sa, f) == getattr(sb, f), (i, f)
        assert sb.hint >= int(B.to_float(sb.count))
        refreshes += sa.last_status == "refresh" and sa.last_refresh == i - 1
    assert refreshes == (POLICY_STEPS - 1) // POLICY_T  # refreshes at counts 3, 6, 9
    assert same_bits(host(pa), host(pb))


@pytest.mark.parametrize("method", METHODS)
def test_batched_nonfinite_member_skips_whole_step(xp, method, rng):
    """One member's NaN gradient skips the step for the whole stack (documented): no member's
    state changes, every member's update is zero, and the stack then continues as a stack
    that never saw the step, bit for bit."""
    tx = make(method, lr=1e-2, weight_decay=0.01, precondition_frequency=2)
    shape = (3, 4, 3)
    p0 = gaussian(rng, shape)
    grads = [gaussian(rng, shape) for _ in range(7)]
    pa, pb = xp.asarray(p0), xp.asarray(p0)
    sa, sb = tx.init(pa, batched=True), tx.init(pb, batched=True)
    for t, g in enumerate(grads):
        if t == 3:
            bad = g.copy()
            bad[1, 2, 0] = np.nan
            before = snap(sb)
            u, sb = tx.update(xp.asarray(bad), sb, pb)
            assert np.all(f64(u) == 0)
            assert_same_arrays(before, snap(sb), skip=("skipped", "step_ok"))
            assert int(B.to_float(sb.skipped)) == 1 and not bool(B.to_float(sb.step_ok))
        ua, sa = tx.update(xp.asarray(g), sa, pa)
        ub, sb = tx.update(xp.asarray(g), sb, pb)
        pa, pb = pa + ua, pb + ub
        assert same_bits(host(ua), host(ub))
        assert_same_arrays(snap(sa), snap(sb), skip=("skipped",))
    assert sa.last_status == sb.last_status == "refresh"


# ------------------------------------------------------------ failure policy: refreshes
@pytest.mark.parametrize("method", METHODS)
def test_failed_refresh_keeps_basis_then_falls_back(xp, method, rng):
    """An inf written into factor 0 makes every refresh of axis 0 fail: the previous basis is
    kept bit for bit, ``refresh_failures`` counts each failure, ``last_status`` says
    "refresh-failed"; the ``max_failures``-th consecutive failure resets basis 0 to the
    identity ("fallback", counted in ``fallbacks``) and the factor to zero, after which every
    array and update is finite and the axis refreshes again. Axis 1 refreshes throughout."""
    T, max_failures = 2, 3
    tx = make(method, lr=1e-2, weight_decay=0.01, precondition_frequency=T,
              max_failures=max_failures)
    shape = (4, 3)
    p = xp.asarray(gaussian(rng, shape))
    state = tx.init(p)
    for _ in range(2):  # init + count 1
        u, state = tx.update(xp.asarray(gaussian(rng, shape)), state, p)
        p = p + u
    state.factors[0][0, 0] = float("inf")
    fails = 0
    fell_back_at = None
    for count in range(2, 13):
        Q0 = host(state.bases[0].Q)
        Q1 = host(state.bases[1].Q)
        u, state = tx.update(xp.asarray(gaussian(rng, shape)), state, p)
        p = p + u
        assert np.all(np.isfinite(f64(u))), count
        assert int(B.to_float(state.count)) == count
        if count % T:
            assert same_bits(Q0, host(state.bases[0].Q))
            continue
        assert not same_bits(Q1, host(state.bases[1].Q)), "axis 1 refreshes"
        if fell_back_at is None:
            fails += 1
            assert state.refresh_failures == fails
            if fails < max_failures:
                assert state.last_status.startswith("refresh-failed"), state.last_status
                assert same_bits(Q0, host(state.bases[0].Q)), "failed refresh keeps the basis"
                assert state.fallbacks == 0 and state.consecutive[0] == fails
                assert not np.all(np.isfinite(f64(state.factors[0])))
                continue
            assert state.last_status.startswith("fallback"), state.last_status
            assert state.fallbacks == 1 and state.consecutive[0] == 0
            assert same_bits(f64(state.bases[0].Q), np.eye(4))
            assert same_bits(f64(state.factors[0]), np.zeros((4, 4)))
            assert all_finite(state)
            fell_back_at = count
            continue
        assert state.last_status == "refresh", state.last_status
        assert state.refresh_failures == max_failures and state.fallbacks == 1
        assert all_finite(state)
    assert fell_back_at == 2 * max_failures


def test_batched_fallback_counts_failures_per_member(rng):
    """In a stack, a member falls back to the identity after ``max_failures`` consecutive
    failures of its own refreshes, as it would in its own state."""
    xp = B.array_namespace(np.zeros(1))
    T, max_failures = 2, 3
    tx = lpc.precond.soap(precondition_frequency=T, max_failures=max_failures)
    shape = (4, 3)
    P = xp.asarray(gaussian(rng, (2, *shape)))
    sb = tx.init(P, batched=True)
    s1 = tx.init(P[1])
    for _ in range(2):  # init + count 1
        g = gaussian(rng, (2, *shape))
        _, sb = tx.update(g, sb, P)
        _, s1 = tx.update(g[1], s1, P[1])
    good0 = host(sb.factors[0][0])
    # member 0 fails at the refreshes at counts 2 and 4, member 1 (only) at count 6
    sb.factors[0][0, 0, 0] = np.inf
    for count in range(2, 7):
        if count == 5:
            sb.factors[0][0] = good0
            sb.factors[0][1, 0, 0] = np.inf
            s1.factors[0][0, 0] = np.inf
        g = gaussian(rng, (2, *shape))
        _, sb = tx.update(g, sb, P)
        _, s1 = tx.update(g[1], s1, P[1])
    assert s1.last_status.startswith("refresh-failed") and s1.fallbacks == 0
    assert sb.fallbacks == 0, (
        f"member 1 fell back after one failure: {sb.last_status}, consecutive={sb.consecutive}")


# ------------------------------------------------------------------------- storage formats
def _bytes(fmt: str) -> int:
    return get_format(fmt).bits // 8


def _expected_nbytes(state, formats: dict) -> int:
    """Bytes of a state from its layout: factors and bases d² per factored axis, Shampoo's
    eigenvalues d per factored axis and KL's d per axis (compute format), one parameter-sized
    array per moment, the counters (two int32 and a bool)."""
    lay = state.layout
    comp = _bytes(state.compute)
    n = sum(d * d * (_bytes(formats["factors"]) + _bytes(formats["basis"]))
            for d, f in zip(lay.work_shape, lay.factored) if f)
    if state.method == "shampoo":
        n += sum(d for d, f in zip(lay.work_shape, lay.factored) if f) * comp
    elif state.method.startswith("kl"):
        n += sum(lay.work_shape) * comp
    n += len(state.moments) * lay.size * _bytes(formats["moments"])
    return n + 4 + 4 + 1


STORAGES = [("fp32", dict.fromkeys(STATE_KINDS, "fp32")),
            ("bf16", dict.fromkeys(STATE_KINDS, "bf16")),
            ({"factors": "bf16"}, {"factors": "bf16", "basis": "fp32", "moments": "fp32"}),
            ({"basis": "fp16", "moments": "bf16"},
             {"factors": "fp32", "basis": "fp16", "moments": "bf16"})]


@pytest.mark.parametrize("storage,formats", STORAGES, ids=["fp32", "bf16", "factors-bf16",
                                                            "basis-fp16-moments-bf16"])
@pytest.mark.parametrize("method", METHODS)
def test_storage_formats_and_nbytes(xp, method, storage, formats, rng):
    """Each kind of state is kept in its storage format (describe() and the dtypes say so,
    after steps with a refresh too) and ``nbytes`` is the exact sum over the arrays' shapes
    (so bf16 storage halves the bytes of every stored kind)."""
    if B.namespace_name(xp) == "array_api_strict" and set(formats.values()) - {"fp32"}:
        with pytest.raises(TypeError, match="bfloat16|float16"):
            make(method, storage=storage).init(xp.asarray(np.zeros((6, 5), np.float32)))
        return
    tx = make(method, storage=storage, precondition_frequency=2)
    p = xp.asarray(gaussian(rng, (6, 5)))
    state = tx.init(p)
    for _ in range(3):
        _, state = tx.update(xp.asarray(gaussian(rng, (6, 5))), state, p)
    assert state.last_status == "refresh"
    assert state.formats == formats
    arrays = state.arrays()
    for name, a in arrays.items():
        kind = _kind(name, state)
        if kind in STATE_KINDS:
            assert a.dtype == B.native_dtype(xp, formats[kind]), name
        elif kind == "eigenvalues":
            assert a.dtype == xp.float32, name
    if B.namespace_name(xp) == "numpy" and "bf16" in formats.values():
        return  # describe() and nbytes raise there: test_numpy_bf16_storage_describe
    rows = state.describe()
    assert [r.name for r in rows] == list(arrays)
    for row in rows:
        assert row.kind == _kind(row.name, state)
        if row.kind in STATE_KINDS:
            assert row.format == formats[row.kind], row
        elif row.kind == "eigenvalues":
            assert row.format == "fp32", row
    assert state.nbytes == _expected_nbytes(state, formats)
    if storage == "bf16":
        full = _expected_nbytes(state, dict.fromkeys(STATE_KINDS, "fp32"))
        assert full - state.nbytes == state.nbytes - _fixed_bytes(state)  # halved


def _kind(name: str, state) -> str:
    if name.startswith("factor"):
        return "factors"
    if name.startswith("basis"):
        return "basis"
    if name.startswith("eigenvalues"):
        return "eigenvalues"
    return "moments" if name in state.moments else "counters"


def test_numpy_bf16_storage_describe():
    """On NumPy (ml_dtypes bf16) describe() and nbytes work for bf16-stored state."""
    tx = lpc.precond.soap(storage="bf16")
    state = tx.init(np.zeros((6, 5), np.float32))
    formats = dict.fromkeys(STATE_KINDS, "bf16")
    assert state.nbytes == _expected_nbytes(state, formats)
    assert [r.format for r in state.describe()][:6] == ["bf16"] * 6


def _fixed_bytes(state) -> int:
    """Bytes that no storage format changes: eigenvalues (compute format) and counters."""
    return _expected_nbytes(state, dict.fromkeys(STATE_KINDS, "fp32")) - sum(
        _bytes("fp32") * math.prod(a.shape) for k, a in state.arrays().items()
        if k.startswith(("factor", "basis")) or k in state.moments)


def _rank_structured_grads(n_steps, m, k, seed):
    """G_t = L Z_t with Z_t (m × k) random orthonormal rows and L = U diag(√λ): the factor of
    axis 0 is G Gᵀ = U diag(λ) Uᵀ at every step, λ = (m, m−1, …, 1) (λ_max/gap = m), and
    every coordinate of G in the eigenbasis is generic (no direction where Adam would divide
    rounding noise by rounding noise)."""
    rng = np.random.default_rng(seed)
    U = np.linalg.qr(rng.standard_normal((m, m)))[0]
    L = U * np.sqrt(np.arange(m, 0, -1.0))
    return [(L @ np.linalg.qr(rng.standard_normal((k, m)))[0].T).astype(np.float32)
            for _ in range(n_steps)]


def _soap_run(xp, grads, **kw):
    m = grads[0].shape[0]
    tx = lpc.precond.soap(lr=1e-2, precondition_frequency=5, max_precond_dim=m, **kw)
    p = xp.asarray(np.zeros(grads[0].shape, np.float32))
    state = tx.init(p)
    ups = []
    for g in grads:
        u, state = tx.update(xp.asarray(g), state, p)
        p = p + u
        ups.append(f64(u))
    return np.stack(ups), state


#: SOAP runs in other formats against the fp32 run, on gradients whose factor has λ = (5..1)
STORE_M, STORE_K, STORE_STEPS = 5, 12, 30
STORE_LAM_MAX, STORE_GAP = float(STORE_M), 1.0
#: first-order amplification of one rounding in the stored state (see the bf16 test)
STORE_AMP = math.sqrt(STORE_M) * STORE_LAM_MAX / STORE_GAP + 3


@pytest.mark.parametrize("storage", ["bf16", {"factors": "bf16"}, {"moments": "bf16"},
                                     {"basis": "bf16"}],
                         ids=["bf16", "factors", "moments", "basis"])
def test_bf16_storage_tracks_fp32(xp, storage):
    """A SOAP run with bf16 storage stays within O(u_bf16) of the fp32 run, every step.

    First-order error of one update (normwise, relative): the eigenvectors of a factor stored
    in bf16 move by ≤ ‖ΔK‖₂/gap ≤ √d·u·λ_max/gap (Davis–Kahan, entrywise rounding); a basis
    stored in bf16 is off by u per entry; m and v are rounded once per step (u each, v entering
    through √: u/2). Total ≤ (√d·λ_max/gap + 3)·u_bf16 ≈ 0.055 (measured ≤ 1.6·u_bf16 = 0.006).
    """
    if B.namespace_name(xp) == "array_api_strict":
        pytest.skip("array_api_strict has no bfloat16 dtype")
    grads = _rank_structured_grads(STORE_STEPS, STORE_M, STORE_K, seed=5)
    u32, s32 = _soap_run(xp, grads)
    ubf, sbf = _soap_run(xp, grads, storage=storage)
    kinds = STATE_KINDS if storage == "bf16" else tuple(storage)
    for name, a in sbf.arrays().items():
        kind = _kind(name, sbf)
        if kind in STATE_KINDS:
            assert B.format_of(a).name == ("bf16" if kind in kinds else "fp32"), name
    tol = STORE_AMP * U16
    num = np.linalg.norm((ubf - u32).reshape(STORE_STEPS, -1), axis=1)
    den = np.linalg.norm(u32.reshape(STORE_STEPS, -1), axis=1)
    assert den[0] == 0 and num[0] == 0  # the first step only initializes
    assert np.all(num[1:] <= tol * den[1:]), num[1:] / den[1:] / U16
    # and bf16 storage is not a silent no-op: the runs differ
    assert np.max(num[1:] / den[1:]) > U32 * STORE_M * STORE_K


def test_fp64_compute_matches_fp32(xp):
    """compute="fp64" keeps every statistic in fp64 (the update is returned in the gradient's
    fp32) and agrees with the fp32 run to fp32 accuracy: the same first-order bound with
    u_fp32 in place of u_bf16, times γ_d = d·u for the products of length d behind each
    rounding (measured ≤ 9·u_fp32)."""
    grads = _rank_structured_grads(STORE_STEPS, STORE_M, STORE_K, seed=5)
    u32, _ = _soap_run(xp, grads)
    for storage in (None, "fp64"):
        u64, s64 = _soap_run(xp, grads, compute="fp64", storage=storage)
        assert s64.compute == "fp64"
        assert all(B.format_of(a).name == "fp64" for k, a in s64.arrays().items()
                   if k not in COUNTERS)
        tol = STORE_AMP * STORE_M * U32
        num = np.linalg.norm((u64 - u32).reshape(STORE_STEPS, -1), axis=1)
        den = np.linalg.norm(u32.reshape(STORE_STEPS, -1), axis=1)
        assert np.all(num[1:] <= tol * den[1:]), num[1:] / den[1:] / U32


# ---------------------------------------------------------------------------- state record
@pytest.mark.parametrize("method", METHODS)
def test_state_record(xp, method, rng):
    """describe() has one row per array of arrays(), with its shape, format and bytes;
    nbytes is their sum; every array lives in the parameter's library and device; copy() is
    independent of the original in both directions; the update has grad's shape and dtype."""
    shape = (4, 2, 3)
    tx = make(method, precondition_frequency=2)
    for dt in (np.float32, np.float64):
        p = xp.asarray(gaussian(rng, shape).astype(dt))
        state = tx.init(p)
        for _ in range(3):
            u, state = tx.update(xp.asarray(gaussian(rng, shape).astype(dt)), state, p)
            assert tuple(u.shape) == shape and u.dtype == p.dtype
            assert ns_name(u) == B.namespace_name(xp)
        arrays = state.arrays()
        rows = state.describe()
        assert [r.name for r in rows] == list(arrays)
        for r in rows:
            a = arrays[r.name]
            assert r.shape == tuple(a.shape)
            assert ns_name(a) == B.namespace_name(xp)
            assert str(B.device_of(a)) == str(B.device_of(p))
            itemsize = host(a).dtype.itemsize
            assert r.nbytes == math.prod(r.shape) * itemsize
        assert state.nbytes == sum(r.nbytes for r in rows)
        assert {r.name for r in rows} >= {"factor0", "factor1", "factor2", "basis0", "count",
                                          "skipped", "step_ok", *state.moments}

        ck = state.copy()
        frozen = snap(ck)
        orig = snap(state)
        for _ in range(2):
            u, state = tx.update(xp.asarray(gaussian(rng, shape).astype(dt)), state, p)
        assert_same_arrays(frozen, snap(ck), what="copy after updating the original")
        moved = snap(state)
        assert not same_bits(orig["factor0"], moved["factor0"])
        # updating the copy leaves the original alone
        _, ck = tx.update(xp.asarray(gaussian(rng, shape).astype(dt)), ck, p)
        assert_same_arrays(moved, snap(state), what="original after updating the copy")


@pytest.mark.parametrize("method", METHODS)
def test_bf16_parameter_update_is_rounded_fp32(xp, method, rng):
    """A bf16 parameter: statistics in fp32, update returned in bf16, equal to the update of
    the fp32 run on the same (exactly upcast) values rounded to nearest bf16."""
    if B.namespace_name(xp) == "array_api_strict":
        pytest.skip("array_api_strict has no bfloat16 dtype")
    import ml_dtypes

    bf = B.native_dtype(xp, "bf16")
    tx = make(method, lr=1e-2, precondition_frequency=2)
    shape = (4, 3)
    p16 = gaussian(rng, shape).astype(ml_dtypes.bfloat16)
    pa = xp.astype(xp.asarray(p16.astype(np.float32)), bf)
    pb = xp.asarray(p16.astype(np.float32))
    sa, sb = tx.init(pa), tx.init(pb)
    assert sa.param_format == "bf16" and sa.compute == "fp32"
    assert all(B.format_of(v).name == "fp32" for k, v in sa.arrays().items()
               if k not in COUNTERS)
    for _ in range(5):
        g16 = gaussian(rng, shape).astype(ml_dtypes.bfloat16)
        ua, sa = tx.update(xp.astype(xp.asarray(g16.astype(np.float32)), bf), sa, pa)
        ub, sb = tx.update(xp.asarray(g16.astype(np.float32)), sb, pb)
        assert ua.dtype == bf and tuple(ua.shape) == shape
        assert same_bits(host(ua), host(ub).astype(ml_dtypes.bfloat16))
        assert_same_arrays(snap(sa), snap(sb))


# ------------------------------------------------------------------------------ refresh_tol
@pytest.mark.parametrize("method", METHODS)
def test_refresh_tol(xp, method, rng):
    """refresh_tol=1 (‖offdiag(QᵀKQ)‖ ≤ ‖QᵀKQ‖ always holds) skips every refresh: the bases
    keep the bits of the initial eigendecomposition, status "refresh-skipped"; refresh_tol=0
    refreshes them (status "refresh", bases change)."""
    shape = (4, 3)
    grads = [gaussian(rng, shape) for _ in range(7)]
    p = xp.asarray(gaussian(rng, shape))
    for tol, status in ((1.0, "refresh-skipped"), (0.0, "refresh")):
        tx = make(method, precondition_frequency=2, refresh_tol=tol)
        state = tx.init(p)
        _, state = tx.update(xp.asarray(grads[0]), state, p)
        Q_init = [host(b.Q) for b in state.bases]
        for t, g in enumerate(grads[1:], start=1):
            _, state = tx.update(xp.asarray(g), state, p)
            if t % 2 == 0:
                assert state.last_status == status and state.last_refresh == t
                same = [same_bits(q, host(b.Q)) for q, b in zip(Q_init, state.bases)]
                assert all(same) if tol else not any(same), (tol, t)


# ------------------------------------------------------------------------------ hypothesis
@st.composite
def _scenario(draw):
    k = draw(st.integers(1, 3))
    shape = tuple(draw(st.integers(1, 6)) for _ in range(k))
    hp = dict(
        lr=draw(st.floats(0.0, 1.0)),
        betas=(draw(st.floats(0.0, 0.999)), draw(st.floats(0.0, 0.999))),
        shampoo_beta=draw(st.one_of(st.none(), st.floats(0.0, 0.999))),
        eps=draw(st.floats(1e-12, 1.0)),
        weight_decay=draw(st.floats(0.0, 0.1)),
        precondition_frequency=draw(st.integers(1, 4)),
        max_precond_dim=draw(st.integers(1, 8)),
        merge_dims=draw(st.booleans()),
        precondition_1d=draw(st.booleans()),
        normalize_grads=draw(st.booleans()),
        correct_bias=draw(st.booleans()),
    )
    #: G Gᵀ sums ≤ 216 squares, and KL's H scales G by s ≤ 10 on up to two axes (λ ≥ 1/100):
    #: |G| ≤ 1e12 keeps every statistic below fp32's max (3.4e38) with room; below 1e-19 the
    #: squares underflow (to subnormals and zero), which must be harmless.
    log_scale = draw(st.floats(-30.0, 12.0))
    seed = draw(st.integers(0, 2**32 - 1))
    return shape, hp, 10.0 ** log_scale, seed


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_scenario())
def test_random_hyperparameters_stay_finite(scenario):
    """Random shapes (1-D to 3-D, sides 1..6), hyperparameters within their ranges and
    gradient scales from 1e-30 to 1e12: 8 steps of every method keep every state array and
    every update finite."""
    shape, hp, scale, seed = scenario
    rng = np.random.default_rng(seed)
    grads = [gaussian(rng, shape, scale) for _ in range(8)]
    p0 = gaussian(rng, shape)
    for method in METHODS:
        tx = make(method, **hp)
        p = p0.copy()
        state = tx.init(p)
        for g in grads:
            u, state = tx.update(g, state, p)
            assert np.all(np.isfinite(u)), (method, state.last_status)
            p = p + u
        assert all_finite(state), (method, state.last_status)
        assert int(state.skipped) == 0 and state.refresh_failures == 0


@pytest.mark.parametrize("method", [
    "soap", "shampoo", "kl_shampoo", "kl_soap"])
def test_overflowing_statistics_are_reported(method, rng):
    """Finite fp32 gradients of size 1e30 overflow G Gᵀ: no exception, the failed
    eigendecompositions are reported (``refresh_failures``, ``last_status``), and the updates
    (and so the parameter) stay finite."""
    tx = make(method, precondition_frequency=2)
    shape = (4, 3)
    p = gaussian(rng, shape)
    state = tx.init(p)
    statuses = []
    with np.errstate(over="ignore", invalid="ignore"):
        for _ in range(8):
            u, state = tx.update(gaussian(rng, shape, 1e30), state, p)
            statuses.append(state.last_status)
            assert np.all(np.isfinite(u)), (statuses, state.refresh_failures)
            p = p + u
    assert statuses[0].startswith("init-failed")
    assert state.refresh_failures > 0 and int(state.skipped) == 0
    assert any(s.startswith("fallback") for s in statuses)


def test_shampoo_grafting_survives_tiny_eigenvalues(rng):
    """Adam grafting fixes the step length whatever P's scale: with matrix_eps=0 (the
    documented pseudo-inverse choice), exponent −1/2 and gradients of 1e-20 the update stays
    finite."""
    tx = lpc.precond.shampoo(matrix_eps=0.0, exponent=-0.5, weight_decay=0.0)
    shape = (2, 2, 2)
    p = np.zeros(shape, np.float32)
    state = tx.init(p)
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        for _ in range(3):
            u, state = tx.update(gaussian(rng, shape, 1e-20), state, p)
            assert np.all(np.isfinite(u))


@pytest.mark.parametrize("d", [8, 48])
def test_orthogonal_iteration_member_failure(xp, d):
    """A member whose factor holds inf keeps its basis and reports the failure; the others get
    Q ← qr(K Q) with columns sorted by Rayleigh quotient, against an fp64 reference."""
    from linalg_pc.precond._eigen import member_finite, orthogonal_iteration

    rng = np.random.default_rng(12)
    G = rng.standard_normal((3, d, 2 * d))
    K = (G @ np.swapaxes(G, -1, -2) / d).astype(np.float32)
    Q = np.linalg.qr(rng.standard_normal((3, d, d)))[0].astype(np.float32)
    K[1, 0, 0] = np.inf
    Qn, perm, ok = orthogonal_iteration(xp, xp.asarray(K), xp.asarray(Q), "fp32", sort=True)
    np.testing.assert_array_equal(ok, [True, False, True])
    np.testing.assert_array_equal(B.to_numpy(member_finite(xp, xp.asarray(K))),
                                  [True, False, True])
    Qn, perm = B.to_numpy(Qn), B.to_numpy(perm)
    np.testing.assert_array_equal(Qn[1], Q[1])
    np.testing.assert_array_equal(perm[1], np.arange(d))
    for i in (0, 2):
        KQ = K[i].astype(np.float64) @ Q[i]
        order = np.argsort(-np.sum(Q[i] * KQ, axis=0), kind="stable")
        np.testing.assert_array_equal(perm[i], order)
        Qr, Rr = np.linalg.qr(KQ[:, order])
        Qr *= np.sign(np.diagonal(Rr))
        Qi = Qn[i] * np.sign(np.sum(Qn[i] * Qr, axis=0))  # QR is unique up to column signs
        kap = np.linalg.cond(KQ)
        np.testing.assert_allclose(Qi, Qr, atol=50 * d * U32 * kap)
