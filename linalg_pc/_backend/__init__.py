"""Array-library resolution and the linear-algebra primitives the array API standard lacks.

Every public function of linalg_pc resolves ``xp`` from its inputs with :func:`array_namespace`
and computes with it, so NumPy, CuPy, PyTorch and array_api_strict arrays all work and results
stay in the caller's library and on its device. NumPy arrays of ``ml_dtypes.bfloat16`` (whose
``dtype.kind`` is ``'V'``) and PyTorch bf16/fp16 tensors are accepted.

The primitives here delegate to the library that does them well (scipy.linalg / LAPACK for NumPy,
cupyx.scipy.linalg / cuSOLVER for CuPy, torch.linalg for PyTorch) and fall back to a pure
array-API implementation for any other namespace:

- :func:`solve_triangular` (left or right side, transposed, batched);
- :func:`cholesky`, which reports failure as a value (LAPACK's ``info``) instead of raising;
- :func:`cho_solve`;
- :func:`to_namespace` / :func:`to_numpy`: exchange through DLPack, bf16 included.
"""

from __future__ import annotations

from types import ModuleType

import array_api_compat
import numpy as np

from .._formats import Format, format_of_dtype, get_format

__all__ = [
    "array_namespace",
    "is_numpy",
    "is_torch",
    "is_cupy",
    "is_strict",
    "device_of",
    "format_of",
    "native_dtype",
    "has_dtype",
    "solve_triangular",
    "cholesky",
    "cho_solve",
    "to_namespace",
    "to_numpy",
    "uniform",
    "check_finite",
    "namespace_name",
    "register",
    "delegate",
]


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


def delegate(xp, primitive: str):
    """The delegate of ``primitive`` registered for ``xp``'s library, or None."""
    lib = namespace_name(xp)
    if lib not in _LOADED:
        _LOADED.add(lib)
        mod = _DELEGATE_MODULES.get(lib)
        if mod is not None:
            import importlib

            importlib.import_module(f"{__name__}.{mod}")
    return _DELEGATES.get((lib, primitive))


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


def _bf16_numpy_dtype():
    import ml_dtypes

    return np.dtype(ml_dtypes.bfloat16)


def native_dtype(xp, fmt):
    """The dtype of namespace ``xp`` that stores format ``fmt`` (tf32 has none: TypeError)."""
    f = get_format(fmt)
    if f.name == "tf32":
        raise TypeError("tf32 is a compute format with no storage dtype; store in fp32")
    if f.name == "bf16":
        if is_torch(xp):
            import torch

            return torch.bfloat16
        if is_numpy(xp) or is_cupy(xp):
            return _bf16_numpy_dtype()
        raise TypeError(f"{namespace_name(xp)} has no bfloat16 dtype")
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


def check_finite(xp, x, argname: str) -> None:
    """Raise ValueError naming ``argname`` if ``x`` has a NaN or infinite entry."""
    f = format_of(x, argname=argname)
    if f.name == "bf16" and is_numpy(xp):
        ok = not np.any((np.asarray(x).view(np.uint16) & 0x7FFF) >= 0x7F80)
    else:
        ok = bool(xp.all(xp.isfinite(x)))
    if not ok:
        raise ValueError(f"{argname} has non-finite entries (NaN or inf)")


# --------------------------------------------------------------------------- exchange
def to_numpy(x) -> np.ndarray:
    """A host NumPy array with x's values; bf16 stays ``ml_dtypes.bfloat16``."""
    if isinstance(x, np.ndarray):
        return x
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
        h = to_numpy(x).view(np.int16)
        if is_torch(txp):
            import torch

            out = torch.from_numpy(np.ascontiguousarray(h)).view(torch.bfloat16)
            return out if device is None else out.to(device)
        if is_numpy(txp):
            return h.view(_bf16_numpy_dtype())
        if is_cupy(txp):
            import cupy

            return cupy.asarray(h).view(_bf16_numpy_dtype())
        raise TypeError(f"{namespace_name(txp)} cannot hold bfloat16 arrays")
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
    host = gen.random(shape)
    return xp.asarray(xp.asarray(host) if is_numpy(xp) else host, dtype=dtype, device=device)


# --------------------------------------------------------------------------- linear algebra
def _mT(xp, a):
    return xp.matrix_transpose(a) if hasattr(xp, "matrix_transpose") else a.mT


