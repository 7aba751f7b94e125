"""Accuracy metrics of a QR factorization, computed in float64 on the host.

Every metric here takes arrays of any supported library and format (NumPy with ``ml_dtypes``
bfloat16 included, PyTorch bf16/fp16/fp32/fp64, CuPy, array_api_strict), copies them to the host
and evaluates in IEEE double precision, so the metric's own rounding error (a few units of
``u64 = 2**-53`` times the dimension) is negligible beside the error of any low-precision
factorization being measured. Inputs of shape ``(..., m, n)`` are batches: the result is then a
float64 NumPy array over the leading dimensions; a single matrix gives a Python ``float``.

Norms are evaluated on copies scaled by an exact power of two, so matrices with entries near the
overflow or underflow threshold of float64 are measured without spurious overflow.

A non-finite entry in an input (a factorization that broke down) gives ``inf`` for that matrix,
never NaN: a broken result is infinitely bad, and ``loss < tol`` is then False as it should be.

The functions
-------------
- :func:`orthogonality_loss`: ``||Qᵀ Q − I||``, the loss of orthogonality.
- :func:`factorization_error`: ``||A − QR|| / ||A||``, the relative backward error.
- :func:`lapack_ratios`: the two test ratios of LAPACK's xQRT01, compared against
  :data:`LAPACK_THRESHOLD`.
- :func:`kappa`: the 2-norm condition number from an fp64 SVD.

References
----------
E. Anderson, Z. Bai, J. Dongarra, "Generalized QR factorization and its applications" and the
LAPACK test suite: S. Blackford, J. Dongarra, *Installation Guide for LAPACK*, LAPACK Working
Note 41 (1999), §7 (test ratios, threshold 30); routine ``xQRT01``.
N. J. Higham, *Accuracy and Stability of Numerical Algorithms*, 2nd ed., SIAM 2002, ch. 19
(Householder QR: ``||A − QR|| ≤ γ̃_{mn} ||A||``, ``||QᵀQ − I|| ≤ γ̃_{mn}``).
"""

from __future__ import annotations

import numpy as np

from .. import _backend as B
from .._formats import get_format

__all__ = [
    "LAPACK_THRESHOLD",
    "orthogonality_loss",
    "factorization_error",
    "lapack_ratios",
    "kappa",
]

#: LAPACK's pass/fail threshold for the scaled test ratios (LAWN 41: a ratio below 30 passes).
LAPACK_THRESHOLD = 30.0

NORMS = ("2", "fro", "max", "1")


# --------------------------------------------------------------------------- helpers
def _host64(x, argname: str) -> np.ndarray:
    """Host float64 copy of an array of any supported library/format (TypeError otherwise)."""
    if x is None or not hasattr(x, "dtype") or not hasattr(x, "shape"):
        raise TypeError(f"{argname} must be an array, got {type(x).__name__}")
    B.format_of(x, argname=argname)  # TypeError for integer, bool and complex dtypes
    h = B.to_numpy(x)
    return np.asarray(h).astype(np.float64, copy=False)


def _check_matrix(x: np.ndarray, argname: str) -> None:
    if x.ndim < 2:
        raise ValueError(f"{argname} must have at least 2 dimensions (..., m, n); "
                         f"got shape {tuple(x.shape)}")


def _check_norm(norm) -> str:
    if not isinstance(norm, str) or norm not in NORMS:
        raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
    return norm


def _finite_mask(*arrays: np.ndarray, batch: tuple) -> np.ndarray:
    """Boolean array over ``batch``: whether every entry of each (broadcast) matrix is finite."""
    ok = np.ones(batch, dtype=bool)
    for a in arrays:
        fa = np.isfinite(a).reshape(a.shape[:-2] + (-1,)).all(axis=-1) if a.size else \
            np.ones(a.shape[:-2], dtype=bool)
        ok = ok & np.broadcast_to(fa, batch)
    return ok


def _pow2_scale(x: np.ndarray) -> np.ndarray:
    """Per-matrix power of two ``s`` with ``max|x| / s`` in [1, 2) (1 for a zero matrix).

    Dividing by a power of two is exact (away from the subnormal range), so the norms of
    ``x / s`` carry no scaling error and cannot overflow. ``s`` is at most 2^1023 and at least
    the smallest subnormal 2^-1074, both representable.
    """
    if x.size == 0:
        return np.ones(x.shape[:-2])
    amax = np.max(np.abs(x), axis=(-2, -1))
    _, e = np.frexp(amax)
    return np.where(amax > 0, np.ldexp(1.0, np.maximum(e - 1, -1074)), 1.0)


