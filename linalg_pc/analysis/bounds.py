"""Error bounds of the library's algorithms, with named, calibrated constants.

Each bound is ``constant × shape(m, n, κ) × u`` with the shape taken from the literature and the
constant calibrated against measurements (see each constant's comment: the largest ratio
measured / (shape·u) seen over LAPACK-style matrix suites, times a safety margin). Tests use
these as pass thresholds, so a bound that is too loose hides bugs and one that is too tight
flakes: change a constant only with the measurement that justifies it.

Three kinds of bound are offered for every QR method:

- ``kind="algorithm"``: the practical bound, what the implementation achieves (calibrated; this
  is what tests assert);
- ``kind="deterministic"``: the textbook worst case, with γ_k = k·u/(1 − k·u) (``inf`` once
  k·u >= 1: in bf16 that is k = 256, where worst-case analysis says nothing);
- ``kind="probabilistic"``: the same with k·u replaced by λ·√k·u (Higham & Mary, SISC 41, 2019;
  Connolly, Higham & Mary, SISC 43, 2021), holding with probability at least
  1 − 2·exp(−λ²/2) per inner product, λ = :data:`PROBABILISTIC_LAMBDA`.

The quantities are ``"orth"``: ‖I − QᵀQ‖₂, and ``"resid"``: ‖A − QR‖_F / ‖A‖_F, both for the
factors in the arithmetic (compute or emulated) format, before any rounding to a 16-bit storage
format; :func:`storage_floor` adds what that one rounding costs.

References
----------
Higham, *Accuracy and Stability of Numerical Algorithms*, 2nd ed., Thm 19.4, 19.13 (Householder),
Thm 19.14 (MGS); Yamamoto, Nakatsukasa, Yanagisawa, Fukaya, ETNA 44 (2015) (CholQR, CholQR2);
Fukaya et al., SISC 42 (2020) (shifted CholQR3); Giraud, Langou, Rozložník, Comput. Math. Appl.
50 (2005) (CGS2); Barlow & Smoktunowicz, Numer. Math. 123 (2013) (BCGS2); Mori, Yamamoto, Zhang
(2012) (TSQR); Higgins, Szyld, Boman, Yamazaki, arXiv 2309.05868 (sketch-preconditioned CholQR).
"""

from __future__ import annotations

import math

from .._formats import get_format
from ..qr_methods.cholesky import ACCEPT_KAPPA
from ._checks import check_int, check_real

__all__ = [
    "QR_BOUND_METHODS",
    "BOUND_KINDS",
    "PROBABILISTIC_LAMBDA",
    "C_HOUSEHOLDER_ORTH",
    "C_QR_RESID",
    "C_CHOLQR_ORTH",
    "C_MGS_ORTH",
    "C_STORAGE_ROUNDING",
    "FLOOR_C",
    "floor_prediction",
    "qr_bound",
    "qr_kappa_limit",
    "storage_floor",
    "storage_resid_floor",
    "underflow_resid_floor",
]

BOUND_KINDS = ("algorithm", "deterministic", "probabilistic")

#: λ of the probabilistic bounds: each holds with probability >= 1 − 2·exp(−λ²/2) ≈ 0.9997.
PROBABILISTIC_LAMBDA = 4.0

