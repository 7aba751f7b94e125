"""The core of the backend: namespace resolution, the delegate registry, dtype and capability
queries, exchange between libraries and uniform draws (see :mod:`linalg_pc._backend`)."""


from __future__ import annotations

from types import ModuleType

import array_api_compat
import numpy as np

from .._formats import Format, format_of_dtype, get_format

# --------------------------------------------------------------------------- delegates
#: library name -> the module of this package that registers its delegates (imported lazily, at
#: the first primitive called on an array of that library, so importing linalg_pc never imports
#: torch or CuPy).
_DELEGATE_MODULES = {"numpy": "numpy", "torch": "torch", "cupy": "cupy"}
_DELEGATES: dict[tuple[str, str], object] = {}
_LOADED: set[str] = set()


def register(library: str, primitive: str):
    """Decorator: register ``f`` as ``library``'s implementation of ``primitive``.

    Delegate modules (``_backend/numpy.py``, ``torch.py``, ``cupy.py``) use it; a primitive
    without a delegate for a library runs its generic array-API implementation.
    """

    def deco(f):
        _DELEGATES[(library, primitive)] = f
        return f

    return deco


def _library_delegate(lib: str, primitive: str):
    """The delegate of ``primitive`` registered for library ``lib`` ("numpy", ...), or None."""
    if lib not in _LOADED:
        _LOADED.add(lib)
        mod = _DELEGATE_MODULES.get(lib)
        if mod is not None:
            import importlib

            importlib.import_module(f".{mod}", __package__)
    return _DELEGATES.get((lib, primitive))


def delegate(xp, primitive: str):
    """The delegate of ``primitive`` registered for ``xp``'s library, or None."""
    return _library_delegate(namespace_name(xp), primitive)


# --------------------------------------------------------------------------- namespaces
def array_namespace(*arrays) -> ModuleType:
    """The array-API namespace of the given arrays (``None`` entries and Python scalars skipped).

    Raises
    ------
    TypeError
        If no argument is an array, or the arrays come from different libraries.
    """
    arrs = [a for a in arrays if a is not None and not isinstance(a, (bool, int, float))]
    if not arrs:
        raise TypeError("expected at least one array argument")
    try:
        return array_api_compat.array_namespace(*arrs)
    except TypeError as exc:
        kinds = sorted({type(a).__module__ + "." + type(a).__name__ for a in arrs})
        raise TypeError(f"unsupported or mixed array types {kinds}: {exc}") from None


def namespace_name(xp) -> str:
    """"numpy", "cupy", "torch", "array_api_strict", or the module name."""
    if is_numpy(xp):
        return "numpy"
    if is_cupy(xp):
        return "cupy"
    if is_torch(xp):
        return "torch"
    if is_strict(xp):
        return "array_api_strict"
    return getattr(xp, "__name__", str(xp))


def is_numpy(xp) -> bool:
    return array_api_compat.is_numpy_namespace(xp)


def is_torch(xp) -> bool:
    return array_api_compat.is_torch_namespace(xp)


def is_cupy(xp) -> bool:
    return array_api_compat.is_cupy_namespace(xp)


def is_strict(xp) -> bool:
    return array_api_compat.is_array_api_strict_namespace(xp)


def device_of(x):
    """The device of an array (``"cpu"`` for NumPy)."""
    return array_api_compat.device(x)


def format_of(x, *, argname: str = "x") -> Format:
    """The :class:`Format` of ``x``'s dtype; TypeError for non-real-floating dtypes."""
    dtype = getattr(x, "dtype", None)
    if dtype is None:
        raise TypeError(f"{argname} must be an array, got {type(x).__name__}")
    return format_of_dtype(dtype, argname=argname)


def native_dtype(xp, fmt):
    """The dtype of namespace ``xp`` that stores format ``fmt`` (tf32 has none: TypeError)."""
    f = get_format(fmt)
    if f.name == "tf32":
        raise TypeError("tf32 is a compute format with no storage dtype; store in fp32")
    if f.name == "bf16":
        impl = delegate(xp, "bf16_dtype")
        if impl is None:
            raise TypeError(f"{namespace_name(xp)} has no bfloat16 dtype")
        return impl()
    name = {"fp16": "float16", "fp32": "float32", "fp64": "float64"}[f.name]
    dt = getattr(xp, name, None)
    if dt is None:
        raise TypeError(f"{namespace_name(xp)} has no {name} dtype")
    return dt


def has_dtype(xp, fmt) -> bool:
    """Whether ``xp`` can store ``fmt`` natively."""
    try:
        native_dtype(xp, fmt)
    except TypeError:
        return False
    return True


def supported(xp) -> bool:
    """Whether ``xp`` is one of the libraries the backend knows (NumPy, PyTorch, CuPy,
    array_api_strict); other array-API namespaces run the generic code with fewer checks."""
    return namespace_name(xp) in ("numpy", "torch", "cupy", "array_api_strict")


def dtype_kind(x) -> str:
    """"float", "int", "bool", "complex" or "other": the kind of ``x``'s dtype (bf16 of NumPy,
    whose NumPy kind is ``'V'``, and torch dtypes included)."""
    xp = array_namespace(x)
    impl = delegate(xp, "dtype_kind")
    if impl is not None:
        return impl(x.dtype)
    dt = x.dtype
    for kind, name in (("complex", "complex floating"), ("float", "real floating"),
                       ("bool", "bool"), ("int", "integral")):
        if xp.isdtype(dt, name):
            return kind
    return "other"


