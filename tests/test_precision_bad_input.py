"""Bad input to the public conversions (``linalg_pc.precision``: round_to, to_storage,
from_storage, representable, unit_roundoff, get_format, set_buffer_cache): a clear exception
naming the argument before any work, or a correct result. NaN/inf, empty, wrong rank, dtype and
library, read-only inputs and outputs, and ``out=`` aliasing the input (issue 12).

The references are independent: ml_dtypes' own casts of a copy of the input (bit for bit), and
the input itself for the exact conversions.
"""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest

import linalg_pc as lpc
import linalg_pc._backend as B

CONVERSIONS = {
    "round_to": lambda x, **kw: lpc.round_to(x, "bf16", **kw),
    "to_storage": lambda x, **kw: lpc.to_storage(x, "bf16", **kw),
    "from_storage": lambda x, **kw: lpc.from_storage(x, "fp32", **kw),
    "representable": lambda x: lpc.representable(x, "bf16"),
}

X = np.random.default_rng(0).standard_normal((4, 3))
BF16 = ml_dtypes.bfloat16


def _ro(a):
    a = np.array(a, copy=True)
    a.flags.writeable = False
    return a


# ----------------------------------------------------------------------------- x: type, dtype
@pytest.mark.parametrize("name", CONVERSIONS)
@pytest.mark.parametrize("x,exc,match", [
    (X.tolist(), TypeError, r"x must be an array"),
    (np.float64(1.5), TypeError, r"x must be an array"),      # a NumPy scalar, not an array
    (None, TypeError, r"x must be an array"),
    ("abc", TypeError, r"x must be an array"),
    (X.astype(np.complex128), TypeError, r"x must have a real floating dtype"),
    (np.arange(6), TypeError, r"x must have a real floating dtype"),
    (np.ones(3, dtype=bool), TypeError, r"x must have a real floating dtype"),
], ids=["list", "numpy-scalar", "None", "str", "complex", "int", "bool"])
def test_x_not_a_real_float_array(name, x, exc, match):
    with pytest.raises(exc, match=match):
        CONVERSIONS[name](x)


