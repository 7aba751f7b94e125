"""Rounding and storage conversion: bit-exact against ml_dtypes / NumPy and an exact reference."""

from __future__ import annotations

import math
from fractions import Fraction

import ml_dtypes
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import linalg_pc as lpc
import linalg_pc._backend as B
from linalg_pc._formats import FORMATS
from linalg_pc._kernels import fallback

BF16 = np.dtype(ml_dtypes.bfloat16)


# ----------------------------------------------------------------------------- references
def exact_round(x: float, fmt: str, mode: str = "nearest") -> float:
    """Independent reference: round a Python float to ``fmt`` with exact rational arithmetic."""
    f = FORMATS[fmt]
    if math.isnan(x) or math.isinf(x) or x == 0.0:
        return x
    fx = Fraction(x)
    a = abs(fx)
    e = math.floor(math.log2(a))
    while Fraction(2) ** e > a:
        e -= 1
    while Fraction(2) ** (e + 1) <= a:
        e += 1
    e = max(e, f.emin)
    q = Fraction(2) ** (e - f.mantissa_bits)
    y = a / q
    if mode == "nearest":
        n = round(y)  # Fraction.__round__ rounds half to even
    else:
        n = math.floor(y)
    r = n * q
    if r > Fraction(f.max):
        r_f = math.inf if mode == "nearest" else f.max
    else:
        r_f = float(r)
    return math.copysign(r_f, x)


def bf16_probe_values() -> np.ndarray:
    """All bf16 patterns, the midpoints between neighbours and one fp32 ulp either side."""
    hi = np.arange(1 << 16, dtype=np.uint32) << 16
    bits = np.concatenate([hi, hi | 0x8000, hi | 0x7FFF, hi | 0x8001])
    return bits.view(np.float32)


def fp16_probe_values() -> np.ndarray:
    """All fp16 values as fp32, the exact midpoints between neighbours, and one fp32 ulp around."""
    h = np.arange(1 << 16, dtype=np.uint16).view(np.float16)
    v = h.astype(np.float64)
    finite = np.isfinite(v)
    pos = np.sort(np.unique(np.abs(v[finite])))
    nxt = np.append(pos[1:], 65520.0)  # 65520 = the fp16 overflow threshold (max + ulp/2)
    mids = (pos + nxt) / 2
    mids = np.concatenate([mids, -mids]).astype(np.float32)
    up = np.nextafter(mids, np.float32(np.inf))
    down = np.nextafter(mids, np.float32(-np.inf))
    with np.errstate(invalid="ignore"):
        return np.concatenate([v.astype(np.float32), mids, up, down])


def bits32(a) -> np.ndarray:
    return np.asarray(B.to_numpy(a), dtype=np.float32).view(np.uint32)


