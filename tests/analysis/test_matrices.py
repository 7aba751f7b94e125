"""Tests of linalg_pc.analysis.matrices: prescribed spectra, storage rounding, seeding, backends."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import linalg_pc as lpc
from linalg_pc import _backend as B
from linalg_pc.analysis import matrices as M

U64 = 2.0**-53
#: Singular values of a float64 product U·diag(σ)·Vᵀ with orthonormal U, V are within
#: C_SV·max(m, n)·u64·σ_max of σ (backward error of the product and of the SVD).
C_SV = 10.0
FORMATS_16 = ("bf16", "fp16")


def _sv(A) -> np.ndarray:
    return np.linalg.svd(B.to_numpy(A).astype(np.float64), compute_uv=False)


def _expected_sigma(k, kappa, mode):
    i = np.arange(k)
    if k == 1:
        return np.ones(1)
    return {
        "geometric": kappa ** (-i / (k - 1)),
        "arithmetic": 1 - i / (k - 1) * (1 - 1 / kappa),
        "one_small": np.r_[np.ones(k - 1), 1 / kappa],
        "one_large": np.r_[1.0, np.full(k - 1, 1 / kappa)],
    }[mode]


# --------------------------------------------------------------------------- randsvd
@pytest.mark.parametrize("mode", ["geometric", "arithmetic", "one_small", "one_large"])
@pytest.mark.parametrize("shape", [(20, 20), (30, 8), (8, 30)])
@pytest.mark.parametrize("kappa", [1.0, 1e3, 1e10])
def test_randsvd_realises_the_singular_values(mode, shape, kappa):
    m, n = shape
    t = lpc.randsvd(m, n, kappa, mode=mode, rng=11)
    assert t.A.shape == shape and t.A.dtype == np.float64
    sv = _sv(t.A)
    tol = C_SV * max(m, n) * U64
    np.testing.assert_allclose(sv, _expected_sigma(min(m, n), kappa, mode), rtol=0, atol=tol)
    # κ: relative error ≤ (tol·κ)/(1 − tol·κ) from σ_min's absolute error
    assert t.kappa == pytest.approx(kappa, rel=2 * tol * kappa)
    assert t.kappa_stored == t.kappa  # fp64 storage: no rounding
    assert t.params["kappa_requested"] == kappa and t.params["mode"] == mode


def test_randsvd_random_mode():
    t = lpc.randsvd(40, 25, 1e6, mode="random", rng=5)
    sv = _sv(t.A)
    tol = C_SV * 40 * U64
    assert sv[0] == pytest.approx(1.0, abs=tol) and sv[-1] == pytest.approx(1e-6, abs=tol)
    assert np.all((sv > 1e-6 - tol) & (sv < 1 + tol))
    # log-uniform interior: log10 σ spread over (−6, 0), not clustered at an end
    inner = np.log10(sv[1:-1])
    assert inner.min() < -4 and inner.max() > -2


def test_randsvd_haar_factors_have_no_sign_bias():
    """QR of a Gaussian is Haar only after R's diagonal is made positive (Mezzadri 2007)."""
    g = np.random.default_rng(0)
    n, trials = 4, 4000
    x = np.array([M._haar(g, n, n)[0, 0] for _ in range(trials)])
    # Haar: first column uniform on the sphere, E[q11] = 0, E[q11²] = 1/n
    se = math.sqrt(1 / n / trials)
    assert abs(x.mean()) < 4 * se
    assert abs((x**2).mean() - 1 / n) < 4 * np.std(x**2) / math.sqrt(trials)
    Q = M._haar(g, 9, 5)
    assert np.abs(Q.T @ Q - np.eye(5)).max() < C_SV * 9 * U64


