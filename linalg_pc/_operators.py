"""Linear operators: one normalization for every routine that applies a matrix it is handed.

:func:`pcg` (its ``A`` and ``M``) and the basis routines (their symmetric factor ``K``) accept an
operator in any of these forms, classified in this order by :func:`as_operator`:

==================  ============================================================  ==============
kind                what                                                          entries checked
==================  ============================================================  ==============
"scipy_sparse"      a scipy.sparse matrix or array (2-D)                          yes
"cupy_sparse"       a cupyx.scipy.sparse matrix (2-D)                             yes
"linop"             a SciPy ``LinearOperator``, or any object with ``matmat``     no
"dense"             an array of a supported library, (n, n)                       yes (optional)
"batched"           an array (..., n, n) with leading batch axes                  yes (optional)
"callable"          a Python callable ``X -> K @ X``                              no
"matmul"            any other object with ``@`` (``K @ X``)                       no
==================  ============================================================  ==============

One set of rules, each violation a ValueError or TypeError naming the argument, raised before
any work: arrays must come from the library of the other operands (``like``), be real (complex
is a TypeError; integers and booleans are accepted and computed in fp64 or the caller's
format), be square in their last two axes, have the size the caller expects, and have a batch
shape the caller accepts; sparse matrices and objects with a ``shape`` must be square and of the
expected size; host objects (SciPy) need NumPy operands and cupyx matrices CuPy operands
(:func:`host_or_device_ok`). Entries of arrays and sparse matrices are checked for NaN/inf
unless the caller detects non-finite entries on its products instead (a NaN or inf of K
reaches every row of K @ X it multiplies, so a d×k product replaces an O(d²) scan). Operators
and callables cannot be checked before use.

What a callable receives is the caller's convention: :func:`Operator.apply` (the solvers) hands
it one vector at a time, :func:`Operator.matmat` (the basis routines) the whole block.

Library-specific detection (scipy.sparse, cupyx sparse, LinearOperator) goes through the
delegates of :mod:`linalg_pc._backend`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import array_api_compat
import numpy as np

from . import _backend as B

__all__ = [
    "Operator",
    "as_operator",
    "host_or_device_ok",
    "is_array",
    "is_integer_dtype",
    "is_complex_dtype",
    "OPERATOR_KINDS",
]

OPERATOR_KINDS = ("scipy_sparse", "cupy_sparse", "linop", "dense", "batched", "callable",
                  "matmul")


def is_integer_dtype(xp, dt) -> bool:
    """Whether ``dt`` is an integer or boolean dtype of namespace ``xp``."""
    try:
        return bool(xp.isdtype(dt, ("integral", "bool")))
    except (TypeError, ValueError):  # ml_dtypes bfloat16 has kind 'V'
        return False


def is_complex_dtype(xp, dt) -> bool:
    """Whether ``dt`` is a complex dtype of namespace ``xp``."""
    try:
        return bool(xp.isdtype(dt, "complex floating"))
    except (TypeError, ValueError):
        return False


def is_array(A) -> bool:
    """Whether ``A`` is an array of a supported library (not a sparse matrix or operator)."""
    if isinstance(A, np.ndarray):
        return True
    if B.object_library(A) is not None and (B.is_sparse(A) or B.is_linear_operator(A)):
        return False
    if not array_api_compat.is_array_api_obj(A):
        return False
    try:
        B.array_namespace(A)
    except TypeError:
        return False
    return hasattr(A, "shape") and hasattr(A, "dtype")


@dataclass
class Operator:
    """A linear operator in one of :data:`OPERATOR_KINDS` (see the module docstring).

    ``n`` is the order (-1 for a callable whose size is not known yet); ``dtype`` the entries'
    dtype (None for callables); ``name`` the argument's name in the caller's errors.
    """

    kind: str
    obj: Any
    n: int
    dtype: Any = None
    name: str = "A"  # the caller's argument name, for errors found at application

    def apply(self, xp, X, layout: str):
        """A X for X (n, s) (``layout="cols"``) or A_i x_i for X (N, n) (``"batch"``).

        A callable is applied to one column at a time (it maps vectors to vectors).
        """
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
        if self.kind == "matmul":
            return self._checked(xp, self.obj @ X, X.shape, "@ X")
        if self.kind == "linop":
            if X.shape[1] > 1 or not hasattr(self.obj, "matvec"):
                how, shape, f, arg = ".matmat(X)", X.shape, self.obj.matmat, X
            else:
                how, shape, f, arg = ".matvec(x)", (X.shape[0],), self.obj.matvec, X[:, 0]
            try:
                res = f(arg)
            except (TypeError, ValueError) as e:  # the operator's own checks of its result
                raise type(e)(f"{self.name}{how} returned an invalid result: {e}") from e
            out = self._checked(xp, res, shape, how)
            return xp.reshape(xp.astype(out, X.dtype), X.shape)
        # callable: one column at a time, as x -> A x is defined on vectors
        cols = [xp.reshape(self._checked(xp, self.obj(X[:, j]), (X.shape[0],), "(x)"), (-1,))
                for j in range(X.shape[1])]
        out = xp.stack(cols, axis=1)
        return xp.astype(out, X.dtype) if out.dtype != X.dtype else out

    def _checked(self, xp, out, shape, how):
        """The output of a user operator, validated at its application: an array of ``xp``
        (lists and the like converted), real, of ``shape`` (a vector may come as (n, 1));
        else a clear error naming the argument (instead of NumPy internals later, or a complex
        result cast to real with only a ComplexWarning)."""
        what = f"{self.name}{how}" if not how.startswith("@") else f"{self.name} {how}"
        if out is None:
            raise TypeError(f"{what} returned None; it must return an array of shape "
                            f"{tuple(shape)}")
        try:
            arr = xp.asarray(out) if not hasattr(out, "shape") or not hasattr(out, "dtype") \
                else out
            oxp = B.array_namespace(arr)
        except (TypeError, ValueError):
            raise TypeError(f"{what} returned {type(out).__name__}; it must return an array "
                            f"of shape {tuple(shape)}") from None
        if is_complex_dtype(oxp, arr.dtype) or getattr(arr.dtype, "kind", "") == "c":
            raise TypeError(f"{what} returned complex values (dtype {arr.dtype}); {self.name} "
                            "must be a real operator: complex systems are not supported")
        got = tuple(arr.shape)
        if got != tuple(shape) and not (len(shape) == 1 and got == (shape[0], 1)):
            raise ValueError(f"{what} returned shape {got}, expected {tuple(shape)}")
        if B.namespace_name(oxp) != B.namespace_name(xp):
            raise TypeError(f"{what} returned a {B.namespace_name(oxp)} array for "
                            f"{B.namespace_name(xp)} operands; return arrays of one library")
        return arr

    def matmat(self, X):
        """K @ X for a block X (..., n, k): arrays broadcast over the batch, a callable
        receives the whole block, a ``matmat`` object X itself. The result is returned as the
        operator produced it (the caller checks its shape and converts it)."""
        if self.kind in ("dense", "batched", "scipy_sparse", "cupy_sparse", "matmul"):
            return self.obj @ X
        if self.kind == "linop":
            return self.obj.matmat(X)
        return self.obj(X)

    def astype(self, xp, dtype):
        """The operator with its entries rounded to ``dtype`` (callables: unchanged)."""
        if self.kind in ("dense", "batched"):
            return Operator(self.kind, xp.astype(self.obj, dtype), self.n, dtype, self.name)
        if self.kind in ("scipy_sparse", "cupy_sparse"):
            return Operator(self.kind, self.obj.astype(_np_dtype(dtype)), self.n, dtype,
                            self.name)
        return self


def _np_dtype(dtype):
    try:
        return np.dtype(str(dtype).replace("torch.", ""))
    except TypeError:
        return np.float64


def _check_shape(shape, *, argname: str, n: int | None, like: str) -> None:
    if len(shape) < 2 or shape[-1] != shape[-2]:
        raise ValueError(f"{argname} must be square, (n, n) or a batch (..., n, n), got shape "
                         f"{tuple(shape)}")
    if n is not None and shape[-1] != n:
        raise ValueError(f"{argname} of shape {tuple(shape)} does not match {like} with "
                         f"{n} rows")


def as_operator(A, *, argname: str, n: int | None = None, xp=None, like: str = "b",
                batch: tuple | None = None, max_batch_ndim: int | None = 1,
                check_entries: bool = True) -> Operator:
    """Classify and validate ``A``; errors name ``argname``.

    Parameters
    ----------
    A : array, sparse matrix, LinearOperator, callable or object with ``@``
        The operator (see the module docstring).
    argname : str
        The argument's name in the caller, used in every error message.
    n : int, optional
        The order the operator must have.
    xp : namespace, optional
        The library of the other operands: an array ``A`` must come from it.
    like : str
        The other operand's name in the messages (``"b"`` for the solvers, ``"Q"`` for the
        basis routines).
    batch : tuple, optional
        The batch shape of the other operands: an array's leading axes must broadcast with it.
    max_batch_ndim : int or None
        At most this many leading (batch) axes for an array: 1 (the solvers' batch of
        systems) by default, None for any number (the basis routines).
    check_entries : bool
        Check the entries of arrays and sparse matrices for NaN/inf here (O(nnz)); False when
        the caller checks its products instead.

    Returns
    -------
    Operator
        Its ``kind`` is one of :data:`OPERATOR_KINDS`.

    Raises
    ------
    TypeError
        Unsupported type, complex entries, an array of another library than ``xp``.
    ValueError
        Not square, wrong size, batch axes not accepted, non-finite entries.
    """
    lib = B.object_library(A)
    if lib is not None and B.is_sparse(A):
        kind = "scipy_sparse" if lib == "numpy" else "cupy_sparse"
        shape = tuple(A.shape)
        if len(shape) != 2:
            raise ValueError(f"{argname} must be square, got shape {shape}")
        _check_shape(shape, argname=argname, n=n, like=like)
        if A.dtype.kind == "c":
            raise TypeError(f"{argname} must be real; complex dtype {A.dtype} is not supported")
        if check_entries and not B.sparse_all_finite(A):
            raise ValueError(f"{argname} has non-finite entries (NaN or inf)")
        return Operator(kind, A, int(shape[0]), A.dtype, argname)
    if is_array(A):
        axp = B.array_namespace(A)
        if xp is not None and B.namespace_name(axp) != B.namespace_name(xp):
            raise TypeError(f"{argname} is a {B.namespace_name(axp)} array but {like} is a "
                            f"{B.namespace_name(xp)} array; pass arrays of one library")
        shape = tuple(A.shape)
        if max_batch_ndim is not None and len(shape) > 2 + max_batch_ndim:
            raise ValueError(f"{argname} must be a square (n, n) matrix or a batch (N, n, n) "
                             f"of them, got shape {shape}")
        _check_shape(shape, argname=argname, n=n, like=like)
        if batch is not None:
            try:
                np.broadcast_shapes(shape[:-2], tuple(batch))
            except ValueError:
                raise ValueError(f"batch shape {shape[:-2]} of {argname} does not broadcast "
                                 f"with {like}'s {tuple(batch)}") from None
        dt = A.dtype
        if is_complex_dtype(axp, dt):
            raise TypeError(f"{argname} must be real; complex dtype {dt} is not supported")
        if check_entries and not is_integer_dtype(axp, dt):
            B.check_finite(axp, A, argname)
        return Operator("dense" if A.ndim == 2 else "batched", A, int(shape[-1]), dt, argname)
    if hasattr(A, "matmat"):
        kind = "linop"
    elif callable(A):
        kind = "callable"
    elif hasattr(A, "__matmul__"):
        kind = "matmul"
    else:
        raise TypeError(f"{argname} must be an array, a callable X -> {argname} @ X, a sparse "
                        f"matrix or a linear operator, got {type(A).__name__}")
    shape = getattr(A, "shape", None)
    if shape is not None and len(shape) >= 2:
        _check_shape(tuple(shape), argname=argname, n=n, like=like)
        size = int(shape[-1])
    else:
        size = -1 if n is None else int(n)
    dt = getattr(A, "dtype", None) if shape is not None else None
    if dt is not None and (getattr(dt, "kind", "") == "c" or "complex" in str(dt)):
        raise TypeError(f"{argname} must be real; an operator of complex dtype {dt} is not "
                        "supported")
    return Operator(kind, A, size, dt, argname)


def host_or_device_ok(xp, op: Operator, argname: str) -> None:
    """Reject mixing host sparse/LinearOperator objects with device arrays (and vice versa)."""
    lib = B.object_library(op.obj) if op.kind in ("scipy_sparse", "cupy_sparse", "linop") \
        else None
    if lib is not None and lib != B.namespace_name(xp):
        owner, arrays = {"numpy": ("a SciPy", "NumPy"), "cupy": ("a cupyx", "CuPy")}[lib]
        raise TypeError(f"{argname} is {owner} object; the other operands must then be {arrays} "
                        f"arrays, got {B.namespace_name(xp)}")