# ----------------------------------------------------------------------------- other arguments
@pytest.mark.parametrize("call,exc,match", [
    (lambda: lpc.round_to(X, "fp8"), ValueError, r"unknown number format 'fp8'"),
    (lambda: lpc.round_to(X, None), TypeError, r"fmt must be a format name"),
    (lambda: lpc.to_storage(X, "tf32"), TypeError, r"tf32"),
    (lambda: lpc.from_storage(X, "bf16"), ValueError, r"compute must be 'fp32' or 'fp64'"),
    (lambda: lpc.round_to(X, "bf16", mode="up"), ValueError, r"mode must be one of"),
    (lambda: lpc.to_storage(X, mode="up"), ValueError, r"mode must be one of"),
    (lambda: lpc.round_to(X, "bf16", mode="stochastic", rng="abc"), TypeError, r"rng must be"),
    (lambda: lpc.to_storage(X, mode="stochastic", rng=0.5), TypeError, r"rng must be"),
    (lambda: lpc.unit_roundoff("x"), ValueError, r"unknown number format 'x'"),
    (lambda: lpc.unit_roundoff(None), TypeError, r"fmt must be a format name"),
    (lambda: lpc.get_format(3), TypeError, r"fmt must have a real floating dtype"),
    (lambda: lpc.get_format("fp99", argname="compute"), ValueError, r"compute: unknown"),
    (lambda: lpc.set_buffer_cache(-1), ValueError, r"max_bytes must be an integer >= 0"),
    (lambda: lpc.set_buffer_cache(1.5), ValueError, r"max_bytes must be an integer >= 0"),
    (lambda: lpc.set_buffer_cache(True), ValueError, r"max_bytes must be an integer >= 0"),
    (lambda: lpc.set_buffer_cache("a"), ValueError, r"max_bytes must be an integer >= 0"),
], ids=lambda v: "" if callable(v) or isinstance(v, type) else str(v)[:30])
def test_other_arguments(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


# ----------------------------------------------------------------------------- out
def _outs():
    torch = pytest.importorskip("torch")
    f32 = np.zeros((4, 3), np.float32)
    return [
        # (function, x, out, message)
        ("round_to", X, np.zeros((3, 4)), r"got shape \(3, 4\)"),
        ("round_to", X, np.zeros((4, 3), np.float32), r"got dtype float32"),
        ("round_to", X, np.zeros((4, 3), np.int64), r"got dtype int64"),
        ("round_to", X, _ro(np.zeros((4, 3))), r"writable; got a read-only array"),
        ("round_to", X, np.zeros((3, 4)).T, r"non-contiguous"),
        ("round_to", X, torch.zeros((4, 3), dtype=torch.float64), r"got a torch array"),
        ("round_to", X, [[0.0] * 3] * 4, r"got list"),
        ("to_storage", X, np.zeros((4, 3), BF16)[:, ::-1], r"non-contiguous"),
        ("to_storage", X, f32, r"got dtype float32"),
        ("to_storage", X, _ro(np.zeros((4, 3), BF16)), r"read-only"),
        ("to_storage", X, torch.zeros((4, 3), dtype=torch.bfloat16), r"got a torch array"),
        ("from_storage", X.astype(BF16), np.zeros((3, 4), np.float32), r"got shape"),
        ("from_storage", X.astype(BF16), np.zeros((4, 3)), r"got dtype float64"),
        ("from_storage", X.astype(BF16), _ro(f32), r"read-only"),
        ("from_storage", X.astype(BF16), torch.zeros((4, 3)), r"got a torch array"),
    ]


def test_out_is_checked_before_any_work():
    for name, x, out, match in _outs():
        before = np.array(out, copy=True) if isinstance(out, np.ndarray) else None
        with pytest.raises(ValueError, match=r"out must be .*" + match):
            CONVERSIONS[name](x, out=out)
        if before is not None:
            np.testing.assert_array_equal(np.ascontiguousarray(out).view(np.uint8),
                                          np.ascontiguousarray(before).view(np.uint8))


# ----------------------------------------------------------------------------- NaN, inf, empty
def test_nan_and_inf_are_values_not_errors(xp):
    """Conversions carry NaN and ±inf through (IEEE values of every format), as ml_dtypes."""
    v = np.array([np.nan, np.inf, -np.inf, 1.0, -0.0], np.float32)
    x = xp.asarray(v)
    r = B.to_numpy(lpc.round_to(x, "bf16"))
    np.testing.assert_array_equal(r, v.astype(BF16).astype(np.float32))
    assert lpc.representable(x, "bf16")  # NaNs compare equal, inf and 1 are bf16 values
    if B.has_dtype(xp, "bf16"):
        s = lpc.to_storage(x, "bf16")
        np.testing.assert_array_equal(np.asarray(B.to_numpy(s)).view(np.uint16) & 0x7FFF,
                                      v.astype(BF16).view(np.uint16) & 0x7FFF)
        np.testing.assert_array_equal(B.to_numpy(lpc.from_storage(s, "fp64")),
                                      v.astype(np.float64))


@pytest.mark.parametrize("shape", [(0,), (0, 3), (4, 0), (2, 0, 5)])
def test_empty(xp, shape):
    x = xp.zeros(shape, dtype=xp.float32)
    for fmt in ("bf16", "fp16", "tf32"):
        r = lpc.round_to(x, fmt)
        assert tuple(r.shape) == shape and r.dtype == x.dtype
        assert lpc.representable(x, fmt)
    d = lpc.from_storage(x, "fp64")
    assert tuple(d.shape) == shape and B.format_of(d).name == "fp64"
    if B.has_dtype(xp, "bf16"):
        s = lpc.to_storage(x, "bf16")
        assert tuple(s.shape) == shape and B.format_of(s).name == "bf16"
    out = xp.zeros(shape, dtype=xp.float32)
    assert lpc.round_to(x, "bf16", out=out) is out


def test_zero_dimensional_arrays_work():
    x = np.array(1.0 + 2.0**-10)
    assert float(lpc.round_to(x, "bf16")) == 1.0
    assert lpc.to_storage(x, "bf16").shape == ()
    assert float(lpc.from_storage(np.array(3.0, BF16), "fp32")) == 3.0


# ----------------------------------------------------------------------------- read-only
@pytest.mark.parametrize("name", ["round_to", "to_storage", "from_storage", "representable"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32, BF16])
def test_read_only_inputs_work_and_are_not_written(name, dtype):
    x = _ro(X.astype(dtype))
    got = CONVERSIONS[name](x)
    ref = CONVERSIONS[name](np.array(x, copy=True))
    np.testing.assert_array_equal(np.asarray(got), np.asarray(ref))
    np.testing.assert_array_equal(x.astype(np.float64), X.astype(dtype).astype(np.float64))


# ----------------------------------------------------------------------------- aliasing
N = 1 << 18  # past the parallel threshold of every conversion kernel


def _data(dtype=np.float32, n=N):
    return np.random.default_rng(5).standard_normal(n).astype(dtype)


def test_out_is_x_rounds_in_place(xp):
    v = _data(n=4099)
    x = xp.asarray(v)
    r = lpc.round_to(x, "bf16", out=x)
    assert r is x
    np.testing.assert_array_equal(B.to_numpy(x), v.astype(BF16).astype(np.float32))


@pytest.mark.parametrize("lib", ["numpy", "torch"])
@pytest.mark.parametrize("shift", [4, -4])
@pytest.mark.parametrize("fmt", ["bf16", "fp16", "tf32"])
def test_out_overlapping_x_is_not_corrupted(lib, shift, fmt):
    """out a shifted view of x's memory: before, a kernel read values it had already written
    (PyTorch, bf16: wrong results without an error)."""
    v = _data()
    ref = v.astype(np.float64)
    buf = np.array(v, copy=True)
    if lib == "torch":
        torch = pytest.importorskip("torch")
        buf = torch.from_numpy(buf)
    s = abs(shift)
    x, out = (buf[:N - s], buf[s:]) if shift > 0 else (buf[s:], buf[:N - s])
    xr = ref[:N - s] if shift > 0 else ref[s:]
    lpc.round_to(x, fmt, out=out)
    want = lpc.round_to(xr.astype(np.float32), fmt)
    np.testing.assert_array_equal(np.asarray(B.to_numpy(out)), want)


@pytest.mark.parametrize("lib", ["numpy", "torch"])
def test_to_storage_into_the_bytes_of_x(lib):
    """bf16 out written over the first half of x's own bytes (a buffer reused in place)."""
    v = _data()
    want = v.astype(BF16).view(np.uint16)
    x = np.array(v, copy=True)
    if lib == "torch":
        torch = pytest.importorskip("torch")
        x = torch.from_numpy(x)
        out = x.view(torch.bfloat16)[:N]
    else:
        out = x.view(BF16)[:N]
    lpc.to_storage(x, "bf16", out=out)
    np.testing.assert_array_equal(np.asarray(B.to_numpy(out)).view(np.uint16), want)


@pytest.mark.parametrize("start", [True, False])
def test_from_storage_of_x_inside_out(start):
    """x (bf16) stored inside the bytes of the fp32 out it is decoded into."""
    v = _data().astype(BF16)
    want = v.astype(np.float32)
    out = np.zeros(N, np.float32)
    x = out.view(BF16)[:N] if start else out.view(BF16)[N:]
    x[:] = v
    lpc.from_storage(x, "fp32", out=out)
    np.testing.assert_array_equal(out, want)


def test_memory_overlap_primitive():
    a = np.zeros(16)
    assert B.memory_overlap(a, a) == "same"
    assert B.memory_overlap(a[:8], a[8:]) == "none"
    assert B.memory_overlap(a[:8], a[4:12]) == "partial"
    assert B.memory_overlap(a[:], a) == "same"
    assert B.memory_overlap(a[::2], a[1::2]) == "partial"  # interleaved: conservative
    assert B.memory_overlap(a.view(np.float32)[:16], a[:8]) == "partial"
    assert B.memory_overlap(np.zeros(0), a) == "none"
    assert B.memory_overlap(a, np.zeros(16)) == "none"
