"""The fused step kernels (linalg_pc/_kernels/cpu_precond.py) against the array expressions
they replace, bit for bit, and the transforms with and without them.

Each kernel promises the exact operations of the expressions in linalg_pc/precond (both
products of ``b·x + c·y`` rounded, bf16 state rounded to nearest even through the library's
converters), so the references below are those expressions in NumPy and the comparisons are
exact. Both twins (serial and parallel) of every kernel run.
"""

from __future__ import annotations

import numpy as np
import pytest

import linalg_pc as lpc
from linalg_pc._backend import to_numpy as to_np
from linalg_pc._kernels import cpu_precond as K
from linalg_pc.precond import _fused

BF16 = "bf16"


def _special(rng, n, dtype):
    x = rng.standard_normal(n).astype(dtype)
    x[:8] = [0.0, -0.0, 1e-40, -1e-40, 3e38, -3e38, 1.0, -1.0]
    return x


def _bits(x):
    return np.asarray(x).view(np.uint16 if np.asarray(x).dtype.itemsize == 2 else
                              {4: np.uint32, 8: np.uint64}[np.asarray(x).dtype.itemsize])


def _to_bf16(x32):
    return np.asarray(lpc.to_storage(x32, BF16)).view(np.uint16)


def _ml_bf16():
    import ml_dtypes

    return np.dtype(ml_dtypes.bfloat16)


def _dec(bits):
    return np.asarray(lpc.from_storage(bits.view(_ml_bf16())), dtype=np.float32)


@np.errstate(over="ignore", invalid="ignore")
def _ref_adam(g, m, v, b1, b2, eps, bf16):
    dt = g.dtype.type
    cb1, cc1, cb2, cc2 = dt(b1), dt(1.0 - b1), dt(b2), dt(1.0 - b2)
    if bf16:
        mn = _to_bf16(cb1 * _dec(m) + cc1 * g)
        vn = _to_bf16(cb2 * _dec(v) + cc2 * (g * g))
        return mn, vn, _dec(mn) / (np.sqrt(_dec(vn)) + eps)
    mn = cb1 * m + cc1 * g
    vn = cb2 * v + cc2 * (g * g)
    return mn, vn, mn / (np.sqrt(vn) + eps)


TWINS = ["serial", "parallel"]


@pytest.mark.parametrize("twin", TWINS)
@pytest.mark.parametrize("fmt", ["fp32", "fp64", BF16])
def test_adam_moments_equal_the_expressions(fmt, twin, rng):
    n = 3001
    dt = np.float64 if fmt == "fp64" else np.float32
    g = _special(rng, n, dt)
    g[8:11] = [np.inf, -np.inf, np.nan]  # the kernel itself passes non-finite values through
    m = _special(rng, n, dt)
    v = np.abs(_special(rng, n, dt))
    if fmt == BF16:
        m, v = _to_bf16(m), _to_bf16(v)
    rm, rv, rout = _ref_adam(g, m.copy(), v.copy(), 0.9, 0.95, 1e-8, fmt == BF16)
    out = np.empty_like(g)
    kern = K._adam_bf16 if fmt == BF16 else K._adam
    dtype = g.dtype.type
    getattr(kern, twin)(g, m, v, out, dtype(0.9), dtype(1 - 0.9), dtype(0.95),
                        dtype(1 - 0.95), dtype(1e-8))
    np.testing.assert_array_equal(_bits(m), _bits(rm))
    np.testing.assert_array_equal(_bits(v), _bits(rv))
    np.testing.assert_array_equal(_bits(out), _bits(rout))


@pytest.mark.parametrize("fmt", ["fp32", BF16])
def test_adam_moments_in_place_output(fmt, rng):
    g = rng.standard_normal(5000).astype(np.float32)
    m = rng.standard_normal(5000).astype(np.float32)
    v = np.abs(rng.standard_normal(5000)).astype(np.float32)
    if fmt == BF16:
        m, v = _to_bf16(m), _to_bf16(v)
    _, _, rout = _ref_adam(g, m.copy(), v.copy(), 0.95, 0.95, 1e-8, fmt == BF16)
    K.adam_moments(g, m, v, g, 0.95, 0.95, 1e-8)  # out = g
    np.testing.assert_array_equal(g.view(np.uint32), rout.view(np.uint32))


@pytest.mark.parametrize("twin", TWINS)
@pytest.mark.parametrize("fmt", ["fp32", "fp64", BF16])
def test_ema_equals_the_expression(fmt, twin, rng):
    dt = np.float64 if fmt == "fp64" else np.float32
    S = _special(rng, 4099, dt)
    Kx = _special(rng, 4099, dt)
    b = dt(0.95)
    c = dt(1 - 0.95)
    if fmt == BF16:
        Kb = _to_bf16(Kx)
        ref = _to_bf16(b * _dec(Kb) + c * S)
        getattr(K._ema_bf16, twin)(Kb, S, b, c)
        np.testing.assert_array_equal(Kb, ref)
    else:
        ref = Kx * b  # the expression: K *= b; K += c * S
        ref += c * S
        getattr(K._ema, twin)(Kx, S, b, c)
        np.testing.assert_array_equal(_bits(Kx), _bits(ref))