def ml_bits(x32: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore"):
        return x32.astype(BF16).view(np.uint16)


# ----------------------------------------------------------------------------- formats
def test_format_table():
    assert lpc.unit_roundoff("bf16") == 2.0**-8
    assert lpc.unit_roundoff("bfloat16") == 2.0**-8
    assert lpc.unit_roundoff("fp16") == 2.0**-11
    assert lpc.unit_roundoff("tf32") == 2.0**-11
    assert lpc.unit_roundoff(np.float32) == 2.0**-24
    assert lpc.unit_roundoff("double") == 2.0**-53
    for name, np_t in [("fp16", np.float16), ("fp32", np.float32), ("fp64", np.float64)]:
        f = lpc.get_format(name)
        fi = np.finfo(np_t)
        assert f.max == float(fi.max)
        assert f.tiny == float(fi.smallest_normal)
        assert f.smallest_subnormal == float(fi.smallest_subnormal)
        assert f.eps == float(fi.eps)
    bf = lpc.get_format("bf16")
    fi = ml_dtypes.finfo(ml_dtypes.bfloat16)
    assert bf.max == float(fi.max) and bf.tiny == float(fi.smallest_normal)
    assert bf.eps == float(fi.eps)
    assert lpc.get_format(BF16) is lpc.FORMATS["bf16"]
    assert lpc.get_format(float).name == "fp64"


def test_format_of_torch_dtypes():
    torch = pytest.importorskip("torch")
    assert lpc.get_format(torch.bfloat16).name == "bf16"
    assert lpc.get_format(torch.float16).name == "fp16"
    assert lpc.get_format(torch.float64).name == "fp64"


# ----------------------------------------------------------------------------- exhaustive bf16
@pytest.mark.parametrize("lib", ["numpy", "torch"])
def test_bf16_exhaustive_round_to_and_storage(lib):
    x = bf16_probe_values()
    ref = ml_bits(x)
    if lib == "torch":
        torch = pytest.importorskip("torch")
        xin = torch.from_numpy(x.copy())
    else:
        xin = x
    r = lpc.round_to(xin, "bf16")
    np.testing.assert_array_equal(bits32(r) >> 16, ref)
    assert np.all(bits32(r) & 0xFFFF == 0)
    s = lpc.to_storage(xin, "bf16")
    assert lpc.get_format(s.dtype).name == "bf16"
    np.testing.assert_array_equal(B.to_numpy(s).view(np.uint16), ref)
    back = lpc.from_storage(s, "fp32")
    np.testing.assert_array_equal(bits32(back), ref.astype(np.uint32) << 16)


def test_bf16_exhaustive_kernel_and_fallback():
    from linalg_pc._kernels import cpu

    x = bf16_probe_values()
    ref = ml_bits(x)
    np.testing.assert_array_equal(cpu.f32_to_bf16_bits(x), ref)
    seq = np.empty(x.size, np.uint16)
    cpu._f32_to_bf16_rne_seq(x.view(np.uint32), seq)
    np.testing.assert_array_equal(seq, ref)
    xp = B.array_namespace(x)
    fb = fallback.round_values(xp, x.astype(np.float64), FORMATS["bf16"]).astype(np.float32)
    np.testing.assert_array_equal(fb.view(np.uint32) >> 16, ref)
    dec = cpu.bf16_bits_to_f32(ref)
    np.testing.assert_array_equal(dec.view(np.uint32), ref.view(BF16).astype(np.float32)
                                  .view(np.uint32))


def test_bf16_array_api_strict_matches_ml_dtypes():
    xs = pytest.importorskip("array_api_strict")
    x = bf16_probe_values()
    r = lpc.round_to(xs.asarray(x), "bf16")
    np.testing.assert_array_equal(bits32(r) >> 16, ml_bits(x))


# ----------------------------------------------------------------------------- exhaustive fp16
@pytest.mark.parametrize("lib", ["numpy", "torch", "array_api_strict", "fallback"])
def test_fp16_exhaustive(lib):
    x = fp16_probe_values()
    with np.errstate(over="ignore"):
        ref = x.astype(np.float16).astype(np.float32)
    ref_nan = np.isnan(ref)
    if lib == "fallback":
        xp = B.array_namespace(x)
        r = fallback.round_values(xp, x.astype(np.float64), FORMATS["fp16"]).astype(np.float32)
    elif lib == "numpy":
        r = lpc.round_to(x, "fp16")
    elif lib == "torch":
        torch = pytest.importorskip("torch")
        r = B.to_numpy(lpc.round_to(torch.from_numpy(x.copy()), "fp16"))
    else:
        xs = pytest.importorskip("array_api_strict")
        r = B.to_numpy(lpc.round_to(xs.asarray(x), "fp16"))
    r = np.asarray(r)
    assert np.array_equal(np.isnan(r), ref_nan)
    np.testing.assert_array_equal(r[~ref_nan].view(np.uint32), ref[~ref_nan].view(np.uint32))


def test_fp16_storage_numpy_and_torch():
    x = fp16_probe_values()
    with np.errstate(over="ignore"):
        ref = x.astype(np.float16)
    s = lpc.to_storage(x, "fp16")
    assert s.dtype == np.float16
    fin = ~np.isnan(ref)
    np.testing.assert_array_equal(s[fin].view(np.uint16), ref[fin].view(np.uint16))
    torch = pytest.importorskip("torch")
    t = lpc.to_storage(torch.from_numpy(x.copy()), "fp16")
    assert t.dtype == torch.float16
    np.testing.assert_array_equal(t.numpy()[fin].view(np.uint16), ref[fin].view(np.uint16))


# ----------------------------------------------------------------------------- fp64 inputs
def test_fp64_single_rounding_not_double():
    x = np.array([1 + 2**-8 + 2**-30, -(1 + 2**-8 + 2**-30), 1 + 2**-11 + 2**-40])
    r = lpc.round_to(x, "bf16")
    # one correct rounding: going through float32 first would double-round to 1.0 (older
    # ml_dtypes casts do; whatever the installed version does, ours must not)
    assert r[0] == 1 + 2**-7 and r[1] == -(1 + 2**-7)
    assert lpc.round_to(x[2:], "fp16")[0] == 1 + 2**-10
    s = lpc.to_storage(x, "bf16")
    assert float(s[0]) == 1 + 2**-7


@pytest.mark.parametrize("fmt", ["bf16", "fp16", "tf32", "fp32"])
@pytest.mark.parametrize("mode", ["nearest", "zero"])
def test_fp64_against_exact_reference(fmt, mode, rng):
    f = FORMATS[fmt]
    vals = np.concatenate([
        rng.standard_normal(300) * 10.0 ** rng.integers(-6, 6, 300),
        rng.uniform(0.5, 4, 100) * f.tiny,  # around the normal/subnormal boundary
        rng.uniform(0, 1, 100) * f.tiny,  # subnormal range
        rng.uniform(0.99, 1.01, 50) * f.max,  # around overflow
        [0.0, -0.0, f.max, -f.max, f.smallest_subnormal, f.smallest_subnormal / 2,
         f.smallest_subnormal * 0.5000001, 1e300, -1e300, math.inf, -math.inf],
    ])
    r = lpc.round_to(vals, fmt, mode=mode)
    ref = np.array([exact_round(float(v), fmt, mode) for v in vals])
    np.testing.assert_array_equal(np.signbit(r), np.signbit(ref))
    np.testing.assert_array_equal(r, ref)


@settings(max_examples=200, deadline=None)
@given(st.floats(allow_nan=True, allow_infinity=True, width=32))
def test_hypothesis_fp32_nearest_matches_ml_dtypes(v):
    x = np.array([v], dtype=np.float32)
    np.testing.assert_array_equal(bits32(lpc.round_to(x, "bf16")) >> 16, ml_bits(x))
    np.testing.assert_array_equal(B.to_numpy(lpc.to_storage(x, "bf16")).view(np.uint16),
                                  ml_bits(x))


@settings(max_examples=200, deadline=None)
@given(st.floats(allow_nan=False, allow_infinity=True),
       st.sampled_from(["bf16", "fp16", "fp32"]), st.sampled_from(["nearest", "zero"]))
def test_hypothesis_fp64_matches_exact_reference(v, fmt, mode):
    r = float(lpc.round_to(np.array([v]), fmt, mode=mode)[0])
    ref = exact_round(v, fmt, mode)
    assert r == ref and math.copysign(1, r) == math.copysign(1, ref)


# ----------------------------------------------------------------------------- special values
def test_special_values_every_namespace(xp):
    vals = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, -np.nan, 3.4e38, -3.4e38,
                     2.0**-130, -(2.0**-133), 1.0], dtype=np.float32)
    x = xp.asarray(vals)
    r = np.asarray(B.to_numpy(lpc.round_to(x, "bf16")))
    assert np.array_equal(np.isnan(r), np.isnan(vals))
    np.testing.assert_array_equal(np.signbit(r), np.signbit(vals))
    assert r[6] == np.inf and r[7] == -np.inf  # overflow -> inf under nearest
    assert r[8] == 2.0**-130 and r[9] == -(2.0**-133)  # subnormals kept
    z = np.asarray(B.to_numpy(lpc.round_to(x, "bf16", mode="zero")))
    bfmax = FORMATS["bf16"].max
    assert z[6] == bfmax and z[7] == -bfmax  # overflow -> largest finite toward zero
    assert z[2] == np.inf and np.isnan(z[4])


