"""Block Schur complements, degeneracy analysis and the targeted preconditioner (DCReg).

For a symmetric positive definite H partitioned at ``split`` = k into blocks
``H = [[H_RR, H_Rt], [H_tR, H_tt]]`` (for point-to-plane ICP: rotation (roll, pitch, yaw) and
translation (x, y, z)), the Schur complements

    S_R = H_RR − H_Rt H_tt⁻¹ H_tR,      S_t = H_tt − H_tR H_RR⁻¹ H_Rt

are the information about each parameter group once the other group is optimally adjusted:
(H⁻¹)_RR = S_R⁻¹ and (H⁻¹)_tt = S_t⁻¹, and for H = JᵀJ, S_R = J_Rᵀ(I − P_t)J_R with P_t the
orthogonal projector onto range(J_t). A direction of S_R (or S_t) with a small eigenvalue is a
physical direction the data do not constrain.

:func:`block_degeneracy` eigendecomposes each complement, assigns eigenvectors to the coordinate
axes by an **optimal assignment** (the permutation maximizing the sum of squared matched
components; DCReg's reference code matches greedily, which can give two axes the same vector or
swap labels when eigenvectors sit near 45° between axes), fixes each vector's sign so that its
own-axis component is non-negative, and flags axis a as degenerate when λ_max/λ_a > threshold.
:func:`targeted_preconditioner` builds blkdiag(V_R Λ̃_R⁻¹ V_Rᵀ, V_t Λ̃_t⁻¹ V_tᵀ) where only the
flagged eigenvalues are raised to λ_max/κ_target; with nothing flagged it equals the block
diagonal of H⁻¹.

Reference: Hu et al., "DCReg: Decoupled Characterization for Efficient Degenerate LiDAR
Registration", arXiv:2509.06285 (2025). Schur-complement identities: Zhang (ed.), *The Schur
Complement and Its Applications*, Springer 2005, ch. 1.

Cost per system (n = k + m): two block solves O(k m (k + m)) + O(k³ + m³), two symmetric
eigendecompositions O(k³ + m³), the eigenvalues of H O(n³) for κ(H), the assignment
O(k!·k) for k ≤ 6 (Hungarian O(k³) beyond); memory O(n²). NumPy input runs in one Numba kernel
over the batch (cyclic Jacobi eigensolver, accurate to O(u)·‖S‖ in eigenvalues and
O(u)/gap in eigenvectors, like LAPACK's syevd); other libraries run the same steps with their
own batched ``linalg.solve`` / ``linalg.eigh``.

Examples
--------
>>> import numpy as np, linalg_pc as lpc
>>> H = np.diag([100.0, 100.0, 100.0, 100.0, 0.5, 100.0])   # y barely constrained
>>> rep = lpc.block_degeneracy(H)
>>> rep.flagged_axes()
('y',)
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from .._backend import array_namespace, check_finite, cholesky, format_of, to_numpy
from .._backend.dask import dispatch
from .._kernels._twins import pick
from .._kernels.capability import cpu_solver_kernels
from .._kernels.cpu_dcreg import DCRegAnalysis, DCRegSolve, run_dcreg
from .._kernels.cpu_dense_small import symmetrize_batch
from .._policy import Precision
from ._status import KERNEL_CODES, STOP_RULE

__all__ = ["schur_complements", "SchurComplements", "block_degeneracy", "DegeneracyReport",
           "targeted_preconditioner", "SYMMETRY_FACTOR", "RANK_FACTOR"]

# H is accepted as symmetric when max|H − Hᵀ| <= SYMMETRY_FACTOR · n · u · max|H|
SYMMETRY_FACTOR = 64.0
# the QR fallback of solve_degenerate treats R_ii as zero when
# |R_ii| <= RANK_FACTOR · n · u · max_j |R_jj| (H numerically singular): the truncated solve
RANK_FACTOR = 8.0
# largest block size whose assignment enumerates all permutations (6! = 720)
MAX_ENUM = 6

DCREG_LABELS = ("roll", "pitch", "yaw", "x", "y", "z")


@dataclass(frozen=True)
class DegeneracyReport:
    """Per-system degeneracy analysis of a block-partitioned SPD matrix (see module docstring).

    Arrays are in the caller's library with leading batch shape ``batch`` (``()`` for one
    matrix). Eigenpairs are aligned to the axes: ``eigvals_R[..., a]`` and
    ``eigvecs_R[..., :, a]`` belong to rotation axis a, with ``eigvecs_R[..., a, a] >= 0``.

    Attributes
    ----------
    S_R, S_t : (..., k, k), (..., m, m) Schur complements.
    eigvals_R, eigvals_t : (..., k), (..., m) eigenvalues assigned to the axes.
    eigvecs_R, eigvecs_t : eigenvectors, column a assigned to axis a, sign-fixed.
    contributions_R, contributions_t : squared eigenvector components; entry [i, a] is the share
        of axis i in the direction assigned to axis a (columns sum to 1).
    degenerate_R, degenerate_t : bool masks λ_max/λ_a > threshold (or λ_a <= 0).
    degenerate : (..., n) both masks concatenated, in the order of H's axes.
    cond_H, cond_R, cond_t : 2-norm condition numbers (inf where not positive definite).
    blocks_pd : bool mask, the diagonal blocks H_RR and H_tt are positive definite (else the
        complements are not meaningful and every axis is flagged).
    labels : axis names; split, threshold, kappa_target : the parameters used.
    """

    S_R: Any
    S_t: Any
    eigvals_R: Any
    eigvecs_R: Any
    eigvals_t: Any
    eigvecs_t: Any
    contributions_R: Any
    contributions_t: Any
    degenerate_R: Any
    degenerate_t: Any
    degenerate: Any
    cond_H: Any
    cond_R: Any
    cond_t: Any
    blocks_pd: Any
    labels: tuple
    split: int
    threshold: float
    kappa_target: float

    @property
    def batch_shape(self) -> tuple:
        return tuple(self.degenerate.shape[:-1])

    def flagged_axes(self, index=()) -> tuple:
        """Labels of the flagged axes of one system (``index`` into the batch)."""
        mask = np.asarray(to_numpy(self.degenerate))[index]
        return tuple(lab for lab, f in zip(self.labels, mask) if f)


# --------------------------------------------------------------------------- validation
def _validate_H(H, split, name="H"):
    if not hasattr(H, "shape"):
        raise TypeError(f"{name} must be an array, got {type(H).__name__}")
    xp = array_namespace(H)
    if H.ndim < 2 or H.shape[-1] != H.shape[-2]:
        raise ValueError(f"{name} must be square (..., n, n), got shape {tuple(H.shape)}")
    n = H.shape[-1]
    if isinstance(split, bool) or not isinstance(split, (int, np.integer)):
        raise TypeError(f"split must be an integer, got {type(split).__name__}")
    if not 1 <= split < n:
        raise ValueError(f"split must satisfy 1 <= split < n = {n}, got {split}")
    fmt = format_of(H, argname=name)
    if cpu_solver_kernels(xp, H.dtype) and H.size:
        # one fused pass: finiteness, symmetry defect and the symmetrized copy
        Hf = np.ascontiguousarray(H).reshape((-1, n, n))
        out = np.empty_like(Hf)
        asym, scale, finite = pick(symmetrize_batch, Hf.size)(Hf, out)
        if not finite:
            raise ValueError(f"{name} has non-finite entries (NaN or inf)")
        if asym > SYMMETRY_FACTOR * n * fmt.unit_roundoff * scale:
            raise ValueError(f"{name} must be symmetric: max|{name} − {name}ᵀ| = {asym:.3g} "
                             f"exceeds {SYMMETRY_FACTOR:g}·n·u·max|{name}|")
        return xp, out.reshape(H.shape), fmt.unit_roundoff
    check_finite(xp, H, name)
    dt = Precision().resolve(fmt).compute_dtype(xp)  # 16-bit in: fp32 arithmetic
    if H.dtype != dt:
        H = xp.astype(H, dt)
    u = format_of(H).unit_roundoff
    asym = xp.max(xp.abs(H - xp.matrix_transpose(H))) if H.size else 0.0
    scale = xp.max(xp.abs(H)) if H.size else 0.0
    if float(asym) > SYMMETRY_FACTOR * n * u * float(scale):
        raise ValueError(f"{name} must be symmetric: max|{name} − {name}ᵀ| = {float(asym):.3g} "
                         f"exceeds {SYMMETRY_FACTOR:g}·n·u·max|{name}|")
    H = 0.5 * (H + xp.matrix_transpose(H))
    return xp, H, u


def _labels(labels, n, split):
    if labels is None:
        if n == 6 and split == 3:
            return DCREG_LABELS
        return tuple(f"r{i}" for i in range(split)) + tuple(f"t{i}" for i in range(n - split))
    labels = tuple(str(s) for s in labels)
    if len(labels) != n:
        raise ValueError(f"labels must name all {n} axes, got {len(labels)}")
    return labels


def _check_params(threshold, kappa_target):
    for name, v in (("threshold", threshold), ("kappa_target", kappa_target)):
        if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
            raise TypeError(f"{name} must be a real number, got {type(v).__name__}")
        if not (np.isfinite(v) and v >= 1):
            raise ValueError(f"{name} must be finite and >= 1, got {v!r}")


# --------------------------------------------------------------------------- Schur complements
class SchurComplements(NamedTuple):
    """Both Schur complements of a 2×2 block partition (unpacks as ``S_R, S_t``)."""

    S_R: Any
    S_t: Any


def schur_complements(H, split: int) -> SchurComplements:
    """Both Schur complements of the 2×2 block partition of H at ``split``.

    Parameters
    ----------
    H : array (..., n, n)
        Symmetric matrices (any supported library, batched over leading dimensions).
    split : int
        Size k of the leading block, 1 <= k < n.

    Returns
    -------
    SchurComplements
        ``S_R`` (..., k, k): H_RR − H_Rt H_tt⁻¹ H_tR, and ``S_t`` (..., n−k, n−k):
        H_tt − H_tR H_RR⁻¹ H_Rt, both symmetrized, in H's library.

    Raises
    ------
    ValueError
        H not square or symmetric, NaN/inf entries, split out of range, or a diagonal block
        H_RR or H_tt (numerically) singular, where a complement does not exist
        (:func:`block_degeneracy` analyses such matrices: ``blocks_pd`` False, every axis
        flagged).

    Notes
    -----
    Cost O(k m n + k³ + m³) per matrix through the library's batched ``linalg.solve``. For SPD
    H the computed complements satisfy ‖S − Ŝ‖ ≲ c·n·u·κ(H_tt)·‖H‖ (backward-stable block
    solve; Higham, ASNA §13).

    Examples
    --------
    >>> import numpy as np, linalg_pc as lpc
    >>> H = np.array([[4.0, 2.0], [2.0, 3.0]])
    >>> S_R, S_t = lpc.schur_complements(H, 1)
    >>> float(S_R[0, 0]), float(S_t[0, 0])
    (2.666666666666667, 2.0)
    """
    xp, H, u = _validate_H(H, split)
    n = H.shape[-1]
    for name, sl in (("H_tt", slice(split, n)), ("H_RR", slice(0, split))):
        if np.any(_singular(xp, H[..., sl, sl], u)):
            raise ValueError(f"H: the diagonal block {name} = H[..., {sl.start}:{sl.stop}, "
                             f"{sl.start}:{sl.stop}] is singular (to working precision), so "
                             "the Schur complement does not exist; block_degeneracy reports "
                             "such matrices (blocks_pd False)")
    return SchurComplements(*_schur(xp, H, split))


def _singular(xp, B, u):
    """Per matrix of the batch B (..., m, m): numerically singular, i.e. the smallest singular
    value <= RANK_FACTOR · m · u · the largest (NumPy bool array)."""
    sv = xp.linalg.svdvals(B) if hasattr(xp.linalg, "svdvals") else xp.linalg.svd(
        B, compute_uv=False)
    sv = np.asarray(to_numpy(sv), dtype=np.float64)
    return sv[..., -1] <= RANK_FACTOR * B.shape[-1] * u * sv[..., 0]


def _schur(xp, H, k, u=None):
    """Both complements; with ``u``, a diagonal block that is singular or not positive
    definite is first shifted by RANK_FACTOR·m·u·(trace/m)·I (a shift that survives rounding;
    the Numba kernel replaces a non-positive Cholesky pivot by u·trace/m), so that the
    analysis of a singular H returns finite complements (reported through blocks_pd)."""
    mT = xp.matrix_transpose
    HRR, HRt = H[..., :k, :k], H[..., :k, k:]
    HtR, Htt = H[..., k:, :k], H[..., k:, k:]
    if u is not None:
        HRR, Htt = _shift_singular(xp, HRR, u), _shift_singular(xp, Htt, u)
    SR = H[..., :k, :k] - xp.matmul(HRt, xp.linalg.solve(Htt, HtR))
    St = H[..., k:, k:] - xp.matmul(HtR, xp.linalg.solve(HRR, HRt))
    return 0.5 * (SR + mT(SR)), 0.5 * (St + mT(St))


def _shift_singular(xp, B, u):
    # not positive definite (the kernel's rule) or numerically singular
    bad = _singular(xp, B, u) | (np.asarray(cholesky(B)[1]) != 0)
    if not bad.any():
        return B
    m = B.shape[-1]
    tr = xp.sum(xp.abs(xp.linalg.diagonal(B)), axis=-1)
    shift = RANK_FACTOR * m * u * xp.where(tr > 0, tr / m, xp.ones_like(tr))
    dev = getattr(B, "device", None)
    mask = xp.asarray(bad, device=dev) if dev is not None else xp.asarray(bad)
    shift = xp.where(mask, shift, xp.zeros_like(shift))
    eye = xp.eye(m, dtype=B.dtype, device=dev) if dev is not None else xp.eye(m, dtype=B.dtype)
    return B + shift[..., None, None] * eye


# --------------------------------------------------------------------------- assignment
def _perm_table(k: int) -> np.ndarray:
    return np.array(list(itertools.permutations(range(k))), dtype=np.int64)


def _align(xp, lam, V):
    """Assign eigenpairs to axes by the permutation maximizing Σ_i V[i, σ(i)]²; fix signs."""
    k = V.shape[-1]
    C = V * V
    if k <= MAX_ENUM:
        perms = _perm_table(k)
        P = perms.shape[0]
        sel = np.zeros((k * k, P))
        Q = np.zeros((P, k * k))
        for pi, perm in enumerate(perms):
            for i, j in enumerate(perm):
                sel[i * k + j, pi] = 1.0
                Q[pi, j * k + i] = 1.0  # eigenvector j -> axis i
        dt = V.dtype
        dev = getattr(V, "device", None)
        sel_x = xp.asarray(sel, dtype=dt, device=dev) if dev is not None else xp.asarray(
            sel, dtype=dt)
        Q_x = xp.asarray(Q, dtype=dt, device=dev) if dev is not None else xp.asarray(Q, dtype=dt)
        scores = xp.matmul(xp.reshape(C, C.shape[:-2] + (k * k,)), sel_x)
        best = xp.argmax(scores, axis=-1)
        onehot = xp.astype(best[..., None] == xp.arange(P, device=dev), dt)
        Qm = xp.reshape(xp.matmul(onehot, Q_x), C.shape)
    else:
        from scipy.optimize import linear_sum_assignment

        Ch = np.asarray(to_numpy(C), dtype=np.float64).reshape(-1, k, k)
        Qh = np.zeros_like(Ch)
        for s in range(Ch.shape[0]):
            rows, cols = linear_sum_assignment(-Ch[s])  # axis i -> eigenvector cols[i]
            Qh[s, cols, rows] = 1.0
        Qm = xp.asarray(Qh.reshape(C.shape), dtype=V.dtype)
    Va = xp.matmul(V, Qm)
    la = xp.matmul(lam[..., None, :], Qm)[..., 0, :]
    d = xp.stack([Va[..., i, i] for i in range(k)], axis=-1)
    sg = xp.where(d >= 0, xp.ones_like(d), -xp.ones_like(d))
    return la, Va * sg[..., None, :]


def _flags_and_cond(xp, lam, threshold):
    lmax = xp.max(lam, axis=-1, keepdims=True)
    lmin = xp.min(lam, axis=-1)
    deg = (lam <= 0) | (lmax > threshold * lam)
    inf = xp.full_like(lmin, float("inf"))
    cond = xp.where(lmin > 0, lmax[..., 0] / xp.where(lmin > 0, lmin, xp.ones_like(lmin)), inf)
    return deg, cond


# --------------------------------------------------------------------------- analysis
def block_degeneracy(H, *, split: int = 3, threshold: float = 10.0, kappa_target: float = 10.0,
                     labels=None, engine: str = "auto") -> DegeneracyReport:
    """Degeneracy analysis of SPD matrices through their block Schur complements (DCReg).

    Parameters
    ----------
    H : array (..., n, n)
        Symmetric (positive definite) matrices, e.g. 6×6 Gauss–Newton Hessians in the order
        (roll, pitch, yaw, x, y, z); batched over leading dimensions.
    split : int
        Size of the first block (3: rotation | translation).
    threshold : float
        Axis a of a block is degenerate when λ_max/λ_a > threshold (DCReg: 10).
    kappa_target : float
        Condition number the targeted preconditioner aims at (stored for
        :func:`targeted_preconditioner`).
    labels : sequence of str, optional
        Axis names; default roll, pitch, yaw, x, y, z for 6×6 split at 3.
    engine : "auto", "numba" or "array_api"
        "auto" uses the Numba kernel for NumPy float32/float64 input with blocks of at most
        6 axes, the array-API path otherwise.

    Returns
    -------
    DegeneracyReport

    Raises
    ------
    ValueError
        Non-square or non-symmetric H, NaN/inf entries, split out of range, threshold or
        kappa_target below 1, wrong number of labels.

    Examples
    --------
    >>> import numpy as np, linalg_pc as lpc
    >>> rep = lpc.block_degeneracy(np.diag([9.0, 9.0, 9.0, 9.0, 9.0, 0.1]))
    >>> rep.flagged_axes(), float(rep.cond_t)
    (('z',), 90.0)
    """
    if (dist := dispatch("block_degeneracy", H)) is not None:  # a Dask array
        return dist(H, split=split, threshold=threshold, kappa_target=kappa_target,
                    labels=labels, engine=engine)
    _check_params(threshold, kappa_target)
    if engine not in ("auto", "numba", "array_api"):
        raise ValueError(f"engine must be 'auto', 'numba' or 'array_api', got {engine!r}")
    xp, Hs, u = _validate_H(H, split)
    n = Hs.shape[-1]
    labs = _labels(labels, n, split)
    use_numba = _use_numba(xp, Hs, split, engine)
    if use_numba:
        an, _ = _run_kernel(Hs, None, split, threshold, kappa_target, u)
        return _report_from_kernel(an, Hs.shape[:-2], labs, split, threshold, kappa_target)
    return _report_xp(xp, Hs, split, threshold, kappa_target, labs)


def _use_numba(xp, H, split, engine) -> bool:
    ok = cpu_solver_kernels(xp, H.dtype) and max(split, H.shape[-1] - split) <= MAX_ENUM
    if engine == "numba" and not ok:
        raise ValueError("engine='numba' needs NumPy float32/float64 input with blocks of at "
                         f"most {MAX_ENUM} axes")
    return ok and engine != "array_api"


def _report_xp(xp, H, k, threshold, kappa_target, labs) -> DegeneracyReport:
    SR, St = _schur(xp, H, k, format_of(H).unit_roundoff)
    lamR, VR = xp.linalg.eigh(SR)
    lamt, Vt = xp.linalg.eigh(St)
    lamR, VR = _align(xp, lamR, VR)
    lamt, Vt = _align(xp, lamt, Vt)
    degR, cR = _flags_and_cond(xp, lamR, threshold)
    degt, ct = _flags_and_cond(xp, lamt, threshold)
    lamH = xp.linalg.eigvalsh(H)
    lmin = lamH[..., 0]
    inf = xp.full_like(lmin, float("inf"))
    cH = xp.where(lmin > 0, lamH[..., -1] / xp.where(lmin > 0, lmin, xp.ones_like(lmin)), inf)
    _, i1 = cholesky(H[..., :k, :k])
    _, i2 = cholesky(H[..., k:, k:])
    pd_h = (np.asarray(i1) == 0) & (np.asarray(i2) == 0)
    dev = getattr(H, "device", None)
    pd = xp.asarray(pd_h, device=dev) if dev is not None else xp.asarray(pd_h)
    degR = degR | ~pd[..., None]
    degt = degt | ~pd[..., None]
    return DegeneracyReport(SR, St, lamR, VR, lamt, Vt, VR * VR, Vt * Vt, degR, degt,
                            xp.concat([degR, degt], axis=-1), cH, cR, ct, pd, labs, k,
                            float(threshold), float(kappa_target))


def _run_kernel(H, b, split, threshold, kappa_target, u, rtol=0.0, atol=0.0, maxiter=1,
                check_every=1) -> tuple[DCRegAnalysis, DCRegSolve | None]:
    """Flatten the batch and run the DCReg kernel (analysis, and the solve when b is given),
    with the status codes and stall rule of linalg_pc.solvers._status."""
    n = H.shape[-1]
    Hf = np.ascontiguousarray(H.reshape((-1, n, n)))
    bf = None if b is None else np.asarray(b, dtype=Hf.dtype).reshape(-1, n)
    return run_dcreg(Hf, bf, _perm_table(split), _perm_table(n - split), split=split,
                     threshold=threshold, kappa_target=kappa_target, eps=u, rtol=rtol,
                     atol=atol, maxiter=maxiter, check_every=check_every, codes=KERNEL_CODES,
                     rules=STOP_RULE, rank_tol=RANK_FACTOR * n * u)


def _report_from_kernel(an: DCRegAnalysis, batch, labs, k, threshold,
                        kappa_target) -> DegeneracyReport:
    batch = tuple(batch)

    def sh(a):
        return a.reshape(batch + tuple(a.shape[1:]))

    def cnd(a):
        a = a.astype(an.eigvals_R.dtype)
        return a.reshape(batch) if batch else a.reshape(())

    VR, Vt = sh(an.eigvecs_R), sh(an.eigvecs_t)
    degR, degt = sh(an.degenerate_R), sh(an.degenerate_t)
    pd = ~an.regularized
    return DegeneracyReport(sh(an.S_R), sh(an.S_t), sh(an.eigvals_R), VR, sh(an.eigvals_t), Vt,
                            VR * VR, Vt * Vt, degR, degt, np.concatenate([degR, degt], axis=-1),
                            cnd(an.cond_H), cnd(an.cond_R), cnd(an.cond_t),
                            pd.reshape(batch) if batch else np.bool_(pd[0]), labs, k,
                            float(threshold), float(kappa_target))


# --------------------------------------------------------------------------- preconditioner
def targeted_preconditioner(report: DegeneracyReport, *, kappa_target: float | None = None):
    """The DCReg preconditioner P = blkdiag(V_R Λ̃_R⁻¹ V_Rᵀ, V_t Λ̃_t⁻¹ V_tᵀ) as a dense array.

    Λ̃ equals Λ except that each *flagged* eigenvalue λ_a is raised to max(λ_a, λ_max/κ_target)
    (λ_max of its block). With no axis flagged P is exactly blkdiag(S_R⁻¹, S_t⁻¹), the block
    diagonal of H⁻¹. P is SPD whenever the complements are, and usable as ``M`` in
    :func:`pcg` (a batch (..., n, n) for a batched report).

    Parameters
    ----------
    report : DegeneracyReport
    kappa_target : float, optional
        Overrides ``report.kappa_target``.

    Returns
    -------
    array (..., n, n) in the report's library. Cost O(k³ + m³) per system.

    Examples
    --------
    >>> import numpy as np, linalg_pc as lpc
    >>> H = np.diag([4.0, 4.0, 4.0, 4.0, 4.0, 0.04])
    >>> P = lpc.targeted_preconditioner(lpc.block_degeneracy(H))
    >>> float(P[5, 5])   # 1 / (4 / 10): the weak axis raised to λ_max/κ_target
    2.5
    """
    if not isinstance(report, DegeneracyReport):
        raise TypeError(f"report must be a DegeneracyReport, got {type(report).__name__}")
    kt = report.kappa_target if kappa_target is None else kappa_target
    _check_params(report.threshold, kt)
    xp = array_namespace(report.eigvals_R)
    blocks = []
    for lam, V, deg in ((report.eigvals_R, report.eigvecs_R, report.degenerate_R),
                        (report.eigvals_t, report.eigvecs_t, report.degenerate_t)):
        lmax = xp.max(lam, axis=-1, keepdims=True)
        floor = lmax / kt
        lt = xp.where(deg & (lam < floor), floor, lam)
        inv = xp.where(lt > 0, 1.0 / xp.where(lt > 0, lt, xp.ones_like(lt)),
                       xp.zeros_like(lt))
        blocks.append(xp.matmul(V * inv[..., None, :], xp.matrix_transpose(V)))
    Bk, Bm = blocks
    k, m = Bk.shape[-1], Bm.shape[-1]
    batch = tuple(Bk.shape[:-2])
    dev = getattr(Bk, "device", None)
    kw = {"dtype": Bk.dtype} if dev is None else {"dtype": Bk.dtype, "device": dev}
    top = xp.concat([Bk, xp.zeros(batch + (k, m), **kw)], axis=-1)
    bot = xp.concat([xp.zeros(batch + (m, k), **kw), Bm], axis=-1)
    return xp.concat([top, bot], axis=-2)