@pytest.mark.parametrize("fmt", FORMATS_16 + ("fp32", "tf32"))
def test_storage_is_one_correct_rounding_of_the_fp64_matrix(fmt):
    ref = lpc.randsvd(12, 7, 1e4, rng=21)
    t = lpc.randsvd(12, 7, 1e4, dtype=fmt, rng=21)
    assert t.kappa == ref.kappa  # κ of the same float64 matrix before rounding
    stored = B.to_numpy(t.A)
    if fmt == "tf32":
        assert stored.dtype == np.float32
        expect = lpc.round_to(ref.A, "tf32").astype(np.float32)
        assert np.array_equal(stored, expect)
    else:
        expect = lpc.to_storage(ref.A, fmt)
        assert stored.dtype == expect.dtype
        assert np.array_equal(stored.view(np.uint8), expect.view(np.uint8))
    # |â − a| ≤ u·|a| (all entries are in the normal range here)
    u = lpc.unit_roundoff(fmt)
    err = np.abs(stored.astype(np.float64) - ref.A)
    assert np.all(err <= u * np.abs(ref.A))
    assert t.kappa_stored == lpc.kappa(stored)


@pytest.mark.parametrize("fmt", FORMATS_16)
def test_kappa_stored_obeys_weyl_and_caps(fmt):
    """Weyl: |σ_i(Â) − σ_i(A)| ≤ ||Â − A||₂ ≤ u·||A||_F; huge requested κ is capped."""
    u = lpc.unit_roundoff(fmt)
    for n, kappa in [(10, 10.0), (30, 1e3), (30, 1e12), (50, 1e12)]:
        ref = lpc.randsvd(n, n, kappa, rng=n)
        t = lpc.randsvd(n, n, kappa, dtype=fmt, rng=n)
        delta = u * np.linalg.norm(ref.A)
        s = _sv(ref.A)
        s_st = _sv(t.A)
        assert np.all(np.abs(s_st - s) <= delta * (1 + 1e-12))
        lo = (s[0] - delta) / (s[-1] + delta)
        assert t.kappa_stored >= lo * (1 - 1e-12)
        if s[-1] > delta:
            assert t.kappa_stored <= (s[0] + delta) / (s[-1] - delta) * (1 + 1e-12)
        if kappa >= 1e12:
            assert t.kappa == pytest.approx(kappa, rel=1e-2)
            # capped near 1/u times a power of n, far below the requested κ
            assert t.kappa_stored < 1e-3 * kappa
            assert t.kappa_stored < n**2 / u


def test_kappa_stored_differs_from_kappa_for_hilbert_bf16():
    t = lpc.analysis.hilbert(8, dtype="bf16")
    assert t.kappa > 1e9
    assert 1 / lpc.unit_roundoff("bf16") / 10 < t.kappa_stored < 1e-3 * t.kappa


# --------------------------------------------------------------------------- libraries
GENERATORS = [
    ("randsvd", lambda **kw: lpc.randsvd(6, 4, 50.0, **kw)),
    ("kahan", lambda **kw: lpc.analysis.kahan(5, **kw)),
    ("graded", lambda **kw: lpc.analysis.graded(6, 4, **kw)),
    ("lauchli", lambda **kw: lpc.analysis.lauchli(4, **kw)),
    ("hilbert", lambda **kw: lpc.analysis.hilbert(5, **kw)),
    ("rank_deficient", lambda **kw: lpc.analysis.rank_deficient(6, 5, 2, **kw)),
    ("scaled", lambda **kw: lpc.analysis.scaled(6, 4, 10.0, "underflow", **kw)),
    ("zero", lambda **kw: lpc.analysis.zero(3, 2, **kw)),
    ("diagonal", lambda **kw: lpc.analysis.diagonal(5, 4, 10.0, **kw)),
    ("triangular", lambda **kw: lpc.analysis.triangular(4, 6, 10.0, lower=True, **kw)),
]


