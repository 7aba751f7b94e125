"""Numba CPU kernels for bf16 conversion, on the bit patterns.

Numba cannot take bfloat16 arrays, so every kernel works on unsigned-integer views: fp32 as
``uint32``, bf16 as ``uint16``. The kernels are fused elementwise loops (``prange`` over the
data); none of them does linear algebra (that stays in BLAS).

Round to nearest even on the bit pattern (docs/precision.md, "Kernels"): add
``0x7FFF + ((b >> 16) & 1)`` and keep the top 16 bits. NaN becomes the canonical quiet NaN with
its sign (``sign | 0x7FC0``), as ml_dtypes does; ±inf stays; a finite value that rounds past the
largest bf16 becomes inf.

Stochastic rounding adds a uniform random 16-bit integer to the low half of the fp32 pattern and
truncates: the result is one of the two bf16 neighbours, the upper one with probability equal to
the distance from the lower one in units of the bf16 spacing (unbiased). The random bits come from
a counter-based hash of (seed, index), so results depend on the seed only, never on the number of
threads.

The bottom of this module registers the NumPy entries of the conversion table
(``linalg_pc/_backend/convert.py``): fp32/fp16/fp64 -> bf16 storage, round-to-bf16 emulation,
bf16 -> fp32/fp64 decoding, and the fp16 casts with ml_dtypes' NaN convention.

Decoding to a large output (``NT_MIN_BYTES`` and up) writes 8 lanes at a time with
non-temporal stores (``_llvm.decode8_nt``): the output is not read into the cache before it is
overwritten, which saves a third of the memory traffic.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from .. import _buffers
from .._backend import convert as _cv
from ._llvm import NT_ALIGN, decode8_nt, store_fence
from ._twins import twins, use_parallel


def _last_level_cache_bytes(default: int = 32 << 20) -> int:
    """Size of the largest CPU cache Linux reports (sysfs), else ``default``."""
    import glob

    best = 0
    for path in glob.glob("/sys/devices/system/cpu/cpu0/cache/index*/size"):
        try:
            with open(path) as f:
                txt = f.read().strip().upper()
            mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(txt[-1:], 1)
            best = max(best, int(txt.rstrip("KMG")) * mult)
        except (OSError, ValueError):
            continue
    return best or default


#: bf16 -> fp32 outputs of at least this many bytes are written with non-temporal stores (no
#: read-for-ownership). They pay only beyond the last-level cache (32 MiB L3, repeated decode into
#: one buffer: 32 MiB out 0.83 ms non-temporal vs 0.73 ms ordinary, 48 MiB 1.27 vs 1.43 ms,
#: 64 MiB 1.76 vs 2.28 ms), so the threshold is 1.25× that cache. (fp32 -> bf16 gains nothing from
#: them: it reads twice what it writes, and measured the same 1.8–1.9 ms with and without.)
NT_MIN_BYTES = _last_level_cache_bytes() * 5 // 4
#: Chunks of the non-temporal decode (each thread fences after each of its chunks).
NT_CHUNKS = 16


@njit(cache=True, inline="always")
def _rne_bits(b):
    b = np.uint32(b)
    if (b & np.uint32(0x7FFFFFFF)) > np.uint32(0x7F800000):
        return np.uint16(((b >> np.uint32(16)) & np.uint32(0x8000)) | np.uint32(0x7FC0))
    lsb = (b >> np.uint32(16)) & np.uint32(1)
    return np.uint16((b + np.uint32(0x7FFF) + lsb) >> np.uint32(16))


@njit(cache=True, inline="always")
def _hash32(x):
    # lowbias32 (C. Wellons): a well-mixed 32-bit integer hash.
    x = np.uint32(x)
    x ^= x >> np.uint32(16)
    x *= np.uint32(0x7FEB352D)
    x ^= x >> np.uint32(15)
    x *= np.uint32(0x846CA68B)
    x ^= x >> np.uint32(16)
    return x


@njit(cache=True, inline="always")
def _sr_bits(b, i, seed):
    b = np.uint32(b)
    if (b & np.uint32(0x7FFFFFFF)) > np.uint32(0x7F800000):
        return np.uint16(((b >> np.uint32(16)) & np.uint32(0x8000)) | np.uint32(0x7FC0))
    if (b & np.uint32(0x7FFFFFFF)) == np.uint32(0x7F800000):
        return np.uint16(b >> np.uint32(16))
    r = _hash32(np.uint32(i) ^ _hash32(np.uint32(seed))) & np.uint32(0xFFFF)
    return np.uint16((b + r) >> np.uint32(16))


def _f32_to_bf16_rne(src, dst):
    for i in prange(src.size):
        dst[i] = _rne_bits(src[i])


def _f32_to_bf16_sr(src, dst, seed):
    for i in prange(src.size):
        dst[i] = _sr_bits(src[i], i, seed)


def _bf16_to_f32(src, dst):
    for i in prange(src.size):
        dst[i] = np.uint32(src[i]) << np.uint32(16)


def _bf16_to_f32_nt(src, dst, head, nvec):
    per = (nvec + NT_CHUNKS - 1) // NT_CHUNKS
    for c in prange(NT_CHUNKS):
        lo = c * per
        hi = min(nvec, lo + per)
        for j in range(lo, hi):
            decode8_nt(src, dst, head + 8 * j)
        store_fence()


def _f32_round_bf16_rne(src, dst):
    for i in prange(src.size):
        dst[i] = np.uint32(_rne_bits(src[i])) << np.uint32(16)


def _f32_round_bf16_sr(src, dst, seed):
    for i in prange(src.size):
        dst[i] = np.uint32(_sr_bits(src[i], i, seed)) << np.uint32(16)


_f32_to_bf16_rne_par, _f32_to_bf16_rne_seq, _ = twins(_f32_to_bf16_rne, "convert")
_f32_to_bf16_sr_par, _f32_to_bf16_sr_seq, _ = twins(_f32_to_bf16_sr, "convert")
_bf16_to_f32_par, _bf16_to_f32_seq, _ = twins(_bf16_to_f32, "convert")
_bf16_to_f32_nt_par, _bf16_to_f32_nt_seq, _ = twins(_bf16_to_f32_nt, "convert")
_f32_round_bf16_rne_par, _f32_round_bf16_rne_seq, _ = twins(_f32_round_bf16_rne, "convert")
_f32_round_bf16_sr_par, _f32_round_bf16_sr_seq, _ = twins(_f32_round_bf16_sr, "convert")


def _flat(a: np.ndarray, dtype) -> np.ndarray:
    return np.ascontiguousarray(a).reshape(-1).view(dtype)


def f32_to_bf16_bits(x: np.ndarray, *, seed: int | None = None,
                     out: np.ndarray | None = None) -> np.ndarray:
    """Round a float32 array to bf16, returning the bf16 bit patterns as ``uint16``.

    ``seed=None`` rounds to nearest even; an integer seed rounds stochastically. ``out``: a
    C-contiguous 16-bit array of x's size to write into (no allocation).
    """
    src = _flat(x, np.uint32)
    dst = _buffers.empty(src.size, np.uint16) if out is None else out.reshape(-1).view(np.uint16)
    par = use_parallel(src.size, "convert")
    if seed is None:
        (_f32_to_bf16_rne_par if par else _f32_to_bf16_rne_seq)(src, dst)
    else:
        s = np.uint32(seed & 0xFFFFFFFF)
        (_f32_to_bf16_sr_par if par else _f32_to_bf16_sr_seq)(src, dst, s)
    return dst.reshape(x.shape) if out is None else out


def decode_bf16_into(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """``dst = uint32(src) << 16`` for 1-D C-contiguous uint16 ``src`` and uint32 ``dst``.

    Outputs of ``NT_MIN_BYTES`` and more go through the non-temporal kernel: an ordinary loop
    up to the first 32-byte aligned element of dst, 8-lane non-temporal stores, an ordinary
    tail.
    """
    n = src.size
    par = use_parallel(n, "convert")
    if dst.nbytes < NT_MIN_BYTES or dst.ctypes.data % dst.itemsize:  # small, or unaligned
        (_bf16_to_f32_par if par else _bf16_to_f32_seq)(src, dst)
        return dst
    head = min(n, ((-dst.ctypes.data) % NT_ALIGN) // dst.itemsize)
    nvec = (n - head) // 8
    tail = head + 8 * nvec
    _bf16_to_f32_seq(src[:head], dst[:head])
    (_bf16_to_f32_nt_par if par else _bf16_to_f32_nt_seq)(src, dst, head, nvec)
    _bf16_to_f32_seq(src[tail:], dst[tail:])
    return dst


def bf16_bits_to_f32(bits: np.ndarray, *, out: np.ndarray | None = None) -> np.ndarray:
    """Decode bf16 bit patterns (any 16-bit view) to a float32 array (exact).

    ``out``: a C-contiguous 32-bit array of bits' size to write into (no allocation).
    """
    src = _flat(bits, np.uint16)
    if out is not None:
        decode_bf16_into(src, out.reshape(-1).view(np.uint32))
        return out
    dst = _buffers.empty(src.size, np.uint32)
    decode_bf16_into(src, dst)
    return dst.view(np.float32).reshape(bits.shape)


def f32_round_bf16(x: np.ndarray, *, seed: int | None = None,
                   out: np.ndarray | None = None) -> np.ndarray:
    """Round a float32 array to bf16 values, returned as float32 (fused: no 16-bit temporary).

    ``out``: a C-contiguous 32-bit array of x's size to write into (no allocation).
    """
    src = _flat(x, np.uint32)
    dst = _buffers.empty(src.size, np.uint32) if out is None else out.reshape(-1).view(np.uint32)
    par = use_parallel(src.size, "convert")
    if seed is None:
        (_f32_round_bf16_rne_par if par else _f32_round_bf16_rne_seq)(src, dst)
    else:
        s = np.uint32(seed & 0xFFFFFFFF)
        (_f32_round_bf16_sr_par if par else _f32_round_bf16_sr_seq)(src, dst, s)
    return dst.view(np.float32).reshape(x.shape) if out is None else out


@njit(cache=True)
def recursive_sum_bf16(values, seed):
    """Sum float32 ``values`` left to right, rounding every partial sum to bf16.

    ``seed < 0`` rounds to nearest even, otherwise stochastically (random bits from ``seed``).
    The additions run in float32 (exact for two bf16-representable operands of similar size,
    else one fp32 rounding first: the model of a bf16 accumulator fed by an fp32 adder).
    Returns the final sum as float32. This is the stagnation experiment of Connolly, Higham and
    Mary, SISC 43 (2021).
    """
    acc = np.zeros(1, dtype=np.float32)
    bits = acc.view(np.uint32)
    for i in range(values.size):
        acc[0] = acc[0] + values[i]
        if seed < 0:
            bits[0] = np.uint32(_rne_bits(bits[0])) << np.uint32(16)
        else:
            bits[0] = np.uint32(_sr_bits(bits[0], i, np.uint32(seed))) << np.uint32(16)
    return acc[0]


@njit(cache=True)
def recursive_sum_f32(values):
    """Sum float32 ``values`` left to right in float32 (the fp32-accumulation baseline)."""
    acc = np.float32(0.0)
    for i in range(values.size):
        acc = np.float32(acc + values[i])
    return acc


# --------------------------------------------------------------------------- conversion table
_BF16 = None


def _bf16():
    global _BF16
    if _BF16 is None:
        import ml_dtypes

        _BF16 = np.dtype(ml_dtypes.bfloat16)
    return _BF16


def _seed(mode, rand):
    return rand.seed() if mode == "stochastic" else None


@_cv.register("numpy", _cv.EMULATE, "fp32", "bf16", ("nearest", "stochastic"))
def _np_round_bf16(xp, x, src, dst, mode, out, rand):
    return f32_round_bf16(x, seed=_seed(mode, rand), out=out)


@_cv.register("numpy", _cv.STORE, ("fp32", "fp16"), "bf16", ("nearest", "stochastic"))
def _np_store_bf16(xp, x, src, dst, mode, out, rand):
    x32 = x.astype(np.float32) if src.name == "fp16" else x
    bits = f32_to_bf16_bits(x32, seed=_seed(mode, rand), out=out)
    return out if out is not None else bits.view(_bf16())


@_cv.register("numpy", _cv.STORE, "fp64", "bf16")
@_cv.register("numpy", _cv.STORE, ("fp32", "fp16"), "bf16", "zero")
def _np_store_bf16_rounded(xp, x, src, dst, mode, out, rand):
    # one correct rounding in float64 (or toward zero); the encoding below is then exact
    r = _cv.convert(x, src, dst, mode, op=_cv.EMULATE, rng=rand, xp=xp, lib="numpy")
    bits = f32_to_bf16_bits(r.astype(np.float32), out=out)
    return out if out is not None else bits.view(_bf16())


@_cv.register("numpy", _cv.DECODE, "bf16", ("fp32", "fp64"))
@_cv.register("numpy", _cv.STORE, "bf16", "fp32")
def _np_decode_bf16(xp, x, src, dst, mode, out, rand):
    if dst.name == "fp32":
        return bf16_bits_to_f32(x.view(np.uint16), out=out)
    return _cv.write(out, bf16_bits_to_f32(x.view(np.uint16)).astype(np.float64))


def _fix_nan(x, r):
    """NaNs of ``r`` become the quiet NaN with x's sign (ml_dtypes' convention)."""
    nan = np.isnan(x)
    if nan.any():
        r = r.copy()
        r[nan] = np.copysign(np.nan, x[nan])
    return r


@_cv.register("numpy", _cv.EMULATE, ("fp32", "fp64"), "fp16", "nearest")
def _np_round_fp16(xp, x, src, dst, mode, out, rand):
    with np.errstate(over="ignore"):
        return _cv.write(out, _fix_nan(x, x.astype(np.float16).astype(x.dtype)))


@_cv.register("numpy", _cv.STORE, ("fp32", "fp64"), "fp16", "nearest")
def _np_store_fp16(xp, x, src, dst, mode, out, rand):
    with np.errstate(over="ignore"):
        return _cv.write(out, _fix_nan(x, x.astype(np.float16)))