# ---------------------------------------------------------------- calibrated constants
#: ‖I − QᵀQ‖₂ <= C·√(k·log₂(2m))·u (k = min(m, n)) for Householder, TSQR, the batched kernel,
#: and the O(u) methods (CholQR2, shifted CholQR3, rand_cholqr, CGS2, BCGS2) within their κ
#: limit. An empirical model, not a theorem: √k for the k reflectors or projections composing Q
#: (errors that add like a random walk), √log₂(2m) for the length-m reductions, which BLAS blocks
#: like a pairwise sum. The rigorous √(mn)-type bounds are the "deterministic" and
#: "probabilistic" kinds; at 2000×50 they sit ~10³× above the measured values, this one ~10×.
#: Measured over matrix_suite (every type, κ in {1, 1e2, (0.1/u)^½, 0.1/u}) at sizes 1×1 ...
#: 50×50, 10×50, and κ sweeps at 200×20 and 2000×50, fp32 and fp64: largest ratio
#: measured/(√(k·log₂(2m))·u) 3.8 (rand_cholqr, 3×3 Hilbert, fp64); 3.2 for the batched kernel
#: at 2000×50 (fp32 accumulation in its own loops). fp32 Householder at 2000×50 (LAPACK
#: sgeqrf, as the default study runs it): 3.4e-7 = 0.23·√(k·log₂(2m))·u. A value of 1.2e-8
#: for the same shape is the one-rounding floor of an fp64-computed Q (numpy.linalg.qr computes
#: fp32 input in fp64), not fp32 arithmetic (docs/error-analysis.md).
#: rand_cholqr adds C_CHOLQR_ORTH·u·ACCEPT_KAPPA² (= 256u): with one CholQR pass on the
#: preconditioned A R_s⁻¹ accepted at κ_est <= ACCEPT_KAPPA, small shapes reach 45u (fp32 4×3,
#: Gaussian sketch; 34u fp64 12×5, CountSketch; 150 seeds per shape up to 12×12), above the
#: √(k·log₂(2m)) model, whose factor is smallest there.
C_HOUSEHOLDER_ORTH = 8.0

#: ‖A − QR‖_F/‖A‖_F <= C·√(k·log₂(2m))·u for every method (all are backward stable in this
#: sense). Measured on the same suites: largest ratio 1.9 (Householder, 10×5 graded, fp64).
C_QR_RESID = 6.0

#: CholQR: ‖I − QᵀQ‖₂ <= C·u·κ² (+ the O(u) term; Yamamoto et al., ETNA 44, 2015). Calibration
#: measured in fp32, m=2000, n=50: 3.2e-6 at κ=10 (0.54·uκ²), 1.5e-2 at κ=1e3 (0.25·uκ²).
C_CHOLQR_ORTH = 4.0

#: MGS: ‖I − QᵀQ‖₂ <= C·u·κ (+ the O(u) term; Björck & Paige, SIMAX 13, 1992). Measured in fp32,
#: m=2000, n=50: 4.4e-7 / 1.7e-5 / 1.0e-4 / 6.9e-4 at κ = 10 / 1e3 / 1e4 / 1e5, i.e.
#: 0.74 / 0.29 / 0.17 / 0.12 · uκ.
C_MGS_ORTH = 4.0

#: c = E[δ²]/u² of round to nearest on log-uniform (Benford) significands: (1/3)·(3/8)/ln 2
#: ≈ 0.180. The one-rounding model of :func:`storage_floor` is derived from it (see
#: :mod:`linalg_pc.analysis.floor_study`, whose study reproduces it).
FLOOR_C = (3.0 / 8.0) / math.log(2.0) / 3.0

#: One rounding of an orthonormal m×n Q to a format with unit roundoff u costs
#: ‖QᵀQ − I‖₂ ≈ C·u·√(n/m) with C = 2√(2·FLOOR_C) ≈ 1.20 (derived, not fitted): measured
#: 1.2u for square bf16 Q (d >= 128) and 6e-4 = 0.15u_bf16 at m = 4000, n = 64 (model:
#: 1.2·√(64/4000) = 0.152); docs/error-analysis.md.
C_STORAGE_ROUNDING = 2.0 * math.sqrt(2.0 * FLOOR_C)

# ---------------------------------------------------------------- κ limits
#: Largest κ(A) for which each method's "algorithm" bound is meant (times u^(-1) or u^(-1/2)).
#: Beyond it the method breaks down (CholQR family: detected, fallback to a method that works)
#: or its bound exceeds 1.
_LIMITS = {
    "householder": math.inf,
    "tsqr": math.inf,
    "batched": math.inf,
    "auto": math.inf,
    "cholqr": ("sqrt", 0.1),
    "cholqr2": ("sqrt", 0.1),
    "scholqr3": ("inv", 0.1),
    "rand_cholqr": ("inv", 0.1),
    "mgs": ("inv", 0.1),
    "cgs2": ("inv", 0.01),
    "bcgs2": ("inv", 0.01),
}

