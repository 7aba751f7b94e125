"""Householder QR: blocked, compact WY representation, and delegation to the vendor library.

``householder_qr`` delegates to the library's QR (the backend's ``"qr"`` delegate: LAPACK through
``scipy.linalg.qr`` / ``numpy.linalg.qr`` for stacks, cuSOLVER through ``cupy.linalg.qr``, or
``torch.linalg.qr``) whenever the arithmetic is fp32/fp64 and nothing is emulated. The array-API
implementation below (:func:`householder_factor`) is the reference: it runs for every other
namespace, for emulated formats (every stored intermediate rounded), and for stacks of matrices
on libraries without a batched QR.

Factorization (LAPACK ``xGEQRF`` conventions): A = H₁H₂⋯H_k R with H_j = I − τ_j v_j v_jᵀ,
v_j(j) = 1, β_j = −sign(α_j)‖x_j‖₂ on the diagonal of R. Columns are processed in panels of
``block_size``; each panel's reflectors are aggregated as I − Y T Yᵀ (Schreiber & Van Loan,
SISC 10, 1989; T from ``xLARFT``'s forward column-wise recurrence) and applied to the trailing
matrix with three matrix products. :func:`apply_q` and :func:`apply_qt` apply Q and Qᵀ from the
factors without forming Q.

Cost: 2mn² − 2n³/3 flops to factor, the same again to form the m×n Q; memory m×n + n×n.
Error bound (Higham, ASNA, Thm 19.4 and 19.13): the computed factors satisfy
A + ΔA = Q̂R̂ with ‖Δa_j‖₂ ≤ γ̃_{mn}‖a_j‖₂ for an exactly orthogonal Q̂, and the formed Q has
‖I − QᵀQ‖ ≤ γ̃_{mn} — no dependence on κ(A).

Examples
--------
>>> import numpy as np
>>> from linalg_pc.qr_methods.householder import householder_factor, apply_q
>>> A = np.random.default_rng(0).standard_normal((6, 3))
>>> F = householder_factor(A)
>>> bool(np.allclose(apply_q(F, F.R), A))
True
"""

from __future__ import annotations

from typing import Any, NamedTuple

from .. import _backend as B
from .._operators import is_array
from ._common import (
    Ctx,
    QRResult,
    diagonal,
    eye,
    finish,
    guard_overflow,
    kappa_est,
    mT,
    prepare,
    triu,
    zeros,
)

__all__ = ["householder_qr", "householder_factor", "apply_q", "apply_qt", "HouseholderFactors"]

DEFAULT_BLOCK_SIZE = 32


class HouseholderFactors(NamedTuple):
    """Compact WY factors of A (..., m, n): Q = ∏ blocks (I − Y_b T_b Y_bᵀ).

    Attributes
    ----------
    Y : array (..., m, k)
        Unit lower-trapezoidal reflector vectors (column j zero above row j, one at row j).
    T : list of arrays (..., nb, nb)
        Upper-triangular block factors, one per panel of ``block_size`` columns.
    tau : array (..., k)
        Reflector scalars.
    R : array (..., k, n)
        Upper-triangular (trapezoidal) factor.
    block_size : int
    """

    Y: Any
    T: list
    tau: Any
    R: Any
    block_size: int


def _ident(x):
    return x