@pytest.mark.parametrize("twin", TWINS)
@pytest.mark.parametrize("wd", [False, True])
@pytest.mark.parametrize("dt", [np.float32, np.float64])
def test_assemble_equals_the_expression(dt, wd, twin, rng):
    D = _special(rng, 2049, dt)
    P = _special(rng, 2049, dt)
    ss = np.asarray(dt(2.7e-3))
    lam = 3e-3 * 0.01
    ref = -ss * D
    if wd:
        ref = ref - lam * (P + ref)
    out = np.empty_like(D)
    getattr(K._assemble, twin)(D, P, out, ss.reshape(1), dt(lam), wd)
    np.testing.assert_array_equal(_bits(out), _bits(ref))


@pytest.mark.parametrize("fmt", ["fp32", "fp64", BF16])
@pytest.mark.parametrize("n", [0, 1, 5000, 300_000])
def test_all_finite_finds_every_position(fmt, n, rng):
    dt = np.float64 if fmt == "fp64" else np.float32
    x = rng.standard_normal(n).astype(dt)
    conv = _to_bf16 if fmt == BF16 else (lambda a: a)
    assert K.all_finite(conv(x))
    for pos in sorted({0, n // 2, n - 1}) if n else []:
        for bad in (np.nan, np.inf, -np.inf):
            y = x.copy()
            y[pos] = bad
            assert not K.all_finite(conv(y)), (pos, bad)
    big = np.full(n, np.finfo(dt).max, dtype=dt)  # the largest finite value is finite
    assert K.all_finite(big) or fmt == BF16


def test_host_view_shares_memory_and_declines_the_rest(rng):
    torch = pytest.importorskip("torch")
    x = torch.zeros(4, 3)
    h = K.host_view(x)
    h[5] = 7.0
    assert float(x[1, 2]) == 7.0
    b = torch.zeros(3, dtype=torch.bfloat16)
    K.host_view(b)[1] = 0x3F80  # 1.0 in bf16
    assert float(b[1]) == 1.0
    assert K.host_view(x.mT) is None  # not contiguous
    assert K.host_view(torch.zeros(3, dtype=torch.float16)) is None
    assert K.host_view(torch.zeros(3, requires_grad=True)) is None
    assert K.host_view(np.zeros((3, 4))[:, ::2]) is None
    assert K.host_view([1.0]) is None


# --------------------------------------------------------------------------- transforms
METHODS = ["soap", "kl_soap", "shampoo", "kl_shampoo"]


def _run(method, storage, fuse, steps, grads, p0, monkeypatch, **kw):
    monkeypatch.setattr(_fused, "FUSE", fuse)
    tx = getattr(lpc.precond, method)(precondition_frequency=4, storage=storage, **kw)
    p = p0.copy()
    st = tx.init(p)
    ups = []
    for t in range(steps):
        u, st = tx.update(grads[t], st, p)
        ups.append(np.array(u))
        p = p + u
    return ups, st


@pytest.mark.parametrize("storage", [None, BF16])
@pytest.mark.parametrize("method", METHODS)
def test_fused_path_equals_expressions_bitwise_numpy(method, storage, rng, monkeypatch):
    """NumPy: every step (refreshes, a skipped non-finite gradient) gives the same bits with
    and without the kernels."""
    shape = (7, 5)
    steps = 11
    grads = [rng.standard_normal(shape).astype(np.float32) for _ in range(steps)]
    grads[6][2, 3] = np.nan
    p0 = rng.standard_normal(shape).astype(np.float32)
    u1, s1 = _run(method, storage, True, steps, grads, p0, monkeypatch)
    u0, s0 = _run(method, storage, False, steps, grads, p0, monkeypatch)
    for a, b in zip(u1, u0):
        np.testing.assert_array_equal(a.view(np.uint32), b.view(np.uint32))
    for k, a in s1.arrays().items():
        np.testing.assert_array_equal(np.atleast_1d(to_np(a)).view(np.uint8),
                                      np.atleast_1d(to_np(s0.arrays()[k])).view(np.uint8), k)
    assert int(s1.skipped) == int(s0.skipped) == 1


@pytest.mark.parametrize("method", ["soap", "shampoo"])
def test_fused_path_on_torch_matches_expressions(method, rng, monkeypatch):
    """PyTorch CPU: the factor EMA runs inside the product (baddbmm: β·K + α·G Gᵀ rounded once
    instead of three times), everything else bit for bit; after 11 steps with two refreshes
    the updates agree to a few units of fp32 rounding per step, relative to their size."""
    torch = pytest.importorskip("torch")
    shape = (2, 6, 5)
    steps = 11
    grads = [torch.from_numpy(rng.standard_normal(shape).astype(np.float32))
             for _ in range(steps)]
    p0 = torch.from_numpy(rng.standard_normal(shape).astype(np.float32))
    out = {}
    for fuse in (True, False):
        monkeypatch.setattr(_fused, "FUSE", fuse)
        tx = getattr(lpc.precond, method)(precondition_frequency=4)
        p = p0.clone()
        st = tx.init(p, batched=True)
        ups = []
        for g in grads:
            u, st = tx.update(g, st, p)
            ups.append(u.numpy().astype(np.float64))
            p = p + u
        out[fuse] = ups
    u32 = 2.0 ** -24
    for t, (a, b) in enumerate(zip(out[True], out[False]), start=1):
        scale = np.abs(b).max()
        # each step's statistics differ by O(u) relative; the eigenbases of a well-separated
        # 6×6 / 5×5 factor move by O(u·κ) with κ ≈ 10² here: 10³·u·t bounds it with margin
        assert np.abs(a - b).max() <= 1e3 * u32 * t * max(scale, 1e-30), t


def test_fused_path_applies_to_host_arrays_only():
    x = np.ones((3, 4), np.float32)
    assert _fused.host_step(x, "fp32") is True
    x[1, 1] = np.inf
    assert _fused.host_step(x, "fp32") is False
    assert _fused.host_step(np.ones(3), "fp32") is None  # fp64 data, fp32 arithmetic
    import array_api_strict as xs

    assert _fused.host_step(xs.ones((3, 4)), "fp32") is None


@pytest.mark.gpu
@pytest.mark.parametrize("dt", ["float32", "float64"])
def test_cupy_kernels_equal_the_expressions(dt, rng):
    """The CuPy kernels (linalg_pc/_kernels/gpu_precond.py) against the same array expressions
    on the device, bit for bit, with the decay rates gated by a device flag."""
    from conftest import HAS_CUPY

    if not HAS_CUPY:
        pytest.skip("no usable CUDA device for CuPy")
    import cupy as cp

    from linalg_pc._kernels import gpu_precond as GK

    n = 70001
    g = cp.asarray(_special(rng, n, dt))
    m = cp.asarray(_special(rng, n, dt))
    v = cp.abs(cp.asarray(_special(rng, n, dt)))
    for ok in (True, False):
        okd = cp.asarray(ok)
        one, zero = cp.ones((), dt), cp.zeros((), dt)
        b1 = cp.where(okd, cp.full((), 0.9, dt), one)
        c1 = cp.where(okd, cp.full((), 0.1, dt), zero)
        b2 = cp.where(okd, cp.full((), 0.95, dt), one)
        c2 = cp.where(okd, cp.full((), 1 - 0.95, dt), zero)
        rm, rv = m * b1, v * b2
        rm += c1 * g
        rv += c2 * (g * g)
        rout = rm / (cp.sqrt(rv) + 1e-8)
        m2, v2 = m.copy(), v.copy()
        out = GK.adam_moments(g, m2, v2, b1, c1, b2, c2, 1e-8)
        for a, b in ((m2, rm), (v2, rv), (out, rout)):
            np.testing.assert_array_equal(_bits(cp.asnumpy(a)), _bits(cp.asnumpy(b)))
        K2 = m.copy()
        GK.ema(K2, g, b1, c1)
        rK = m * b1
        rK += c1 * g
        np.testing.assert_array_equal(_bits(cp.asnumpy(K2)), _bits(cp.asnumpy(rK)))
        ss = cp.full((), 2.7e-3, dt)
        okf = okd.astype(dt)
        ref = -ss * g
        ref = (ref - 3e-5 * (m + ref)) * okf
        np.testing.assert_array_equal(_bits(cp.asnumpy(GK.assemble(g, m, ss, 3e-5, okf))),
                                      _bits(cp.asnumpy(ref)))


def test_twins_are_separate_compilations():
    """Each kernel is compiled twice under separate names (Numba's disk cache keys on the
    qualified name, not on ``parallel=True``)."""
    from linalg_pc._kernels import _twins

    pairs = [t for key, t in _twins._REGISTRY.items()
             if key.startswith("linalg_pc._kernels.cpu_precond.")]
    assert len(pairs) == 6  # finite test, moments (2), EMA (2), update
    for t in pairs:
        assert t.parallel.targetoptions.get("parallel")
        assert not t.serial.targetoptions.get("parallel")
        assert t.parallel.py_func.__qualname__ != t.serial.py_func.__qualname__
        assert t.kind == "stream"
