"""The one conversion path: ``out=`` on every library, the kernel table, PyTorch on the Numba
kernels (same bits as NumPy), randomness, and lazy imports."""

from __future__ import annotations

import subprocess
import sys

import ml_dtypes
import numpy as np
import pytest

import linalg_pc as lpc
import linalg_pc._backend as B
from linalg_pc._backend import convert as cv
from linalg_pc._formats import FORMATS
from linalg_pc._kernels import _twins, fallback

BF16 = np.dtype(ml_dtypes.bfloat16)
SPECIALS = [0.0, -0.0, np.inf, -np.inf, np.nan, -np.nan, 3.4e38, -3.4e38, 2.0**-130,
            -(2.0**-133), 1.0 + 2**-8, 65520.0, 1e-8]


def _data(n=2000, seed=0, dtype=np.float32):
    x = np.random.default_rng(seed).standard_normal(n) * 10.0 ** np.linspace(-5, 5, n)
    x[: len(SPECIALS)] = SPECIALS
    with np.errstate(over="ignore"):
        return x.astype(dtype)


def _bits(a) -> np.ndarray:
    h = np.asarray(B.to_numpy(a))
    return h.view({2: np.uint16, 4: np.uint32, 8: np.uint64}[h.dtype.itemsize])


def _empty(xp, like, fmt):
    return xp.empty(tuple(like.shape), dtype=B.native_dtype(xp, fmt), device=B.device_of(like))


# ----------------------------------------------------------------------------- out= everywhere
CASES = [  # (function, input dtype, target, mode)
    ("to_storage", np.float32, "bf16", "nearest"),
    ("to_storage", np.float32, "bf16", "stochastic"),
    ("to_storage", np.float64, "bf16", "zero"),
    ("to_storage", np.float32, "fp16", "nearest"),
    ("to_storage", np.float32, "fp16", "stochastic"),
    ("to_storage", np.float64, "fp32", "nearest"),
    ("to_storage", np.float64, "fp32", "stochastic"),
    ("round_to", np.float32, "bf16", "nearest"),
    ("round_to", np.float32, "bf16", "stochastic"),
    ("round_to", np.float32, "fp16", "nearest"),
    ("round_to", np.float64, "fp32", "stochastic"),
    ("round_to", np.float64, "tf32", "zero"),
    ("from_storage", "bf16", "fp32", None),
    ("from_storage", "bf16", "fp64", None),
    ("from_storage", np.float16, "fp32", None),
    ("from_storage", np.float32, "fp32", None),
]


def _case_input(xp, dtype, n):
    x = xp.asarray(_data(n, dtype=np.float32 if dtype == "bf16" else dtype))
    return lpc.to_storage(x, "bf16") if dtype == "bf16" else x


def _run(fn, x, target, mode, out=None):
    if fn == "from_storage":
        return lpc.from_storage(x, target, out=out)
    f = getattr(lpc, fn)
    kw = {"mode": mode, "rng": 11 if mode == "stochastic" else None}
    return f(x, target, **kw, out=out)


@pytest.mark.parametrize("fn,dtype,target,mode", CASES)
def test_out_is_written_in_place_bit_for_bit(xp, fn, dtype, target, mode):
    need = [target] if fn != "round_to" else []
    need += {"bf16": ["bf16"], np.float16: ["fp16"]}.get(dtype, [])
    if not all(B.has_dtype(xp, f) for f in need):
        pytest.skip(f"{B.namespace_name(xp)} has no {need} dtype")
    for n in (2000, _twins.POLICIES["convert"][0] + 3):  # below and above the threads' threshold
        x = _case_input(xp, dtype, n)
        want = _run(fn, x, target, mode)
        fmt = B.format_of(x) if fn == "round_to" else FORMATS[target]
        out = _empty(xp, x, fmt)
        got = _run(fn, x, target, mode, out=out)
        assert got is out
        assert got.dtype == want.dtype and tuple(got.shape) == tuple(want.shape)
        np.testing.assert_array_equal(_bits(got), _bits(want))