@pytest.mark.parametrize("name,gen", GENERATORS, ids=[g[0] for g in GENERATORS])
def test_every_generator_in_every_namespace(xp, name, gen):
    for fmt in ("fp64", "fp32"):
        ref = gen(rng=3, dtype=fmt)  # NumPy, the default
        assert isinstance(ref.A, np.ndarray)
        t = gen(rng=3, xp=xp, dtype=fmt)
        assert B.namespace_name(B.array_namespace(t.A)) == B.namespace_name(xp)
        assert B.format_of(t.A).name == fmt
        assert np.array_equal(B.to_numpy(t.A), ref.A)
        assert t.kappa == ref.kappa and t.kappa_stored == ref.kappa_stored
        assert name in t.params["generator"] and t.params["dtype"] == fmt


@pytest.mark.parametrize("fmt", FORMATS_16)
@pytest.mark.parametrize("lib", ["numpy", "torch"])
def test_16bit_storage_in_numpy_and_torch(lib, fmt):
    if lib == "torch":
        torch = pytest.importorskip("torch")
        import array_api_compat.torch as xp_lib

        target = {"bf16": torch.bfloat16, "fp16": torch.float16}[fmt]
    else:
        xp_lib = None
        target = lpc.to_storage(np.zeros(1), fmt).dtype
    ref = lpc.randsvd(9, 5, 1e3, dtype=fmt, rng=8)
    t = lpc.randsvd(9, 5, 1e3, dtype=fmt, rng=8, xp=xp_lib)
    assert t.A.dtype == target
    assert np.array_equal(B.to_numpy(t.A).view(np.uint16), ref.A.view(np.uint16))
    assert t.kappa_stored == ref.kappa_stored != t.kappa
    # the dtype may also be given as the library's own dtype
    t2 = lpc.randsvd(9, 5, 1e3, dtype=target, rng=8, xp=xp_lib)
    assert np.array_equal(B.to_numpy(t2.A).view(np.uint16), ref.A.view(np.uint16))


def test_torch_module_as_xp():
    torch = pytest.importorskip("torch")
    t = lpc.randsvd(4, 3, 2.0, dtype="bf16", rng=1, xp=torch)
    assert isinstance(t.A, torch.Tensor) and t.A.dtype == torch.bfloat16


def test_unstorable_format_is_refused_before_work():
    import array_api_strict

    g = np.random.default_rng(4)
    state = g.bit_generator.state
    with pytest.raises(TypeError, match="dtype"):
        lpc.randsvd(4, 3, 2.0, dtype="bf16", rng=g, xp=array_api_strict)
    with pytest.raises(TypeError, match="dtype"):
        lpc.matrix_suite(4, 3, dtype="fp16", rng=g, xp=array_api_strict)
    assert g.bit_generator.state == state
    with pytest.raises(TypeError, match="xp"):
        lpc.randsvd(4, 3, 2.0, xp="numpy")


# --------------------------------------------------------------------------- seeding
def test_seeding_is_reproducible():
    a = lpc.randsvd(7, 5, 30.0, mode="random", rng=123)
    b = lpc.randsvd(7, 5, 30.0, mode="random", rng=123)
    c = lpc.randsvd(7, 5, 30.0, mode="random", rng=124)
    assert np.array_equal(a.A, b.A) and not np.array_equal(a.A, c.A)
    g1, g2 = np.random.default_rng(9), np.random.default_rng(9)
    s1 = lpc.matrix_suite(6, 4, rng=g1)
    s2 = lpc.matrix_suite(6, 4, rng=g2)
    assert [t.name for t in s1] == [t.name for t in s2]
    assert all(np.array_equal(x.A, y.A) for x, y in zip(s1, s2))
    # a Generator is advanced, so two draws from it differ
    g = np.random.default_rng(9)
    first = lpc.analysis.graded(5, 5, rng=g).A
    assert not np.array_equal(first, lpc.analysis.graded(5, 5, rng=g).A)


