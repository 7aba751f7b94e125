"""ml_dtypes' float conversion cases, run against lpc.round_to / to_storage / from_storage.

Source of the cases: ml_dtypes' ``ml_dtypes/tests/custom_float_test.py`` (the bfloat16
parametrization; the cases that test a conversion: round trips through float and the NumPy float
types, integers held exactly, casts between the float types, arange, NaN, ±inf and the predicate
ufuncs, copysign on the subnormal patterns, nextafter / spacing in every binade) and ml_dtypes'
documented semantics (round to nearest even, NaN and ±inf kept, subnormals kept, overflow to
inf). Our own tests of the same cases and semantics, on NumPy and PyTorch, for bf16 and, where
the case applies, fp16. The cases that differ on purpose (integer, complex and long-double input;
ml_dtypes' scalar arithmetic, hashing and printing) are listed in docs/precision.md, "ml_dtypes'
test cases".
"""

from __future__ import annotations

import math
from fractions import Fraction

import ml_dtypes
import numpy as np
import pytest

import linalg_pc as lpc
import linalg_pc._backend as B

BF16 = np.dtype(ml_dtypes.bfloat16)
LIBS = ["numpy", "torch"]
FMTS = ["bf16", "fp16"]
SRC_DTYPES = ["float16", "float32", "float64"]


def _finfo(fmt):
    return ml_dtypes.finfo(ml_dtypes.bfloat16) if fmt == "bf16" else np.finfo(np.float16)


def _values(fmt) -> list[float]:
    """The round-trip values of custom_float_test.py for one format."""
    fi = _finfo(fmt)
    eps, mx = float(fi.eps), float(fi.max)
    return [0.0, 1.0, -1.0, 0.5, -0.5, eps, 1.0 + eps, 1.0 - eps, -1.0 - eps, -1.0 + eps, 3.5, 4.0,
            5.0, 7.0, mx, -mx, math.nan, -math.nan, math.inf, -math.inf]


def _arr(lib, values, dtype):
    """``values`` as an array of ``dtype`` in library ``lib`` (an array of that dtype as is)."""
    if isinstance(values, np.ndarray) and values.dtype == np.dtype(dtype):
        a = values
    else:
        with np.errstate(over="ignore", invalid="ignore"):
            a = np.array(values, dtype=np.float64).astype(dtype)
    if lib == "numpy":
        return a
    torch = pytest.importorskip("torch")
    return torch.from_numpy(a.copy()) if a.dtype != BF16 else torch.from_numpy(
        a.view(np.int16).copy()).view(torch.bfloat16)


def _host(a) -> np.ndarray:
    return np.asarray(B.to_numpy(a))


def _f64(a) -> np.ndarray:
    return _host(a).astype(np.float64)


def _bits(a) -> np.ndarray:
    h = _host(a)
    return h.view({2: np.uint16, 4: np.uint32, 8: np.uint64}[h.dtype.itemsize])


def _same(got, want):
    """Equal values, NaN where NaN, and the same sign everywhere (also of zeros and NaNs)."""
    g, w = _f64(got), np.asarray(want, dtype=np.float64)
    np.testing.assert_array_equal(np.isnan(g), np.isnan(w))
    np.testing.assert_array_equal(np.signbit(g), np.signbit(w))
    fin = ~np.isnan(w)
    np.testing.assert_array_equal(g[fin], w[fin])


def _store_dtype_name(fmt):
    return {"bf16": "bfloat16", "fp16": "float16"}[fmt]


# ----------------------------------------------------------------------------- round trips
@pytest.mark.parametrize("lib", LIBS)
@pytest.mark.parametrize("fmt", FMTS)
def test_round_trip_to_float(lib, fmt):
    """testRoundTripToFloat: every listed value survives store and decode, NaN keeping its sign."""
    vals = _values(fmt)
    x = _arr(lib, vals, np.float32 if fmt == "bf16" else np.float64)
    s = lpc.to_storage(x, fmt)
    assert _host(s).dtype.name == _store_dtype_name(fmt)
    for compute in ("fp32", "fp64"):
        _same(lpc.from_storage(s, compute), vals)
    _same(lpc.round_to(x, fmt), vals)


