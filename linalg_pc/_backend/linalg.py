"""Generic linear-algebra primitives of the backend (array API), each asking its library's
delegate first: solve_triangular, cholesky (failure as a value), cho_solve, tri_cond_est, eigh,
countsketch."""

from __future__ import annotations

import numpy as np

from ._core import array_namespace, delegate, device_of, format_of, to_numpy


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
    d = xp.abs(diagonal(xp, R))
    dmin = to_float(xp.min(d))
    if dmin == 0 or not np.isfinite(dmin) or not bool(xp.all(xp.isfinite(R))):
        return float("inf")
    if k > TRI_COND_SOLVE_MAX:
        return to_float(xp.max(d)) / dmin
    with np.errstate(over="ignore", invalid="ignore"):  # κ past the range is read as inf
        eye = xp.eye(k, dtype=R.dtype, device=device_of(R))
        Ri = solve_triangular(R, eye, lower=False)
        n1 = to_float(xp.max(xp.sum(xp.abs(R), axis=0)))
        n2 = to_float(xp.max(xp.sum(xp.abs(Ri), axis=0)))
    v = n1 * n2
    return v if np.isfinite(v) else float("inf")


#: :func:`tri_cond_est` (generic) forms R⁻¹ up to this order, the diagonal ratio beyond.
TRI_COND_SOLVE_MAX = 2048


def diagonal(xp, X):
    """The diagonals (..., min(m, n)) of a stack of matrices in namespace ``xp``."""
    if hasattr(xp, "linalg") and hasattr(xp.linalg, "diagonal"):
        return xp.linalg.diagonal(X)
    return xp.diagonal(X, axis1=-2, axis2=-1)


def to_float(x) -> float:
    """A Python float from a 0-d array of any library."""
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


def gram(X):
    """X Xᵀ of X (..., d, r): the Gram matrix of the rows, symmetric (..., d, d).

    A library's delegate (``"gram"``) runs when one is registered: NumPy's matmul of an array
    with its own transpose runs BLAS ``xSYRK`` (half the flops of a product); PyTorch CPU
    tensors (which reach no SYRK) compute only the blocks on and above the diagonal and mirror
    them (≈ 3/4 of the flops for 256-row blocks of a 1024-row X). Otherwise one product.
    Cost 2d²r flops (d²r with SYRK).
    """
    xp = array_namespace(X)
    impl = delegate(xp, "gram")
    if impl is not None:
        return impl(X)
    return X @ _mT(xp, X)


def eps_of(x) -> float:
    """Unit roundoff of x's dtype (fp64 for non-arrays)."""
    try:
        return format_of(x).unit_roundoff
    except TypeError:
        return 2.0**-53