def _norm(x: np.ndarray, norm: str, *, symmetric: bool = False) -> np.ndarray:
    """Matrix norm over the last two axes of a finite float64 array (0 for empty matrices)."""
    batch = x.shape[:-2]
    if x.shape[-1] == 0 or x.shape[-2] == 0:
        return np.zeros(batch)
    if norm == "max":
        return np.max(np.abs(x), axis=(-2, -1))
    s = _pow2_scale(x)
    y = x / s[..., None, None]
    if norm == "fro":
        r = np.sqrt(np.sum(y * y, axis=(-2, -1)))
    elif norm == "1":
        r = np.max(np.sum(np.abs(y), axis=-2), axis=-1)
    elif symmetric:
        r = np.max(np.abs(np.linalg.eigvalsh(y)), axis=-1)
    else:
        r = np.linalg.svd(y, compute_uv=False)[..., 0]
    with np.errstate(over="ignore"):
        return r * s


def _out(values: np.ndarray, batch: tuple):
    values = np.asarray(values, dtype=np.float64).reshape(batch)
    return float(values) if not batch else values


def _gram_defect(q: np.ndarray) -> np.ndarray:
    """``QᵀQ − I`` in float64 (batched)."""
    n = q.shape[-1]
    with np.errstate(over="ignore", invalid="ignore"):
        g = np.matmul(np.swapaxes(q, -2, -1), q)
    return g - np.eye(n)


# --------------------------------------------------------------------------- metrics
def orthogonality_loss(Q, norm: str = "2"):
    """Loss of orthogonality ``||Qᵀ Q − I||`` of Q's columns, in float64.

    Parameters
    ----------
    Q : array, shape (..., m, n)
        Any supported library and real floating format (bf16 and fp16 included).
    norm : {"2", "fro", "max", "1"}
        Spectral norm (largest eigenvalue modulus of the symmetric defect), Frobenius norm,
        largest entry modulus, or largest column sum (LAPACK's ``'1'`` norm).

    Returns
    -------
    float or numpy.ndarray
        A float for a single matrix, a float64 array over the leading dimensions for a batch.
        ``0.0`` when n == 0; ``inf`` where Q has a non-finite entry.

    Notes
    -----
    Cost: ``2mn²`` flops for the Gram matrix (float64 BLAS), plus ``O(n³)`` for ``norm="2"``;
    memory ``mn + n²`` doubles per matrix. The float64 evaluation adds an error of at most
    ``γ_m ≈ m·2⁻⁵³`` to the true value, so losses down to about ``m·1e-16`` are resolved.
    Householder QR in a format of unit roundoff u gives ``||QᵀQ − I|| ≤ γ̃_{mn} = O(mn·u)``
    (Higham, ASNA, Thm 19.4). One rounding of an exactly orthonormal n×n Q to the format gives
    about ``1.2u`` in the 2-norm, flat in n (measured 1.19–1.20·u for n ≥ 128 in bf16), and
    about ``0.6u·sqrt(n)`` in the Frobenius norm; an m×n Q gives ``1.2u·sqrt(n/m)``
    (:func:`~linalg_pc.analysis.floor_prediction`, docs/error-analysis.md).

    Examples
    --------
    >>> import numpy as np
    >>> orthogonality_loss(np.eye(3))
    0.0
    >>> round(orthogonality_loss(np.array([[1.0, 0.0], [0.0, 2.0]])), 12)
    3.0
    """
    norm = _check_norm(norm)
    q = _host64(Q, "Q")
    _check_matrix(q, "Q")
    batch = q.shape[:-2]
    if q.shape[-1] == 0:
        return _out(np.zeros(batch), batch)
    ok = _finite_mask(q, batch=batch)
    if not ok.all():
        q = np.where(ok[..., None, None], q, 0.0)
    g = _gram_defect(q)
    ok = ok & _finite_mask(g, batch=batch)  # a Gram matrix that overflowed
    g = np.where(ok[..., None, None], g, 0.0)
    r = _norm(g, norm, symmetric=True)
    return _out(np.where(ok, r, np.inf), batch)


