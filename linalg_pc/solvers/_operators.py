"""Normalization of the operators and right-hand sides the solvers accept.

An operator is one of: a dense array of any supported library ((n, n), or (N, n, n) for a batch
of systems), a scipy.sparse / cupyx.scipy.sparse matrix or array, a
``scipy.sparse.linalg.LinearOperator``, or a Python callable ``x -> A x``. :class:`Operator`
wraps each kind behind one ``apply`` method working on the solver's internal layouts:

- ``"cols"``: vectors stored as an (n, s) array (one or several right-hand sides, one A);
- ``"batch"``: vectors stored as an (N, n) array, one system per row (dense A (N, n, n)).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .._backend import array_namespace, check_finite, is_cupy, is_numpy, namespace_name


def _is_scipy_sparse(A) -> bool:
    try:
        import scipy.sparse as sp
    except ImportError:  # pragma: no cover - scipy is a dependency
        return False
    return sp.issparse(A)


def _is_cupy_sparse(A) -> bool:
    mod = type(A).__module__
    if not mod.startswith("cupyx"):
        return False
    import cupyx.scipy.sparse as csp

    return csp.issparse(A)


def _is_linear_operator(A) -> bool:
    from scipy.sparse.linalg import LinearOperator

    return isinstance(A, LinearOperator)


def _is_integer(xp, dt) -> bool:
    try:
        return bool(xp.isdtype(dt, ("integral", "bool")))
    except (TypeError, ValueError):  # ml_dtypes bfloat16 has kind 'V'
        return False


def _is_complex(xp, dt) -> bool:
    try:
        return bool(xp.isdtype(dt, "complex floating"))
    except (TypeError, ValueError):
        return False


def _is_array(A) -> bool:
    if _is_scipy_sparse(A) or _is_linear_operator(A):
        return False
    try:
        array_namespace(A)
    except TypeError:
        return False
    return hasattr(A, "shape") and hasattr(A, "dtype")


@dataclass
class Operator:
    """A linear operator in one of the accepted forms (see module docstring)."""

    kind: str  # "dense", "batched", "scipy_sparse", "cupy_sparse", "linop", "callable"
    obj: Any
    n: int
    dtype: Any = None  # NumPy dtype for host objects, namespace dtype for dense arrays

    def apply(self, xp, X, layout: str):
        """A X for X (n, s) (``layout="cols"``) or A_i x_i for X (N, n) (``"batch"``)."""
        if self.kind == "batched":
            return xp.matmul(self.obj, X[..., None])[..., 0]
        if layout == "batch":
            # one operator applied to every system's vector: rows of X
            return self._apply_cols(xp, X.T).T
        return self._apply_cols(xp, X)

    def _apply_cols(self, xp, X):
        if self.kind == "dense":
            return xp.matmul(self.obj, X)
        if self.kind in ("scipy_sparse", "cupy_sparse"):
            return self.obj @ X
        if self.kind == "linop":
            out = self.obj.matmat(X) if X.shape[1] > 1 else self.obj.matvec(X[:, 0])
            return xp.reshape(xp.asarray(out, dtype=X.dtype), X.shape)
        # callable: one column at a time, as x -> A x is defined on vectors
        cols = [xp.reshape(xp.asarray(self.obj(X[:, j])), (-1,)) for j in range(X.shape[1])]
        out = xp.stack(cols, axis=1)
        return xp.astype(out, X.dtype) if out.dtype != X.dtype else out

    def astype(self, xp, dtype):
        """The operator with its entries rounded to ``dtype`` (callables: outputs rounded)."""
        if self.kind in ("dense", "batched"):
            return Operator(self.kind, xp.astype(self.obj, dtype), self.n, dtype)
        if self.kind in ("scipy_sparse", "cupy_sparse"):
            return Operator(self.kind, self.obj.astype(_np_dtype(dtype)), self.n, dtype)
        return self


def _np_dtype(dtype):
    try:
        return np.dtype(str(dtype).replace("torch.", ""))
    except TypeError:
        return np.float64


def as_operator(A, *, argname: str, n: int | None = None, xp=None) -> Operator:
    """Wrap ``A``; ValueError naming ``argname`` for a non-square shape or a wrong size.

    ``n`` (when given) is the size the operator must have. Dense and sparse entries are checked
    for NaN/inf here (operators and callables cannot be checked before use).
    """
    if _is_scipy_sparse(A) or (_is_cupy_sparse(A)):
        kind = "scipy_sparse" if _is_scipy_sparse(A) else "cupy_sparse"
        shape = A.shape
        if len(shape) != 2 or shape[0] != shape[1]:
            raise ValueError(f"{argname} must be square, got shape {tuple(shape)}")
        if A.dtype.kind == "c":
            raise TypeError(f"{argname} must be real; complex dtype {A.dtype} is not supported")
        data = A.tocsr().data if A.format not in ("csr", "csc", "coo", "bsr") else A.data
        mod = np if kind == "scipy_sparse" else __import__("cupy")
        # dataᵀdata is finite when every entry is (one fast pass); only when it is not (a NaN or
        # inf entry, or overflow of finite ones) are the entries tested one by one
        with np.errstate(over="ignore", invalid="ignore"):
            v = data.ravel()
            fast_ok = bool(mod.isfinite(v @ v))
        if not fast_ok and not bool(mod.all(mod.isfinite(data))):
            raise ValueError(f"{argname} has non-finite entries (NaN or inf)")
        op = Operator(kind, A, int(shape[0]), A.dtype)
    elif _is_linear_operator(A):
        shape = A.shape
        if shape[0] != shape[1]:
            raise ValueError(f"{argname} must be square, got shape {tuple(shape)}")
        op = Operator("linop", A, int(shape[0]), A.dtype)
    elif _is_array(A):
        axp = array_namespace(A)
        if xp is not None and namespace_name(axp) != namespace_name(xp):
            raise TypeError(f"{argname} is a {namespace_name(axp)} array but the right-hand side "
                            f"is {namespace_name(xp)}; pass arrays of one library")
        if A.ndim not in (2, 3) or A.shape[-1] != A.shape[-2]:
            raise ValueError(f"{argname} must be a square (n, n) matrix or a batch (N, n, n) of "
                             f"them, got shape {tuple(A.shape)}")
        dt = A.dtype
        if _is_complex(axp, dt):
            raise TypeError(f"{argname} must be real; complex dtype {dt} is not supported")
        if not _is_integer(axp, dt):
            check_finite(axp, A, argname)
        op = Operator("dense" if A.ndim == 2 else "batched", A, int(A.shape[-1]), dt)
    elif callable(A):
        op = Operator("callable", A, -1 if n is None else n, None)
    else:
        raise TypeError(f"{argname} must be an array, a sparse matrix, a LinearOperator or a "
                        f"callable, got {type(A).__name__}")
    if n is not None and op.n != -1 and op.n != n:
        raise ValueError(f"{argname} has size {op.n} but the system has {n} unknowns")
    if op.kind == "callable" and n is not None:
        op.n = n
    return op


def host_or_device_ok(xp, op: Operator, argname: str) -> None:
    """Reject mixing host sparse/LinearOperator objects with device arrays (and vice versa)."""
    if op.kind in ("scipy_sparse", "linop") and not is_numpy(xp):
        raise TypeError(f"{argname} is a SciPy object; the right-hand side must then be a NumPy "
                        f"array, got {namespace_name(xp)}")
    if op.kind == "cupy_sparse" and not is_cupy(xp):
        raise TypeError(f"{argname} is a cupyx sparse matrix; the right-hand side must then be "
                        f"a CuPy array, got {namespace_name(xp)}")
