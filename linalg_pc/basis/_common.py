"""Helpers shared by the basis routines: compute formats, input checks (columns, operators),
decoding, orthogonality checks, sign-fixed QR.

Nothing here is public API. Every helper takes the namespace ``xp`` explicitly and keeps arrays in
it; the only host transfers are the scalar results of the input checks.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np

from .. import _backend as B
from .._backend.convert import DECODE, STORE, convert
from .._formats import get_format
from .._operators import as_operator, host_or_device_ok, is_array, is_integer_dtype
from .._policy import Precision

#: Default tolerance on the loss of orthogonality ``‖QᵀQ − I‖₂`` accepted by the input checks of
#: :func:`complete_basis` and :func:`subspace_refresh`. A plain-BF16 basis drifts to ≈ 0.05 after
#: a thousand partial updates (1.2·u_bf16·√(roundings per column)); a matrix that is not a basis
#: at all has a loss of order one. 0.1 separates the two.
ORTHONORMALITY_TOL = 0.1


def check_tol(orth_tol, argname: str = "orth_tol"):
    """orth_tol: None or a number ≥ 0 (inf allowed: no check); ValueError naming it otherwise."""
    if orth_tol is None:
        return None
    try:
        t = float(orth_tol)
    except (TypeError, ValueError):
        raise TypeError(f"{argname} must be None or a number >= 0, got {orth_tol!r}") from None
    if isinstance(orth_tol, bool) or not t >= 0:  # rejects NaN and negatives
        raise ValueError(f"{argname} must be None or a number >= 0, got {orth_tol!r}")
    return t


def default_method(qfmt) -> str:
    """The refresh method a basis stored in ``qfmt`` gets by default: "project" for 16-bit
    storage (it repairs the touched columns, so the basis cannot drift out of the input
    check's tolerance), "rotate" for fp32 and fp64 (no drift beyond O(u·√updates))."""
    return "project" if get_format(qfmt).bits <= 16 else "rotate"


def compute_format(compute, x=None) -> str:
    """The arithmetic format name, "fp32" or "fp64", by the precision policy.

    ``compute`` is the caller's choice (None: the default of :class:`~linalg_pc.Precision`,
    the format of ``x`` at least fp32: fp64 in, fp64 arithmetic). ValueError naming
    ``compute`` for any other format.
    """
    if compute is None and x is None:
        raise ValueError("compute is None and there is no input to resolve it against")
    return Precision(compute=compute).resolve(x if x is not None else compute).compute.name


class BasisArg(NamedTuple):
    """A validated basis argument (:func:`check_basis`)."""

    xp: Any
    fmt: Any        # its Format
    compute: str    # the compute format name
    d: int
    m: int
    decoded: Any    # the basis in the compute format (None unless its entries were checked)
    loss: float     # the orthonormality check's estimate (NaN: not checked)


def check_basis(Q, *, argname: str = "Q", ncols: str = "m", compute=None,
                entries: bool = False, orth_tol: float | None = None) -> BasisArg:
    """Validate the basis argument of :func:`complete_basis`, :func:`subspace_refresh` and
    :func:`state.init` before any work, naming it.

    TypeError: not an array, or not of a real floating format (bf16 included); ValueError:
    fewer than 2 dimensions (..., d, m), more columns than rows (m > d; ``ncols`` names m in
    the message), a ``compute`` that is not fp32/fp64. With ``entries``: Q decoded to the
    compute format must be finite (ValueError "has non-finite entries") and, unless
    ``orth_tol`` is None, orthonormal within it (:func:`check_orthonormal`: 2dm² flops plus
    O(m²) on Q's device, one host read for both checks). ``orth_tol`` must already be
    validated (:func:`check_tol`). Cost without ``entries``: none (shapes and dtypes only).
    """
    if not is_array(Q):
        raise TypeError(f"{argname} must be an array, got {type(Q).__name__}")
    xp = B.array_namespace(Q)
    fmt = B.format_of(Q, argname=argname)
    comp = compute_format(compute, fmt)
    shape = tuple(Q.shape)
    if len(shape) < 2:
        raise ValueError(f"{argname} must have shape (..., d, {ncols}): at least 2 dimensions, "
                         f"got shape {shape}")
    d, m = int(shape[-2]), int(shape[-1])
    if m > d:
        raise ValueError(f"{argname} must have {ncols} <= d columns, got shape {shape} "
                         f"({ncols}={m} > d={d})")
    decoded, loss = None, float("nan")
    if entries:
        decoded = decode(Q, comp)
        if orth_tol is None or math.isinf(orth_tol):
            B.check_finite(xp, Q, argname)
        else:  # a NaN or inf reaches the Gram matrix: the check tells it apart, one read
            loss = check_orthonormal(xp, decoded, argname=argname, tol=orth_tol)
    return BasisArg(xp, fmt, comp, d, m, decoded, loss)


def check_cols(cols, m: int, *, argname: str = "cols") -> np.ndarray:
    """cols as a host int64 vector: 1-D, integral, unique, in [0, m)."""
    c = B.to_numpy(cols) if is_array(cols) and not isinstance(cols, np.ndarray) else cols
    c = np.asarray(c)
    if c.ndim != 1:
        raise ValueError(f"{argname} must be a 1-D sequence of column indices, got shape "
                         f"{c.shape}")
    if c.size == 0:
        raise ValueError(f"{argname} must name at least one column")
    if not (np.issubdtype(c.dtype, np.integer)
            or (np.issubdtype(c.dtype, np.floating) and np.all(c == np.round(c)))):
        raise ValueError(f"{argname} must hold integer column indices, got dtype {c.dtype}")
    c = c.astype(np.int64)
    bad = c[(c < 0) | (c >= m)]
    if bad.size:
        raise ValueError(f"{argname} has indices out of range [0, {m}): {bad[:5].tolist()}")
    uniq, counts = np.unique(c, return_counts=True)
    if uniq.size != c.size:
        raise ValueError(f"{argname} has repeated indices: {uniq[counts > 1][:5].tolist()}")
    return c


#: A product K·X whose largest entry exceeds max(compute format) / (PRODUCT_HEADROOM·d·k) is
#: scaled by a power of two to [1, 2) before the rest of the refresh: the Gram products
#: Q_Jᵀ(K Q_J), the symmetrization M + Mᵀ and the column norms of a QR grow it by at most
#: 2·√d·√k, so no later step can overflow (a power of two changes no bit of any mantissa).
PRODUCT_HEADROOM = 16.0


class FactorOperator:
    """X ↦ K X in the compute format for a validated K (array or operator).

    Calling it returns K X and raises a ValueError naming K when the product is not finite
    (the check used by the column policies). :meth:`scaled` returns (Y, e) with
    K X = 2^e·Y exactly, Y finite and scaled to a safe range: a finite K whose product
    overflows is scaled by a power of two first (an array K only: an operator's product
    that overflows raises, since its finiteness cannot be told from its range).
    """

    def __init__(self, xp, fn, K_dense, comp: str, argname: str):
        self.xp, self._fn, self._K, self.comp, self.argname = xp, fn, K_dense, comp, argname

    def __call__(self, X):
        return _finite_product(self.xp, self._fn(X), self.argname)

    def scaled(self, X):
        """(Y, e) with K X = 2^e·Y, max|Y| < 2 when scaled (e ≠ 0), e = 0 otherwise."""
        xp = self.xp
        Y = self._fn(X)
        amax = _amax(xp, Y)
        e = 0
        if not math.isfinite(amax):
            if self._K is None or not _all_finite(xp, self._K):
                _finite_product(xp, Y, self.argname)  # raises
            e = math.frexp(_amax(xp, self._K))[1]
            Y = ldexp(xp, self._K, -e) @ X
            amax = _amax(xp, Y)
            if not math.isfinite(amax):  # unreachable for d below 2^100: |Y| ≤ d·max|X|
                _finite_product(xp, Y, self.argname)
        fmax = get_format(self.comp).max
        if e or amax > fmax / (PRODUCT_HEADROOM * X.shape[-2] * max(1, X.shape[-1])):
            f = math.frexp(amax)[1] - 1 if amax > 0 else 0
            Y, e = ldexp(xp, Y, -f), e + f
        return Y, e


def _amax(xp, Y) -> float:
    """max |Y| on the host (NaN if Y holds a NaN, inf if an inf): one device synchronization."""
    if any(int(n) == 0 for n in Y.shape):
        return 0.0
    return float(xp.max(xp.abs(Y)))


def _all_finite(xp, A) -> bool:
    return bool(xp.all(xp.isfinite(A)))


def ldexp(xp, A, e: int):
    """A·2^e for a float array A, exact barring overflow / underflow of the result; the factor
    is applied in steps of at most 2^±60 so that no step's scalar leaves the fp32 range."""
    while e:
        step = max(-60, min(60, e))
        A = A * (2.0 ** step)
        e -= step
    return A


def scale_back(xp, v, e: int, comp: str):
    """v·2^e with ±inf (no overflow warning) where the result exceeds the compute format."""
    if e == 0:
        return v
    big = xp.abs(v) > get_format(comp).max * 2.0 ** (-e) if e > 0 else xp.zeros_like(v) > 0
    safe = ldexp(xp, xp.where(big, xp.zeros_like(v), v), e)
    inf = xp.full_like(v, math.inf)
    return xp.where(big, xp.where(v < 0, -inf, inf), safe)


def operator(K, xp, d: int, batch: tuple, comp: str, *, argname: str = "K") -> FactorOperator:
    """A :class:`FactorOperator` X ↦ K X in the compute format, K validated by the rules of
    :func:`linalg_pc._operators.as_operator`. A callable or operator K receives a copy of X
    (O(dk)), never a view of the caller's Q or of internal state. Batches follow the rules of
    as_operator (any batch broadcasting with Q's); entries are checked on the products: a NaN
    or inf of K reaches every row of K X it multiplies, so checking the d×k product replaces an
    O(d²) scan of K before the work."""
    op = as_operator(K, argname=argname, n=d, xp=xp, like="Q", batch=batch,
                     max_batch_ndim=None, check_entries=False)
    host_or_device_ok(xp, op, argname)
    if op.kind in ("dense", "batched"):
        kb = tuple(K.shape[:-2])
        if len(kb) > len(batch) or any(a not in (1, b) for a, b in
                                       zip(kb[::-1], batch[::-1], strict=False)):
            raise ValueError(f"{argname} has batch shape {kb}, which does not broadcast to Q's "
                             f"batch shape {tuple(batch)} (stack Q the same way)")
        Kc = (xp.astype(K, B.native_dtype(xp, comp)) if is_integer_dtype(xp, K.dtype)
              else decode(K, comp))
        return FactorOperator(xp, lambda X: Kc @ X, Kc, comp, argname)

    def apply(X):
        # the operator gets its own copy: X may be a view of the caller's basis (a run of
        # columns) or of internal state, which a callable could otherwise write into
        Y = op.matmat(xp.asarray(X, copy=True))
        if not is_array(Y) or tuple(Y.shape[-2:]) != tuple(X.shape[-2:]):
            got = tuple(Y.shape) if is_array(Y) else type(Y).__name__
            raise ValueError(f"{argname}(X) must return an array shaped like X "
                             f"{tuple(X.shape)}, got {got}")
        if B.namespace_name(B.array_namespace(Y)) != B.namespace_name(xp):
            raise TypeError(f"{argname}(X) must return an array of Q's library "
                            f"({B.namespace_name(xp)}), got {type(Y).__module__}."
                            f"{type(Y).__name__}")
        B.format_of(Y, argname=f"{argname}(X)")
        return decode(Y, comp)

    return FactorOperator(xp, apply, None, comp, argname)


def _finite_product(xp, Y, argname):
    """Raise if the product K @ X has a non-finite entry."""
    if not bool(xp.all(xp.isfinite(Y))):
        raise ValueError(f"{argname} has non-finite entries (NaN or inf): {argname} @ X is "
                         f"not finite")
    return Y


def decode(x, compute: str):
    """``x`` (any real float format, bf16 included) as an array of the compute format."""
    f = B.format_of(x)
    if f.name == compute:
        return x
    return convert(x, f, get_format(compute), op=DECODE)


def encode(x, fmt):
    """Store the compute-format array ``x`` in format ``fmt`` (one rounding to nearest)."""
    f = get_format(fmt)
    src = B.format_of(x)
    return x if src == f else convert(x, src, f, op=STORE)


def mT(xp, a):
    """Transpose of the last two axes."""
    return xp.matrix_transpose(a) if hasattr(xp, "matrix_transpose") else a.mT


def eye_like(xp, n: int, ref):
    """Identity of order n with ``ref``'s dtype and device."""
    return xp.eye(n, dtype=ref.dtype, device=B.device_of(ref))


#: Steps of power iteration on E = UᵀU − I after its start at the column of E of largest norm,
#: in the orthonormality check. Each step is one k×k matrix-vector product (2k² flops, on the
#: device). Measured on drifted BF16 bases (E rounding noise without a spectral gap, the
#: hardest case): after 8 steps the estimate is 0.91–0.92 of ‖E‖₂ at k = 128 and k = 1024;
#: 0.94–0.95 for a random (non-orthonormal) U; exact to 3 digits on an E with a dominant
#: eigenvalue.
POWER_STEPS = 8


def loss_estimates(xp, E, tol: float):
    """Device arrays (est, lower) for E = UᵀU − I (..., k, k), k ≥ 1, per batch element.

    E is symmetric up to the rounding of the Gram product (rows are read for columns: the
    reductions run along the contiguous axis; PyTorch's CPU reductions across rows measured
    20× slower at k = 1024). ``lower`` ≤ ‖E‖₂ (up to rounding): the power-iteration estimate
    max_j ‖E x_j‖ over the unit vectors x_j = E^j c/‖E^j c‖, j = 0..POWER_STEPS, started at
    the row c = e_iᵀE of largest norm, so lower ≥ ‖E e_i‖ ≥ ‖E‖_F/√k. For symmetric E the
    ratios ‖E^{j+1} e_i‖/‖E^j e_i‖ do not decrease with j (log-convexity of the moments
    e_iᵀE^{2j}e_i), and they converge to ‖E‖₂ unless e_i is orthogonal to the dominant
    eigenvectors. ``upper`` = min(‖E‖_F, ‖E‖_∞) ≥ ‖E‖₂ (‖E‖₂ ≤ ‖E‖_∞ for symmetric E).
    ``est`` = upper where upper ≤ tol, else lower. An E too large to square in its format
    gives inf. Cost: two passes over E and POWER_STEPS matrix-vector products, O(k²) each;
    no host transfer.
    """
    row2 = xp.sum(E * E, axis=-1)
    upper = xp.minimum(xp.sqrt(xp.sum(row2, axis=-1)),
                       xp.max(xp.sum(xp.abs(E), axis=-1), axis=-1))
    i = xp.argmax(row2, axis=-1, keepdims=True)[..., None]
    y = mT(xp, B.take_along_axis(E, xp.broadcast_to(i, (*E.shape[:-2], 1, E.shape[-1])),
                                 -2))  # (E e_i)ᵀ = e_iᵀE for symmetric E
    lower = xp.zeros_like(upper)
    for step in range(POWER_STEPS + 1):
        n = xp.sqrt(xp.sum(y * y, axis=(-2, -1)))  # ‖E x_{step−1}‖, x_{−1} = e_i
        lower = xp.maximum(lower, n)
        if step < POWER_STEPS:
            y = E @ (y / xp.where(n > 0, n, xp.ones_like(n))[..., None, None])
    return xp.where(upper <= tol, upper, lower), lower


def check_orthonormal(xp, U, *, argname: str, tol: float | None, gram=None,
                      finite=None) -> float:
    """Raise ValueError if U (..., d, k) in a compute format is not orthonormal within ``tol``
    or holds a NaN or inf; return the estimate of ‖UᵀU − I‖₂ (max over a batch).

    ``finite`` may pass a device flag (:func:`linalg_pc._backend.finite_flag`) of another
    array that U comes from (the rest of a basis whose columns U are): False raises the same
    "non-finite entries" error, and the flag travels in the check's one host read.

    With E = UᵀU − I: accepted when the upper bound min(‖E‖_F, ‖E‖_∞) ≤ tol; otherwise decided
    by ``POWER_STEPS`` steps of power iteration on E, a lower bound ρ ≤ ‖E‖₂
    (:func:`loss_estimates`): rejected when ρ > tol. Guaranteed (up to the rounding of E,
    O(d·u) in the compute format): a U with ‖E‖₂ ≤ tol is never rejected, and an accepted U
    has ‖E‖₂ ≤ √k·tol (ρ ≥ ‖E‖_F/√k). In between, ρ converges to ‖E‖₂ at the power method's
    rate: measured ρ ≥ 0.91‖E‖₂ on the gap-free E of drifted BF16 bases (k = 128 and 1024),
    exact to 3 digits on an E with a dominant eigenvalue; so a U whose loss exceeds tol by
    more than that factor is rejected.

    Returns the estimate per batch element: the upper bound where it is ≤ tol, else ρ (then
    also ≤ tol); NaN when not checked (``tol=None`` or inf: the caller checks finiteness).
    Cost: 2dk² flops for UᵀU (``gram`` may pass it precomputed) and O(k²·POWER_STEPS) for the
    bounds, in U's namespace and on its device; one host read of one scalar (a second one,
    telling a NaN or inf of U from an overflow of UᵀU, only on the way to an error). No
    eigensolver: the fp64 host eigvalsh this replaces cost O(k³) plus a transfer of E, and
    its BLAS threads competed with PyTorch's.
    """
    if tol is None or math.isinf(tol):
        return float("nan")
    k = U.shape[-1]
    if k == 0 or any(int(n) == 0 for n in U.shape[:-2]):
        if finite is not None and not bool(finite):
            raise ValueError(f"{argname} has non-finite entries (NaN or inf)")
        return 0.0
    with np.errstate(over="ignore", invalid="ignore"):  # a NaN, inf or overflow is reported
        E = (mT(xp, U) @ U if gram is None else gram) - eye_like(xp, k, U)
        est = xp.max(loss_estimates(xp, E, tol)[0])
        if finite is None:
            loss, ok = float(est), 1.0
        else:  # one read for both
            loss, ok = (float(v) for v in B.to_numpy(xp.stack([est, xp.astype(finite,
                                                                               est.dtype)])))
    if not ok:
        raise ValueError(f"{argname} has non-finite entries (NaN or inf)")
    if loss <= tol:
        return loss
    if math.isfinite(loss):
        raise ValueError(
            f"{argname} is not orthonormal: measured loss of orthogonality ‖{argname}ᵀ"
            f"{argname} − I‖₂ = {loss:.3g} (a lower bound) exceeds the tolerance {tol:.3g}")
    if not _all_finite(xp, U):
        raise ValueError(f"{argname} has non-finite entries (NaN or inf)")
    raise ValueError(f"{argname} is not orthonormal: {argname}ᵀ{argname} − I overflows the "
                     f"compute format (measured loss of orthogonality inf)")


def qr_pos(xp, A):
    """Thin QR of A (..., m, n), m ≥ n, with Q's columns signed so that diag(R) ≥ 0.

    The sign choice makes the factor unique for full-rank A, hence identical across libraries
    (LAPACK, cuSOLVER and array-API implementations choose different signs). Returns (Q, R).
    """
    Q, R = xp.linalg.qr(A)
    d = xp.linalg.diagonal(R) if hasattr(xp.linalg, "diagonal") else xp.diagonal(R)
    s = xp.where(d < 0, -xp.ones_like(d), xp.ones_like(d))
    return Q * s[..., None, :], R * s[..., :, None]