def _house(xp, x, em):
    """Reflector for x (..., p): returns v (..., p) with v[0] = 1, tau (...), beta (...).

    Norms are scaled by max|x|, and columns of subnormal size by a power of two, so that inputs
    near overflow or underflow (down to the smallest subnormal) stay accurate.
    """
    alpha = x[..., 0]
    tail = x[..., 1:]
    if tail.shape[-1] == 0:
        zero = alpha * 0
        return xp.ones_like(x), zero, alpha
    s = xp.max(xp.abs(tail), axis=-1)
    s_safe = xp.where(s > 0, s, xp.ones_like(s))
    r2 = xp.sqrt(xp.sum((tail / s_safe[..., None]) ** 2, axis=-1))
    # Columns with max(|α|, ‖x‖) below the smallest normal λ are scaled by ε⁻² (a power of two,
    # exact; it lifts the smallest subnormal 2λε to 2λ/ε and keeps λ far below overflow) while
    # the reflector is formed, as xLARFG rescales: unscaled, ‖x‖ and β would be rounded in the
    # subnormal range and τ, v lose every digit. Ordinary columns take the factor 1, unchanged.
    fi = xp.finfo(x.dtype)
    lam, eps = float(fi.smallest_normal), float(fi.eps)
    big0 = xp.maximum(xp.abs(alpha), s * r2)
    up = xp.where(big0 < lam, xp.full_like(alpha, 1.0 / (eps * eps)), xp.ones_like(alpha))
    alpha_u = alpha * up
    tnorm = (s * up) * r2
    big = xp.maximum(xp.abs(alpha_u), tnorm)
    big_safe = xp.where(big > 0, big, xp.ones_like(big))
    a_s = alpha_u / big_safe
    t_s = tnorm / big_safe
    norm = big * xp.sqrt(a_s * a_s + t_s * t_s)
    sign = xp.where(alpha >= 0, xp.ones_like(alpha), -xp.ones_like(alpha))
    beta_u = em(-sign * norm)
    trivial = tnorm == 0
    beta_u = xp.where(trivial, alpha_u, beta_u)
    beta_safe = xp.where(trivial, xp.ones_like(beta_u), beta_u)
    tau = em(xp.where(trivial, xp.zeros_like(beta_u), (beta_u - alpha_u) / beta_safe))
    denom = xp.where(trivial, xp.ones_like(beta_u), alpha_u - beta_u)
    vt = em((tail * up[..., None]) / denom[..., None])
    vt = xp.where(trivial[..., None], xp.zeros_like(vt), vt)
    beta = xp.where(trivial, alpha, em(beta_u / up))
    one = xp.ones_like(alpha)[..., None]
    return xp.concat([one, vt], axis=-1), tau, beta


def householder_factor(A, *, block_size: int = DEFAULT_BLOCK_SIZE, em=None) -> HouseholderFactors:
    """Blocked Householder QR of A (..., m, n) in pure array API (the reference implementation).

    Parameters
    ----------
    A : array (..., m, n), real floating (fp32/fp64 arithmetic dtype)
        Not modified.
    block_size : int
        Panel width nb (reflectors aggregated per panel).
    em : callable, optional
        Applied to every stored intermediate (reflectors, τ, T, updated columns): pass
        ``lambda x: round_to(x, "bf16")`` to emulate bf16 storage of the working matrix.

    Returns
    -------
    HouseholderFactors

    Raises
    ------
    TypeError
        A not an array, or not fp32/fp64 (16-bit input: decode it first, or call
        :func:`~linalg_pc.qr`, which does); ``em`` not callable.
    ValueError
        A with fewer than 2 dimensions or non-finite entries; ``block_size`` < 1.
    """
    if not is_array(A):
        raise TypeError(f"A must be an array, got {type(A).__name__}")
    fmt = B.format_of(A, argname="A")
    if fmt.name not in ("fp32", "fp64"):
        raise TypeError(f"A must be fp32 or fp64 (the arithmetic format of the reference "
                        f"factorization), got {fmt.name}: decode it first "
                        f"(lpc.from_storage) or call lpc.qr")
    if A.ndim < 2:
        raise ValueError(f"A must have at least 2 dimensions (..., m, n), got shape "
                         f"{tuple(A.shape)}")
    if em is not None and not callable(em):
        raise TypeError(f"em must be None or a callable, got {type(em).__name__}")
    B.check_finite(B.array_namespace(A), A, "A")
    return _factor(A, block_size=block_size, em=em)


