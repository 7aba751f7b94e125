"""Number formats, rounding emulation and 16-bit storage conversion.

Storage precision and compute precision are separate: :func:`round_to` *emulates* a format
(the values become representable in it, the dtype stays the input's: this is what the
error-analysis studies run on), :func:`to_storage` *stores* in a real 16-bit dtype of the input's
library, and :func:`from_storage` decodes into the compute format.

Rounding follows IEEE 754: ties to even, NaN stays NaN (the quiet NaN with its sign, bit for bit
what ml_dtypes produces), ±inf stays, overflow goes to inf (nearest, stochastic) or to the largest
finite value (toward zero), subnormals are kept, zero keeps its sign. Rounding from float64 is a
single correct rounding; note that ``astype`` chains in ml_dtypes and PyTorch round float64 to
float32 first, which double-rounds (1 + 2⁻⁸ + 2⁻³⁰ becomes 1 in bf16 instead of 1 + 2⁻⁷).

Fast paths: Numba kernels for NumPy float32 <-> bf16 (``_kernels/cpu.py``), CuPy elementwise
kernels on the GPU (``_kernels/gpu.py``), the hardware conversions for fp16/fp32 targets, and the
pure array-API reference algorithm (``_kernels/fallback.py``) for everything else. The NumPy
kernels write large results into recycled memory (``_buffers``: a freed output's pages are
handed to the next conversion of the same size instead of being faulted in again);
:func:`set_buffer_cache` sets how much idle memory is kept, 0 turns it off.

References
----------
Higham, *Accuracy and Stability of Numerical Algorithms*, §2. Connolly, Higham, Mary, "Stochastic
rounding and its probabilistic backward error analysis", SISC 43 (2021).
"""

from __future__ import annotations

import numpy as np

from . import _backend as B
from . import _buffers
from ._formats import FORMATS, Format, get_format, unit_roundoff
from ._kernels import cpu as _cpu
from ._kernels import fallback as _fallback

__all__ = [
    "Format",
    "FORMATS",
    "get_format",
    "unit_roundoff",
    "round_to",
    "to_storage",
    "from_storage",
    "ROUNDING_MODES",
    "representable",
    "set_buffer_cache",
    "buffer_cache_info",
]

ROUNDING_MODES = _fallback.MODES


def set_buffer_cache(max_bytes: int) -> int:
    """Set how many bytes of freed conversion outputs are kept for reuse; returns the old limit.

    Large NumPy results of :func:`to_storage`, :func:`from_storage` and :func:`round_to` (1 MiB
    and up) are written into memory recycled from earlier results that were freed, so a
    conversion repeated every optimizer step does not fault in fresh pages each time (16M
    fp32→bf16 values: 2.3 ms into reused memory, 5.4 ms into fresh memory, on 2 cores). The
    default limit is 256 MiB (environment variable ``LINALG_PC_BUFFER_CACHE``, in bytes); 0
    turns recycling off and releases what is kept. The arrays are ordinary NumPy arrays whose
    ``base`` owns the recycled block (``flags.owndata`` is False).

    Parameters
    ----------
    max_bytes : int >= 0

    Examples
    --------
    >>> import linalg_pc as lpc
    >>> old = lpc.set_buffer_cache(0)      # plain numpy.empty outputs
    >>> _ = lpc.set_buffer_cache(old)
    """
    return _buffers.set_max_bytes(max_bytes)


def buffer_cache_info() -> dict:
    """``{"max_bytes", "idle_bytes", "idle_blocks", "hits", "misses"}`` of the output recycling
    (see :func:`set_buffer_cache`)."""
    return _buffers.info()


def _check_mode(mode: str) -> None:
    if mode not in ROUNDING_MODES:
        raise ValueError(f"mode must be one of {ROUNDING_MODES}, got {mode!r}")


def _seed_from(rng) -> int:
    gen = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    return int(gen.integers(0, 2**32, dtype=np.uint64))


def _contains(outer: Format, inner: Format) -> bool:
    """Every value of ``inner`` is representable in ``outer``."""
    return (outer.mantissa_bits >= inner.mantissa_bits and outer.emin <= inner.emin
            and outer.emax >= inner.emax)


def _torch_canonical_nan(x, r):
    """Replace NaNs of r by the quiet NaN carrying x's sign (ml_dtypes' convention)."""
    import torch

    nan = torch.isnan(x)
    if not bool(nan.any()):
        return r
    if r.dtype == torch.bfloat16:
        # torch's own conversion writes NaN as 0xFFFF; build sign | 0x7FC0 on the bits
        canon = torch.where(torch.signbit(x), torch.tensor(-64, dtype=torch.int16),
                            torch.tensor(0x7FC0, dtype=torch.int16))
        return torch.where(nan, canon, r.view(torch.int16)).view(torch.bfloat16)
    q = torch.copysign(torch.full_like(x, float("nan"), dtype=torch.float32), x.float())
    return torch.where(nan, q.to(r.dtype), r)


