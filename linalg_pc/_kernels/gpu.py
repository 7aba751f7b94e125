"""CuPy elementwise kernels for bf16 conversion on the GPU (same bit rules as ``cpu.py``).

Built lazily on first use, so importing linalg_pc never needs CuPy.
"""

from __future__ import annotations

from functools import cache

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


def f32_to_bf16_bits(x, *, seed=None):
    """Round a CuPy float32 array to bf16 bit patterns (uint16); stochastic when seeded."""
    import cupy

    rne, sr, _ = _kernels()
    src = cupy.ascontiguousarray(x).view(cupy.uint32)
    if seed is None:
        return rne(src)
    return sr(src, cupy.uint32(seed & 0xFFFFFFFF))


def bf16_bits_to_f32(bits):
    """Decode CuPy bf16 bit patterns (any 16-bit view) to float32."""
    import cupy

    _, _, dec = _kernels()
    return dec(cupy.ascontiguousarray(bits).view(cupy.uint16)).view(cupy.float32)