def solve_triangular(A, B, *, lower: bool = False, trans: bool = False,
                     unit_diagonal: bool = False, side: str = "left"):
    """Solve op(A) X = B (``side="left"``) or X op(A) = B (``side="right"``), A triangular.

    ``op(A)`` is A or Aᵀ (``trans=True``). A is (..., n, n), B is (..., n, k) for the left side
    and (..., k, n) for the right side; leading dimensions broadcast. Delegates to
    scipy.linalg / torch.linalg / cupyx.scipy.linalg; forward/back substitution otherwise.
    Cost n²k flops; backward stable (Higham, ASNA Thm 8.5).
    """
    xp = array_namespace(A, B)
    if side not in ("left", "right"):
        raise ValueError(f"side must be 'left' or 'right', got {side!r}")
    if side == "right":
        # X op(A) = B  <=>  op(A)^T X^T = B^T
        Xt = solve_triangular(A, _mT(xp, B), lower=lower, trans=not trans,
                              unit_diagonal=unit_diagonal)
        return _mT(xp, Xt)
    impl = delegate(xp, "solve_triangular")
    if impl is not None:
        out = impl(A, B, lower=lower, trans=trans, unit_diagonal=unit_diagonal)
        if out is not None:
            return out
    return _substitution(xp, A, B, lower=lower, trans=trans, unit_diagonal=unit_diagonal)


def _substitution(xp, A, B, *, lower, trans, unit_diagonal):
    """Row-oriented forward/back substitution in pure array API (batched)."""
    if trans:
        A = _mT(xp, A)
        lower = not lower
    n = A.shape[-1]
    rows: list = [None] * n
    order = range(n) if lower else range(n - 1, -1, -1)
    for i in order:
        acc = B[..., i, :]
        done = [j for j in (range(i) if lower else range(i + 1, n))]
        if done:
            coeffs = xp.stack([A[..., i, j] for j in done], axis=-1)  # (..., m)
            prev = xp.stack([rows[j] for j in done], axis=-2)  # (..., m, k)
            acc = acc - xp.sum(coeffs[..., :, None] * prev, axis=-2)
        rows[i] = acc if unit_diagonal else acc / A[..., i, i][..., None]
    if n == 0:
        return B * 0
    return xp.stack(rows, axis=-2)


def cholesky(A, *, lower: bool = True):
    """Cholesky factor of symmetric A (..., n, n) that reports failure instead of raising.

    Returns
    -------
    L : array
        Lower (or upper with ``lower=False``) triangular factor; entries of a failed matrix are
        unspecified.
    info : int or numpy.ndarray of int
        LAPACK's convention: 0 on success, k > 0 when the leading minor of order k is not
        positive definite (or not finite). An int for a single matrix, an array over the batch.
    """
    xp = array_namespace(A)
    batch = A.shape[:-2]
    impl = delegate(xp, "cholesky")
    L, info = impl(A) if impl is not None else _cholesky_fallback(xp, A)
    if not lower:
        L = _mT(xp, L)
    if not batch:
        return L, int(np.asarray(info).reshape(()))
    return L, np.asarray(info, dtype=np.int64).reshape(batch)


def _cholesky_fallback(xp, A):
    """Left-looking Cholesky in pure array API, batched, with LAPACK-style info."""
    n = A.shape[-1]
    batch = A.shape[:-2]
    info = np.zeros(batch, dtype=np.int64)
    cols: list = []
    zero = xp.zeros(batch, dtype=A.dtype, device=device_of(A))
    for j in range(n):
        a = A[..., :, j]
        # a nearly singular leading minor may overflow the next columns: that is a breakdown,
        # reported through info (a non-finite pivot fails), not a floating-point warning
        with np.errstate(over="ignore", invalid="ignore"):
            if j:
                Lp = xp.stack(cols, axis=-1)  # (..., n, j)
                a = a - xp.sum(Lp * Lp[..., j : j + 1, :], axis=-1)
            d = a[..., j]
            fail = ~((d > 0) & xp.isfinite(d))
            fail_h = np.asarray(to_numpy(fail), dtype=bool).reshape(batch)
            info = np.where((info == 0) & fail_h, j + 1, info)
            d = xp.where(fail, xp.ones_like(d), d)
            s = xp.sqrt(d)
            col = a / s[..., None]
        mask = xp.arange(n, device=device_of(A)) >= j
        col = xp.where(mask, col, zero[..., None])
        cols.append(col)
    if n == 0:
        return A * 0, info
    return xp.stack(cols, axis=-1), info


def cho_solve(L, B, *, lower: bool = True):
    """Solve A X = B given the Cholesky factor of A (lower L with A = LLᵀ, or upper R = Lᵀ)."""
    if lower:
        Y = solve_triangular(L, B, lower=True)
        return solve_triangular(L, Y, lower=True, trans=True)
    Y = solve_triangular(L, B, lower=False, trans=True)
    return solve_triangular(L, Y, lower=False)


def eps_of(x) -> float:
    """Unit roundoff of x's dtype (fp64 for non-arrays)."""
    try:
        return format_of(x).unit_roundoff
    except TypeError:
        return 2.0**-53