def round_to(x, fmt, mode: str = "nearest", rng=None):
    """Round ``x`` to values representable in ``fmt``, keeping x's dtype (emulation).

    Parameters
    ----------
    x : array
        Real floating array of any supported library (bf16/fp16 included).
    fmt : str, dtype or Format
        Target format ("bf16", "fp16", "tf32", "fp32", "fp64", or a dtype).
    mode : {"nearest", "stochastic", "zero"}
        Round to nearest with ties to even, stochastically (unbiased: the upper neighbour with
        probability equal to the fractional distance), or toward zero.
    rng : None, int, numpy.random.Generator or torch.Generator
        Randomness for stochastic rounding (results depend on it only).

    Returns
    -------
    array
        Same library, device, shape and dtype as ``x``.

    Notes
    -----
    Error: |round(x) - x| <= u·|x| for nearest (u = ``unit_roundoff(fmt)``), < 2u·|x| for
    stochastic and toward zero, in the normal range; absolute error at most half (or one) of the
    subnormal spacing below it. Cost O(size), one pass.

    Examples
    --------
    >>> import numpy as np
    >>> float(round_to(np.float32(1 + 2**-9 + 2**-12) * np.ones(1, np.float32), "bf16")[0])
    1.0078125
    """
    xp = B.array_namespace(x)
    fin = B.format_of(x, argname="x")
    f = get_format(fmt)
    _check_mode(mode)
    if _contains(f, fin):
        return xp.asarray(x, copy=True)
    if fin.bits == 16:
        # 16-bit inputs: decode exactly, round, encode exactly (the result is representable).
        wide = from_storage(x, "fp32")
        return to_storage(round_to(wide, f, mode, rng), fin)
    seed = _seed_from(rng) if mode == "stochastic" and not _is_torch_gen(rng) else None
    if B.is_numpy(xp):
        if fin.name == "fp32" and f.name == "bf16" and mode != "zero":
            return _cpu.f32_round_bf16(x, seed=seed)
        if f.name == "fp16" and mode == "nearest":
            with np.errstate(over="ignore"):
                return _fix_nan_numpy(x, x.astype(np.float16).astype(x.dtype))
    if B.is_cupy(xp) and fin.name == "fp32" and f.name == "bf16" and mode != "zero":
        from ._kernels import gpu

        return gpu.bf16_bits_to_f32(gpu.f32_to_bf16_bits(x, seed=seed))
    if B.is_torch(xp) and fin.name == "fp32" and mode == "nearest" and f.name in ("bf16",
                                                                                    "fp16"):
        import torch

        r = x.to(torch.bfloat16 if f.name == "bf16" else torch.float16).to(x.dtype)
        return _torch_canonical_nan(x, r)
    if f.name == "fp32" and mode == "nearest":
        with _fallback.quiet(xp):
            return _nan_fix_generic(xp, x, xp.astype(xp.astype(x, xp.float32), x.dtype))
    return _round_generic(xp, x, f, mode, rng)


def _is_torch_gen(rng) -> bool:
    return type(rng).__module__.startswith("torch")


def _fix_nan_numpy(x, r):
    nan = np.isnan(x)
    if nan.any():
        r = r.copy()
        r[nan] = np.copysign(np.nan, x[nan])
    return r


def _nan_fix_generic(xp, x, r):
    nan = xp.isnan(x)
    return xp.where(nan, xp.copysign(xp.full_like(x, float("nan")), x), r)


def _round_generic(xp, x, f: Format, mode: str, rng):
    x64 = xp.astype(x, xp.float64)
    u = None
    if mode == "stochastic":
        u = B.uniform(xp, tuple(x.shape), rng, like=x, dtype=xp.float64)
    r = _fallback.round_values(xp, x64, f, mode, u)
    with _fallback.quiet(xp):
        return xp.astype(r, x.dtype)


