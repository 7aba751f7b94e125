"""One conversion path: every rounding, storage and decoding of linalg_pc runs :func:`convert`.

A conversion is keyed by ``(library, op, source format, target format, mode)``:

- ``op`` is one of :data:`EMULATE` (round to the values of the target format, keep the input's
  dtype: :func:`~linalg_pc.round_to`), :data:`STORE` (a real array of the target format:
  :func:`~linalg_pc.to_storage`) and :data:`DECODE` (a stored array into a compute format:
  :func:`~linalg_pc.from_storage`);
- the formats are already-resolved :class:`~linalg_pc.Format` values, so callers resolve the
  namespace and the formats once and call :func:`convert` directly.

The key selects a kernel from a table that the kernel modules fill with :func:`register`
(``_kernels/cpu.py`` for NumPy, ``_kernels/torch.py`` for PyTorch, ``_kernels/gpu.py`` for CuPy).
A library's module is imported at its first conversion, so importing linalg_pc never imports
PyTorch or CuPy. A key without a kernel (and a kernel that declines, returning None: a CUDA tensor
for a CPU kernel) runs the generic array-API path, whose rounding is ``_kernels/fallback.py``: the
reference the kernels are tested against bit for bit.

Automatic differentiation: a library may register one rule (:func:`register_autograd`) that
takes over when x or ``out`` takes part in it; the rule converts the plain data through the same
table (so the values are bit for bit those of the detached conversion) and attaches the
gradient. PyTorch's is the straight-through estimator (docs/precision.md, "PyTorch autograd").

The shortcuts that hold for every library are taken before the table: a target that contains the
source (a copy or an exact cast), and emulation on a 16-bit input (decoded exactly to fp32,
rounded, stored back exactly).

Randomness: a stochastic conversion draws one 32-bit seed from ``rng`` (None, an int or a
``numpy.random.Generator``; other generators through :func:`linalg_pc._backend.uniform`) the
first time a kernel or the generic path needs randomness, so a Generator advances the same way
whatever kernel runs; the generic path then draws its uniforms from ``rng`` as well.

References
----------
Higham, *Accuracy and Stability of Numerical Algorithms*, §2. Connolly, Higham, Mary, "Stochastic
rounding and its probabilistic backward error analysis", SISC 43 (2021). docs/precision.md.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

import numpy as np

from .. import _backend as B
from .._formats import FORMATS, Format
from .._kernels import fallback as _fallback

__all__ = ["EMULATE", "STORE", "DECODE", "OPS", "MODES", "convert", "register",
           "register_autograd", "kernel_for", "check_out", "write", "Randomness", "contains"]

EMULATE, STORE, DECODE = "emulate", "store", "decode"
OPS = (EMULATE, STORE, DECODE)
MODES = _fallback.MODES

#: (library, op, source format name, target format name, mode) -> kernel
_TABLE: dict[tuple[str, str, str, str, str], Callable] = {}
#: library -> its autograd rule: ``rule(x, out, run)`` returns None when neither x nor out takes
#: part in automatic differentiation, else the result of ``run(x_data, out_data)`` (the
#: conversion of the plain data) made differentiable by the library's rule
_AUTOGRAD: dict[str, Callable] = {}
#: library -> the module of ``_kernels`` that registers its conversion kernels
_KERNEL_MODULES = {"numpy": "cpu", "torch": "torch", "cupy": "gpu"}
_LOADED: set[str] = set()
_FP32 = FORMATS["fp32"]


def _names(v) -> tuple[str, ...]:
    if isinstance(v, str):
        return (v,)
    return tuple(v)


def register(library: str, op: str, src, dst, modes=MODES):
    """Decorator: register ``f`` as ``library``'s kernel for every (src, dst, mode) combination.

    ``src``, ``dst``: a format name or names; ``modes``: the rounding modes it implements.
    A kernel is called as ``f(xp, x, src, dst, mode, out, rand)`` (``src``, ``dst``: Formats;
    ``out``: a validated output array or None; ``rand``: a :class:`Randomness`) and returns the
    result (``out`` itself when given), or None to decline (the generic path runs instead).
    """
    if op not in OPS:
        raise ValueError(f"op must be one of {OPS}, got {op!r}")

    def deco(f):
        for s in _names(src):
            for d in _names(dst):
                for m in _names(modes):
                    _TABLE[(library, op, s, d, m)] = f
        return f

    return deco


def register_autograd(library: str):
    """Decorator: register ``rule(x, out, run)`` as ``library``'s autograd rule (see _AUTOGRAD).

    PyTorch's (``_kernels/torch.py``) is the straight-through estimator: the result keeps the
    graph and its gradient is the incoming one, cast to x's dtype; ``out=`` is written as data.
    """

    def deco(f):
        _AUTOGRAD[library] = f
        return f

    return deco


def _load(lib: str) -> None:
    if lib in _LOADED:
        return
    _LOADED.add(lib)
    mod = _KERNEL_MODULES.get(lib)
    if mod is not None:
        importlib.import_module(f".._kernels.{mod}", __package__)


def kernel_for(lib: str, op: str, src: Format, dst: Format, mode: str):
    """The registered kernel of a key, or None (the generic path)."""
    _load(lib)
    return _TABLE.get((lib, op, src.name, dst.name, mode))


def contains(outer: Format, inner: Format) -> bool:
    """Every value of ``inner`` is representable in ``outer``."""
    return (outer.mantissa_bits >= inner.mantissa_bits and outer.emin <= inner.emin
            and outer.emax >= inner.emax)


# --------------------------------------------------------------------------- randomness
def _numpy_seedable(rng) -> bool:
    return rng is None or isinstance(rng, (int, np.integer, np.random.Generator,
                                           np.random.SeedSequence, np.random.BitGenerator))


class Randomness:
    """The randomness of one stochastic conversion: a 32-bit seed drawn at most once, and uniforms.

    ``rng``: None, an int, a NumPy Generator / SeedSequence / BitGenerator, or a generator of the
    array's library that :func:`linalg_pc._backend.uniform` accepts (``torch.Generator``, CuPy's).
    """

    __slots__ = ("rng", "_seed")

    def __init__(self, rng=None):
        self.rng = rng
        self._seed = None

    def seed(self, xp=None, like=None) -> int:
        """A 32-bit seed from ``rng`` (drawn on the first call, then the same)."""
        if self._seed is None:
            if _numpy_seedable(self.rng):
                gen = (self.rng if isinstance(self.rng, np.random.Generator)
                       else np.random.default_rng(self.rng))
                self._seed = int(gen.integers(0, 2**32, dtype=np.uint64))
            else:
                u = B.uniform(xp, (1,), self.rng, like=like, dtype=xp.float64)
                self._seed = int(float(u[0]) * 2.0**32) & 0xFFFFFFFF
        return self._seed

    def uniform(self, xp, shape, like):
        """float64 uniforms in [0, 1) on ``like``'s device (the seed is drawn first)."""
        if _numpy_seedable(self.rng):
            self.seed()
        return B.uniform(xp, tuple(shape), self.rng, like=like, dtype=xp.float64)