def test_torch_optimizer_state_written_in_place():
    torch = pytest.importorskip("torch")
    w = torch.from_numpy(_data(5000))
    state = torch.empty(5000, dtype=torch.bfloat16)
    ptr = state.data_ptr()
    for mode in ("nearest", "stochastic"):
        r = lpc.to_storage(w, "bf16", mode=mode, rng=3, out=state)
        assert r is state and state.data_ptr() == ptr
        want = lpc.to_storage(w.numpy(), "bf16", mode=mode, rng=3)
        np.testing.assert_array_equal(state.view(torch.int16).numpy().view(np.uint16),
                                      want.view(np.uint16))
    dec = torch.empty(5000, dtype=torch.float32)
    assert lpc.from_storage(state, out=dec) is dec
    np.testing.assert_array_equal(dec.numpy(), want.astype(np.float32))


def test_round_to_in_place():
    torch = pytest.importorskip("torch")
    for lib in ("numpy", "torch"):
        x = _data(3000)
        want = lpc.round_to(x, "bf16", mode="stochastic", rng=5)
        a = torch.from_numpy(x.copy()) if lib == "torch" else x.copy()
        assert lpc.round_to(a, "bf16", mode="stochastic", rng=5, out=a) is a
        np.testing.assert_array_equal(_bits(a), _bits(want))


# ----------------------------------------------------------------------------- out= validation
def _bad_outs(xp, x):
    f32 = xp.float32
    dev = B.device_of(x)
    if B.is_numpy(xp):
        import array_api_strict as other
    else:
        other = np
    bad = {"dtype": xp.empty(tuple(x.shape), dtype=xp.float64, device=dev),
           "shape": xp.empty((x.shape[0] - 1,), dtype=f32, device=dev),
           "library": other.empty(tuple(x.shape), dtype=other.float32),
           "list": [0.0] * x.shape[0]}
    wide = xp.empty((x.shape[0], 2), dtype=f32, device=dev)
    if not B.is_strict(xp):
        bad["non-contiguous"] = wide[:, 0]
    if B.is_strict(xp):
        bad["device"] = xp.empty(tuple(x.shape), dtype=f32, device=xp.Device("device1"))
    return bad


def test_bad_out_raises_naming_out_before_any_work(xp):
    x = xp.asarray(_data(64, dtype=np.float64))
    for why, out in _bad_outs(xp, x).items():
        before = None if isinstance(out, list) else np.array(B.to_numpy(out), copy=True)
        with pytest.raises(ValueError, match=r"\bout\b"):
            lpc.to_storage(x, "fp32", out=out)
        if before is not None:
            np.testing.assert_array_equal(_bits(out), _bits(before), err_msg=why)
    with pytest.raises(ValueError, match=r"\bout\b"):
        lpc.round_to(x, "bf16", out=xp.empty((64,), dtype=xp.float32, device=B.device_of(x)))
    with pytest.raises(ValueError, match=r"\bout\b"):
        lpc.from_storage(x, "fp32", out=xp.empty((64,), dtype=xp.float64,
                                                 device=B.device_of(x)))


# ----------------------------------------------------------------------------- torch kernels
@pytest.mark.parametrize("n", [1000, _twins.POLICIES["convert"][0] + 7])
def test_torch_cpu_matches_numpy_bit_for_bit(n):
    torch = pytest.importorskip("torch")
    x = _data(n)
    t = torch.from_numpy(x.copy())
    for mode in ("nearest", "stochastic", "zero"):
        kw = {"mode": mode, "rng": 21}
        np.testing.assert_array_equal(_bits(lpc.to_storage(t, "bf16", **kw)),
                                      _bits(lpc.to_storage(x, "bf16", **kw)))
        np.testing.assert_array_equal(_bits(lpc.round_to(t, "bf16", **kw)),
                                      _bits(lpc.round_to(x, "bf16", **kw)))
    s = lpc.to_storage(x, "bf16")
    ts = lpc.to_storage(t, "bf16")
    np.testing.assert_array_equal(_bits(lpc.from_storage(ts)), _bits(lpc.from_storage(s)))
    np.testing.assert_array_equal(_bits(lpc.from_storage(ts, "fp64")),
                                  _bits(lpc.from_storage(s, "fp64")))


