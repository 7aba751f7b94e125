"""Kronecker-product operators F₁ ⊗ … ⊗ F_k applied without forming the product.

:class:`KroneckerOperator` holds k ≥ 1 symmetric positive semidefinite factors F_i (d_i × d_i,
optionally stacked over leading batch axes) and applies their Kronecker product to a tensor X
of shape (d₁, …, d_k), to its row-major flattening x = vec(X) of length N = ∏ d_i, or to a
block of such vectors (N, r), by k mode products: for two factors

    (F₁ ⊗ F₂) vec(X) = vec(F₁ X F₂ᵀ)        (row-major vec),

and in general the i-th factor multiplies the i-th axis of X (Van Loan 2000, §3). Its powers
(F₁ + εI)^p ⊗ … ⊗ (F_k + εI)^p — the inverse, the inverse square root and the inverse fourth
root of Shampoo's preconditioner (Gupta, Koren & Singer 2018) — come from one symmetric
eigendecomposition per factor, never from one of the N × N product.

Cost: applying the operator to one tensor is k products, 2·N·Σd_i flops, against 2·N² for the
formed matrix (for d₁ = d₂ = 1000: 4·10⁹ against 2·10¹²) and Σd_i² numbers of memory against
N². ``power`` costs ≈ 9·d_i³ flops per factor (eigh, Golub & Van Loan §8.3) plus 2·d_i³ to form
the result's factor when it is first applied.

The operator works on the array-API namespace of its factors (NumPy, PyTorch, CuPy,
array_api_strict) and is accepted by :func:`linalg_pc.pcg` as ``M=`` (it has ``matvec``,
``matmat``, ``shape`` and ``dtype``, the "linop" kind of :mod:`linalg_pc._operators`).

References
----------
C. F. Van Loan, "The ubiquitous Kronecker product", J. Comput. Appl. Math. 123 (2000) 85–100:
the mode-product evaluation (§3) and (A ⊗ B)^p = A^p ⊗ B^p for the eigendecomposition
A ⊗ B = (Q_A ⊗ Q_B)(Λ_A ⊗ Λ_B)(Q_A ⊗ Q_B)ᵀ (§2).
V. Gupta, T. Koren, Y. Singer, "Shampoo: Preconditioned stochastic tensor optimization",
ICML 2018: the preconditioner (L + εI)^{-1/4} ⊗ (R + εI)^{-1/4} (Algorithm 1; per-factor ε).
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any

import numpy as np

from .. import _backend as B
from .._formats import format_of_dtype
from .._operators import is_array
from ._config import check_real

__all__ = ["KroneckerOperator"]

#: Exceptions a library's eigh raises when it fails to converge (NumPy's LinAlgError is a
#: ValueError, PyTorch's a RuntimeError).
_EIGH_ERRORS = (ValueError, RuntimeError, ArithmeticError)


@dataclass
class _Factor:
    """One Kronecker factor: a given matrix ``mat``; or an eigen-representation
    F = Q diag(lam) Qᵀ + rest·(I − Q Qᵀ) (Q with r ≤ d orthonormal columns, ``mat`` formed on
    first use); or ``rest``·I (``Q`` and ``mat`` None)."""

    d: int
    mat: Any = None
    Q: Any = None
    lam: Any = None
    rest: float = 0.0

    @property
    def is_identity(self) -> bool:
        return self.mat is None and self.Q is None

    @property
    def batch(self) -> tuple:
        if self.mat is not None:
            return tuple(self.mat.shape[:-2])
        if self.Q is not None:
            return np.broadcast_shapes(tuple(self.Q.shape[:-2]), tuple(self.lam.shape[:-1]))
        return ()


class KroneckerOperator:
    """The Kronecker product F₁ ⊗ … ⊗ F_k of symmetric positive semidefinite factors, as an
    operator on tensors (d₁, …, d_k) and on their row-major flattenings (length N = ∏ d_i).

    Parameters
    ----------
    factors : sequence of k ≥ 1 entries
        Each an array (..., d_i, d_i) of a supported library (real; integers are taken as
        float64), an ``int`` d_i (the identity of that order) or None (the identity of order
        ``dims[i]``). At least one entry must be an array: the operator takes its library,
        dtype (the promotion of the factors' dtypes) and device from the arrays. Leading batch
        axes (which must broadcast together) make a stack of operators.
    dims : sequence of int, optional
        (d₁, …, d_k); required where a factor is None, checked against the others.

    Attributes
    ----------
    dims : tuple of int
        (d₁, …, d_k), the tensor shape the operator acts on.
    batch_shape : tuple of int
        The broadcast of the factors' leading axes (() for one operator).
    shape : tuple of int
        ``batch_shape + (N, N)``, N = ∏ d_i: (N, N) for one operator.
    dtype : dtype
        The factors' common dtype.

    Notes
    -----
    The factors are used as given in products (no symmetry check: a product never needs one);
    :meth:`power` uses their symmetric part (F + Fᵀ)/2 and clamps negative eigenvalues to 0.
    Results come in the factors' library and on their device, in the promotion of the input's
    and the operator's dtypes (NumPy's rule for ``@``). Bad input raises TypeError (wrong type,
    library or dtype, complex) or ValueError (shapes, non-finite entries) naming the argument,
    before any work.

    As :func:`linalg_pc.pcg`'s ``M`` (pass ``op.inverse()`` or ``op.power(-1, eps=...)``), an
    operator without batch axes serves every right-hand side and every system of a batch.

    Cost: 2·N·Σd_i flops per applied tensor (2·N² for the formed product); memory Σd_i² per
    operator of the batch.

    References
    ----------
    Van Loan, J. Comput. Appl. Math. 123 (2000); Gupta, Koren & Singer, ICML 2018 (module
    docstring).

    Examples
    --------
    >>> import numpy as np
    >>> from linalg_pc.precond import KroneckerOperator
    >>> A, Bm = np.diag([1.0, 2.0]), np.diag([3.0, 4.0, 5.0])
    >>> op = KroneckerOperator([A, Bm])
    >>> X = np.ones((2, 3))
    >>> bool(np.allclose(op.apply(X), A @ X @ Bm.T)), op.shape
    (True, (6, 6))
    >>> bool(np.allclose(op.todense(), np.kron(A, Bm)))
    True
    >>> bool(np.allclose(op.inverse().todense(), np.linalg.inv(np.kron(A, Bm))))
    True
    """

    def __init__(self, factors, *, dims=None):
        recs = _factors_from(factors, dims, "factors")
        self._init(recs, "factors")

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_eigen(cls, bases, eigenvalues, *, dims=None) -> KroneckerOperator:
        """The operator of F_i = Q_i diag(λ_i) Q_iᵀ, from eigen-representations.

        Parameters
        ----------
        bases : sequence of k entries
            Each an array Q_i (..., d_i, r_i), 1 ≤ r_i ≤ d_i, with orthonormal columns (not
            checked: an O(d_i·r_i²) test the caller's basis routines already make), an ``int``
            or None (identity, as in the constructor; its eigenvalues entry must be None).
        eigenvalues : sequence of k entries
            λ_i (..., r_i), real and finite; None where the basis is an identity. With
            r_i < d_i the factor is 0 on the orthogonal complement of range(Q_i).
        dims : sequence of int, optional
            As in the constructor.

        Returns
        -------
        KroneckerOperator
            Products form F_i once, at the first application (2·d_i²·r_i flops);
            :meth:`power` works on λ_i directly (no eigh).
        """
        if not isinstance(bases, (list, tuple)) or not isinstance(eigenvalues, (list, tuple)):
            raise TypeError("bases and eigenvalues must be lists or tuples (one entry per "
                            f"factor), got {type(bases).__name__} and "
                            f"{type(eigenvalues).__name__}")
        if len(bases) != len(eigenvalues):
            raise ValueError(f"bases has {len(bases)} entries but eigenvalues has "
                             f"{len(eigenvalues)}; give one eigenvalue vector per basis")
        recs = _factors_from(bases, dims, "bases", square=False)
        for i, (rec, lam) in enumerate(zip(recs, eigenvalues)):
            name = f"eigenvalues[{i}]"
            if rec.Q is None:
                if lam is not None:
                    raise ValueError(f"{name} must be None where bases[{i}] is an identity")
                continue
            lam = _real_array(lam, name)
            r = rec.Q.shape[-1]
            if lam.ndim < 1 or lam.shape[-1] != r:
                raise ValueError(f"{name} must have shape (..., {r}) for bases[{i}] of shape "
                                 f"{tuple(rec.Q.shape)}, got {tuple(lam.shape)}")
            _broadcast(tuple(rec.Q.shape[:-2]), tuple(lam.shape[:-1]),
                       what=f"the batch axes of bases[{i}] and {name}")
            rec.lam = lam
        obj = cls.__new__(cls)
        obj._init(recs, "bases")
        return obj

    def _init(self, recs: list[_Factor], argname: str) -> None:
        arrays = [(i, a) for i, r in enumerate(recs) for a in (r.mat, r.Q, r.lam)
                  if a is not None]
        if not arrays:
            raise ValueError(f"{argname} must contain at least one array: the operator takes "
                             "its library, dtype and device from its arrays")
        i0, a0 = arrays[0]
        xp = B.array_namespace(a0)
        dev = B.device_of(a0)
        for i, a in arrays[1:]:
            axp = B.array_namespace(a)
            if B.namespace_name(axp) != B.namespace_name(xp):
                raise TypeError(f"{argname}[{i}] is a {B.namespace_name(axp)} array but "
                                f"{argname}[{i0}] is a {B.namespace_name(xp)} array; pass "
                                "arrays of one library")
            if B.device_of(a) != dev:
                raise ValueError(f"{argname}[{i}] is on device {B.device_of(a)} but "
                                 f"{argname}[{i0}] is on {dev}; pass arrays of one device")
        dtype = xp.result_type(*[a.dtype for _, a in arrays])
        batches = [r.batch for r in recs]
        self._xp, self._device, self.dtype = xp, dev, dtype
        self._factors = [_cast(xp, r, dtype) for r in recs]
        self.dims = tuple(r.d for r in recs)
        self.batch_shape = _broadcast(*batches, what=f"the batch axes of the {argname}")
        self.size = math.prod(self.dims)
        self.shape = (*self.batch_shape, self.size, self.size)

    # ------------------------------------------------------------------ properties
    @property
    def factors(self) -> tuple:
        """The factors F_i (..., d_i, d_i) as arrays (identities and eigen-representations
        formed: d_i² and 2·d_i²·r_i flops, kept for later products)."""
        return tuple(self._matrix(i) for i in range(len(self.dims)))

    def __repr__(self) -> str:
        return (f"KroneckerOperator(dims={self.dims}, batch_shape={self.batch_shape}, "
                f"dtype={self.dtype}, library={B.namespace_name(self._xp)})")

    # ------------------------------------------------------------------ products
    def apply(self, X):
        """(F₁ ⊗ … ⊗ F_k) applied to a tensor X (..., d₁, …, d_k): Y = X ×₁ F₁ ⋯ ×_k F_k.

        Leading axes of X broadcast with :attr:`batch_shape`. Cost 2·N·Σd_i flops per tensor.
        """
        k = len(self.dims)
        X = self._check_input(X, "X", self.dims, "(..., " + ", ".join(map(str, self.dims))
                              + ")")
        return self._run(X, tuple(X.shape[:X.ndim - k]), 1, self.dims)

    def matvec(self, x):
        """(F₁ ⊗ … ⊗ F_k) x for x (..., N), the row-major flattening of a tensor."""
        x = self._check_input(x, "x", (self.size,), f"(..., {self.size})")
        return self._run(x, tuple(x.shape[:-1]), 1, (self.size,))

    def matmat(self, X):
        """(F₁ ⊗ … ⊗ F_k) X for a block X (..., N, r) of flattened tensors as columns."""
        X = self._check_input(X, "X", (self.size, None), f"(..., {self.size}, r)")
        r = int(X.shape[-1])
        return self._run(X, tuple(X.shape[:-2]), r, (self.size, r))

    def __matmul__(self, X):
        """``op @ x`` (x 1-D: :meth:`matvec`) and ``op @ X`` (X (..., N, r): :meth:`matmat`),
        NumPy's rule for stacked matrices."""
        if not is_array(X):
            return NotImplemented
        return self.matvec(X) if X.ndim == 1 else self.matmat(X)

    def todense(self):
        """The formed product (..., N, N). N² numbers and N² flops: for tests and debugging
        at small N only (N = 10⁴ is 800 MB in float64)."""
        xp = self._xp
        mats = self.factors
        K = mats[0]
        for M in mats[1:]:
            bk, bm = tuple(K.shape[:-2]), tuple(M.shape[:-2])
            n, m = K.shape[-1], M.shape[-1]
            prod = xp.reshape(K, (*bk, n, 1, n, 1)) * xp.reshape(M, (*bm, 1, m, 1, m))
            K = xp.reshape(prod, (*np.broadcast_shapes(bk, bm), n * m, n * m))
        if tuple(K.shape[:-2]) != self.batch_shape:
            K = xp.broadcast_to(K, self.shape)
        return K

    # ------------------------------------------------------------------ functions
    def power(self, p, *, eps=0.0, rtol=None) -> KroneckerOperator:
        """(F₁ + εI)^p ⊗ … ⊗ (F_k + εI)^p, from one symmetric eigendecomposition per factor.

        Parameters
        ----------
        p : float
            The exponent (finite): −1 the inverse, −1/2, −1/4 Shampoo's roots, 1/2 ...
        eps : float
            ε ≥ 0 added to every factor (Shampoo's per-factor damping; not the damping
            (F₁ ⊗ F₂ + εI)^p of the product).
        rtol : float, optional
            Eigenvalues λ ≤ rtol·λ_max of a factor (λ_max its largest) are taken as 0 before
            ε is added: they are below what the eigendecomposition resolves. Default
            d_i·ε_mach of the eigh's format, NumPy's ``matrix_rank`` / ``pinv`` cutoff.

        Returns
        -------
        KroneckerOperator
            Same library, device, dtype and batch shape; its factors are held as
            eigen-representations, formed at their first application.

        Notes
        -----
        Each factor's symmetric part S = (F + Fᵀ)/2 is decomposed by eigh in its own format, at
        least float32 (16-bit factors are widened); a failed or non-finite eigh is repeated in
        float64. Negative eigenvalues (PSD factors that rounding made indefinite) are clamped to
        0. **Zero eigenvalues map to 0 for p ≤ 0 when ε = 0**: the Moore–Penrose convention
        (``power(-1)`` of a singular factor is its pseudo-inverse, ``power(0)`` the projector
        onto its range), what Shampoo implementations expect of a rank-deficient statistic;
        pass ε > 0 for a regularized inverse instead. (A ⊗ B)⁺ = A⁺ ⊗ B⁺ (Van Loan 2000, §2),
        so the product's pseudo-inverse is the factors'. Cost ≈ 9·d_i³ flops per factor
        decomposed (a factor given by :meth:`from_eigen` or returned by ``power`` is not
        decomposed again).

        Raises
        ------
        ValueError
            p not finite, ε negative or not finite, rtol negative; eigh failing in float64.
        """
        p = check_real(p, "p")
        eps = check_real(eps, "eps")
        if eps < 0:
            raise ValueError(f"eps must be >= 0, got {eps}")
        if rtol is not None:
            rtol = check_real(rtol, "rtol")
            if rtol < 0:
                raise ValueError(f"rtol must be >= 0, got {rtol}")
        xp = self._xp
        cdt = _compute_dtype(xp, self.dtype)
        recs = []
        for i, f in enumerate(self._factors):
            if f.is_identity:
                recs.append(_Factor(f.d, rest=_scalar_power(f.rest, p, eps)))
                continue
            if f.Q is None:
                lam, Q = _eigh_psd(xp, f.mat, cdt, f"factors[{i}]")
                rest = 0.0
            else:
                lam, Q, rest = f.lam, f.Q, f.rest
            cut = f.d * format_of_dtype(cdt).eps if rtol is None else rtol
            if lam.dtype != cdt and format_of_dtype(lam.dtype).name != "fp64":
                lam = xp.astype(lam, cdt)  # 16-bit eigenvalues: their powers in float32
            lam_p = _spectral_power(xp, lam, rest, p, eps, cut)
            full = Q.shape[-1] == f.d  # no complement: its eigenvalue plays no part
            recs.append(_Factor(f.d, Q=_astype(xp, Q, self.dtype),
                                lam=_astype(xp, lam_p, self.dtype),
                                rest=0.0 if full else _scalar_power(rest, p, eps)))
        obj = type(self).__new__(type(self))
        obj._init(recs, "factors")
        return obj

    def inverse(self, *, eps=0.0, rtol=None) -> KroneckerOperator:
        """:meth:`power` (−1): (F₁ + εI)⁻¹ ⊗ … (the pseudo-inverse of singular factors when
        ε = 0)."""
        return self.power(-1.0, eps=eps, rtol=rtol)

    # ------------------------------------------------------------------ internals
    def _matrix(self, i: int):
        """Factor i as an array (..., d, d), formed (and kept) from its representation."""
        xp, f = self._xp, self._factors[i]
        if f.mat is not None:
            return f.mat
        if f.is_identity:
            return xp.eye(f.d, dtype=self.dtype, device=self._device) * f.rest
        Q = f.Q
        lam = f.lam - f.rest if f.rest != 0.0 else f.lam
        F = xp.matmul(Q * xp.reshape(lam, (*lam.shape[:-1], 1, lam.shape[-1])), _mT(xp, Q))
        if f.rest != 0.0:
            F = F + xp.eye(f.d, dtype=self.dtype, device=self._device) * f.rest
        f.mat = F
        return F

    def _check_input(self, X, name: str, tail: tuple, what: str):
        """X validated (array of the operator's library and device, real, trailing shape
        ``tail`` (None: any size), leading axes broadcasting with the batch), as floats."""
        if not is_array(X):
            raise TypeError(f"{name} must be an array of shape {what}, got "
                            f"{type(X).__name__}")
        axp = B.array_namespace(X)
        if B.namespace_name(axp) != B.namespace_name(self._xp):
            raise TypeError(f"{name} is a {B.namespace_name(axp)} array but the operator's "
                            f"factors are {B.namespace_name(self._xp)} arrays; pass arrays "
                            "of one library")
        kind = B.dtype_kind(X)
        if kind == "complex":
            raise TypeError(f"{name} must be real; complex dtype {X.dtype} is not supported")
        if kind not in ("float", "int", "bool"):
            raise TypeError(f"{name} must be a real array, got dtype {X.dtype}")
        shape = tuple(X.shape)
        got = shape[len(shape) - len(tail):]
        if len(shape) < len(tail) or any(t is not None and g != t for g, t in zip(got, tail)):
            raise ValueError(f"{name} must have shape {what} for an operator on tensors "
                             f"{self.dims}, got {shape}")
        _broadcast(shape[:len(shape) - len(tail)], self.batch_shape,
                   what=f"the leading axes of {name} and the operator's batch shape")
        if B.device_of(X) != self._device:
            raise ValueError(f"{name} is on device {B.device_of(X)} but the operator is on "
                             f"{self._device}")
        if kind != "float":
            X = self._xp.astype(X, self.dtype)
        return X

    def _run(self, X, xbatch: tuple, r: int, out_tail: tuple):
        """The mode products on X viewed as batch + (d₁, …, d_k, r)."""
        xp = self._xp
        batch = np.broadcast_shapes(xbatch, self.batch_shape)
        N = self.size
        dt = xp.result_type(X.dtype, self.dtype)
        if X.dtype != dt:
            X = xp.astype(X, dt)
        if xbatch != batch:
            X = xp.broadcast_to(xp.reshape(X, (*xbatch, N * r)), (*batch, N * r))
        for i, f in enumerate(self._factors):
            d = f.d
            a, c = math.prod(self.dims[:i]), math.prod(self.dims[i + 1:]) * r
            if f.is_identity:
                if f.rest != 1.0:
                    X = X * f.rest
                continue
            F = self._matrix(i)
            if F.dtype != dt:
                F = xp.astype(F, dt)
            if c == 1:  # the last axis: X (…, a, d) Fᵀ, one GEMM per operator
                X = xp.matmul(xp.reshape(X, (*batch, a, d)), _mT(xp, F))
            elif a == 1:  # the first axis: F X (…, d, c)
                X = xp.matmul(F, xp.reshape(X, (*batch, d, c)))
            else:  # a middle axis: a products F X_j (…, a, d, c)
                Fb = xp.reshape(F, (*F.shape[:-2], 1, d, d))
                X = xp.matmul(Fb, xp.reshape(X, (*batch, a, d, c)))
        return xp.reshape(X, (*batch, *out_tail))


# ---------------------------------------------------------------------- validation helpers
def _factors_from(entries, dims, argname: str, *, square: bool = True) -> list[_Factor]:
    """Validated factor records from the user's list (arrays, ints, None)."""
    if not isinstance(entries, (list, tuple)):
        raise TypeError(f"{argname} must be a list or tuple of factors, got "
                        f"{type(entries).__name__}")
    k = len(entries)
    if k == 0:
        raise ValueError(f"{argname} must hold at least one factor")
    if dims is not None:
        if not isinstance(dims, (list, tuple)) or len(dims) != k:
            raise ValueError(f"dims must be a sequence of {k} sizes (one per factor), got "
                             f"{dims!r}")
        for i, d in enumerate(dims):
            if not _is_int(d) or int(d) < 1:
                raise ValueError(f"dims[{i}] must be a positive int, got {d!r}")
    recs = []
    for i, F in enumerate(entries):
        name = f"{argname}[{i}]"
        if F is None:
            if dims is None:
                raise ValueError(f"{name} is None (an identity): give its order in dims=")
            recs.append(_Factor(int(dims[i]), rest=1.0))
            continue
        if _is_int(F):
            if int(F) < 1:
                raise ValueError(f"{name} must be a positive int (the order of an identity "
                                 f"factor), got {F}")
            recs.append(_Factor(int(F), rest=1.0))
        else:
            if not is_array(F):
                raise TypeError(f"{name} must be an array (..., d, d), an int (an identity of "
                                f"that order) or None, got {type(F).__name__}")
            F = _real_array(F, name)
            shape = tuple(F.shape)
            if square and (len(shape) < 2 or shape[-1] != shape[-2]):
                raise ValueError(f"{name} must be square, (d, d) or a batch (..., d, d), got "
                                 f"shape {shape}")
            if not square and (len(shape) < 2 or not 1 <= shape[-1] <= shape[-2]):
                raise ValueError(f"{name} must be (..., d, r) with 1 <= r <= d (orthonormal "
                                 f"columns), got shape {shape}")
            if shape[-2] < 1:
                raise ValueError(f"{name} must have order d >= 1, got shape {shape}")
            recs.append(_Factor(int(shape[-2]), mat=F) if square
                        else _Factor(int(shape[-2]), Q=F))
        if dims is not None and recs[-1].d != int(dims[i]):
            raise ValueError(f"{name} has order {recs[-1].d} but dims[{i}] = {dims[i]}")
    return recs


def _real_array(A, name: str):
    """A real, finite array (integers and booleans as float64); errors name ``name``."""
    if not is_array(A):
        raise TypeError(f"{name} must be an array, got {type(A).__name__}")
    xp = B.array_namespace(A)
    kind = B.dtype_kind(A)
    if kind == "complex":
        raise TypeError(f"{name} must be real; complex dtype {A.dtype} is not supported")
    if kind in ("int", "bool"):
        A = xp.astype(A, xp.float64)
    elif kind != "float":
        raise TypeError(f"{name} must be a real array, got dtype {A.dtype}")
    B.check_finite(xp, A, name)
    return A


def _is_int(v) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _broadcast(*shapes, what: str) -> tuple:
    try:
        return tuple(np.broadcast_shapes(*shapes))
    except ValueError:
        raise ValueError(f"{what} do not broadcast: {', '.join(map(str, shapes))}") from None


def _cast(xp, f: _Factor, dtype) -> _Factor:
    def c(a):
        return None if a is None else _astype(xp, a, dtype)

    return _Factor(f.d, c(f.mat), c(f.Q), c(f.lam), float(f.rest))


def _astype(xp, a, dtype):
    return a if a.dtype == dtype else xp.astype(a, dtype)


def _mT(xp, a):
    return xp.matrix_transpose(a) if hasattr(xp, "matrix_transpose") else a.mT


# ---------------------------------------------------------------------- spectral helpers
def _compute_dtype(xp, dtype):
    """The eigh format of a factor of ``dtype``: its own, at least float32."""
    return B.native_dtype(xp, "fp64" if format_of_dtype(dtype).name == "fp64" else "fp32")


def _finite(xp, *arrays) -> bool:
    return all(bool(xp.all(xp.isfinite(a))) for a in arrays)


def _eigh_psd(xp, F, cdt, name: str):
    """Eigenpairs (λ, Q) of (F + Fᵀ)/2 in ``cdt``; a failed or non-finite eigh is repeated in
    float64 (ValueError naming the factor if that fails too)."""
    tried = []
    dts = [cdt]
    if cdt != xp.float64 and B.has_dtype(xp, "fp64"):
        dts.append(B.native_dtype(xp, "fp64"))
    for dt in dts:
        S = xp.astype(F, dt) if F.dtype != dt else F
        S = (S + _mT(xp, S)) * 0.5
        try:
            lam, Q = B.eigh(S)
        except _EIGH_ERRORS as e:
            tried.append(f"{dt}: {type(e).__name__}: {e}")
            continue
        if _finite(xp, lam, Q):
            return lam, Q
        tried.append(f"{dt}: non-finite eigenpairs")
    raise ValueError(f"the eigendecomposition of {name} failed ({'; '.join(tried)})")


def _spectral_power(xp, lam, rest: float, p: float, eps: float, rtol: float):
    """f(λ) = (λ + ε)^p with λ clamped to [0, ∞), λ <= rtol·λ_max taken as 0, and 0 where
    λ + ε = 0 (the pseudo-inverse convention for p <= 0)."""
    zero = xp.zeros_like(lam)
    lam = xp.where(lam > 0, lam, zero)
    lmax = xp.max(lam, axis=-1, keepdims=True)
    if rest > 0:
        lmax = xp.where(lmax > rest, lmax, xp.full_like(lmax, rest))
    lam = xp.where(lam > lmax * rtol, lam, zero)
    mu = lam + eps if eps else lam
    pos = mu > 0
    return xp.where(pos, xp.where(pos, mu, xp.ones_like(mu)) ** p, zero)


def _scalar_power(c: float, p: float, eps: float) -> float:
    """The scalar rule of :func:`_spectral_power` for an exactly known eigenvalue c."""
    mu = max(c, 0.0) + eps
    return mu ** p if mu > 0 else 0.0