def _factor(A, *, block_size: int = DEFAULT_BLOCK_SIZE, em=None) -> HouseholderFactors:
    """householder_factor on a validated A (fp32/fp64, finite)."""
    if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 1:
        raise ValueError(f"block_size must be an integer >= 1, got {block_size!r}")
    em = em or _ident
    xp = B.array_namespace(A)
    m, n = A.shape[-2], A.shape[-1]
    k = min(m, n)
    batch = tuple(A.shape[:-2])
    W = xp.asarray(A, copy=True)
    Y = zeros(xp, batch + (m, k), like=A)
    taus = []
    Ts = []
    for j0 in range(0, k, block_size):
        jb = min(block_size, k - j0)
        j1 = j0 + jb
        Yp = zeros(xp, batch + (m - j0, jb), like=A)
        ptau = []
        for jj in range(jb):
            j = j0 + jj
            v, tau, beta = _house(xp, W[..., j:, j], em)
            ptau.append(tau)
            if j + 1 < j1:
                P = W[..., j:, j + 1:j1]
                w = tau[..., None] * xp.sum(v[..., :, None] * P, axis=-2)
                W[..., j:, j + 1:j1] = em(P - v[..., :, None] * w[..., None, :])
            W[..., j, j] = beta
            W[..., j + 1:, j] = zeros(xp, batch + (m - j - 1,), like=A)
            Yp[..., jj:, jj] = v
        tp = xp.stack(ptau, axis=-1)
        T = _larft(xp, Yp, tp, em)
        if j1 < n:
            C = W[..., j0:, j1:]
            Z = em(xp.matmul(mT(xp, Yp), C))
            Z = em(xp.matmul(mT(xp, T), Z))
            W[..., j0:, j1:] = em(C - xp.matmul(Yp, Z))
        Y[..., j0:, j0:j1] = Yp
        taus.append(tp)
        Ts.append(T)
    tau = xp.concat(taus, axis=-1) if taus else zeros(xp, batch + (0,), like=A)
    R = triu(xp, W[..., :k, :])
    return HouseholderFactors(Y=Y, T=Ts, tau=tau, R=R, block_size=block_size)


def _larft(xp, Yp, tau, em):
    """T of I − Y T Yᵀ = H₁⋯H_jb (forward, column-wise, LAPACK xLARFT)."""
    jb = Yp.shape[-1]
    batch = tuple(Yp.shape[:-2])
    T = zeros(xp, batch + (jb, jb), like=Yp)
    if jb == 0:
        return T
    YtY = xp.matmul(mT(xp, Yp), Yp)  # (..., jb, jb)
    for i in range(jb):
        ti = tau[..., i]
        T[..., i, i] = ti
        if i:
            col = xp.matmul(T[..., :i, :i], YtY[..., :i, i][..., None])[..., 0]
            T[..., :i, i] = em(-ti[..., None] * col)
    return em(T)


def _blocks(F: HouseholderFactors):
    k = F.Y.shape[-1]
    out = []
    for b, j0 in enumerate(range(0, k, F.block_size)):
        j1 = min(j0 + F.block_size, k)
        out.append((j0, F.Y[..., j0:, j0:j1], F.T[b]))
    return out


def apply_q(F: HouseholderFactors, C, *, em=None):
    """Q @ C from the factors, without forming Q (C is (..., m, p); 4·m·k·p flops).

    A C with k = min(m, n) rows is taken as padded with zeros: ``apply_q(F, F.R)`` is A.

    Examples
    --------
    >>> import numpy as np
    >>> A = np.random.default_rng(1).standard_normal((5, 5))
    >>> F = householder_factor(A)
    >>> bool(np.allclose(apply_q(F, apply_qt(F, A)), A))
    True

    C may be of any real dtype: integer and boolean C are cast to the factors' dtype, and the
    product is computed in the wider of the two (an integer C was once written into in place,
    truncating Q C to integers). TypeError: F not :class:`HouseholderFactors`, C not an
    array, of another library or complex; ValueError: C not (..., m, p) (or k rows). A NaN or
    inf of C propagates to the columns of the result it touches (a product: no O(mp) scan).
    """
    return _apply_q(F, _check_apply(F, C, padded=True), em=em)