def _check_factors(A, Q, R):
    a = _host64(A, "A")
    q = _host64(Q, "Q")
    r = _host64(R, "R")
    _check_matrix(a, "A")
    _check_matrix(q, "Q")
    _check_matrix(r, "R")
    m, n = a.shape[-2:]
    if q.shape[-2] != m:
        raise ValueError(f"Q must have as many rows as A ({m}); got Q of shape "
                         f"{tuple(q.shape)}")
    k = q.shape[-1]
    if r.shape[-2:] != (k, n):
        raise ValueError(f"R must have shape (..., {k}, {n}) to match Q {tuple(q.shape)} and "
                         f"A {tuple(a.shape)}; got R of shape {tuple(r.shape)}")
    try:
        batch = np.broadcast_shapes(a.shape[:-2], q.shape[:-2])
    except ValueError:
        raise ValueError(f"the leading (batch) dimensions of Q {tuple(q.shape[:-2])} do not "
                         f"broadcast with those of A {tuple(a.shape[:-2])}") from None
    try:
        batch = np.broadcast_shapes(batch, r.shape[:-2])
    except ValueError:
        raise ValueError(f"the leading (batch) dimensions of R {tuple(r.shape[:-2])} do not "
                         f"broadcast with those of A and Q {batch}") from None
    return a, q, r, batch


def _residual(a, q, r, batch):
    """``(A − QR)/s`` and ``A/s`` for a per-matrix power of two s, plus s and a finite mask."""
    ok = _finite_mask(a, q, r, batch=batch)
    a = np.broadcast_to(a, batch + a.shape[-2:])
    q = np.broadcast_to(q, batch + q.shape[-2:])
    r = np.broadcast_to(r, batch + r.shape[-2:])
    if not ok.all():
        a = np.where(ok[..., None, None], a, 0.0)
        q = np.where(ok[..., None, None], q, 0.0)
        r = np.where(ok[..., None, None], r, 0.0)
    # scale by the larger of max|A| and max|R| (R carries A's scale when Q is orthonormal)
    s = np.maximum(_pow2_scale(a), _pow2_scale(r))
    a_s = a / s[..., None, None]
    r_s = r / s[..., None, None]
    with np.errstate(over="ignore", invalid="ignore"):
        e = a_s - np.matmul(q, r_s)
    ok = ok & _finite_mask(e, batch=batch)
    e = np.where(ok[..., None, None], e, 0.0)
    return e, a_s, s, ok


def factorization_error(A, Q, R, norm: str = "fro"):
    """Relative backward error ``||A − QR|| / ||A||`` of a QR factorization, in float64.

    Parameters
    ----------
    A : array, shape (..., m, n)
        The factored matrix (any supported library and format).
    Q : array, shape (..., m, k)
    R : array, shape (..., k, n)
        The computed factors; leading dimensions broadcast against A's.
    norm : {"fro", "2", "max", "1"}
        The matrix norm used in numerator and denominator.

    Returns
    -------
    float or numpy.ndarray
        The relative error (the absolute error ``||A − QR||`` where ``||A|| == 0``); a float
        for single matrices, a float64 array over the broadcast leading dimensions for batches;
        ``inf`` where an input has a non-finite entry.

    Raises
    ------
    ValueError
        Naming ``A``, ``Q`` or ``R`` when the shapes do not fit together, or ``norm``.
    TypeError
        For non-array or non-real-floating inputs.

    Notes
    -----
    Cost ``2mkn`` flops (float64 BLAS) and ``mn`` doubles of workspace per matrix. Householder
    QR in unit roundoff u satisfies ``||A − QR||_F ≤ γ̃_{mn} ||A||_F`` (Higham, ASNA, Thm 19.4);
    the float64 evaluation of the residual adds at most about ``k·2⁻⁵³`` to the result.

    Examples
    --------
    >>> import numpy as np
    >>> A = np.array([[3.0, 1.0], [4.0, 2.0]])
    >>> Q, R = np.linalg.qr(A)
    >>> factorization_error(A, Q, R) < 1e-15
    True
    """
    norm = _check_norm(norm)
    a, q, r, batch = _check_factors(A, Q, R)
    e, a_s, s, ok = _residual(a, q, r, batch)
    num = _norm(e, norm)
    den = _norm(a_s, norm)
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        rel = np.where(den > 0, num / np.where(den > 0, den, 1.0), num * s)
    return _out(np.where(ok, rel, np.inf), batch)