@pytest.mark.parametrize("lib", LIBS)
@pytest.mark.parametrize("fmt", FMTS)
@pytest.mark.parametrize("src", SRC_DTYPES)
def test_round_trip_numpy_types(lib, fmt, src):
    """testRoundTripNumpyTypes / testRoundTripToNumpy: from float16, float32 and float64 input
    (values beyond the source type's range left out), the stored value decodes to the input,
    round_to leaves it unchanged, and storing from any source type gives the same bits."""
    smax = float(np.finfo(src).max)
    vals = [v for v in _values(fmt) if not abs(v) > smax]
    x = _arr(lib, vals, src)
    s = lpc.to_storage(x, fmt)
    _same(lpc.from_storage(s, "fp64"), vals)
    _same(lpc.round_to(x, fmt), vals)
    np.testing.assert_array_equal(_bits(s), _bits(lpc.to_storage(_arr(lib, vals, np.float64),
                                                                  fmt)))


@pytest.mark.parametrize("lib", LIBS)
@pytest.mark.parametrize("fmt", FMTS)
def test_integers_held_exactly(lib, fmt):
    """testRoundTripToInt: the integers of the test are stored exactly, with either sign; the
    next integer past the format's precision rounds to even."""
    ints = [0, 1, 2, 10, 34, 47, 128, 255, 256, 512]
    vals = ints + [-v for v in ints]
    s = lpc.to_storage(_arr(lib, vals, np.float32), fmt)
    np.testing.assert_array_equal(_f64(s), np.array(vals, dtype=np.float64))
    p = lpc.get_format(fmt).precision  # 8 for bf16, 11 for fp16
    odd = [2**p + 1, 2**p + 3, -(2**p + 1)]  # ties: to the even neighbour
    np.testing.assert_array_equal(_f64(lpc.to_storage(_arr(lib, odd, np.float32), fmt)),
                                  [2**p, 2**p + 4, -(2**p)])


@pytest.mark.parametrize("lib", LIBS)
def test_cast_between_types(lib):
    """testCastBetweenCustomTypes / testCasts: bf16 <-> fp16 goes through the exact value (what
    ``astype(float).astype(...)`` gives), shapes are kept, small integers survive every cast."""
    vals = _values("bf16")
    s = lpc.to_storage(_arr(lib, vals, np.float64), "bf16")
    h = lpc.to_storage(s, "fp16")  # bf16 -> fp16 storage
    want = lpc.to_storage(lpc.from_storage(s, "fp64"), "fp16")
    np.testing.assert_array_equal(_bits(h), _bits(want))
    hv = _values("fp16")
    h2 = lpc.to_storage(_arr(lib, hv, np.float64), "fp16")
    b2 = lpc.to_storage(h2, "bf16")  # fp16 -> bf16 storage
    np.testing.assert_array_equal(_bits(b2),
                                  _bits(lpc.to_storage(lpc.from_storage(h2, "fp64"), "bf16")))
    for src in SRC_DTYPES + ["bfloat16"]:
        x = _arr(lib, [[1, 2, 4]], BF16 if src == "bfloat16" else src)
        for fmt in FMTS:
            y = lpc.to_storage(x, fmt)
            assert tuple(y.shape) == (1, 3) and _host(y).dtype.name == _store_dtype_name(fmt)
            np.testing.assert_array_equal(_f64(lpc.from_storage(y, "fp64")), [[1, 2, 4]])


@pytest.mark.parametrize("lib", LIBS)
def test_arange(lib):
    """testArange: arange sequences (a negative-zero start included) are stored exactly."""
    for start, stop, step in ((1, 100, 1), (-6, 6, 2), (-0.0, -2.0, -0.5)):
        a = np.arange(start, stop, step, dtype=np.float32)
        s = lpc.to_storage(_arr(lib, a, np.float32), "bf16")
        _same(s, a)
        np.testing.assert_array_equal(_bits(s), a.astype(BF16).view(np.uint16))


# ----------------------------------------------------------------------------- special values
@pytest.mark.parametrize("lib", LIBS)
@pytest.mark.parametrize("fmt", FMTS)
def test_nan_and_predicates_kept(lib, fmt):
    """testNan / testPredicateUfunc: isfinite, isinf, isnan and signbit of random values with
    ±inf and NaN flips are those of the input after storing and after round_to."""
    rng = np.random.default_rng(42)
    shape = (3, 7, 10)
    v = rng.standard_normal(shape)
    v = np.where(rng.random(shape) < 0.1, np.inf, v)
    v = np.where(rng.random(shape) < 0.1, -np.inf, v)
    v = np.where(rng.random(shape) < 0.1, np.nan, v)
    v = np.where(rng.random(shape) < 0.1, -np.nan, v)
    x = _arr(lib, v, np.float32)
    for r in (lpc.to_storage(x, fmt), lpc.round_to(x, fmt)):
        h = _f64(r)
        for pred in (np.isfinite, np.isinf, np.isnan, np.signbit):
            np.testing.assert_array_equal(pred(h), pred(v), err_msg=pred.__name__)
    s = lpc.to_storage(_arr(lib, [1.34375, 1.3359375, math.nan], np.float32), "bf16")
    _same(s, [1.34375, 1.3359375, math.nan])  # both exact in bf16