def _check_apply(F, C, *, padded: bool):
    """C validated for apply_q / apply_qt, in the dtype the product is computed in."""
    if not isinstance(F, HouseholderFactors):
        raise TypeError(f"F must be HouseholderFactors (from householder_factor), got "
                        f"{type(F).__name__}")
    if not is_array(C):
        raise TypeError(f"C must be an array, got {type(C).__name__}")
    xp = B.array_namespace(F.Y)
    if B.namespace_name(B.array_namespace(C)) != B.namespace_name(xp):
        raise TypeError(f"C must come from the factors' library ({B.namespace_name(xp)}), got "
                        f"{type(C).__module__}.{type(C).__name__}")
    kind = B.dtype_kind(C)
    if kind in ("int", "bool"):
        C = xp.astype(C, F.Y.dtype)
    elif kind != "float":
        raise TypeError(f"C must have a real floating, integer or boolean dtype, got {C.dtype}")
    m, k = F.Y.shape[-2], F.Y.shape[-1]
    rows = (m, k) if padded and k < m else (m,)
    if C.ndim < 2 or C.shape[-2] not in rows:
        want = " or ".join(str(r) for r in rows)
        raise ValueError(f"C must have shape (..., {want}, p) for factors of a matrix with "
                         f"{m} rows, got {tuple(C.shape)}")
    dt = xp.result_type(F.Y.dtype, C.dtype)
    return C if C.dtype == dt else xp.astype(C, dt)


def _apply_q(F: HouseholderFactors, C, *, em=None):
    em = em or _ident
    xp = B.array_namespace(F.Y, C)
    m, k = F.Y.shape[-2], F.Y.shape[-1]
    if C.shape[-2] == k and k < m:
        pad = zeros(xp, tuple(C.shape[:-2]) + (m - k, C.shape[-1]), like=C)
        C = xp.concat([C, pad], axis=-2)
    else:
        C = xp.asarray(C, copy=True)
    for j0, Yb, Tb in reversed(_blocks(F)):
        Cb = C[..., j0:, :]
        Z = em(xp.matmul(Tb, em(xp.matmul(mT(xp, Yb), Cb))))
        C[..., j0:, :] = em(Cb - xp.matmul(Yb, Z))
    return C


def apply_qt(F: HouseholderFactors, C, *, em=None):
    """Qᵀ @ C from the factors, without forming Q (C is (..., m, p); 4·m·k·p flops).

    C is checked and cast as in :func:`apply_q`.
    """
    C = _check_apply(F, C, padded=False)
    em = em or _ident
    xp = B.array_namespace(F.Y, C)
    C = xp.asarray(C, copy=True)
    for j0, Yb, Tb in _blocks(F):
        Cb = C[..., j0:, :]
        Z = em(xp.matmul(mT(xp, Tb), em(xp.matmul(mT(xp, Yb), Cb))))
        C[..., j0:, :] = em(Cb - xp.matmul(Yb, Z))
    return C


def form_q(F: HouseholderFactors, m: int, ncols: int, *, em=None):
    """The first ``ncols`` columns of Q (m×k for the reduced, m×m for the complete factor)."""
    xp = B.array_namespace(F.Y)
    batch = tuple(F.Y.shape[:-2])
    E = eye(xp, m, ncols, like=F.Y)
    if batch:
        E = xp.broadcast_to(E, batch + (m, ncols))
    return _apply_q(F, E, em=em)


def householder_core(ctx: Ctx, A, *, block_size: int = DEFAULT_BLOCK_SIZE, vendor: bool = True):
    """Householder QR of A (compute dtype) per ``ctx.mode``; returns (Q or None, R).

    A matrix whose R comes back non-finite (a column norm or an update past the format's
    largest value) is factored again scaled by a power of two (:func:`guard_overflow`): Q is
    then finite and orthonormal, and R is scaled back (an R that does not fit the format is
    reported by ``finish``).
    """
    return guard_overflow(ctx, A, lambda X: _householder_core(ctx, X, block_size=block_size,
                                                              vendor=vendor))


