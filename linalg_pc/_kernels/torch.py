"""PyTorch entries of the conversion table (``linalg_pc/_backend/convert.py``).

CPU tensors run the Numba kernels of ``cpu.py`` on the tensor's own memory: ``t.numpy()`` is a
zero-copy view of a contiguous CPU tensor (bf16 through ``t.view(torch.int16)``), and results are
torch tensors over memory from ``_buffers`` (recycled like the NumPy results) or the caller's
``out``. So fp32 <-> bf16 on a CPU tensor costs what it costs on a NumPy array, and stochastic
rounding gives the same bits as on NumPy for the same seed. A non-contiguous CPU tensor is made
contiguous first (one copy; element i of the hash is the i-th element in C order either way).
Decoding below the "convert" threshold of ``_twins.POLICIES`` elements uses PyTorch's cast (the
same bits: a shift), whose call costs less than the views (3 against 19 µs for 1024 values).

Tensors on other devices (CUDA) take PyTorch's own casts, with NaNs written as ml_dtypes does
(the quiet NaN with the input's sign: PyTorch writes every NaN as one pattern), or decline to the
generic array-API path of ``_backend.convert`` (stochastic rounding there draws uniforms with
``torch.rand`` on the device).

Autograd (:func:`straight_through`, the registered rule): a conversion of a tensor that requires
grad converts its detached data through the same kernels (the same bits as without grad) and
returns a result in the graph whose gradient is the straight-through estimator: the incoming
gradient, cast to x's dtype (Bengio, Léonard, Courville 2013; the usual rule of
quantization-aware training). ``out=`` is written as data, like an optimizer's in-place update
under ``torch.no_grad()``: no graph is recorded and ``out`` keeps its own ``requires_grad``.

Imported by ``_backend.convert`` at the first conversion of a torch tensor, never by
``import linalg_pc``.
"""

from __future__ import annotations

import numpy as np
import torch

from .. import _buffers
from .._backend import convert as _cv
from .._formats import FORMATS
from . import cpu
from ._twins import POLICIES

_HALF = ("nearest", "stochastic")
_FP32 = FORMATS["fp32"]
_TORCH_DTYPE = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32,
                "fp64": torch.float64}


def _host(x) -> bool:
    """Whether the Numba kernels can run on x's memory (CPU; autograd is handled before, by
    :func:`straight_through`, which passes detached tensors)."""
    return x.device.type == "cpu" and not x.requires_grad


class _StraightThrough(torch.autograd.Function):
    """y = run(x) in the forward pass; dL/dx = dL/dy cast to x's dtype in the backward pass."""

    @staticmethod
    def forward(ctx, x, run):
        ctx.x_dtype = x.dtype
        return run(x.detach(), None)

    @staticmethod
    def backward(ctx, grad):
        return grad.to(ctx.x_dtype), None


@_cv.register_autograd("torch")
def straight_through(x, out, run):
    """The autograd rule of torch conversions (see the module docstring); None when neither x
    nor ``out`` requires grad."""
    if not (x.requires_grad or (out is not None and out.requires_grad)):
        return None
    if out is not None:
        with torch.no_grad():
            run(x.detach(), out.detach())
        return out
    if not torch.is_grad_enabled():
        return run(x.detach(), None)
    return _StraightThrough.apply(x, run)


def _bits(t) -> np.ndarray:
    """Zero-copy NumPy view of a contiguous CPU tensor (16-bit tensors as uint16 bit patterns)."""
    if t.dtype in (torch.bfloat16, torch.float16):
        return t.view(torch.int16).numpy().view(np.uint16)
    return t.numpy()


def _new(shape, dtype):
    """An uninitialized contiguous CPU tensor over recycled memory (``_buffers``)."""
    if dtype == torch.bfloat16:
        return torch.from_numpy(_buffers.empty(shape, np.int16)).view(torch.bfloat16)
    return torch.from_numpy(_buffers.empty(shape, np.float32))


def _seed(xp, x, mode, rand):
    return rand.seed(xp, x) if mode == "stochastic" else None