@pytest.mark.parametrize("lib", LIBS)
def test_nan_is_the_quiet_nan_with_its_sign(lib):
    """ml_dtypes writes a NaN as the quiet NaN with the input's sign (0x7FC0 / 0xFFC0), payload
    dropped; so do we, from every source type (signalling NaNs and payloads included)."""
    pats = np.array([0x7FC00000, 0xFFC00000, 0x7F800001, 0xFF800001, 0x7FFFFFFF, 0x7FA00000],
                    dtype=np.uint32)
    x32 = pats.view(np.float32)
    want = np.where(pats >> 31, 0xFFC0, 0x7FC0).astype(np.uint16)
    np.testing.assert_array_equal(_bits(lpc.to_storage(_arr(lib, x32, np.float32), "bf16")),
                                  want)
    with np.errstate(invalid="ignore"):
        np.testing.assert_array_equal(x32.astype(BF16).view(np.uint16), want)  # ml_dtypes too
    x64 = _arr(lib, np.array([math.nan, -math.nan]), np.float64)
    np.testing.assert_array_equal(_bits(lpc.to_storage(x64, "bf16")), [0x7FC0, 0xFFC0])
    np.testing.assert_array_equal(_bits(lpc.to_storage(x64, "fp16")), [0x7E00, 0xFE00])


@pytest.mark.parametrize("lib", LIBS)
def test_copysign_on_subnormal_patterns(lib):
    """testCopySign: for the 255 smallest positive bf16 patterns (the subnormals and the first
    normals), the negated value is stored with exactly the sign bit added, and decodes back."""
    bits = np.arange(1, 256, dtype=np.uint16)
    vals = bits.view(BF16).astype(np.float64)
    neg = lpc.to_storage(_arr(lib, -vals, np.float32), "bf16")
    np.testing.assert_array_equal(_bits(neg), bits | 0x8000)
    pos = lpc.to_storage(_arr(lib, vals, np.float64), "bf16")
    np.testing.assert_array_equal(_bits(pos), bits)
    np.testing.assert_array_equal(_f64(lpc.from_storage(neg, "fp64")), -vals)


# ----------------------------------------------------------------------------- spacing, rounding
def _exact_nearest(v: float, fmt) -> float:
    """Round to nearest even with exact rationals (independent of every library)."""
    f = lpc.get_format(fmt)
    if v == 0 or not math.isfinite(v):
        return v
    a = abs(Fraction(v))
    e = max(math.floor(math.log2(a)), f.emin)
    while Fraction(2) ** e > a and e > f.emin:
        e -= 1
    while Fraction(2) ** (e + 1) <= a:
        e += 1
    q = Fraction(2) ** (e - f.mantissa_bits)
    r = round(a / q) * q
    return math.copysign(math.inf if r > Fraction(f.max) else float(r), v)


@pytest.mark.parametrize("lib", LIBS)
@pytest.mark.parametrize("fmt", FMTS)
def test_spacing_in_every_binade(lib, fmt):
    """testSpacing / testNextAfter: in each binade the spacing is eps·2^i (subnormals: the
    smallest subnormal); a value half a spacing above a power of two rounds down to it (tie to
    even), three halves above rounds up to two spacings above (tie to even), and a value just
    above the midpoint rounds up. Checked for every binade, both signs, from fp32 and fp64."""
    fi, f = _finfo(fmt), lpc.get_format(fmt)
    sub, eps = float(fi.smallest_subnormal), float(fi.eps)
    assert sub == f.smallest_subnormal and eps == f.eps and float(fi.max) == f.max
    assert float(fi.smallest_normal) == f.tiny
    lo, hi = int(math.log2(sub)), int(math.log2(float(fi.max)))
    base, arg, want = [], [], []
    for i in range(lo, hi + 1):
        p = 2.0**i
        sp = sub if p < f.tiny else eps * p
        cases = [(p, p), (p + sp, p + sp), (p + sp / 2 + sp / 64, p + sp)]
        if p != sub:  # p's last bit is even: ties go to p and to p + 2·sp
            cases += [(p + sp / 2, p), (p + 1.5 * sp, p + 2 * sp)]
        else:  # the smallest subnormal's last bit is odd: both ties go to 2·sub
            cases += [(p + sp / 2, p + sp), (p + 1.5 * sp, p + sp)]
        for v, w in cases:
            base.append(p)
            arg.append(v)
            want.append(w)
    arg, want = np.array(arg + [-a for a in arg]), np.array(want + [-w for w in want])
    assert all(_exact_nearest(a, fmt) == w for a, w in zip(arg, want))  # the cases are right
    for src in (np.float32, np.float64):
        with np.errstate(over="ignore"):
            ok = np.asarray(arg.astype(src), np.float64) == arg  # representable in the source
        x = _arr(lib, arg[ok], src)
        _same(lpc.to_storage(x, fmt), want[ok])
        _same(lpc.round_to(x, fmt), want[ok])