def _householder_core(ctx: Ctx, A, *, block_size: int, vendor: bool):
    xp = ctx.xp
    m, n = A.shape[-2], A.shape[-1]
    mode = ctx.mode
    k = min(m, n)
    if m == 0 or n == 0:
        batch = tuple(A.shape[:-2])
        ncols = m if mode == "complete" else k
        Q = eye(xp, m, ncols, like=A)
        if batch:
            Q = xp.asarray(xp.broadcast_to(Q, batch + (m, ncols)), copy=True)
        R = zeros(xp, batch + ((m if mode == "complete" else k), n), like=A)
        ctx.trace.backend = "reference"
        return (None if mode == "r" else Q), R
    vendor_qr = B.delegate(xp, "qr") if vendor and ctx.emulate is None else None
    if vendor_qr is not None:  # LAPACK / torch.linalg / cuSOLVER
        Q, R, ctx.trace.backend = vendor_qr(A, mode)
        return Q, R
    em = ctx.em if ctx.emulate is not None else None
    F = _factor(A, block_size=block_size, em=em)
    ctx.trace.backend = "reference"
    if mode == "r":
        return None, F.R
    if mode == "complete":
        Q = form_q(F, m, m, em=em)
        R = F.R
        if m > k:
            R = xp.concat([R, zeros(xp, tuple(A.shape[:-2]) + (m - k, n), like=A)], axis=-2)
        return Q, R
    return form_q(F, m, k, em=em), F.R


def householder_qr(A, *, mode: str = "reduced", storage=None, compute=None, emulate=None,
                   block_size: int = DEFAULT_BLOCK_SIZE, vendor: bool = True) -> QRResult:
    """Householder QR of A (..., m, n), any shape, any real format.

    Parameters
    ----------
    A : array (..., m, n)
        NumPy (bf16 via ml_dtypes included), CuPy, PyTorch or array_api_strict.
    mode : {"reduced", "complete", "r"}
        Q m×k and R k×n (k = min(m, n)); Q m×m and R m×n; R only (Q is None).
    storage, compute, emulate : format names or dtypes, optional
        Returned format (default A's), arithmetic (default fp32 for 16-bit A, else A's), and a
        format every stored intermediate is rounded to (runs the reference implementation).
    block_size : int
        Panel width of the reference implementation.
    vendor : bool
        Delegate to LAPACK / cuSOLVER / torch.linalg when possible (default True).

    Returns
    -------
    QRResult
        ``info.method == "householder"``; ``info.backend`` says who factored.

    Notes
    -----
    Cost 2mn² − 2n³/3 flops (+ the same to form Q). Bound: ‖A − QR‖ ≤ γ̃_{mn}‖A‖ column-wise
    and ‖I − QᵀQ‖ ≤ γ̃_{mn} (Higham, ASNA, Thm 19.4), independent of κ(A); with ``emulate`` the
    unit roundoff in γ̃ is the emulated format's.

    Examples
    --------
    >>> import numpy as np
    >>> A = np.random.default_rng(0).standard_normal((8, 4)).astype(np.float32)
    >>> Q, R, info = householder_qr(A)
    >>> Q.shape, R.shape, info.method
    ((8, 4), (4, 4), 'householder')
    """
    ctx, Ac = prepare(A, method="householder", mode=mode, storage=storage, compute=compute,
                      emulate=emulate)
    Q, R = householder_core(ctx, Ac, block_size=block_size, vendor=vendor)
    ctx.trace.kappa_est = kappa_est(ctx.xp, R)
    return finish(ctx, Q, R)


def r_diag_sign_fix(xp, Q, R):
    """Flip signs so that diag(R) >= 0 (returns Q D, D R); used by tests and TSQR."""
    d = diagonal(xp, R)
    s = xp.where(d < 0, -xp.ones_like(d), xp.ones_like(d))
    return (None if Q is None else Q * s[..., None, :]), R * s[..., :, None]