def canonical_nan(x, r):
    """Replace NaNs of r by the quiet NaN carrying x's sign (ml_dtypes' convention)."""
    nan = torch.isnan(x)
    # on the CPU, skip the pass when there is no NaN; on a device, reading nan.any() would wait
    # for it (an optimizer stores its bf16 state every step): always take the where
    if _host(x) and not bool(nan.any()):
        return r
    if r.dtype == torch.bfloat16:
        # torch's own conversion writes every NaN as one pattern; build sign | 0x7FC0 on the bits
        canon = torch.where(torch.signbit(x), torch.tensor(-64, dtype=torch.int16),
                            torch.tensor(0x7FC0, dtype=torch.int16))
        return torch.where(nan, canon, r.view(torch.int16)).view(torch.bfloat16)
    # the sign from signbit: torch's float16 -> float32 cast writes every NaN as +0x7FFFFFFF
    sign = torch.where(torch.signbit(x), -1.0, 1.0).to(torch.float32)
    q = torch.copysign(torch.full(x.shape, float("nan"), dtype=torch.float32, device=x.device),
                       sign)
    return torch.where(nan, q.to(r.dtype), r)


def decode_fp16(x, dtype):
    """float16 -> float32/float64 keeping every NaN's sign and payload, as NumPy's cast does
    (PyTorch's own float16 -> float32 cast writes every NaN as +0x7FFFFFFF)."""
    r = x.to(dtype)
    nan = torch.isnan(x)
    # on the CPU, skip the pass when there is no NaN; on a device, reading nan.any() would wait
    # for it (an optimizer stores its bf16 state every step): always take the where
    if _host(x) and not bool(nan.any()):
        return r
    h = x.view(torch.int16).to(torch.int64) & 0xFFFF
    b = ((h & 0x8000) << 16) | 0x7F800000 | ((h & 0x3FF) << 13)  # the fp32 pattern
    q = (b - ((b >> 31) << 32)).to(torch.int32).view(torch.float32)  # as a signed 32-bit int
    return torch.where(nan, q.to(dtype), r)


@_cv.register("torch", _cv.EMULATE, "fp32", "bf16", _HALF)
def _round_bf16(xp, x, src, dst, mode, out, rand):
    if not _host(x):
        if mode != "nearest":
            return None  # generic path: uniforms from torch.rand on x's device
        return _cv.write(out, canonical_nan(x, x.to(torch.bfloat16).to(x.dtype)))
    xc = x.contiguous()
    res = _new(x.shape, torch.float32) if out is None else out
    cpu.f32_round_bf16(xc.numpy(), seed=_seed(xp, x, mode, rand), out=res.numpy())
    return res


@_cv.register("torch", _cv.EMULATE, "fp32", "fp16", "nearest")
def _round_fp16(xp, x, src, dst, mode, out, rand):
    return _cv.write(out, canonical_nan(x, x.to(torch.float16).to(x.dtype)))


@_cv.register("torch", _cv.STORE, ("fp32", "fp64", "bf16", "fp16"), ("bf16", "fp16"))
def _store_16(xp, x, src, dst, mode, out, rand):
    dtype = _TORCH_DTYPE[dst.name]
    if src.name == "fp32" and dst.name == "bf16" and mode in _HALF and _host(x):
        xc = x.contiguous()
        res = _new(x.shape, torch.bfloat16) if out is None else out
        cpu.f32_to_bf16_bits(xc.numpy(), seed=_seed(xp, x, mode, rand), out=_bits(res))
        return res
    if src.name == "fp32" and mode == "nearest":
        return _cv.write(out, canonical_nan(x, x.to(dtype)))
    if src.bits == 16:
        # widen exactly first: emulating in x's own 16-bit dtype can overflow it (fp16 65504
        # rounds to bf16 65536, which fp16 cannot hold: it used to be stored as inf)
        wide = _cv.convert(x, src, _FP32, op=_cv.DECODE, xp=xp, lib="torch")
        return _store_16(xp, wide, _FP32, dst, mode, out, rand)
    r = _cv.convert(x, src, dst, mode, op=_cv.EMULATE, rng=rand, xp=xp, lib="torch")
    return _cv.write(out, canonical_nan(x, r.to(dtype)))


@_cv.register("torch", _cv.DECODE, "bf16", "fp32")
@_cv.register("torch", _cv.STORE, "bf16", "fp32")
def _decode_bf16(xp, x, src, dst, mode, out, rand):
    if not _host(x) or x.numel() < POLICIES["convert"][0]:
        return None  # generic path: torch's cast (exact; cheaper than the views when small)
    xc = x.contiguous()
    res = _new(x.shape, torch.float32) if out is None else out
    cpu.bf16_bits_to_f32(_bits(xc), out=res.numpy())
    return res


@_cv.register("torch", _cv.DECODE, "fp16", ("fp32", "fp64"))
@_cv.register("torch", _cv.STORE, "fp16", ("fp32", "fp64"))
def _decode_fp16(xp, x, src, dst, mode, out, rand):
    return _cv.write(out, decode_fp16(x, _TORCH_DTYPE[dst.name]))