# --------------------------------------------------------------------------- operators, columns
# Used by linalg_pc._operators (operator normalization) and linalg_pc.basis (column refresh).
# Host objects (scipy.sparse matrices, SciPy LinearOperators, cupyx sparse matrices) are not
# array-API arrays: their library is read from the module of their type, and the checks go to
# that library's delegates.
_OBJECT_LIBRARIES = (("scipy", "numpy"), ("cupyx", "cupy"))


def _library_delegate(lib: str, primitive: str):
    """The delegate of ``primitive`` registered for library ``lib`` ("numpy", ...), or None."""
    if lib not in _LOADED:
        _LOADED.add(lib)
        mod = _DELEGATE_MODULES.get(lib)
        if mod is not None:
            import importlib

            importlib.import_module(f"{__name__}.{mod}")
    return _DELEGATES.get((lib, primitive))


def object_library(A) -> str | None:
    """"numpy" for SciPy objects, "cupy" for cupyx objects, None for anything else."""
    mod = type(A).__module__
    for prefix, lib in _OBJECT_LIBRARIES:
        if mod == prefix or mod.startswith(prefix + "."):
            return lib
    return None


def is_sparse(A) -> bool:
    """Whether ``A`` is a scipy.sparse or cupyx.scipy.sparse matrix or array."""
    lib = object_library(A)
    impl = None if lib is None else _library_delegate(lib, "is_sparse")
    return bool(impl(A)) if impl is not None else False


def is_linear_operator(A) -> bool:
    """Whether ``A`` is a ``scipy.sparse.linalg.LinearOperator`` (or a CuPy one)."""
    lib = object_library(A)
    impl = None if lib is None else _library_delegate(lib, "is_linear_operator")
    return bool(impl(A)) if impl is not None else False


def sparse_all_finite(A) -> bool:
    """Whether every stored entry of the sparse matrix ``A`` is finite."""
    impl = _library_delegate(object_library(A) or "", "sparse_all_finite")
    if impl is None:
        raise TypeError(f"not a sparse matrix of a supported library: {type(A).__name__}")
    return bool(impl(A))


def column_runs(cols) -> list[tuple[int, int, int]]:
    """Maximal runs of consecutive increasing host indices: (first, stop, position in cols)."""
    c = np.asarray(cols, dtype=np.int64)
    if c.size == 0:
        return []
    breaks = np.flatnonzero(np.diff(c) != 1) + 1
    starts = np.r_[0, breaks]
    stops = np.r_[breaks, c.size]
    return [(int(c[a]), int(c[b - 1]) + 1, int(a)) for a, b in zip(starts, stops)]


def take_columns(Q, cols):
    """``Q[..., :, cols]`` for host int64 indices ``cols`` (k,); may be a view of Q.

    NumPy: one run of consecutive columns is a view (BLAS reads it with its row stride),
    several runs go through the one-pass Numba gather; torch/CuPy: slices of up to four runs;
    any other namespace: ``take``.
    """
    xp = array_namespace(Q)
    cols = np.asarray(cols, dtype=np.int64)
    impl = delegate(xp, "take_columns")
    if impl is not None:
        out = impl(Q, cols)
        if out is not None:
            return out
    return xp.take(Q, xp.asarray(cols, device=device_of(Q)), axis=-1)


def put_columns(Q, cols, new, *, inplace: bool = False):
    """Q with the columns ``cols`` (host int64, distinct) replaced by those of ``new``.

    The other columns are Q's, bit for bit. ``new`` (..., d, k) has Q's dtype and broadcasts
    against Q's batch shape. ``inplace=True`` writes into Q and returns it where the library
    allows item assignment (NumPy, torch, CuPy: no copy of the other columns); otherwise (and
    by default) a new array is returned and Q is not modified.
    """
    xp = array_namespace(Q)
    cols = np.asarray(cols, dtype=np.int64)
    impl = delegate(xp, "put_columns")
    if impl is not None:
        out = impl(Q, cols, new, inplace=inplace)
        if out is not None:
            return out
    m = Q.shape[-1]
    src = np.arange(m, dtype=np.int64)
    src[cols] = m + np.arange(cols.size)
    both = xp.concat([Q, xp.broadcast_to(new, (*Q.shape[:-1], cols.size))], axis=-1)
    return xp.take(both, xp.asarray(src, device=device_of(Q)), axis=-1)


def matmul_into_columns(Q, cols, A, V, *, inplace: bool = False):
    """Q with the columns ``cols`` replaced by ``A @ V`` (A, V and Q of one dtype).

    NumPy, one run of columns, out of place: the product is written by BLAS straight into the
    new array and the other columns are copied once. Otherwise ``put_columns(Q, cols, A @ V)``.
    """
    xp = array_namespace(Q)
    cols = np.asarray(cols, dtype=np.int64)
    if not inplace:
        impl = delegate(xp, "matmul_into_columns")
        if impl is not None:
            out = impl(Q, cols, A, V)
            if out is not None:
                return out
    return put_columns(Q, cols, A @ V, inplace=inplace)