def test_torch_decode_every_bf16_pattern_both_paths():
    torch = pytest.importorskip("torch")
    bits = np.arange(1 << 16, dtype=np.uint16)
    want = bits.astype(np.uint32) << 16
    t = torch.from_numpy(bits.view(np.int16).copy()).view(torch.bfloat16)
    np.testing.assert_array_equal(_bits(lpc.from_storage(t)), want)  # torch's cast (small)
    big = t.repeat(2)  # the Numba kernel
    np.testing.assert_array_equal(_bits(lpc.from_storage(big)), np.tile(want, 2))


def test_torch_noncontiguous_and_multidimensional():
    torch = pytest.importorskip("torch")
    x = _data(40 * 90).reshape(40, 90)
    t = torch.from_numpy(x.copy())[:, ::3]
    assert not t.is_contiguous()
    ref = np.ascontiguousarray(x[:, ::3])
    for mode in ("nearest", "stochastic"):
        s = lpc.to_storage(t, "bf16", mode=mode, rng=4)
        assert s.dtype == torch.bfloat16 and tuple(s.shape) == (40, 30)
        np.testing.assert_array_equal(_bits(s), _bits(lpc.to_storage(ref, "bf16", mode=mode,
                                                                      rng=4)))
    np.testing.assert_array_equal(_bits(lpc.from_storage(lpc.to_storage(t, "bf16").mT)),
                                  _bits(lpc.from_storage(lpc.to_storage(ref, "bf16").T)))


def test_torch_autograd_graph_kept():
    torch = pytest.importorskip("torch")
    w = torch.from_numpy(_data(100)).requires_grad_(True)
    r = lpc.round_to(w, "bf16")
    assert r.requires_grad
    np.testing.assert_array_equal(_bits(r.detach()), _bits(lpc.round_to(w.detach(), "bf16")))


def test_torch_generator_seeds_the_kernel():
    torch = pytest.importorskip("torch")
    t = torch.full((200_000,), 1.0 + 2.0**-9)
    a = lpc.to_storage(t, "bf16", mode="stochastic", rng=torch.Generator().manual_seed(3))
    b = lpc.to_storage(t, "bf16", mode="stochastic", rng=torch.Generator().manual_seed(3))
    c = lpc.to_storage(t, "bf16", mode="stochastic", rng=torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)
    vals = a.float()
    assert set(torch.unique(vals).tolist()) <= {1.0, 1.0 + 2.0**-7}
    p = 0.25
    assert abs(float(vals.mean()) - (1 + 2.0**-9)) < 4 * 2.0**-7 * (p * (1 - p) / t.numel())**0.5


# ----------------------------------------------------------------------------- table, randomness
def test_table_keys_and_generic_default():
    f32, bf16, fp16 = FORMATS["fp32"], FORMATS["bf16"], FORMATS["fp16"]
    assert cv.kernel_for("numpy", cv.EMULATE, f32, bf16, "nearest") is not None
    assert cv.kernel_for("numpy", cv.EMULATE, f32, bf16, "zero") is None  # the fallback
    assert cv.kernel_for("array_api_strict", cv.STORE, f32, fp16, "nearest") is None
    with pytest.raises(ValueError, match="op"):
        cv.register("numpy", "cast", "fp32", "bf16")
    x = _data(500, dtype=np.float64)
    r = cv.convert(x, FORMATS["fp64"], bf16, "zero", op=cv.EMULATE)
    ref = fallback.round_values(np, x, bf16, "zero")
    np.testing.assert_array_equal(r.view(np.uint64), ref.view(np.uint64))