@pytest.mark.parametrize("lib", LIBS)
@pytest.mark.parametrize("fmt", FMTS)
def test_overflow_and_underflow(lib, fmt):
    """Overflow: max + ulp/2 (the tie, max's last bit being odd) goes to inf, anything below it
    to max, in nearest mode; toward zero stays at max. Underflow: half the smallest subnormal is
    a tie and goes to (signed) zero, anything above it to the smallest subnormal."""
    f = lpc.get_format(fmt)
    ulp = f.eps * 2.0**f.emax
    sub = f.smallest_subnormal
    vals = [f.max, f.max + ulp / 2, f.max + ulp / 4, -(f.max + ulp / 2), 2 * f.max,
            sub, sub / 2, -sub / 2, sub * 0.75, sub / 2 * (1 + 2**-20), sub / 4]
    want_near = [f.max, math.inf, f.max, -math.inf, math.inf,
                 sub, 0.0, -0.0, sub, sub, 0.0]
    want_zero = [f.max, f.max, f.max, -f.max, f.max, sub, 0.0, -0.0, 0.0, 0.0, 0.0]
    x = _arr(lib, vals, np.float64)
    _same(lpc.to_storage(x, fmt), want_near)
    _same(lpc.round_to(x, fmt), want_near)
    _same(lpc.to_storage(x, fmt, mode="zero"), want_zero)
    _same(lpc.round_to(x, fmt, mode="zero"), want_zero)


@pytest.mark.parametrize("lib", LIBS)
def test_fp32_input_agrees_with_ml_dtypes_astype(lib):
    """From float32, ml_dtypes' ``astype(bfloat16)`` and ours give the same bits on random values
    across the whole exponent range (every pattern is checked in tests/test_precision.py)."""
    rng = np.random.default_rng(3)
    x = (rng.standard_normal(5000) * 2.0 ** rng.integers(-140, 127, 5000)).astype(np.float32)
    np.testing.assert_array_equal(_bits(lpc.to_storage(_arr(lib, x, np.float32), "bf16")),
                                  x.astype(BF16).view(np.uint16))


@pytest.mark.parametrize("lib", LIBS)
def test_fp64_input_rounds_once(lib):
    """From float64 the result is the single correct rounding (an exact rational reference),
    whatever the installed ml_dtypes or PyTorch cast does: 1 + 2⁻⁸ + 2⁻³⁰ is just above the
    midpoint and goes up; going through float32 first would make it a tie and go down to 1."""
    rng = np.random.default_rng(4)
    k = rng.integers(-120, 120, 400)
    mids = (1 + (2 * rng.integers(0, 128, 400) + 1) * 2.0**-8) * 2.0**k  # bf16 midpoints
    x = np.concatenate([mids * (1 + 2.0**-30), mids * (1 - 2.0**-30), mids,
                        [1 + 2**-8 + 2**-30]])
    want = [_exact_nearest(float(v), "bf16") for v in x]
    _same(lpc.to_storage(_arr(lib, x, np.float64), "bf16"), want)
    _same(lpc.round_to(_arr(lib, x, np.float64), "bf16"), want)
    assert float(_f64(lpc.to_storage(_arr(lib, x[-1:], np.float64), "bf16"))[0]) == 1 + 2**-7


# ----------------------------------------------------------------------------- documented refusals
@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.uint8, np.complex64, np.complex128,
                                   np.longdouble])
def test_integer_complex_and_long_double_input_refused(dtype):
    """ml_dtypes casts integer and complex arrays (dropping the imaginary part with a
    ComplexWarning) and long doubles; linalg_pc's conversions take real floating arrays only
    (docs/precision.md): a TypeError naming x, before any work."""
    if np.dtype(dtype) == np.float64:  # platforms whose long double is double
        pytest.skip("long double is float64 here")
    x = np.array([[1, 2, 4]], dtype=dtype)
    for call in (lambda: lpc.to_storage(x, "bf16"), lambda: lpc.round_to(x, "bf16"),
                 lambda: lpc.from_storage(x, "fp32")):
        with pytest.raises(TypeError, match=r"\bx\b"):
            call()