def test_rng_type_is_checked():
    with pytest.raises(TypeError, match="rng"):
        lpc.randsvd(3, 3, 2.0, rng=1.5)


# --------------------------------------------------------------------------- the classics
def test_kahan_entries_and_conditioning():
    n, th = 6, 1.2
    t = lpc.analysis.kahan(n, th, pert=0.0)
    s, c = math.sin(th), math.cos(th)
    A = t.A
    for i in range(n):
        for j in range(n):
            expect = 0.0 if j < i else (s**i if j == i else -c * s**i)
            assert A[i, j] == pytest.approx(expect, rel=4 * U64, abs=0)
    p = lpc.analysis.kahan(n)
    d = np.diagonal(p.A) - np.diagonal(A)
    np.testing.assert_allclose(d, 25 * np.finfo(float).eps * np.arange(n, 0, -1), rtol=1e-3)
    assert p.kappa == pytest.approx(np.linalg.cond(p.A), rel=1e-10)
    # κ grows exponentially with n; no diagonal entry reveals it
    ks = [lpc.analysis.kahan(k).kappa for k in (10, 20, 30)]
    assert ks[0] < ks[1] < ks[2] and ks[2] > 1e5
    assert np.min(np.abs(np.diagonal(lpc.analysis.kahan(30).A))) > 0.1
    # rows: zero-padded or truncated
    assert np.array_equal(lpc.analysis.kahan(4, m=6).A[:4], lpc.analysis.kahan(4).A)
    assert np.all(lpc.analysis.kahan(4, m=6).A[4:] == 0)
    assert np.array_equal(lpc.analysis.kahan(4, m=2).A, lpc.analysis.kahan(4).A[:2])


def test_lauchli():
    n, e = 5, 2.0**-12
    t = lpc.analysis.lauchli(n, e)
    expect = np.vstack([np.ones((1, n)), e * np.eye(n)])
    assert np.array_equal(t.A, expect)
    assert t.kappa == pytest.approx(math.sqrt(n + e * e) / e, rel=C_SV * n * U64 / e)
    # default ε = sqrt(u) of the storage format: AᵀA = 11ᵀ + u·I
    for fmt in ("bf16", "fp16", "fp32", "fp64"):
        t = lpc.analysis.lauchli(3, dtype=fmt)
        assert t.params["eps"] == math.sqrt(lpc.unit_roundoff(fmt))
    padded = lpc.analysis.lauchli(3, e, m=7)
    assert padded.A.shape == (7, 3) and np.all(padded.A[4:] == 0)
    assert padded.kappa == pytest.approx(lpc.analysis.lauchli(3, e).kappa, rel=1e-12)


def test_hilbert():
    t = lpc.analysis.hilbert(4)
    i, j = np.indices((4, 4))
    assert np.array_equal(t.A, 1.0 / (i + j + 1))
    assert t.kappa == pytest.approx(15513.738738929, rel=1e-9)  # κ₂(H₄), Higham ASNA §28.1
    assert lpc.analysis.hilbert(5).kappa == pytest.approx(476607.25024, rel=1e-9)
    assert lpc.analysis.hilbert(3, m=5).A.shape == (5, 3)


def test_graded():
    t = lpc.analysis.graded(8, 5, base=0.5, by="rows", rng=2)
    ref = np.random.default_rng(2).standard_normal((8, 5))
    assert np.array_equal(t.A, ref * 0.5 ** np.arange(8)[:, None])
    t = lpc.analysis.graded(4, 6, base=0.25, by="columns", rng=2)
    ref = np.random.default_rng(2).standard_normal((4, 6))
    assert np.array_equal(t.A, ref * 0.25 ** np.arange(6)[None, :])
    # default grading spans 1/u of the storage format
    for fmt in ("bf16", "fp16", "fp64"):
        t = lpc.analysis.graded(9, 3, dtype=fmt, rng=0)
        assert t.params["base"] ** 8 == pytest.approx(lpc.unit_roundoff(fmt), rel=1e-12)
    assert lpc.analysis.graded(1, 4, rng=0).params["base"] == 1.0