QR_BOUND_METHODS = tuple(_LIMITS)

_O_U = ("householder", "tsqr", "batched", "auto", "cholqr2", "scholqr3", "rand_cholqr", "cgs2",
        "bcgs2")


def qr_kappa_limit(method: str, fmt) -> float:
    """The largest κ(A) for which ``method`` achieves its "algorithm" bound in format ``fmt``.

    Parameters
    ----------
    method : str
        A QR method of :func:`qr_bound` ("householder", "cholqr", "cholqr2", "scholqr3",
        "rand_cholqr", "mgs", "cgs2", "bcgs2", "tsqr", ...).
    fmt : str or Format
        The arithmetic format (its unit roundoff u).

    Returns
    -------
    float
        CholQR/CholQR2: 0.1·u^(−1/2) (Cholesky of the Gram matrix breaks down beyond: Yamamoto
        et al., ETNA 44, 2015); shifted CholQR3, rand_cholqr, MGS: 0.1·u⁻¹; CGS2/BCGS2:
        0.01·u⁻¹ (numerically full rank); Householder, TSQR: ``math.inf`` (no limit).

    Raises
    ------
    ValueError
        Unknown ``method`` or ``fmt``.

    Notes
    -----
    The decision table of docs/choosing-qr.md quotes these limits. Cost O(1).

    Examples
    --------
    >>> round(qr_kappa_limit("cholqr2", "fp32"))
    410
    >>> qr_kappa_limit("householder", "bf16")
    inf
    """
    _check_method(method)
    u = get_format(fmt, argname="fmt").unit_roundoff
    lim = _LIMITS[method]
    if lim == math.inf:
        return math.inf
    kind, c = lim
    return c / math.sqrt(u) if kind == "sqrt" else c / u


def _check_method(method: str) -> None:
    if method not in _LIMITS:
        raise ValueError(f"unknown QR method {method!r}; known: {list(_LIMITS)}")


def _gamma(k: float, u: float) -> float:
    ku = k * u
    return math.inf if ku >= 1 else ku / (1 - ku)


def _pgamma(k: float, u: float) -> float:
    ku = PROBABILISTIC_LAMBDA * math.sqrt(k) * u
    return math.inf if ku >= 1 else ku / (1 - ku)


