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
- :func:`tri_cond_est`: a condition estimate of a triangular matrix (LAPACK ``xTRCON`` on NumPy);
- :func:`eigh`: symmetric eigendecomposition;
- :func:`countsketch`: a CountSketch product S·X (sparse on NumPy, a scatter-add on torch/CuPy);
- :func:`to_namespace` / :func:`to_numpy`: exchange through DLPack, bf16 included;
- :func:`uniform`: uniform draws from a NumPy, torch or CuPy generator;
- :func:`dtype_kind`, :func:`native_dtype`, :func:`host_blas`: dtype and capability queries.

Library-specific code lives only in the delegate modules (``numpy.py``, ``torch.py``,
``cupy.py``), registered with :func:`register` and looked up with :func:`delegate`; the
functions here hold the generic array-API implementations. Algorithms that have their own
array-API implementation of a primitive (Householder QR, the batched QR of small matrices) ask
:func:`delegate` for the library's native one (``"qr"``, ``"batched_qr"``) and run theirs when
it returns None.
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
    "dtype_kind",
    "host_blas",
    "supported",
    "solve_triangular",
    "cholesky",
    "cho_solve",
    "tri_cond_est",
    "eigh",
    "countsketch",
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


# --------------------------------------------------------------------------- linear algebra
def _mT(xp, a):
    return xp.matrix_transpose(a) if hasattr(xp, "matrix_transpose") else a.mT


def solve_triangular(A, B, *, lower: bool = False, trans: bool = False,
                     unit_diagonal: bool = False, side: str = "left", overwrite_b: bool = False,
                     cond: float | None = None):
    """Solve op(A) X = B (``side="left"``) or X op(A) = B (``side="right"``), A triangular.

    ``op(A)`` is A or Aᵀ (``trans=True``). A is (..., n, n), B is (..., n, k) for the left side
    and (..., k, n) for the right side; leading dimensions broadcast. Delegates to
    scipy.linalg / torch.linalg / cupyx.scipy.linalg; forward/back substitution otherwise.
    ``overwrite_b``: B is a work array the solve may overwrite (the result may share its
    memory). ``cond``: an estimate of κ(A); a delegate may then use an inverse-based solve when
    it is small (NumPy's right-side solve of a 2-D fp32/fp64 B, when NumPy's own TRSM is not
    reachable: TRTRI + GEMM while ``cond`` <= 100, extra error u·κ(A)).
    Cost n²k flops; backward stable (Higham, ASNA Thm 8.5).
    """
    xp = array_namespace(A, B)
    if side not in ("left", "right"):
        raise ValueError(f"side must be 'left' or 'right', got {side!r}")
    impl = delegate(xp, "solve_triangular")
    if impl is not None:
        out = impl(A, B, lower=lower, trans=trans, unit_diagonal=unit_diagonal, side=side,
                   overwrite_b=overwrite_b, cond=cond)
        if out is not None:
            return out
    if side == "right":
        # X op(A) = B  <=>  op(A)^T X^T = B^T
        Xt = solve_triangular(A, _mT(xp, B), lower=lower, trans=not trans,
                              unit_diagonal=unit_diagonal)
        return _mT(xp, Xt)
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


def tri_cond_est(R) -> float:
    """Estimate of κ₁(R) for a square upper-triangular R (2-D).

    NumPy: LAPACK ``xtrcon`` (a 1-norm estimate, O(n²)). Generic: ‖R‖₁‖R⁻¹‖₁ from a triangular
    solve (n³/3 flops) for n <= 2048, the ratio of the extreme diagonal entries (a lower bound)
    beyond. ``inf`` for a singular or non-finite R. The caller keeps R's entries in range (an
    entry near overflow or underflow makes 1/‖R‖ or ‖R⁻¹‖ overflow and reads as inf).
    """
    xp = array_namespace(R)
    impl = delegate(xp, "tri_cond_est")
    if impl is not None:
        return impl(R)
    k = R.shape[-1]
    d = xp.abs(_diagonal(xp, R))
    dmin = _to_float(xp.min(d))
    if dmin == 0 or not np.isfinite(dmin) or not bool(xp.all(xp.isfinite(R))):
        return float("inf")
    if k > TRI_COND_SOLVE_MAX:
        return _to_float(xp.max(d)) / dmin
    with np.errstate(over="ignore", invalid="ignore"):  # κ past the range is read as inf
        eye = xp.eye(k, dtype=R.dtype, device=device_of(R))
        Ri = solve_triangular(R, eye, lower=False)
        n1 = _to_float(xp.max(xp.sum(xp.abs(R), axis=0)))
        n2 = _to_float(xp.max(xp.sum(xp.abs(Ri), axis=0)))
    v = n1 * n2
    return v if np.isfinite(v) else float("inf")


#: :func:`tri_cond_est` (generic) forms R⁻¹ up to this order, the diagonal ratio beyond.
TRI_COND_SOLVE_MAX = 2048


def _diagonal(xp, X):
    if hasattr(xp, "linalg") and hasattr(xp.linalg, "diagonal"):
        return xp.linalg.diagonal(X)
    return xp.diagonal(X, axis1=-2, axis2=-1)


def _to_float(x) -> float:
    if isinstance(x, (float, int, np.generic)):
        return float(x)
    return float(to_numpy(x).astype(np.float64).reshape(()))


def eigh(A):
    """Eigenvalues (ascending) and eigenvectors of symmetric A (..., n, n): ``(w, V)`` with
    A = V diag(w) Vᵀ, in A's dtype (fp32/fp64). A library's delegate (``"eigh"``) runs when one
    is registered, ``xp.linalg.eigh`` otherwise (LAPACK ``xSYEVD`` for NumPy, torch.linalg,
    cuSOLVER). Cost ~9n³ flops; backward stable: the computed pairs are exact for A + ΔA with
    ‖ΔA‖₂ = O(u)‖A‖₂ (Golub & Van Loan, Matrix Computations, 4th ed., §8.3).
    """
    xp = array_namespace(A)
    impl = delegate(xp, "eigh")
    if impl is not None:
        return impl(A)
    w, V = xp.linalg.eigh(A)
    return w, V


def countsketch(X, rows, signs, k: int):
    """Y = S X for the CountSketch S (k×m) that adds row i of X (m×n), times ``signs[i]``, to
    row ``rows[i]`` of Y (Clarkson & Woodruff, STOC 2013).

    ``rows`` (int) and ``signs`` (±1.0) are host NumPy arrays of length m; Y is k×n in X's
    library, dtype and device. NumPy: a sparse product; torch/CuPy: a scatter-add; generic: a
    dense k×m one-hot matrix times X (2kmn flops, the others O(mn)).
    """
    xp = array_namespace(X)
    impl = delegate(xp, "countsketch")
    if impl is not None:
        return impl(X, rows, signs, k)
    m = X.shape[0]
    onehot = np.zeros((k, m))
    onehot[rows, np.arange(m)] = signs
    return xp.matmul(xp.asarray(onehot, dtype=X.dtype, device=device_of(X)), X)


def eps_of(x) -> float:
    """Unit roundoff of x's dtype (fp64 for non-arrays)."""
    try:
        return format_of(x).unit_roundoff
    except TypeError:
        return 2.0**-53