@pytest.mark.parametrize("shape,rank", [((10, 6), 3), ((6, 10), 1), ((5, 5), 0), ((7, 4), 4)])
def test_rank_deficient(shape, rank):
    m, n = shape
    t = lpc.analysis.rank_deficient(m, n, rank, kappa=100.0, rng=1)
    sv = _sv(t.A)
    tol = C_SV * max(m, n) * U64
    np.testing.assert_allclose(sv[:rank], _expected_sigma(rank, 100.0, "geometric")
                               if rank else [], atol=tol, rtol=0)
    assert np.all(sv[rank:] <= tol)
    assert t.params["rank"] == rank
    if rank < min(m, n):
        assert t.kappa > 1 / tol / 2


@pytest.mark.parametrize("fmt", ["bf16", "fp16", "fp32", "fp64"])
@pytest.mark.parametrize("where", ["underflow", "overflow"])
def test_scaled_sits_at_lapacks_limits(fmt, where):
    f = lpc.get_format(fmt)
    small = 0.25 * f.tiny / f.eps
    target = small if where == "underflow" else 1 / small
    t = lpc.analysis.scaled(8, 5, 2.0, where, dtype=fmt, rng=4)
    assert t.params["sigma_max"] == target
    A = B.to_numpy(t.A).astype(np.float64)
    assert np.all(np.isfinite(A)) and np.abs(A).max() <= target
    sv = _sv(A)
    u = f.unit_roundoff
    assert sv[0] == pytest.approx(target, rel=2 * u * math.sqrt(40))
    assert t.kappa == pytest.approx(2.0, rel=1e-12)
    if where == "overflow":
        assert target >= f.max * f.eps / 4  # within 4/eps of overflow
    else:
        assert target <= 4 * f.tiny / f.eps  # within 1/eps of underflow


def test_zero_diagonal_triangular():
    z = lpc.analysis.zero(3, 4, dtype="bf16")
    assert z.A.shape == (3, 4) and not np.any(z.A.astype(float)) and z.kappa == math.inf
    d = lpc.analysis.diagonal(5, 3, 1e4, rng=6)
    assert np.count_nonzero(d.A) == 3
    np.testing.assert_allclose(np.abs(np.diagonal(d.A)), [1, 1e-2, 1e-4], rtol=4 * U64)
    assert d.kappa == pytest.approx(1e4, rel=8 * U64)
    for m, n in [(6, 4), (4, 6), (5, 5)]:
        up = lpc.analysis.triangular(m, n, 1e3, rng=2)
        lo = lpc.analysis.triangular(m, n, 1e3, lower=True, rng=2)
        assert up.A.shape == lo.A.shape == (m, n)
        assert np.all(np.tril(up.A, -1) == 0) and np.all(np.triu(lo.A, 1) == 0)
        tol = C_SV * max(m, n) * U64
        g = _expected_sigma(min(m, n), 1e3, "geometric")
        np.testing.assert_allclose(_sv(up.A), g, atol=tol, rtol=0)
        np.testing.assert_allclose(_sv(lo.A), g, atol=tol, rtol=0)


# --------------------------------------------------------------------------- the suite
SIZES = (0, 1, 2, 3, 5, 10)


