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

import numpy as np

from .matrix_blocks import (
    SINGULAR_VALUE_MODES,
    SUITE_TYPE_KAPPA,
    TestMatrix,
    _fmt_kappa,
    _generator,
    _haar,
    _kappa_arg,
    _mode_arg,
    _randsvd64,
    _real,
    _singular_values,
    _size,
    _store,
    _target,
)
from .matrix_types import diagonal, scaled, triangular, zero

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