def host_blas(x) -> bool:
    """Whether ``x`` is a host fp32/fp64 array whose products and solves are direct BLAS/LAPACK
    calls that may work in place (NumPy). Methods use it to pick in-place work arrays and the
    checks they can defer (CholeskyQR reads finiteness off the Gram matrix)."""
    impl = delegate(array_namespace(x), "host_blas")
    return bool(impl(x)) if impl is not None else False


def check_finite(xp, x, argname: str) -> None:
    """Raise ValueError naming ``argname`` if ``x`` has a NaN or infinite entry."""
    format_of(x, argname=argname)
    impl = delegate(xp, "all_finite")
    ok = impl(x) if impl is not None else bool(xp.all(xp.isfinite(x)))
    if not ok:
        raise ValueError(f"{argname} has non-finite entries (NaN or inf)")


def finite_flag(xp, x):
    """A 0-d boolean array of ``x``'s namespace and device: whether every entry is finite.

    Unlike :func:`check_finite` nothing is read on the host, so a caller folds the flag into a
    host read it makes anyway (on an accelerator: no synchronization of its own). Delegates
    compute it on the host where that is the fast path (NumPy's bit test of bf16, PyTorch CPU
    tensors through NumPy) and return it in x's namespace.
    """
    impl = delegate(xp, "finite_flag")
    out = impl(x) if impl is not None else None
    return xp.all(xp.isfinite(x)) if out is None else out


def memory_overlap(a, b) -> str:
    """How the memory of arrays ``a`` and ``b`` relates: "none", "same" (the same elements in
    the same layout: an elementwise kernel may read a[i] and write b[i]) or "partial" (any other
    overlap, conservatively: two strided views that interleave count as partial).

    Decided from the byte extents the library's ``memory_extent`` delegate reports (NumPy,
    PyTorch, CuPy: O(ndim), no data read); "none" for a library without one (its conversions
    compute the result before writing it, so an overlap cannot corrupt it).
    """
    if a is b:
        return "same"
    xa, xb = array_namespace(a), array_namespace(b)
    impl = delegate(xa, "memory_extent")
    if impl is None or namespace_name(xa) != namespace_name(xb):
        return "none"
    ea, eb = impl(a), impl(b)
    if ea is None or eb is None or ea[0] != eb[0]:  # another device's address space
        return "none"

    def span(e):
        _, ptr, item, shape, strides = e
        if any(int(s) == 0 for s in shape):
            return None
        lo = ptr + sum(min(0, (s - 1) * st) for s, st in zip(shape, strides))
        hi = ptr + sum(max(0, (s - 1) * st) for s, st in zip(shape, strides)) + item
        return lo, hi

    sa, sb = span(ea), span(eb)
    if sa is None or sb is None or sa[1] <= sb[0] or sb[1] <= sa[0]:
        return "none"
    same = ea[1:] == eb[1:]
    return "same" if same else "partial"


# --------------------------------------------------------------------------- exchange
def to_numpy(x) -> np.ndarray:
    """A host NumPy array with x's values; bf16 stays ``ml_dtypes.bfloat16``."""
    if isinstance(x, np.ndarray):
        return x
    if isinstance(x, np.generic):  # a NumPy reduction's scalar
        return np.asarray(x)
    xp = array_namespace(x)
    impl = delegate(xp, "to_numpy")
    if impl is not None:
        return impl(x)
    try:
        return np.from_dlpack(x)
    except Exception:  # noqa: BLE001 - array_api_strict without DLPack on this device
        return np.asarray(x._array)  # type: ignore[attr-defined]


def to_namespace(x, target, *, device=None):
    """Move/convert array ``x`` into the library ``target`` (a namespace or an array of it).

    Uses DLPack (zero copy where the devices allow); bf16 arrays, which DLPack consumers do not
    all accept, travel as 16-bit integer views.
    """
    txp = target if isinstance(target, ModuleType) else array_namespace(target)
    if device is None and not isinstance(target, ModuleType):
        device = device_of(target)
    sxp = array_namespace(x)
    if namespace_name(sxp) == namespace_name(txp) and device in (None, device_of(x)):
        return x
    f = format_of(x)
    if f.name == "bf16":
        impl = delegate(txp, "from_bf16_bits")
        if impl is None:
            raise TypeError(f"{namespace_name(txp)} cannot hold bfloat16 arrays")
        return impl(to_numpy(x).view(np.int16), device)
    try:
        out = txp.from_dlpack(x)
    except Exception:  # noqa: BLE001 - cross-device exchange: go through the host
        out = txp.asarray(to_numpy(x))
    if device is not None and device_of(out) != device:
        out = txp.asarray(out, device=device)
    return out


def uniform(xp, shape, rng=None, *, like=None, dtype=None):
    """Uniform [0, 1) samples in ``xp`` on ``like``'s device.

    ``rng`` may be None, an int seed, a ``numpy.random.Generator``, a ``torch.Generator`` (for
    torch) or a ``cupy.random.Generator`` (for CuPy); NumPy draws are moved to the device.
    """
    device = device_of(like) if like is not None else None
    if dtype is None:
        dtype = xp.float64
    impl = delegate(xp, "uniform")
    if impl is not None:
        out = impl(shape, rng, device=device, dtype=dtype)
        if out is not None:
            return out
    gen = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    return xp.asarray(gen.random(shape), dtype=dtype, device=device)