@pytest.mark.parametrize("fmt", ["fp64", "bf16"])
def test_matrix_suite_every_small_shape(fmt):
    u = lpc.unit_roundoff(fmt)
    for m in SIZES:
        for n in SIZES:
            suite = lpc.matrix_suite(m, n, dtype=fmt, rng=m * 31 + n)
            names = [t.name for t in suite]
            assert len(names) == len(set(names)), names
            assert names[:4] == ["zero", "diagonal", "upper_triangular", "lower_triangular"]
            randsvd_k = [t.params["kappa_requested"] for t in suite
                         if t.params["generator"] == "randsvd"]
            assert randsvd_k == [1.0, math.sqrt(0.1 / u), 0.1 / u]
            for t in suite:
                assert t.A.shape == (m, n) and isinstance(t, lpc.TestMatrix)
                assert B.format_of(t.A).name == fmt
                assert t.kappa >= 1.0 and t.kappa_stored >= 1.0
                assert np.all(np.isfinite(B.to_numpy(t.A).astype(float)))
                if min(m, n) == 0:
                    assert t.kappa == t.kappa_stored == 1.0
            gens = {t.params["generator"] for t in suite}
            assert ("lauchli" in gens) == (n >= 1 and m >= n + 1)
            assert ("rank_deficient" in gens) == (min(m, n) >= 2)
            assert ("kahan" in gens) == (n >= 2 and m >= 1)


def test_matrix_suite_kappas_and_namespaces(xp):
    suite = lpc.matrix_suite(6, 4, dtype="fp32", kappas=(1.0, 1e2, 1e2, 1e5), rng=0, xp=xp)
    ks = [t.params["kappa_requested"] for t in suite if t.params["generator"] == "randsvd"]
    assert ks == [1.0, 1e2, 1e5]  # duplicates dropped, order kept
    for t in suite:
        assert B.namespace_name(B.array_namespace(t.A)) == B.namespace_name(xp)


@settings(max_examples=30, deadline=None)
@given(m=st.integers(0, 14), n=st.integers(0, 14), seed=st.integers(0, 2**32 - 1),
       fmt=st.sampled_from(["fp64", "bf16", "fp16"]))
def test_matrix_suite_properties(m, n, seed, fmt):
    suite = lpc.matrix_suite(m, n, dtype=fmt, rng=seed)
    assert len({t.name for t in suite}) == len(suite) >= 9
    for t in suite:
        A = B.to_numpy(t.A).astype(np.float64)
        assert A.shape == (m, n) and np.all(np.isfinite(A))
        assert t.kappa_stored == lpc.kappa(t.A)
        if t.params["generator"] in ("zero", "rank_deficient") and min(m, n) > 0:
            assert t.kappa_stored > 1 / (10 * lpc.unit_roundoff(fmt))


def test_docstring_examples():
    import doctest

    res = doctest.testmod(M, optionflags=doctest.ELLIPSIS)
    assert res.attempted > 0 and res.failed == 0


def test_test_matrix_is_frozen_and_not_collected():
    t = lpc.analysis.zero(1, 1)
    with pytest.raises(AttributeError):
        t.name = "other"
    assert lpc.TestMatrix.__test__ is False
    assert t.shape == (1, 1)
    assert repr(t) == ("TestMatrix(name='zero', shape=(1, 1), numpy fp64, kappa=inf, "
                       "kappa_stored=inf)")


def test_params_are_json_serialisable():
    import json

    for t in lpc.matrix_suite(6, 4, dtype="bf16", rng=0):
        back = json.loads(json.dumps(t.params))
        assert back == t.params and back["dtype"] == "bf16" and back["m"] == 6