def lapack_ratios(A, Q, R, fmt) -> dict:
    """The two test ratios of LAPACK's ``xQRT01`` for a computed QR factorization.

    .. math::

        \\text{resid} = \\frac{\\|A - QR\\|_1}{\\max(m,1)\\,\\|A\\|_1\\,u}, \\qquad
        \\text{orth} = \\frac{\\|I - Q^T Q\\|_1}{\\max(m,1)\\,u},

    with ``u = unit_roundoff(fmt)``, all evaluated in float64. A backward-stable QR gives ratios
    of order 1; LAPACK's test suite passes a ratio below :data:`LAPACK_THRESHOLD` (30).

    Parameters
    ----------
    A : array, shape (..., m, n)
    Q : array, shape (..., m, k)
    R : array, shape (..., k, n)
        Any supported library and format; leading dimensions broadcast.
    fmt : str, dtype or Format
        The precision the factorization is judged against (usually its storage or compute
        format: "bf16", "fp32", ...).

    Returns
    -------
    dict
        ``{"resid": ..., "orth": ...}``: floats for single matrices, float64 arrays over the
        leading dimensions for batches; ``inf`` where an input has a non-finite entry. When
        ``||A||_1 == 0`` the residual ratio is the absolute residual ``||A − QR||_1 / u``.

    Notes
    -----
    LAPACK's ``xQRT01`` forms ``R − QᵀA`` from a full m×m Q; with an economy Q the residual
    ``A − QR`` is the equivalent quantity. LAPACK's EPS (``xLAMCH('Epsilon')``) is the unit
    roundoff u. Cost ``2mkn + 2mk²`` flops in float64.

    References
    ----------
    LAPACK Working Note 41 (Installation Guide for LAPACK), §7; LAPACK ``TESTING/LIN/dqrt01.f``.

    Examples
    --------
    >>> import numpy as np
    >>> A = np.random.default_rng(0).standard_normal((20, 5))
    >>> Q, R = np.linalg.qr(A)
    >>> r = lapack_ratios(A, Q, R, "fp64")
    >>> r["resid"] < LAPACK_THRESHOLD and r["orth"] < LAPACK_THRESHOLD
    True
    """
    u = get_format(fmt, argname="fmt").unit_roundoff
    a, q, r, batch = _check_factors(A, Q, R)
    m = a.shape[-2]
    e, a_s, s, ok = _residual(a, q, r, batch)
    num = _norm(e, "1")
    den = _norm(a_s, "1")
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        resid = np.where(den > 0, num / (max(m, 1) * np.where(den > 0, den, 1.0) * u),
                         num * s / u)
    resid = np.where(ok, resid, np.inf)
    orth = np.broadcast_to(np.asarray(orthogonality_loss(q, norm="1")), q.shape[:-2])
    orth = np.broadcast_to(orth / (max(m, 1) * u), batch)
    return {"resid": _out(resid, batch), "orth": _out(orth, batch)}


def kappa(A):
    """2-norm condition number ``σ_max / σ_min`` from a float64 SVD of A.

    Parameters
    ----------
    A : array, shape (..., m, n)
        Any supported library and real floating format; σ_min is the smallest of the
        ``min(m, n)`` singular values (so a rectangular A of full rank has finite κ).

    Returns
    -------
    float or numpy.ndarray
        κ₂(A); ``inf`` when the computed σ_min is exactly 0 (the zero matrix included) or the
        ratio overflows float64; ``1.0``
        for an empty matrix (LAPACK's convention: ``xGECON`` returns RCOND = 1 for n = 0).

    Raises
    ------
    ValueError
        If A has a non-finite entry or fewer than 2 dimensions.

    Notes
    -----
    Cost ``O(mn·min(m, n))`` flops (LAPACK ``dgesdd`` without vectors). The computed singular
    values carry absolute errors of order ``min(m,n)·2⁻⁵³·σ_max`` (Higham, ASNA §28 / Demmel),
    so κ is accurate to a relative error of about ``κ·min(m,n)·2⁻⁵³``: values beyond about
    ``1e15`` are only indicative.

    Examples
    --------
    >>> import numpy as np
    >>> kappa(np.diag([1.0, 1e-3]))
    1000.0
    """
    a = _host64(A, "A")
    _check_matrix(a, "A")
    batch = a.shape[:-2]
    if min(a.shape[-2:]) == 0:
        return _out(np.ones(batch), batch)
    if not np.all(np.isfinite(a)):
        raise ValueError("A has non-finite entries (NaN or inf): its condition number is "
                         "undefined")
    s = _pow2_scale(a)
    sv = np.linalg.svd(a / s[..., None, None], compute_uv=False)
    smax, smin = sv[..., 0], sv[..., -1]
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        k = np.where(smin > 0, smax / np.where(smin > 0, smin, 1.0), np.inf)
    return _out(k, batch)
