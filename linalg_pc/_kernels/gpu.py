"""CuPy elementwise kernels for bf16 conversion on the GPU (same bit rules as ``cpu.py``).

Built lazily on first use, so importing linalg_pc never needs CuPy; ``_backend.convert`` imports
this module at the first conversion of a CuPy array, and the bottom of it registers the CuPy
entries of the conversion table (fp32 -> bf16 storage and emulation, bf16 -> fp32/fp64 decoding).
"""

from __future__ import annotations

from functools import cache

from .. import _backend as B
from .._backend import convert as _cv

_RNE = r"""
unsigned int b = x;
if ((b & 0x7FFFFFFFu) > 0x7F800000u) {
    y = (unsigned short)(((b >> 16) & 0x8000u) | 0x7FC0u);
} else {
    y = (unsigned short)((b + 0x7FFFu + ((b >> 16) & 1u)) >> 16);
}
"""

_SR = r"""
unsigned int b = x;
if ((b & 0x7FFFFFFFu) > 0x7F800000u) {
    y = (unsigned short)(((b >> 16) & 0x8000u) | 0x7FC0u);
} else if ((b & 0x7FFFFFFFu) == 0x7F800000u) {
    y = (unsigned short)(b >> 16);
} else {
    unsigned int h = seed;
    h ^= h >> 16; h *= 0x7FEB352Du; h ^= h >> 15; h *= 0x846CA68Bu; h ^= h >> 16;
    unsigned int r = (unsigned int)i ^ h;
    r ^= r >> 16; r *= 0x7FEB352Du; r ^= r >> 15; r *= 0x846CA68Bu; r ^= r >> 16;
    y = (unsigned short)((b + (r & 0xFFFFu)) >> 16);
}
"""


@cache
def _kernels():
    import cupy

    rne = cupy.ElementwiseKernel("uint32 x", "uint16 y", _RNE, "lpc_f32_to_bf16_rne")
    sr = cupy.ElementwiseKernel("uint32 x, uint32 seed", "uint16 y", _SR, "lpc_f32_to_bf16_sr")
    dec = cupy.ElementwiseKernel("uint16 x", "uint32 y", "y = ((unsigned int)x) << 16;",
                                 "lpc_bf16_to_f32")
    return rne, sr, dec


def f32_to_bf16_bits(x, *, seed=None, out=None):
    """Round a CuPy float32 array to bf16 bit patterns (uint16); stochastic when seeded.

    ``out``: a C-contiguous 16-bit CuPy array of x's shape to write into (returned).
    """
    import cupy

    rne, sr, _ = _kernels()
    src = cupy.ascontiguousarray(x).view(cupy.uint32)
    dst = () if out is None else (out.view(cupy.uint16),)
    if seed is None:
        bits = rne(src, *dst)
    else:
        bits = sr(src, cupy.uint32(seed & 0xFFFFFFFF), *dst)
    return bits if out is None else out


def bf16_bits_to_f32(bits, *, out=None):
    """Decode CuPy bf16 bit patterns (any 16-bit view) to float32.

    ``out``: a C-contiguous 32-bit CuPy array of bits' shape to write into (returned).
    """
    import cupy

    _, _, dec = _kernels()
    src = cupy.ascontiguousarray(bits).view(cupy.uint16)
    if out is None:
        return dec(src).view(cupy.float32)
    dec(src, out.view(cupy.uint32))
    return out


# --------------------------------------------------------------------------- conversion table
def _seed(xp, x, mode, rand):
    return rand.seed(xp, x) if mode == "stochastic" else None


@_cv.register("cupy", _cv.EMULATE, "fp32", "bf16", ("nearest", "stochastic"))
def _round_bf16(xp, x, src, dst, mode, out, rand):
    return bf16_bits_to_f32(f32_to_bf16_bits(x, seed=_seed(xp, x, mode, rand)), out=out)


@_cv.register("cupy", _cv.STORE, "fp32", "bf16", ("nearest", "stochastic"))
def _store_bf16(xp, x, src, dst, mode, out, rand):
    bits = f32_to_bf16_bits(x, seed=_seed(xp, x, mode, rand), out=out)
    return out if out is not None else bits.view(B.native_dtype(xp, dst))


@_cv.register("cupy", _cv.DECODE, "bf16", ("fp32", "fp64"))
def _decode_bf16(xp, x, src, dst, mode, out, rand):
    import cupy

    if dst.name == "fp32":
        return bf16_bits_to_f32(x.view(cupy.uint16), out=out)
    return _cv.write(out, bf16_bits_to_f32(x.view(cupy.uint16)).astype(cupy.float64))