def to_storage(x, fmt="bf16", *, mode: str = "nearest", rng=None, out=None):
    """Store ``x`` in a real array of format ``fmt`` in x's own library.

    NumPy: ``ml_dtypes.bfloat16`` / ``numpy.float16``; PyTorch: ``torch.bfloat16`` /
    ``torch.float16``; CuPy: bf16 (CuPy >= 14) / float16; fp32/fp64 anywhere.

    Parameters
    ----------
    x : array
        Real floating array.
    fmt : str, dtype or Format
        Storage format (tf32 has no storage dtype).
    mode : {"nearest", "stochastic", "zero"}
        Rounding mode (see :func:`round_to`).
    rng : optional
        Randomness for stochastic rounding.
    out : numpy.ndarray, optional
        Preallocated NumPy output of the storage dtype and x's shape (an optimizer's state
        buffer): written in place, no allocation.

    Examples
    --------
    >>> import numpy as np
    >>> to_storage(np.array([1.0, 2**-9], np.float32), "bf16").dtype.name
    'bfloat16'
    """
    xp = B.array_namespace(x)
    fin = B.format_of(x, argname="x")
    f = get_format(fmt)
    _check_mode(mode)
    dtype = B.native_dtype(xp, f)
    if B.is_numpy(xp) and f.name == "bf16":
        if fin.name == "bf16":
            return _write(x.copy(), out)
        src = x.astype(np.float32) if fin.name == "fp16" else x
        seed = None
        if fin.name == "fp64" or mode == "zero":
            # one correct rounding in float64; the encoding below is then exact
            src = round_to(x, f, mode, rng).astype(np.float32)
        elif mode == "stochastic":
            seed = _seed_from(rng)
        if out is not None:
            _check_out(out, x, dtype)
            return _cpu.f32_to_bf16_bits(src, seed=seed, out=out)
        return _cpu.f32_to_bf16_bits(src, seed=seed).view(dtype)
    if fin == f:
        return _write(xp.asarray(x, copy=True), out)
    if _contains(f, fin):
        return _write(xp.astype(x, dtype), out)
    if B.is_cupy(xp) and f.name == "bf16" and fin.name == "fp32" and mode != "zero":
        from ._kernels import gpu

        seed = _seed_from(rng) if mode == "stochastic" else None
        return gpu.f32_to_bf16_bits(x, seed=seed).view(dtype)
    if B.is_torch(xp) and fin.name == "fp32" and mode == "nearest":
        return _torch_canonical_nan(x, x.to(dtype))
    if B.is_numpy(xp) and f.name == "fp16" and mode == "nearest" and fin.name != "bf16":
        with np.errstate(over="ignore"):
            return _write(_fix_nan_numpy(x, x.astype(np.float16)), out)
    r = round_to(x, f, mode, rng)
    if B.is_torch(xp):
        return _torch_canonical_nan(x, r.to(dtype))
    return _write(xp.astype(r, dtype), out)


def _check_out(out, x, dtype):
    if not isinstance(out, np.ndarray) or out.dtype != dtype or out.shape != tuple(x.shape):
        raise ValueError(f"out must be a NumPy array of dtype {np.dtype(dtype).name} and shape "
                         f"{tuple(x.shape)}")
    if not out.flags.c_contiguous:
        raise ValueError("out must be C-contiguous")


def _write(r, out):
    if out is None:
        return r
    _check_out(out, r, r.dtype)
    out[...] = r
    return out


def from_storage(x, compute="fp32", *, out=None):
    """Decode a stored array into the compute format (exact: every 16-bit value is an fp32 one).

    Parameters
    ----------
    x : array
        Real floating array (bf16, fp16, fp32 or fp64) of any supported library.
    compute : {"fp32", "fp64"}
        The arithmetic format.
    out : numpy.ndarray, optional
        Preallocated float32 output (NumPy bf16 input only).
    """
    xp = B.array_namespace(x)
    fin = B.format_of(x, argname="x")
    f = get_format(compute, argname="compute")
    if f.name not in ("fp32", "fp64"):
        raise ValueError(f"compute must be 'fp32' or 'fp64', got {f.name!r}")
    dtype = B.native_dtype(xp, f)
    if fin.name == "bf16" and B.is_numpy(xp):
        if out is not None and f.name == "fp32":
            _check_out(out, x, np.float32)
            src = np.ascontiguousarray(x).reshape(-1).view(np.uint16)
            _cpu.decode_bf16_into(src, out.reshape(-1).view(np.uint32))
            return out
        r = _cpu.bf16_bits_to_f32(x.view(np.uint16))
        return r if f.name == "fp32" else r.astype(np.float64)
    if fin.name == "bf16" and B.is_cupy(xp):
        from ._kernels import gpu

        r = gpu.bf16_bits_to_f32(x.view(xp.uint16))
        return r if f.name == "fp32" else r.astype(dtype)
    if fin == f:
        return _write(x, out) if out is not None else x
    return _write(xp.astype(x, dtype), out)


def representable(x, fmt) -> bool:
    """Whether every value of ``x`` is exactly representable in ``fmt`` (NaNs compare equal)."""
    xp = B.array_namespace(x)
    r = round_to(x, fmt)
    same = (r == x) | (xp.isnan(r) & xp.isnan(x))
    return bool(xp.all(same))