def qr_bound(method: str, m: int, n: int, kappa: float, fmt, kind: str = "algorithm",
             quantity: str = "orth") -> float:
    """Bound on the loss of orthogonality (or the residual) of a QR method.

    Parameters
    ----------
    method : str
        An ``lpc.qr`` method name (see :data:`QR_BOUND_METHODS`).
    m, n : int >= 0
        Shape of A (m >= n for the tall-only methods; for m < n the roles are those of the
        m×m factor; an empty shape gets the bound of a 1×1 one).
    kappa : float >= 1, or None
        κ₂(A) of the matrix the algorithm sees (the stored one); ``inf`` or None (unknown)
        give ``inf`` where the bound grows with κ.
    fmt : format
        The arithmetic format whose unit roundoff enters (the emulated one when emulating).
    kind : {"algorithm", "deterministic", "probabilistic"}
    quantity : {"orth", "resid"}
        ‖I − QᵀQ‖₂ or ‖A − QR‖_F/‖A‖_F.

    Returns
    -------
    float
        The bound (``inf`` when the analysis says nothing: k·u >= 1, or κ beyond the method's
        limit for a deterministic bound).

    Raises
    ------
    ValueError, TypeError
        Unknown ``method``, ``kind``, ``quantity`` or ``fmt``; ``m`` or ``n`` not an integer
        >= 0; ``kappa`` below 1 (no matrix has κ₂ < 1) or NaN. Before any work.

    Examples
    --------
    >>> b = qr_bound("cholqr2", 2000, 50, 1e3, "fp32")  # 8·√(50·log₂ 4000)·2⁻²⁴
    >>> 1e-5 < b < 2e-5
    True
    >>> qr_bound("householder", 4000, 64, 1.0, "bf16", kind="deterministic")
    inf
    """
    _check_method(method)
    if kind not in BOUND_KINDS:
        raise ValueError(f"kind must be one of {BOUND_KINDS}, got {kind!r}")
    if quantity not in ("orth", "resid"):
        raise ValueError(f"quantity must be 'orth' or 'resid', got {quantity!r}")
    m = max(check_int(m, "m"), 1)
    n = max(check_int(n, "n"), 1)
    kap = math.inf if kappa is None else check_real(kappa, "kappa", low=1.0, finite=False)
    u = get_format(fmt, argname="fmt").unit_roundoff
    k = min(m, n)
    mn = m * k
    if kind == "algorithm":
        scale = math.sqrt(k * math.log2(2 * m)) * u
        base = (C_QR_RESID if quantity == "resid" else C_HOUSEHOLDER_ORTH) * scale
        if method == "rand_cholqr" and quantity == "orth":
            # its last CholQR pass is accepted at κ_est(R) <= ACCEPT_KAPPA: loss up to uκ² there
            return base + C_CHOLQR_ORTH * u * ACCEPT_KAPPA * ACCEPT_KAPPA
        if quantity == "resid" or method in _O_U:
            return base
        if method == "cholqr":
            return base + C_CHOLQR_ORTH * u * kap * kap
        if method == "mgs":
            return base + C_MGS_ORTH * u * kap
        raise AssertionError(method)  # pragma: no cover
    g = _gamma if kind == "deterministic" else _pgamma
    if kind == "deterministic" and kap > qr_kappa_limit(method, fmt):
        return math.inf
    if method in ("householder", "tsqr", "batched", "auto"):
        # Higham Thm 19.4/19.13: both quantities <= √n·γ̃_{cm} (column-wise, to the 2-norm);
        # TSQR's tree replaces m by the leaf size plus n·log₂(m/b) (we keep m: an upper bound).
        return math.sqrt(k) * g(mn, u)
    if method in ("cholqr", "cholqr2", "scholqr3", "rand_cholqr"):
        # Yamamoto et al. (2015) Thm 3.3/5.1: CholQR orth <= 5·(mnu + n(n+1)u)·κ²/64 ...
        # CholQR2: ‖I − QᵀQ‖_F <= 6(mnu + n(n+1)u), ‖A − QR‖_F <= 5n²u‖A‖₂.
        e = g(mn + k * (k + 1), u)
        if quantity == "resid":
            return 5 * k * g(k, u) * math.sqrt(k) if method != "cholqr" else 5 * e
        if method == "cholqr":
            return min(math.inf, e * kap * kap)
        return 6 * e
    if method == "mgs":
        # Björck & Paige (1992): ‖I − QᵀQ‖₂ <= c₁(m, n)·u·κ with c₁ ~ mn.
        e = g(mn, u)
        return e if quantity == "resid" else e * kap
    # cgs2, bcgs2: ‖I − QᵀQ‖₂ <= c·m·n^(3/2)·u (Giraud et al. 2005; Barlow 2013)
    e = g(mn, u)
    return e if quantity == "resid" else e * math.sqrt(k)


def floor_prediction(m: int, n: int, fmt, norm: str = "2") -> float:
    """Predicted ‖fl(Q)ᵀfl(Q) − I‖ of an m×n (m >= n) Haar-orthonormal Q rounded once to ``fmt``.

    Parameters
    ----------
    m, n : int
        Shape of Q (m >= n); an empty shape predicts 0.
    fmt : str or Format
        The storage format Q is rounded to (its unit roundoff u).
    norm : {"2", "fro"}
        Spectral or Frobenius norm.

    Returns
    -------
    float
        2-norm: 2u·√(2c·n/m) (1.2·u for a square Q, flat in n); Frobenius: u·n·√(2c/m)
        (0.6·u·√n for a square Q).

    Raises
    ------
    ValueError
        Unknown ``fmt`` or ``norm``.

    Notes
    -----
    S = fl(Q)ᵀfl(Q) − I is a symmetric random matrix with off-diagonal variance 2c·u²/m
    (c = :data:`FLOOR_C` ≈ 0.18, the mean squared relative rounding error in units of u²), so
    ‖S‖₂ ≈ 2u·√(2c·n/m) (the edge of the semicircle law) and ‖S‖_F ≈ u·n·√(2c/m). The rounding
    study measures 1.19–1.20·u in the 2-norm for d ≥ 128 (docs/error-analysis.md). Cost O(1).

    Examples
    --------
    >>> round(floor_prediction(256, 256, "bf16") / 2**-8, 2)
    1.2
    """
    u = get_format(fmt, argname="fmt").unit_roundoff
    if m <= 0 or n <= 0:
        return 0.0
    if norm == "2":
        return 2.0 * u * math.sqrt(2.0 * FLOOR_C * n / m)
    if norm == "fro":
        return u * n * math.sqrt(2.0 * FLOOR_C / m)
    raise ValueError(f"norm must be '2' or 'fro', got {norm!r}")