def test_round_to_keeps_namespace_dtype_device(xp):
    x = xp.asarray(np.linspace(-3, 3, 11, dtype=np.float32))
    for fmt in ("bf16", "fp16", "tf32"):
        r = lpc.round_to(x, fmt)
        assert B.array_namespace(r) is B.array_namespace(x) or type(r) is type(x)
        assert r.dtype == x.dtype
        assert B.device_of(r) == B.device_of(x)
        assert lpc.representable(r, fmt)


def test_round_to_16bit_input_keeps_dtype():
    x = np.linspace(-3, 3, 101).astype(BF16)
    r = lpc.round_to(x, "fp16")
    assert r.dtype == BF16  # bf16 has fewer bits: values already fp16-representable
    np.testing.assert_array_equal(r.view(np.uint16), x.view(np.uint16))
    h = np.linspace(-3, 3, 101).astype(np.float16)
    rb = lpc.round_to(h, "bf16")
    assert rb.dtype == np.float16
    np.testing.assert_array_equal(rb.astype(np.float32),
                                  h.astype(np.float32).astype(BF16).astype(np.float32))


# ----------------------------------------------------------------------------- stochastic
@pytest.mark.parametrize("fmt,dtype", [("bf16", np.float32), ("bf16", np.float64),
                                       ("fp16", np.float32), ("tf32", np.float64)])
