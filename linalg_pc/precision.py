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

The three functions check their arguments, resolve the namespace and the formats once and call
the one internal conversion (``_backend.convert.convert``), which picks a kernel from a table
keyed by (library, operation, source format, target format, mode): Numba kernels for float32 <->
bf16 on NumPy arrays and on the memory of contiguous CPU PyTorch tensors (``_kernels/cpu.py``,
``_kernels/torch.py``), CuPy elementwise kernels on the GPU (``_kernels/gpu.py``), the hardware
casts for fp16/fp32 targets, and the pure array-API reference algorithm
(``_kernels/fallback.py``) for every other key. Large CPU results are written into recycled
memory (``_buffers``: a freed output's pages are handed to the next conversion of the same size
instead of being faulted in again); :func:`set_buffer_cache` sets how much idle memory is kept,
0 turns it off. ``out=`` writes into a preallocated array of the input's library (an optimizer's
state buffer) instead.

PyTorch autograd: on a tensor that requires grad the three functions keep the graph with the
straight-through gradient (the incoming gradient, cast to x's dtype; the values are those of the
detached conversion); ``out=`` is written as data, without a graph (docs/precision.md).

References
----------
Higham, *Accuracy and Stability of Numerical Algorithms*, §2. Connolly, Higham, Mary, "Stochastic
rounding and its probabilistic backward error analysis", SISC 43 (2021).
"""

from __future__ import annotations

from . import _backend as B
from . import _buffers
from ._backend.convert import DECODE, EMULATE, MODES, STORE, check_out, convert
from ._backend.dask import dispatch
from ._formats import FORMATS, Format, get_format, unit_roundoff
from ._policy import COMPUTE_FORMATS

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

ROUNDING_MODES = MODES


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


def _namespace(x):
    """x's namespace; TypeError naming x for a list, a scalar or an unsupported object."""
    try:
        return B.array_namespace(x)
    except TypeError:
        raise TypeError(f"x must be an array of a supported library (NumPy, PyTorch, CuPy, "
                        f"array_api_strict), got {type(x).__name__}") from None


def _check_out(xp, lib, x, out, dtype):
    """``out`` validated (:func:`check_out`); returns x, copied first when ``out`` overlaps its
    memory other than element for element (a kernel would read values it already wrote)."""
    check_out(xp, lib, x, out, dtype)
    return xp.asarray(x, copy=True) if B.memory_overlap(x, out) == "partial" else x


def _check_mode(mode: str, rng=None) -> None:
    if mode not in ROUNDING_MODES:
        raise ValueError(f"mode must be one of {ROUNDING_MODES}, got {mode!r}")
    if isinstance(rng, (str, bytes, bool, float)):  # what no generator or seed can be
        raise TypeError(f"rng must be None, an int seed or a generator, got {rng!r}")


def round_to(x, fmt, mode: str = "nearest", rng=None, *, out=None):
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
    out : array, optional
        Preallocated C-contiguous output of x's library, dtype, shape and device: written in
        place and returned (``out=x`` rounds in place).

    Returns
    -------
    array
        Same library, device, shape and dtype as ``x`` (``out`` when given).

    Raises
    ------
    TypeError
        ``x`` is not a real floating array.
    ValueError
        Unknown ``fmt`` or ``mode``; ``out`` of the wrong library, dtype, shape, device or
        layout, or read-only.

    Notes
    -----
    Error: |round(x) - x| <= u·|x| for nearest (u = ``unit_roundoff(fmt)``), < 2u·|x| for
    stochastic and toward zero, in the normal range; absolute error at most half (or one) of the
    subnormal spacing below it. Cost O(size), one pass.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.array([1 + 2**-8 + 2**-12, 1 + 2**-8, 1 + 2**-9], dtype=np.float32)
    >>> round_to(x, "bf16").tolist()  # bf16 spacing at 1 is 2**-7: up, tie to even, down
    [1.0078125, 1.0, 1.0]
    """
    if (dist := dispatch("round_to", x)) is not None:  # a Dask array
        return dist(x, fmt, mode, rng, out=out)
    xp = _namespace(x)
    fin = B.format_of(x, argname="x")
    f = get_format(fmt)
    _check_mode(mode, rng)
    lib = B.namespace_name(xp)
    if out is not None:
        x = _check_out(xp, lib, x, out, x.dtype)
    return convert(x, fin, f, mode, op=EMULATE, out=out, rng=rng, xp=xp, lib=lib)


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
    out : array, optional
        Preallocated C-contiguous output of x's library, of the storage dtype, x's shape and
        device (an optimizer's state buffer): written in place and returned, no allocation.

    Raises
    ------
    TypeError
        ``x`` is not a real floating array; ``fmt`` has no dtype in x's library (tf32, or bf16
        where the library has none).
    ValueError
        Unknown ``fmt`` or ``mode``; ``out`` of the wrong library, dtype, shape, device or
        layout, or read-only.

    Notes
    -----
    One rounding (error as :func:`round_to`); cost O(size), one pass for fp32 -> bf16.

    Examples
    --------
    >>> import numpy as np
    >>> to_storage(np.array([1.0, 2**-9], np.float32), "bf16").dtype.name
    'bfloat16'
    """
    if (dist := dispatch("to_storage", x)) is not None:  # a Dask array
        return dist(x, fmt, mode=mode, rng=rng, out=out)
    xp = _namespace(x)
    fin = B.format_of(x, argname="x")
    f = get_format(fmt)
    _check_mode(mode, rng)
    dtype = B.native_dtype(xp, f)
    lib = B.namespace_name(xp)
    if out is not None:
        x = _check_out(xp, lib, x, out, dtype)
    return convert(x, fin, f, mode, op=STORE, out=out, rng=rng, xp=xp, lib=lib)


def from_storage(x, compute="fp32", *, out=None):
    """Decode a stored array into the compute format (exact: every 16-bit value is an fp32 one).

    Parameters
    ----------
    x : array
        Real floating array (bf16, fp16, fp32 or fp64) of any supported library.
    compute : {"fp32", "fp64"}
        The arithmetic format (the compute formats of the precision policy,
        ``_policy.COMPUTE_FORMATS``).
    out : array, optional
        Preallocated C-contiguous output of x's library, of the compute dtype, x's shape and
        device: written in place and returned.

    Returns
    -------
    array
        x itself when it is already in the compute format (and no ``out`` is given).

    Raises
    ------
    TypeError
        ``x`` is not a real floating array.
    ValueError
        ``compute`` is not an arithmetic format; ``out`` of the wrong library, dtype, shape,
        device or layout, or read-only.

    Notes
    -----
    Exact for 16-bit inputs (an fp64 input decoded to fp32 is rounded to nearest); cost O(size).
    """
    if (dist := dispatch("from_storage", x)) is not None:  # a Dask array
        return dist(x, compute, out=out)
    xp = _namespace(x)
    fin = B.format_of(x, argname="x")
    f = get_format(compute, argname="compute")
    if f.name not in COMPUTE_FORMATS:
        raise ValueError(f"compute must be 'fp32' or 'fp64', got {f.name!r}")
    lib = B.namespace_name(xp)
    if out is not None:
        x = _check_out(xp, lib, x, out, B.native_dtype(xp, f))
    return convert(x, fin, f, op=DECODE, out=out, xp=xp, lib=lib)


def representable(x, fmt) -> bool:
    """Whether every value of ``x`` is exactly representable in ``fmt`` (NaNs compare equal)."""
    xp = _namespace(x)
    r = round_to(x, fmt)
    same = (r == x) | (xp.isnan(r) & xp.isnan(x))
    return bool(xp.all(same))