def storage_floor(m: int, n: int, fmt) -> float:
    """‖QᵀQ − I‖₂ of an exactly orthonormal m×n Q after one rounding to ``fmt``.

    Parameters
    ----------
    m, n : int
        Shape of Q, either orientation (the k = min(m, n) orthonormal vectors count); an empty
        shape gives 0.
    fmt : str or Format
        The storage format (its unit roundoff u).

    Returns
    -------
    float
        The 2-norm of :func:`floor_prediction` for the k orthonormal columns:
        C·u·√(k/max(m, k)) with C = :data:`C_STORAGE_ROUNDING` ≈ 1.2 (measured: 1.2u square,
        0.15u at 4000×64 in bf16). This is the floor every QR method meets when it returns Q in
        a 16-bit format (docs/qr.md, docs/error-analysis.md).

    Raises
    ------
    ValueError
        Unknown ``fmt``.

    Examples
    --------
    >>> round(storage_floor(128, 128, "bf16") / 2**-8, 2)
    1.2
    """
    if m <= 0 or n <= 0:
        return 0.0
    k = min(m, n)
    return floor_prediction(max(m, k), k, fmt)


def storage_resid_floor(m: int, n: int, fmt) -> float:
    """Bound on the extra ‖A − QR‖_F/‖A‖_F from rounding Q (m×k, orthonormal) and R to ``fmt``.

    Deterministic: ‖ΔQ·R‖_F <= u‖Q‖_F‖R‖₂ <= u√k‖A‖_F and ‖Q·ΔR‖_F <= (1 + ‖I − QᵀQ‖)u‖R‖_F,
    so the floor is u(√k + 1)(1 + u), k = min(m, n).

    Examples
    --------
    >>> storage_resid_floor(100, 16, "bf16") < 0.02
    True
    """
    u = get_format(fmt, argname="fmt").unit_roundoff
    k = min(max(int(m), 0), max(int(n), 0))
    return u * (math.sqrt(k) + 1.0) * (1.0 + u)


def underflow_resid_floor(m: int, n: int, fmt) -> float:
    """Absolute term that gradual underflow adds to ‖A − QR‖_F (not relative to ‖A‖_F).

    With subnormals every operation obeys fl(x op y) = (x op y)(1 + δ) + η with |η| <= λu, λ the
    smallest normal number (Higham, *Accuracy and Stability*, 2nd ed., §2.1, (2.8)); λu is half
    the smallest subnormal. An entry of R is an inner product of length m (2m operations), so
    ‖Q·ΔR‖_F <= ‖Q‖₂·√(k·n)·2m·λu, k = min(m, n). It matters only when A's entries are
    themselves near the subnormal range: no format can hold such an R to relative accuracy u
    (a 2×1 A of smallest subnormals has R = √2·2^-149, stored as 2^-149 in fp32, a relative
    residual of 0.29 whatever the algorithm). Tests use ``bound·‖A‖_F + underflow_resid_floor``.

    Examples
    --------
    >>> underflow_resid_floor(2, 1, "fp32") / 2**-149  # 2·m·√(kn)·λu = 4·2^-150
    2.0
    """
    f = get_format(fmt, argname="fmt")
    m, n = max(int(m), 0), max(int(n), 0)
    k = min(m, n)
    return 2.0 * m * math.sqrt(k * n) * f.tiny * f.unit_roundoff