# --------------------------------------------------------------------------- out
def _c_contiguous(a) -> bool:
    flags = getattr(a, "flags", None)
    if flags is not None and hasattr(flags, "c_contiguous"):  # NumPy, CuPy
        return bool(flags.c_contiguous)
    is_contig = getattr(a, "is_contiguous", None)  # PyTorch
    if callable(is_contig):
        return bool(is_contig())
    return True  # array_api_strict and others: no layout to speak of; written by setitem


def _read_only(a) -> bool:
    """NumPy's ``flags.writeable`` (PyTorch and CuPy arrays have no read-only flag)."""
    flags = getattr(a, "flags", None)
    return flags is not None and getattr(flags, "writeable", True) is False


def check_out(xp, lib: str, x, out, dtype) -> None:
    """Raise ValueError naming ``out`` unless it can receive the result of converting ``x``.

    ``out`` must be an array of ``xp``'s library, of dtype ``dtype``, of x's shape, on x's
    device, C-contiguous and writable (a read-only NumPy array would otherwise reach a Numba
    kernel and fail inside it).
    """
    want = (f"a C-contiguous {lib} array of dtype {_dtype_name(dtype)} and shape "
            f"{tuple(x.shape)} on x's device")
    try:
        oxp = B.array_namespace(out)
    except TypeError:
        raise ValueError(f"out must be {want}; got {type(out).__name__}") from None
    if B.namespace_name(oxp) != lib:
        raise ValueError(f"out must be {want}; got a {B.namespace_name(oxp)} array")
    if out.dtype != dtype:
        raise ValueError(f"out must be {want}; got dtype {_dtype_name(out.dtype)}")
    if tuple(out.shape) != tuple(x.shape):
        raise ValueError(f"out must be {want}; got shape {tuple(out.shape)}")
    if B.device_of(out) != B.device_of(x):
        raise ValueError(f"out must be {want}; got device {B.device_of(out)}")
    if not _c_contiguous(out):
        raise ValueError(f"out must be {want}; got a non-contiguous array")
    if _read_only(out):
        raise ValueError(f"out must be {want} and writable; got a read-only array")


def _dtype_name(dtype) -> str:
    name = getattr(dtype, "name", None)
    return name if isinstance(name, str) else str(dtype)


def write(out, r):
    """Copy ``r`` into ``out`` (returns ``out``); ``r`` when ``out`` is None."""
    if out is None:
        return r
    if r is not out:
        out[...] = r
    return out