def test_generator_advances_as_before():
    """A stochastic conversion draws one 32-bit seed from a Generator first; the generic path
    then draws its uniforms from it."""
    x = _data(300, dtype=np.float64)
    g = np.random.default_rng(9)
    r = lpc.round_to(x, "bf16", mode="stochastic", rng=g)
    g2 = np.random.default_rng(9)
    g2.integers(0, 2**32, dtype=np.uint64)
    ref = fallback.round_values(np, x, FORMATS["bf16"], "stochastic", g2.random(x.shape))
    np.testing.assert_array_equal(r, ref)
    assert g.random() == g2.random()


def test_import_does_not_load_torch_or_cupy():
    code = ("import sys, numpy as np, linalg_pc as lpc; "
            "lpc.to_storage(np.ones(3, np.float32), 'bf16', mode='stochastic'); "
            "lpc.round_to(np.ones(3), 'fp16'); lpc.from_storage(np.ones(3, np.float16)); "
            "print('torch' in sys.modules, 'cupy' in sys.modules)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert res.stdout.split() == ["False", "False"]


def test_from_storage_numpy_fp64_out():
    s = _data(100).astype(BF16)
    out = np.empty(100, np.float64)
    assert lpc.from_storage(s, "fp64", out=out) is out
    np.testing.assert_array_equal(out, s.astype(np.float64))


# ----------------------------------------------------------------------------- issue 12, item 10
def test_torch_out_is_written_and_returned():
    """``to_storage(t, "bf16", out=buf)`` on torch writes into ``buf`` and returns it (it used
    to return a new tensor and leave ``buf`` alone), on both sides of the threads' threshold."""
    torch = pytest.importorskip("torch")
    for n in (20, _twins.POLICIES["convert"][0] + 5):
        x = torch.from_numpy(_data(n))
        buf = torch.zeros(n, dtype=torch.bfloat16)
        r = lpc.to_storage(x, "bf16", out=buf)
        assert r is buf
        np.testing.assert_array_equal(_bits(buf), _bits(lpc.to_storage(x.numpy(), "bf16")))


def test_numpy_out_of_the_wrong_shape_is_refused():
    x = _data(20)
    for shape in ((10, 2), (21,), (1, 20), ()):
        out = np.zeros(shape, BF16)
        with pytest.raises(ValueError, match=r"\bout\b.*shape"):
            lpc.to_storage(x, "bf16", out=out)
        assert not out.view(np.uint16).any()


def test_from_storage_torch_out_formats_its_error_message():
    """A valid ``out`` is written; an invalid one gets a readable message (formatting the torch
    dtype in the message used to crash)."""
    torch = pytest.importorskip("torch")
    t = lpc.to_storage(torch.from_numpy(_data(20)), "bf16")
    out = torch.zeros(20)
    assert lpc.from_storage(t, "fp32", out=out) is out
    np.testing.assert_array_equal(out.numpy(), t.float().numpy())
    for bad, why in ((torch.zeros(21), "shape"), (torch.zeros(20, dtype=torch.float64), "dtype"),
                     (torch.zeros(20, dtype=torch.bfloat16), "dtype")):
        with pytest.raises(ValueError, match=rf"\bout\b.*{why}"):
            lpc.from_storage(t, "fp32", out=bad)


def _f16(x):
    with np.errstate(over="ignore"):
        return x.astype(np.float16)


def _read_only(a):
    a.flags.writeable = False
    return a


@pytest.mark.parametrize("call", [
    lambda x, out: lpc.to_storage(x, "bf16", out=out(BF16)),
    lambda x, out: lpc.to_storage(x, "bf16", mode="stochastic", rng=1, out=out(BF16)),
    lambda x, out: lpc.to_storage(x, "fp16", out=out(np.float16)),
    lambda x, out: lpc.to_storage(x.astype(np.float64), "fp32", out=out(np.float32)),
    lambda x, out: lpc.round_to(x, "bf16", out=out(np.float32)),
    lambda x, out: lpc.round_to(x, "fp16", out=out(np.float32)),
    lambda x, out: lpc.round_to(x, "tf32", mode="zero", out=out(np.float32)),
    lambda x, out: lpc.from_storage(x.astype(BF16), "fp32", out=out(np.float32)),
    lambda x, out: lpc.from_storage(x.astype(BF16), "fp64", out=out(np.float64)),
    lambda x, out: lpc.from_storage(_f16(x), "fp32", out=out(np.float32)),
], ids=["store-bf16", "store-bf16-sr", "store-fp16", "store-fp32", "round-bf16", "round-fp16",
        "round-tf32", "decode-bf16", "decode-bf16-fp64", "decode-fp16"])
@pytest.mark.parametrize("n", [50, _twins.POLICIES["convert"][0] + 1])
def test_read_only_out_is_refused_naming_out(call, n):
    """A read-only NumPy ``out`` used to reach Numba (a TypingError from deep inside) or NumPy's
    assignment: now a ValueError naming ``out`` before any work, and ``out`` is untouched."""
    x = _data(n)
    made = []

    def out(dtype):
        made.append(_read_only(np.zeros(n, dtype)))
        return made[-1]

    with pytest.raises(ValueError, match=r"\bout\b.*read-only"):
        call(x, out)
    assert not made[0].view(f"u{made[0].itemsize}").any()


def test_round_to_in_place_on_a_read_only_input_is_refused():
    x = _read_only(_data(20))
    before = x.copy()
    with pytest.raises(ValueError, match=r"\bout\b.*read-only"):
        lpc.round_to(x, "bf16", out=x)
    np.testing.assert_array_equal(x, before)


# ----------------------------------------------------------------------------- autograd rule
_AG_CASES = [  # (function, input dtype name, target, mode)
    (fn, dt, fmt, mode)
    for fn, fmts in (("round_to", ("bf16", "fp16", "tf32", "fp32")),
                     ("to_storage", ("bf16", "fp16", "fp32")))
    for dt in ("float32", "float64", "bfloat16", "float16")
    for fmt in fmts
    for mode in ("nearest", "stochastic", "zero")
] + [("from_storage", dt, c, None) for dt in ("bfloat16", "float16", "float32", "float64")
     for c in ("fp32", "fp64")]


def _ag_run(fn, x, fmt, mode, out=None):
    if fn == "from_storage":
        return lpc.from_storage(x, fmt, out=out)
    return getattr(lpc, fn)(x, fmt, mode=mode, rng=7, out=out)


@pytest.mark.parametrize("fn,dt,fmt,mode", _AG_CASES)
def test_torch_autograd_straight_through(fn, dt, fmt, mode):
    """docs/precision.md, "PyTorch autograd": a conversion of a tensor that requires grad keeps
    the graph, its values are those of the detached conversion, and its gradient is the
    straight-through one (the incoming gradient, cast to x's dtype), in every mode and format.
    It used to be the identity on some paths and zero on others (the floor of the array-API
    rounding), with a UserWarning from torch.asarray on the copying paths."""
    import warnings

    torch = pytest.importorskip("torch")
    dtype = getattr(torch, dt)
    x0 = torch.from_numpy(np.random.default_rng(1).standard_normal(300)).to(dtype)
    x = x0.clone().requires_grad_(True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        r = _ag_run(fn, x, fmt, mode)
    want = _ag_run(fn, x0, fmt, mode)
    assert r.requires_grad and (r.grad_fn is not None or r is x)  # from_storage: x itself
    assert r.dtype == want.dtype
    np.testing.assert_array_equal(_bits(r.detach()), _bits(want))
    g = torch.from_numpy(np.random.default_rng(2).standard_normal(300)).to(r.dtype)
    r.backward(g)
    assert x.grad.dtype == dtype
    np.testing.assert_array_equal(_bits(x.grad), _bits(g.to(dtype)))


def test_torch_autograd_out_writes_values_without_a_graph():
    """With ``out=``, the values are written into ``out`` as data (an optimizer's state update):
    no graph is recorded, ``out`` keeps its own requires_grad, and ``out`` is returned; a
    parameter can be rounded in place. (It used to fail: ``.numpy()`` on a tensor that requires
    grad, or torch's refusal of an in-place write into a leaf.)"""
    torch = pytest.importorskip("torch")
    x0 = torch.from_numpy(_data(500))
    x = x0.clone().requires_grad_(True)
    state = torch.empty(500, dtype=torch.bfloat16)
    assert lpc.to_storage(x, "bf16", out=state) is state
    assert not state.requires_grad and state.grad_fn is None
    np.testing.assert_array_equal(_bits(state), _bits(lpc.to_storage(x0, "bf16")))
    w = torch.nn.Parameter(x0.clone())
    assert lpc.round_to(w, "bf16", mode="stochastic", rng=3, out=w) is w
    assert w.requires_grad and w.is_leaf
    np.testing.assert_array_equal(_bits(w.detach()),
                                  _bits(lpc.round_to(x0, "bf16", mode="stochastic", rng=3)))
    dec = torch.nn.Parameter(torch.zeros(500))
    assert lpc.from_storage(state, out=dec) is dec and dec.is_leaf
    np.testing.assert_array_equal(dec.detach().numpy(), state.float().numpy())


def test_torch_no_grad_mode_gives_plain_tensors():
    torch = pytest.importorskip("torch")
    x = torch.from_numpy(_data(100)).requires_grad_(True)
    with torch.no_grad():
        r = lpc.to_storage(x, "bf16", mode="stochastic", rng=1)
    assert not r.requires_grad
    np.testing.assert_array_equal(_bits(r), _bits(lpc.to_storage(x.detach(), "bf16",
                                                                 mode="stochastic", rng=1)))


def test_torch_16bit_to_16bit_storage_and_fp16_nan_signs_match_numpy():
    """Found by the ml_dtypes peer cases: on torch, fp16 65504 stored as bf16 became inf (it was
    rounded inside fp16's own dtype: bf16's 65536 overflows fp16), and fp16 NaNs lost their sign
    (torch's fp16 -> fp32 cast writes every NaN as +0x7FFFFFFF). Now bit for bit as NumPy."""
    torch = pytest.importorskip("torch")
    pats = np.array([0x7BFF, 0xFBFF, 0x3C00, 0x7C00, 0xFC00, 0x7E00, 0xFE00, 0xFC01, 0x0001],
                    dtype=np.uint16)
    h = pats.view(np.float16)
    t = torch.from_numpy(pats.view(np.int16).copy()).view(torch.float16)
    with np.errstate(invalid="ignore"):  # NumPy warns on the signalling NaN 0xFC01
        _check_fp16_like_numpy(torch, h, t)


def _check_fp16_like_numpy(torch, h, t):
    for mode in ("nearest", "zero", "stochastic"):
        np.testing.assert_array_equal(_bits(lpc.to_storage(t, "bf16", mode=mode, rng=2)),
                                      _bits(lpc.to_storage(h, "bf16", mode=mode, rng=2)))
    assert float(lpc.to_storage(t, "bf16")[0]) == 65536.0
    for c in ("fp32", "fp64"):
        np.testing.assert_array_equal(np.signbit(_bits(lpc.from_storage(t, c)).view(
            np.float32 if c == "fp32" else np.float64)), np.signbit(h))
    np.testing.assert_array_equal(_bits(lpc.from_storage(t, "fp32")),
                                  _bits(lpc.from_storage(h, "fp32")))
    np.testing.assert_array_equal(_bits(lpc.to_storage(t, "fp32")), _bits(h.astype(np.float32)))
    np.testing.assert_array_equal(_bits(lpc.round_to(t, "bf16")), _bits(lpc.round_to(h, "bf16")))
