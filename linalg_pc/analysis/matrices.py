"""Seeded test matrices for factorizations and solvers, in any storage format and library.

Every generator builds its matrix in float64 on the host, rounds it ONCE (correctly, to nearest)
to the requested storage format, and returns it in the requested array library as a
:class:`TestMatrix` that also carries the condition number of the float64 matrix (``kappa``) and
of the stored, rounded one (``kappa_stored``), both from a float64 SVD. Rounding to a 16-bit
format perturbs every entry by up to u·|a_ij| (u = 2⁻⁸ for bf16), so by Weyl's inequality every
singular value moves by at most ``u·||A||_F``: the stored matrix's condition number is capped
at about ``1/u`` times a modest power of the dimension whatever κ was requested (bf16, random
10×10: 1e4–3e6 for a requested 1e12; 50×50: 3e5–3e6), and it can also be larger than the
requested κ when that is near the cap. Studies should plot against ``kappa_stored``.

Generators
----------
- :func:`randsvd`: ``A = U Σ Vᵀ`` with Haar-distributed U, V and prescribed singular values
  (the modes of LAPACK's ``xLATMS``: geometric, arithmetic, one small, one large, random).
- :func:`kahan`, :func:`graded`, :func:`lauchli`, :func:`hilbert`: classical hard cases.
- :func:`rank_deficient`, :func:`scaled` (near underflow / overflow of the storage format),
  :func:`zero`, :func:`diagonal`, :func:`triangular`.
- :func:`matrix_suite`: the LAPACK-style collection (``xCHKQR`` types) for one shape.

Common keyword arguments
------------------------
dtype : str, dtype or Format, default "fp64"
    Storage format: "bf16", "fp16", "tf32" (values rounded to tf32, stored in float32), "fp32",
    "fp64", or a dtype of the target library.
rng : int, numpy.random.Generator or None
    Seed or generator (None: fresh entropy). Deterministic generators accept and ignore it.
xp : namespace or None
    Target array library (NumPy by default); e.g. ``array_api_compat.torch`` or ``torch``.

References
----------
N. J. Higham, *Accuracy and Stability of Numerical Algorithms*, 2nd ed., SIAM 2002, ch. 28
(test matrices: randsvd §28.3, Kahan §8.3 and §28, Hilbert §28.1) and ch. 19 (QR).
J. Demmel, A. McKenney, "A test matrix generation suite", LAPACK Working Note 9 (1989)
(``xLATMS`` modes). G. W. Stewart, "The efficient generation of random orthogonal matrices with
an application to condition estimators", SINUM 17 (1980) (Haar matrices from the QR of a
Gaussian). LAPACK ``TESTING/LIN/dlatb4.f`` (the QR test types and their scaling).
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, ClassVar

import numpy as np

from .. import _backend as B
from .._formats import Format, get_format
from ..precision import round_to, to_storage
from .metrics import kappa as _kappa

__all__ = [
    "TestMatrix",
    "SINGULAR_VALUE_MODES",
    "randsvd",
    "kahan",
    "graded",
    "lauchli",
    "hilbert",
    "rank_deficient",
    "scaled",
    "zero",
    "diagonal",
    "triangular",
    "matrix_suite",
]

#: Singular-value distributions of :func:`randsvd` (LAPACK ``xLATMS`` MODE 3, 4, 2, 1, 5).
SINGULAR_VALUE_MODES = ("geometric", "arithmetic", "one_small", "one_large", "random")

#: LAPACK's ``dlatb4`` SHRINK factor: the "scaled" types sit at ``SHRINK·tiny/eps`` and its
#: reciprocal, i.e. a factor ``1/(4·eps)`` inside the normal range of the storage format.
SHRINK = 0.25

#: Condition number LAPACK's ``dlatb4`` gives the diagonal, triangular and scaled QR types.
SUITE_TYPE_KAPPA = 2.0


@dataclass(frozen=True, eq=False)
class TestMatrix:
    """A generated test matrix and what is known about it.

    Attributes
    ----------
    A : array
        The matrix in the requested library and storage format.
    name : str
        A short label, unique within a :func:`matrix_suite` (e.g. ``"randsvd(kappa=100)"``).
    kappa : float
        2-norm condition number of the float64 matrix before rounding (float64 SVD).
    kappa_stored : float
        2-norm condition number of the stored, rounded matrix (float64 SVD of its values).
    params : dict
        The generator and its parameters (JSON-serialisable plain values).
    """

    __test__: ClassVar[bool] = False  # not a pytest test class

    A: Any
    name: str
    kappa: float
    kappa_stored: float
    params: dict = field(default_factory=dict)

    @property
    def shape(self) -> tuple:
        return tuple(self.A.shape)

    def __repr__(self) -> str:
        lib = B.namespace_name(B.array_namespace(self.A))
        fmt = B.format_of(self.A).name
        return (f"TestMatrix(name={self.name!r}, shape={self.shape}, {lib} {fmt}, "
                f"kappa={self.kappa:.3g}, kappa_stored={self.kappa_stored:.3g})")


# --------------------------------------------------------------------------- validation
def _size(value, argname: str) -> int:
    if isinstance(value, bool):
        raise TypeError(f"{argname} must be a non-negative integer, got {value!r}")
    try:
        v = operator.index(value)
    except TypeError:
        raise TypeError(f"{argname} must be a non-negative integer, got "
                        f"{type(value).__name__}") from None
    if v < 0:
        raise ValueError(f"{argname} must be a non-negative integer, got {v}")
    return v


def _real(value, argname: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{argname} must be a real number, got {type(value).__name__}")
    return float(value)


def _kappa_arg(value, argname: str = "kappa") -> float:
    k = _real(value, argname)
    if not (math.isfinite(k) and k >= 1.0):
        raise ValueError(f"{argname} must be a finite number >= 1, got {value!r}")
    return k


def _mode_arg(mode) -> str:
    if mode not in SINGULAR_VALUE_MODES:
        raise ValueError(f"mode must be one of {SINGULAR_VALUE_MODES}, got {mode!r}")
    return mode


def _target(dtype, xp):
    """Validate the storage format and target namespace before any work."""
    f = get_format(dtype, argname="dtype")
    if xp is None:
        xp = B.array_namespace(np.zeros(0))
    if not isinstance(xp, ModuleType):
        raise TypeError(f"xp must be an array namespace (module), got {type(xp).__name__}")
    store = "fp32" if f.name == "tf32" else f.name
    if B.supported(xp) and not B.has_dtype(xp, store):
        raise TypeError(f"dtype: {B.namespace_name(xp)} cannot store {f.name} arrays")
    return f, xp


def _generator(rng) -> np.random.Generator:
    if isinstance(rng, np.random.Generator):
        return rng
    if rng is None or (isinstance(rng, (int, np.integer)) and not isinstance(rng, bool)):
        return np.random.default_rng(rng)
    raise TypeError(f"rng must be None, an int seed or a numpy.random.Generator, got "
                    f"{type(rng).__name__}")


# --------------------------------------------------------------------------- building blocks
def _haar(gen: np.random.Generator, m: int, k: int) -> np.ndarray:
    """m×k with orthonormal columns, the first k columns of a Haar-distributed orthogonal matrix.

    QR of a Gaussian matrix with R's diagonal made positive (Stewart 1980; Mezzadri 2007): without
    the sign fix the distribution is not Haar.
    """
    if m == 0 or k == 0:
        return np.zeros((m, k))
    Q, R = np.linalg.qr(gen.standard_normal((m, k)))
    d = np.sign(np.diagonal(R))
    d[d == 0] = 1.0
    return Q * d


def _singular_values(k: int, kappa: float, mode: str, gen: np.random.Generator) -> np.ndarray:
    """k singular values in [1/kappa, 1], descending, σ_1 = 1 (xLATMS/xLATM1 modes)."""
    if k == 0:
        return np.zeros(0)
    if k == 1:
        return np.ones(1)
    i = np.arange(k, dtype=np.float64)
    small = 1.0 / kappa
    if mode == "geometric":
        s = kappa ** (-i / (k - 1))
    elif mode == "arithmetic":
        s = 1.0 - (i / (k - 1)) * (1.0 - small)
    elif mode == "one_small":
        s = np.ones(k)
    elif mode == "one_large":
        s = np.full(k, small)
    else:  # random: log-uniform in [1/kappa, 1]
        s = np.sort(np.exp(gen.uniform(math.log(small), 0.0, size=k)))[::-1].copy()
    s[0] = 1.0
    s[-1] = small
    return s


def _randsvd64(m, n, kappa, mode, gen, sigma_max=1.0):
    k = min(m, n)
    s = _singular_values(k, kappa, mode, gen) * sigma_max
    U = _haar(gen, m, k)
    V = _haar(gen, n, k)
    return (U * s) @ V.T


def _store(A64: np.ndarray, f: Format, xp, name: str, params: dict) -> TestMatrix:
    """Round the float64 matrix once to ``f``, move it to ``xp``, attach the condition numbers."""
    A64 = np.ascontiguousarray(A64, dtype=np.float64)
    k64 = _kappa(A64)
    if f.name == "fp64":
        host = A64
        k_st = k64
    else:
        if f.name == "tf32":
            host = round_to(A64, f).astype(np.float32)
        else:
            host = to_storage(A64, f)
        k_st = _kappa(host)
    out = B.to_namespace(host, xp)  # host itself for NumPy
    p = {"generator": name.split("(")[0], "m": int(A64.shape[0]), "n": int(A64.shape[1]),
         "dtype": f.name, **params}
    return TestMatrix(A=out, name=name, kappa=float(k64), kappa_stored=float(k_st), params=p)


def _fmt_kappa(k: float) -> str:
    return f"{k:.3g}"


# --------------------------------------------------------------------------- generators
def randsvd(m, n, kappa, *, mode="geometric", dtype="fp64", rng=None, xp=None) -> TestMatrix:
    """Random matrix with prescribed singular values: ``A = U diag(σ) Vᵀ``, U and V Haar.

    Parameters
    ----------
    m, n : int
        Shape (either may be 0).
    kappa : float
        Condition number κ₂ ≥ 1 of the float64 matrix (achieved when min(m, n) ≥ 2; a matrix
        with one singular value has κ = 1).
    mode : {"geometric", "arithmetic", "one_small", "one_large", "random"}
        With k = min(m, n) and σ₁ = 1, σ_k = 1/κ: ``σ_i = κ^(−(i−1)/(k−1))`` (geometric,
        xLATMS MODE 3); equally spaced (MODE 4); all 1 but σ_k (MODE 2); all 1/κ but σ₁ (MODE 1);
        log-uniform on [1/κ, 1] with the ends pinned (MODE 5).
    dtype, rng, xp
        See the module docstring.

    Returns
    -------
    TestMatrix
        ``params`` holds ``kappa_requested``, ``mode`` and the singular values' range.

    Notes
    -----
    Cost: two Householder QRs of Gaussian matrices (``2mk² + 2nk²`` flops) and one product
    (``2mnk``), plus the SVDs for κ. The float64 matrix has singular values within about
    ``max(m, n)·2⁻⁵³`` of the requested ones (absolute, σ₁ = 1). Higham, ASNA §28.3
    (MATLAB's ``gallery('randsvd')``); Stewart (1980) for the Haar factors.

    Examples
    --------
    >>> t = randsvd(30, 10, 1e3, rng=0)
    >>> round(t.kappa / 1e3, 6)
    1.0
    """
    m = _size(m, "m")
    n = _size(n, "n")
    k = _kappa_arg(kappa)
    mode = _mode_arg(mode)
    f, xp = _target(dtype, xp)
    gen = _generator(rng)
    A = _randsvd64(m, n, k, mode, gen)
    return _store(A, f, xp, f"randsvd({mode}, kappa={_fmt_kappa(k)})",
                  {"kappa_requested": k, "mode": mode})


def kahan(n, theta=1.2, pert=25.0, *, m=None, dtype="fp64", rng=None, xp=None) -> TestMatrix:
    """Kahan's upper triangular matrix ``diag(1, s, …, s^(n−1))·(I − c·(strict upper ones))``.

    With ``s = sin θ``, ``c = cos θ``. Its smallest singular value is tiny although no diagonal
    entry is small, so QR with column pivoting (and rank-revealing by the diagonal of R) fails
    on it; ``pert·eps64·diag(n, n−1, …, 1)`` is added, as in MATLAB's ``gallery('kahan')``, so
    that in floating point the pivoting keeps the natural column order.

    Parameters
    ----------
    n : int
        Order.
    theta : float
        Angle with ``sin θ ≠ 0`` (default 1.2, Higham's choice).
    pert : float
        Non-negative multiple of float64's eps for the diagonal perturbation (default 25).
    m : int, optional
        Number of rows; extra rows are zero, fewer rows keep the leading rows (upper
        trapezoidal). Default n.
    dtype, rng, xp
        See the module docstring (``rng`` is unused: the matrix is deterministic).

    Notes
    -----
    Cost ``O(n²)``. Higham, ASNA §8.3 (eq. 8.11) and §28; W. Kahan, "Numerical linear algebra",
    Canad. Math. Bull. 9 (1966).

    Examples
    --------
    >>> t = kahan(30)
    >>> t.kappa > 1e5
    True
    """
    n = _size(n, "n")
    m = n if m is None else _size(m, "m")
    th = _real(theta, "theta")
    if not math.isfinite(th) or math.sin(th) == 0.0:
        raise ValueError(f"theta must be finite with sin(theta) != 0, got {theta!r}")
    p = _real(pert, "pert")
    if not (math.isfinite(p) and p >= 0):
        raise ValueError(f"pert must be a finite number >= 0, got {pert!r}")
    f, xp = _target(dtype, xp)
    s, c = math.sin(th), math.cos(th)
    K = np.eye(n) - c * np.triu(np.ones((n, n)), 1)
    K = s ** np.arange(n, dtype=np.float64)[:, None] * K
    K = K + p * np.finfo(np.float64).eps * np.diag(np.arange(n, 0, -1, dtype=np.float64))
    A = np.zeros((m, n))
    A[: min(m, n)] = K[: min(m, n)]
    return _store(A, f, xp, "kahan", {"theta": th, "pert": p})


def graded(m, n, base=None, *, by="rows", dtype="fp64", rng=None, xp=None) -> TestMatrix:
    """Gaussian matrix with rows (or columns) scaled geometrically: ``D·G`` or ``G·D``.

    ``D = diag(1, base, base², …)``. Row grading is the case where Householder QR without row
    sorting or pivoting is only normwise, not row-wise, backward stable (Higham, ASNA §19.4,
    Powell and Reid); column grading is harmless to Householder QR (it is column-scaling
    invariant) but raises κ(A), which Gram-based methods (CholeskyQR) feel.

    Parameters
    ----------
    m, n : int
        Shape.
    base : float, optional
        Ratio ``0 < base`` between consecutive scale factors. Default: ``u^(1/(count−1))`` for
        the storage format's unit roundoff u, so the grading spans exactly one precision of the
        storage format (factor 1/u) and stays far inside its exponent range.
    by : {"rows", "columns"}
        Which dimension is graded.
    dtype, rng, xp
        See the module docstring.

    Examples
    --------
    >>> import math
    >>> t = graded(8, 4, dtype="bf16", rng=1)
    >>> math.isclose(t.params["base"] ** 7, 2.0**-8)
    True
    """
    m = _size(m, "m")
    n = _size(n, "n")
    if by not in ("rows", "columns"):
        raise ValueError(f"by must be 'rows' or 'columns', got {by!r}")
    f, xp = _target(dtype, xp)
    count = m if by == "rows" else n
    if base is None:
        b = f.unit_roundoff ** (1.0 / (count - 1)) if count > 1 else 1.0
    else:
        b = _real(base, "base")
        if not (math.isfinite(b) and b > 0):
            raise ValueError(f"base must be a finite number > 0, got {base!r}")
    gen = _generator(rng)
    G = gen.standard_normal((m, n))
    d = b ** np.arange(count, dtype=np.float64)
    A = d[:, None] * G if by == "rows" else G * d[None, :]
    return _store(A, f, xp, f"graded({by})", {"base": b, "by": by})


def lauchli(n, eps=None, *, m=None, dtype="fp64", rng=None, xp=None) -> TestMatrix:
    """Läuchli's matrix ``[1ᵀ; ε·I]`` of shape (n+1)×n.

    Its columns are nearly parallel: ``AᵀA = 11ᵀ + ε²I``, which rounds to the singular ``11ᵀ``
    once ε² is below the unit roundoff of the arithmetic: the classical failure of the normal
    equations and of Cholesky-based QR. ``κ₂(A) = sqrt(n + ε²)/ε``.

    Parameters
    ----------
    n : int
        Number of columns.
    eps : float, optional
        ``0 < ε``; default ``sqrt(u)`` of the storage format (ε² = u: AᵀA is singular to the
        storage precision).
    m : int, optional
        Number of rows, at least n + 1 (rows beyond n + 1 are zero). Default n + 1.
    dtype, rng, xp
        See the module docstring (``rng`` is unused).

    Notes
    -----
    P. Läuchli, "Jordan-Elimination und Ausgleichung nach kleinsten Quadraten", Numer. Math. 3
    (1961); Higham, ASNA §20 (least squares) and ch. 28.

    Examples
    --------
    >>> t = lauchli(3, 1e-4)
    >>> t.A.shape
    (4, 3)
    """
    n = _size(n, "n")
    m = n + 1 if m is None else _size(m, "m")
    if m < n + 1:
        raise ValueError(f"m must be at least n + 1 = {n + 1} for a Läuchli matrix, got {m}")
    f, xp = _target(dtype, xp)
    if eps is None:
        e = math.sqrt(f.unit_roundoff)
    else:
        e = _real(eps, "eps")
        if not (math.isfinite(e) and e > 0):
            raise ValueError(f"eps must be a finite number > 0, got {eps!r}")
    A = np.zeros((m, n))
    A[0, :] = 1.0
    A[1 : n + 1, :] = e * np.eye(n)
    return _store(A, f, xp, "lauchli", {"eps": e})


def hilbert(n, *, m=None, dtype="fp64", rng=None, xp=None) -> TestMatrix:
    """Hilbert matrix ``H_ij = 1/(i + j − 1)`` (1-based), n×n or m×n.

    Symmetric positive definite and notoriously ill conditioned: ``κ₂(H_n) ≈ e^(3.5n)``
    (1.5e4 for n = 4, 1.6e13 for n = 10). The float64 matrix already carries rounding errors
    of its entries, so for n ≥ 12 its κ is that of the float64 matrix (≈ 1/u64), not H_n's.

    Parameters
    ----------
    n : int
        Number of columns (and rows unless ``m`` is given).
    m : int, optional
        Number of rows (rectangular Hilbert matrix); default n.
    dtype, rng, xp
        See the module docstring (``rng`` is unused).

    Notes
    -----
    Higham, ASNA §28.1; M.-D. Choi, "Tricks or treats with the Hilbert matrix", Amer. Math.
    Monthly 90 (1983).

    Examples
    --------
    >>> float(hilbert(3).A[2, 2])
    0.2
    """
    n = _size(n, "n")
    m = n if m is None else _size(m, "m")
    f, xp = _target(dtype, xp)
    i = np.arange(m, dtype=np.float64)[:, None]
    j = np.arange(n, dtype=np.float64)[None, :]
    A = 1.0 / (i + j + 1.0)
    return _store(A, f, xp, "hilbert", {})


def rank_deficient(m, n, rank, *, kappa=1.0, mode="geometric", dtype="fp64", rng=None,
                   xp=None) -> TestMatrix:
    """Random matrix of exact rank ``rank``: ``U_r diag(σ) V_rᵀ`` with Haar U_r, V_r.

    Parameters
    ----------
    m, n : int
        Shape.
    rank : int
        ``0 ≤ rank ≤ min(m, n)``.
    kappa : float
        Condition number of the nonzero part (ratio of the largest to the smallest nonzero
        singular value), distributed by ``mode`` as in :func:`randsvd`. Default 1.
    dtype, rng, xp
        See the module docstring.

    Notes
    -----
    In exact arithmetic σ_{rank+1} = … = 0; the float64 product leaves them at about
    ``2⁻⁵³·max(m, n)``, so ``kappa`` (from the float64 SVD) is large but usually finite when
    rank < min(m, n). ``params["rank"]`` is the exact rank. Cost ``2mn·rank`` flops.

    Examples
    --------
    >>> t = rank_deficient(10, 6, 3, rng=0)
    >>> t.kappa > 1e12
    True
    """
    m = _size(m, "m")
    n = _size(n, "n")
    r = _size(rank, "rank")
    if r > min(m, n):
        raise ValueError(f"rank must be at most min(m, n) = {min(m, n)}, got {r}")
    k = _kappa_arg(kappa)
    mode = _mode_arg(mode)
    f, xp = _target(dtype, xp)
    gen = _generator(rng)
    s = _singular_values(r, k, mode, gen)
    U = _haar(gen, m, r)
    V = _haar(gen, n, r)
    A = (U * s) @ V.T
    return _store(A, f, xp, f"rank_deficient(rank={r})",
                  {"rank": r, "kappa_requested": k, "mode": mode})


def _scale_limits(f: Format) -> tuple[float, float]:
    """LAPACK dlatb4's SMALL = SHRINK·tiny/eps and LARGE = 1/SMALL for format f (powers of 2)."""
    small = SHRINK * f.tiny / f.eps
    return small, 1.0 / small


def scaled(m, n, kappa, where="underflow", *, mode="geometric", dtype="fp64", rng=None,
           xp=None) -> TestMatrix:
    """A :func:`randsvd` matrix scaled to sit near underflow or overflow of the storage format.

    As LAPACK's QR test types 7 and 8 (``dlatb4``): the largest singular value is
    ``SMALL = SHRINK·tiny/eps`` (``where="underflow"``) or ``LARGE = 1/SMALL``
    (``where="overflow"``), with ``tiny``, ``eps`` those of the storage format and SHRINK = 1/4.
    Near underflow, errors of the size of ``tiny`` are still within ``4·eps·||A||``, so a stable
    algorithm must pass; near overflow, ``LARGE ≈ max·eps`` (for IEEE formats), so column norms
    and products of entries formed without scaling overflow in the storage precision.
    Both limits are powers of two, so the scaling itself is exact.

    Parameters
    ----------
    m, n, kappa, mode
        As in :func:`randsvd`.
    where : {"underflow", "overflow"}
    dtype, rng, xp
        See the module docstring.

    Examples
    --------
    >>> t = scaled(5, 3, 2.0, "overflow", dtype="bf16", rng=0)
    >>> t.params["sigma_max"] == 2.0**121
    True
    """
    m = _size(m, "m")
    n = _size(n, "n")
    k = _kappa_arg(kappa)
    if where not in ("underflow", "overflow"):
        raise ValueError(f"where must be 'underflow' or 'overflow', got {where!r}")
    mode = _mode_arg(mode)
    f, xp = _target(dtype, xp)
    gen = _generator(rng)
    small, large = _scale_limits(f)
    target = small if where == "underflow" else large
    A = _randsvd64(m, n, k, mode, gen) * target  # exact: target is a power of two
    return _store(A, f, xp, f"scaled({where})",
                  {"kappa_requested": k, "mode": mode, "where": where, "sigma_max": target})


def zero(m, n, *, dtype="fp64", rng=None, xp=None) -> TestMatrix:
    """The m×n zero matrix (κ = inf, or 1 when empty). ``rng`` is unused.

    Examples
    --------
    >>> zero(2, 3).kappa
    inf
    """
    m = _size(m, "m")
    n = _size(n, "n")
    f, xp = _target(dtype, xp)
    return _store(np.zeros((m, n)), f, xp, "zero", {})


def diagonal(m, n, kappa, *, mode="geometric", dtype="fp64", rng=None, xp=None) -> TestMatrix:
    """m×n diagonal matrix with singular values by ``mode`` (see :func:`randsvd`), random signs.

    LAPACK's QR test type 1. Cost ``O(mn)``.

    Examples
    --------
    >>> t = diagonal(4, 3, 100.0, rng=0)
    >>> sorted(abs(float(v)) for v in t.A.diagonal())
    [0.01, 0.1, 1.0]
    """
    m = _size(m, "m")
    n = _size(n, "n")
    k = _kappa_arg(kappa)
    mode = _mode_arg(mode)
    f, xp = _target(dtype, xp)
    gen = _generator(rng)
    p = min(m, n)
    s = _singular_values(p, k, mode, gen)
    signs = np.where(gen.random(p) < 0.5, -1.0, 1.0)
    A = np.zeros((m, n))
    A[np.arange(p), np.arange(p)] = s * signs
    return _store(A, f, xp, "diagonal", {"kappa_requested": k, "mode": mode})


def triangular(m, n, kappa, lower=False, *, mode="geometric", dtype="fp64", rng=None,
               xp=None) -> TestMatrix:
    """Upper (or lower) triangular/trapezoidal m×n matrix with prescribed singular values.

    Built as the R factor of a :func:`randsvd` matrix (orthogonal transformations keep the
    singular values), zero-padded to m×n; ``lower=True`` gives the transpose of the upper
    n×m one. LAPACK's QR test types 2 and 3. Cost that of randsvd plus one QR.

    Examples
    --------
    >>> import numpy as np
    >>> t = triangular(4, 4, 10.0, rng=0)
    >>> bool(np.all(np.tril(t.A, -1) == 0))
    True
    """
    m = _size(m, "m")
    n = _size(n, "n")
    k = _kappa_arg(kappa)
    mode = _mode_arg(mode)
    if not isinstance(lower, (bool, np.bool_)):
        raise TypeError(f"lower must be a bool, got {type(lower).__name__}")
    f, xp = _target(dtype, xp)
    gen = _generator(rng)
    rows, cols = (n, m) if lower else (m, n)
    A = np.zeros((rows, cols))
    if min(rows, cols) > 0:
        R = np.linalg.qr(_randsvd64(rows, cols, k, mode, gen), mode="r")
        A[: R.shape[0]] = np.triu(R)
    if lower:
        A = np.ascontiguousarray(A.T)
    name = "lower_triangular" if lower else "upper_triangular"
    return _store(A, f, xp, name, {"kappa_requested": k, "mode": mode, "lower": bool(lower)})


# --------------------------------------------------------------------------- the suite
def matrix_suite(m, n, *, dtype="fp64", kappas=None, rng=None, xp=None) -> list[TestMatrix]:
    """The LAPACK-style collection of test matrices for one shape (``xCHKQR`` types and more).

    In order: zero; diagonal, upper triangular, lower triangular (κ = 2, as ``dlatb4``); randsvd
    (geometric) at each κ in ``kappas``; scaled near underflow and near overflow of the storage
    format (κ = 2); then, where the shape allows, Kahan (n ≥ 2, m rows zero-padded/truncated),
    graded rows (m ≥ 2) and graded columns (n ≥ 2), Läuchli (m ≥ n + 1, n ≥ 1), rectangular
    Hilbert (m, n ≥ 1) and rank-deficient with rank ``min(m, n) // 2`` (min(m, n) ≥ 2).

    Parameters
    ----------
    m, n : int
        Shape; 0 is allowed (every matrix is then empty and has κ = 1).
    dtype : str, dtype or Format
        Storage format (see the module docstring).
    kappas : sequence of float, optional
        Condition numbers for the randsvd types. Default ``(1, sqrt(0.1/u), 0.1/u)`` with u the
        storage format's unit roundoff (LAPACK's BADC1 = sqrt(0.1/eps), BADC2 = 0.1/eps).
    rng : int, numpy.random.Generator or None
        One generator drives the whole suite, so a seed reproduces it.
    xp : namespace or None
        Target library.

    Returns
    -------
    list of TestMatrix
        Names are unique within the list.

    Examples
    --------
    >>> names = [t.name for t in matrix_suite(5, 3, rng=0)]
    >>> names[:4]
    ['zero', 'diagonal', 'upper_triangular', 'lower_triangular']
    """
    m = _size(m, "m")
    n = _size(n, "n")
    f, xp = _target(dtype, xp)
    u = f.unit_roundoff
    if kappas is None:
        ks = (1.0, math.sqrt(0.1 / u), 0.1 / u)
    else:
        try:
            ks = tuple(kappas)
        except TypeError:
            raise TypeError("kappas must be a sequence of numbers >= 1") from None
        ks = tuple(_kappa_arg(k, "kappas") for k in ks)
    gen = _generator(rng)
    kw = {"dtype": f, "rng": gen, "xp": xp}
    t2 = SUITE_TYPE_KAPPA
    out = [
        zero(m, n, **kw),
        diagonal(m, n, t2, **kw),
        triangular(m, n, t2, **kw),
        triangular(m, n, t2, lower=True, **kw),
    ]
    out += [randsvd(m, n, k, **kw) for k in dict.fromkeys(ks)]
    out += [scaled(m, n, t2, "underflow", **kw), scaled(m, n, t2, "overflow", **kw)]
    if n >= 2 and m >= 1:
        out.append(kahan(n, m=m, **kw))
    if m >= 2 and n >= 1:
        out.append(graded(m, n, by="rows", **kw))
    if n >= 2 and m >= 1:
        out.append(graded(m, n, by="columns", **kw))
    if n >= 1 and m >= n + 1:
        out.append(lauchli(n, m=m, **kw))
    if m >= 1 and n >= 1:
        out.append(hilbert(n, m=m, **kw))
    if min(m, n) >= 2:
        out.append(rank_deficient(m, n, min(m, n) // 2, **kw))
    return out