def test_stochastic_neighbours_and_unbiased(fmt, dtype):
    f = FORMATS[fmt]
    # values at fractional positions 0.1, 0.5, 0.9 between two neighbours, and a subnormal one
    base = np.array([1.0, -3.0, 1000.0, f.tiny * 0.37], dtype=np.float64)
    spacing = np.array([2.0 ** -f.mantissa_bits, 2.0 * 2.0 ** -f.mantissa_bits,
                        512.0 * 2.0 ** -f.mantissa_bits, f.smallest_subnormal])
    n = 100_000
    for frac in (0.1, 0.5, 0.9):
        v = (base + frac * spacing * np.sign(base)).astype(dtype)
        x = np.repeat(v[:, None], n, axis=1)
        r = lpc.round_to(x, fmt, mode="stochastic", rng=np.random.default_rng(7))
        lo = lpc.round_to(v.astype(np.float64), fmt, mode="zero")
        hi = lo + spacing * np.sign(base)
        for i in range(len(v)):
            ri = r[i].astype(np.float64)
            assert set(np.unique(ri)) <= {lo[i], hi[i]}
            p = abs(float(v[i]) - lo[i]) / spacing[i]
            se = spacing[i] * math.sqrt(p * (1 - p) / n)
            assert abs(ri.mean() - float(v[i])) <= 4 * se + 1e-300


def test_stochastic_reproducible_and_seed_dependent():
    x = np.random.default_rng(0).standard_normal(200_000).astype(np.float32)
    a = lpc.round_to(x, "bf16", mode="stochastic", rng=1)
    b = lpc.round_to(x, "bf16", mode="stochastic", rng=1)
    c = lpc.round_to(x, "bf16", mode="stochastic", rng=2)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    s = lpc.to_storage(x, "bf16", mode="stochastic", rng=1)
    np.testing.assert_array_equal(s.astype(np.float32), a)


def test_stochastic_torch_generator():
    torch = pytest.importorskip("torch")
    x = torch.full((50_000,), 1.0 + 2.0**-9, dtype=torch.float64)
    r = lpc.round_to(x, "bf16", mode="stochastic", rng=torch.Generator().manual_seed(3))
    vals = set(torch.unique(r).tolist())
    assert vals <= {1.0, 1.0 + 2.0**-7}
    assert abs(float(r.mean()) - (1 + 2.0**-9)) < 4 * 2.0**-7 * math.sqrt(0.25 * 0.75 / 50_000)


# ----------------------------------------------------------------------------- storage
def test_storage_dtypes_and_roundtrip(xp):
    x = xp.asarray(np.random.default_rng(1).standard_normal((7, 5)).astype(np.float32))
    for fmt in ("bf16", "fp16"):
        if not B.has_dtype(xp, fmt):
            with pytest.raises(TypeError):
                lpc.to_storage(x, fmt)
            continue
        s = lpc.to_storage(x, fmt)
        assert lpc.get_format(s.dtype).name == fmt
        back = lpc.from_storage(s, "fp32")
        assert lpc.get_format(back.dtype).name == "fp32"
        np.testing.assert_array_equal(np.asarray(B.to_numpy(back)),
                                      np.asarray(B.to_numpy(lpc.round_to(x, fmt))))
        b64 = lpc.from_storage(s, "fp64")
        assert lpc.get_format(b64.dtype).name == "fp64"


def test_storage_out_buffers():
    x = np.random.default_rng(2).standard_normal(1000).astype(np.float32)
    out = np.empty(1000, BF16)
    r = lpc.to_storage(x, "bf16", out=out)
    assert r is out
    np.testing.assert_array_equal(out.view(np.uint16), ml_bits(x))
    dec = np.empty(1000, np.float32)
    assert lpc.from_storage(out, "fp32", out=dec) is dec
    np.testing.assert_array_equal(dec, out.astype(np.float32))
    with pytest.raises(ValueError, match="out"):
        lpc.to_storage(x, "bf16", out=np.empty(999, BF16))


def test_bf16_reductions_accumulate_in_fp32_after_decode():
    ones = np.ones(10_000, BF16)
    assert float(np.sum(ones)) == 256.0  # the ml_dtypes trap: bf16 accumulation stagnates at 2^8
    assert float(np.sum(lpc.from_storage(ones))) == 10_000.0


# ----------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("fn", [lambda a: lpc.round_to(a, "bf16"),
                                lambda a: lpc.to_storage(a, "bf16"),
                                lambda a: lpc.from_storage(a)])
def test_bad_dtype_raises_typeerror_naming_x(fn):
    with pytest.raises(TypeError, match=r"\bx\b"):
        fn(np.arange(4))
    with pytest.raises(TypeError, match=r"\bx\b"):
        fn(np.ones(3, np.complex64))


def test_bad_format_and_mode():
    x = np.ones(3, np.float32)
    with pytest.raises(ValueError, match="fmt"):
        lpc.round_to(x, "bf8")
    with pytest.raises(ValueError, match="mode"):
        lpc.round_to(x, "bf16", mode="up")
    with pytest.raises(ValueError, match="compute"):
        lpc.from_storage(x, "bf16")
    with pytest.raises(TypeError):
        lpc.to_storage(x, "tf32")
    with pytest.raises(TypeError, match="fmt"):
        lpc.get_format(None)