# --------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("call,arg", [
    (lambda: lpc.randsvd(-1, 3, 2.0), "m"),
    (lambda: lpc.randsvd(3, -2, 2.0), "n"),
    (lambda: lpc.randsvd(3, 3, 0.5), "kappa"),
    (lambda: lpc.randsvd(3, 3, float("nan")), "kappa"),
    (lambda: lpc.randsvd(3, 3, float("inf")), "kappa"),
    (lambda: lpc.randsvd(3, 3, 2.0, mode="log"), "mode"),
    (lambda: lpc.randsvd(3, 3, 2.0, dtype="fp8"), "dtype"),
    (lambda: lpc.analysis.rank_deficient(4, 3, 4), "rank"),
    (lambda: lpc.analysis.rank_deficient(4, 3, -1), "rank"),
    (lambda: lpc.analysis.rank_deficient(4, 3, 1, kappa=0.1), "kappa"),
    (lambda: lpc.analysis.scaled(4, 3, 2.0, "middle"), "where"),
    (lambda: lpc.analysis.kahan(4, theta=0.0), "theta"),
    (lambda: lpc.analysis.kahan(4, pert=-1.0), "pert"),
    (lambda: lpc.analysis.kahan(-4), "n"),
    (lambda: lpc.analysis.lauchli(3, m=3), "m"),
    (lambda: lpc.analysis.lauchli(3, eps=0.0), "eps"),
    (lambda: lpc.analysis.graded(3, 3, base=-0.5), "base"),
    (lambda: lpc.analysis.graded(3, 3, by="diag"), "by"),
    (lambda: lpc.analysis.diagonal(3, 3, 0.0), "kappa"),
    (lambda: lpc.analysis.triangular(3, 3, 0.9), "kappa"),
    (lambda: lpc.matrix_suite(3, -3), "n"),
    (lambda: lpc.matrix_suite(3, 3, kappas=(1.0, 0.5)), "kappas"),
])
def test_bad_input_raises_value_error_naming_the_argument(call, arg):
    with pytest.raises(ValueError, match=arg):
        call()


def test_bad_types_raise_type_error():
    with pytest.raises(TypeError, match="m"):
        lpc.randsvd(2.5, 3, 2.0)
    with pytest.raises(TypeError, match="n"):
        lpc.analysis.zero(2, True)
    with pytest.raises(TypeError, match="kappa"):
        lpc.randsvd(2, 3, "big")
    with pytest.raises(TypeError, match="lower"):
        lpc.analysis.triangular(3, 3, 2.0, lower="yes")


def test_validation_happens_before_any_random_draw():
    g = np.random.default_rng(1)
    state = g.bit_generator.state
    for call in (lambda: lpc.randsvd(3, 3, 0.5, rng=g),
                 lambda: lpc.analysis.rank_deficient(3, 3, 5, rng=g),
                 lambda: lpc.analysis.scaled(3, 3, 2.0, "nowhere", rng=g),
                 lambda: lpc.matrix_suite(3, 3, kappas=(0.0,), rng=g)):
        with pytest.raises(ValueError):
            call()
    assert g.bit_generator.state == state


# --------------------------------------------------------------------------- properties
@settings(max_examples=40, deadline=None)
@given(m=st.integers(0, 12), n=st.integers(0, 12), log_k=st.floats(0, 8),
       mode=st.sampled_from(lpc.analysis.SINGULAR_VALUE_MODES), seed=st.integers(0, 2**32 - 1),
       fmt=st.sampled_from(["fp64", "fp32", "bf16", "fp16"]))
def test_randsvd_properties(m, n, log_k, mode, seed, fmt):
    kappa = 10.0**log_k
    t = lpc.randsvd(m, n, kappa, mode=mode, dtype=fmt, rng=seed)
    assert t.A.shape == (m, n) and B.format_of(t.A).name == fmt
    k = min(m, n)
    if k == 0:
        assert t.kappa == t.kappa_stored == 1.0
        return
    sv = _sv(lpc.randsvd(m, n, kappa, mode=mode, rng=seed).A)
    tol = C_SV * max(m, n) * U64
    assert sv[0] == pytest.approx(1.0, abs=tol)
    expect = kappa if k >= 2 else 1.0
    assert t.kappa == pytest.approx(expect, rel=2 * tol * expect)
    assert np.all(sv >= 1 / kappa - tol) and np.all(sv <= 1 + tol)
    # Weyl for the stored matrix
    u = lpc.unit_roundoff(fmt)
    delta = u * np.linalg.norm(sv) + tol
    assert np.all(np.abs(_sv(t.A) - sv) <= delta)