# --------------------------------------------------------------------------- convert
def convert(x, src: Format, dst: Format, mode: str = "nearest", *, op: str = STORE, out=None,
            rng=None, xp=None, lib: str | None = None):
    """Convert ``x`` (of format ``src``) to format ``dst``: the one conversion of linalg_pc.

    Parameters
    ----------
    x : array
        Input of format ``src``.
    src, dst : Format
        Resolved source and target formats (``dst`` of a DECODE is "fp32" or "fp64").
    mode : {"nearest", "stochastic", "zero"}
    op : {"emulate", "store", "decode"}
        EMULATE: values of ``dst`` in x's dtype; STORE: an array of ``dst``'s dtype; DECODE:
        the exact widening of a stored array (an ordinary cast for a narrowing).
    out : array, optional
        Output already validated by the caller (:func:`check_out`); written and returned.
    rng : optional
        Randomness of stochastic rounding, or a :class:`Randomness` shared with an outer call.
    xp, lib : optional
        x's namespace and its library name, when the caller has them.

    No validation: the public wrappers (``precision.py``) check their arguments, resolve the
    formats once and call this. Cost O(size), one pass for the table's kernels.
    """
    if xp is None:
        xp = B.array_namespace(x)
    if lib is None:
        lib = B.namespace_name(xp)
    rand = rng if isinstance(rng, Randomness) else Randomness(rng)
    _load(lib)
    rule = _AUTOGRAD.get(lib)
    if rule is not None and not (op == DECODE and src == dst and out is None):
        r = rule(x, out, lambda xd, od: convert(xd, src, dst, mode, op=op, out=od, rng=rand,
                                                 xp=xp, lib=lib))
        if r is not None:
            return r
    if op == EMULATE:
        if contains(dst, src):
            return xp.asarray(x, copy=True) if out is None else write(out, x)
        if src.bits == 16:
            # decode exactly, round, encode exactly (the result is representable in src)
            wide = convert(x, src, _FP32, op=DECODE, xp=xp, lib=lib)
            r = convert(wide, _FP32, dst, mode, op=EMULATE, rng=rand, xp=xp, lib=lib)
            return convert(r, _FP32, src, op=STORE, out=out, xp=xp, lib=lib)
    elif op == STORE:
        if src == dst:
            return xp.asarray(x, copy=True) if out is None else write(out, x)
    elif op != DECODE:
        raise ValueError(f"op must be one of {OPS}, got {op!r}")
    kernel = kernel_for(lib, op, src, dst, mode)
    if kernel is not None:
        r = kernel(xp, x, src, dst, mode, out, rand)
        if r is not None:
            return r
    return _GENERIC[op](xp, lib, x, src, dst, mode, out, rand)


# --------------------------------------------------------------------------- generic paths
def _nan_fix(xp, x, r):
    """NaNs of ``r`` become the quiet NaN with x's sign (ml_dtypes' convention)."""
    nan = xp.isnan(x)
    return xp.where(nan, xp.copysign(xp.full_like(x, float("nan")), x), r)


def _generic_emulate(xp, lib, x, src, dst, mode, out, rand):
    if dst.name == "fp32" and mode == "nearest":
        with _fallback.quiet(xp):
            return write(out, _nan_fix(xp, x, xp.astype(xp.astype(x, xp.float32), x.dtype)))
    x64 = xp.astype(x, xp.float64)
    u = rand.uniform(xp, x.shape, like=x) if mode == "stochastic" else None
    r = _fallback.round_values(xp, x64, dst, mode, u)
    with _fallback.quiet(xp):
        return write(out, xp.astype(r, x.dtype))


def _generic_store(xp, lib, x, src, dst, mode, out, rand):
    dtype = B.native_dtype(xp, dst)
    if contains(dst, src):
        return write(out, xp.astype(x, dtype))
    if src.bits == 16:
        # widen exactly first: emulating dst in src's own 16-bit dtype can overflow it (fp16
        # 65504 rounds to bf16 65536, which fp16 cannot hold)
        wide = convert(x, src, _FP32, op=DECODE, xp=xp, lib=lib)
        return convert(wide, _FP32, dst, mode, op=STORE, out=out, rng=rand, xp=xp, lib=lib)
    r = convert(x, src, dst, mode, op=EMULATE, rng=rand, xp=xp, lib=lib)
    return write(out, xp.astype(r, dtype))


def _generic_decode(xp, lib, x, src, dst, mode, out, rand):
    if src == dst:
        return x if out is None else write(out, x)
    return write(out, xp.astype(x, B.native_dtype(xp, dst)))


_GENERIC = {EMULATE: _generic_emulate, STORE: _generic_store, DECODE: _generic_decode}
