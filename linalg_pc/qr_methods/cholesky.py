"""The CholeskyQR family: CholQR, CholQR2 and shifted CholQR3, with breakdown detection.

One CholeskyQR pass on an m×n matrix X (m >= n):

    G = XᵀX (accumulated in the compute format, never in bf16)
    R = chol(G) (upper),   X <- X R⁻¹

All three steps are BLAS-3 / LAPACK calls through the backend (SYRK-like Gram product, POTRF, on
NumPy a TRSM in place from NumPy's own BLAS, or TRTRI + GEMM when that is not reachable and R is
well conditioned), and a parallel implementation needs a single reduction (the n×n Gram
matrix), which is why these methods are the fastest QR for tall-skinny matrices. The passes
run on an operand (:mod:`._operands`): on NumPy (m·n >= ``STREAM_MIN_ENTRIES``, modes "reduced"
and "r") they stream over row blocks of A as it came, bf16/fp16 decoded block by block into a
cache-sized scratch and Q written straight into its storage format (no compute-format copy of A;
an fp32 Q takes X = A·R₁⁻¹ in the Gram pass of the first solve and finishes in place); elsewhere
a decoded copy of A is the work array. Q's memory is recycled (``_buffers``).

- **CholQR** (one pass): ‖I − QᵀQ‖ ≈ u·κ(A)²; breaks down (Cholesky fails) once κ(A) ≳ u^(−1/2).
- **CholQR2** (two passes, R = R₂R₁; Yamamoto, Nakatsukasa, Yanagisawa, Fukaya, ETNA 44, 2015):
  O(u) orthogonality and residual while κ(A) ≲ u^(−1/2).
- **shifted CholQR3** (Fukaya, Kannan, Nakatsukasa, Yamamoto, Yanagisawa, SISC 42, 2020): the
  first pass factors G + sI, which makes Cholesky succeed for κ(A) up to ≈ u⁻¹; two ordinary
  passes then restore O(u) orthogonality. Fukaya's shift is s = 11(mn + n(n+1))·u·‖A‖₂²; here u
  is the unit roundoff of the format that *accumulates* the Gram matrix (fp32 for bf16 data: the
  bf16 u would swamp the matrix). ``shift="breakdown"`` (pyMOR's policy) tries no shift first
  and, only when Cholesky breaks down, shifts by s₀ = n·u·‖A‖₂², ×10 per retry.

Breakdown is detected from Cholesky's ``info`` (the leading minor that is not positive definite)
and from an R whose condition estimate reaches u⁻¹; it is never an exception. One-pass CholQR
also treats as breakdown an R with u·(κ_est/n)² > 1 (κ₂(R) >= κ₁-estimate/n, so its Q would not
be orthonormal in any digit: Cholesky can succeed on a Gram matrix past u⁻¹), and it checks its
result: a Q with ‖I − QᵀQ‖_F > ``ONE_PASS_ORTH_MAX`` (one more Gram product, mn² flops) is not
returned, whatever Cholesky and the κ estimate said (the κ estimate is that of the Cholesky
factor of a *rounded* Gram matrix, which can stay near u^(−1/2) while κ(A) is 1e15).
The fallback chain CholQR / CholQR2 -> shifted CholQR3 -> Householder runs automatically and
is recorded in ``info.fallbacks``. After the last pass, a condition estimate of its R (the last
Gram matrix's square root) decides whether the result is trusted: a pass on X with κ(X) = c
leaves ‖I − QᵀQ‖ ≈ u·c², so CholQR2/3 add a pass while κ_est(R_last) > ``ACCEPT_KAPPA``.

Inputs near overflow or underflow are rescaled by a power of two (exact) before the Gram matrix.

Cost per pass: 2mn² flops (mn² for the symmetric Gram product, mn² for the solve) + n³/3;
memory: one m×n work array + O(n²) (streamed: Q + O(block·n + n²); a streamed bf16/fp16 Q
recomputes the solves of the earlier passes on each block, one more mn² per pass, CholQR2 5mn²
in all, reading A three times at 2 bytes an entry).
"""

from __future__ import annotations

import math

from .. import _backend as B
from ._common import (
    Ctx,
    QRResult,
    decode_input,
    diagonal,
    eye,
    finish,
    kappa_est,
    mT,
    prepare,
    to_float,
    triu,
    unscale_r,
    zeros,
)
from ._operands import ArrayOperand, Operand, StreamedOperand, gram, right_solve, streamed_operand
from .householder import householder_core

__all__ = ["cholqr", "cholqr2", "scholqr3", "SHIFT_POLICIES", "gram", "right_solve",
           "cholqr_iterate", "Breakdown"]

SHIFT_POLICIES = ("breakdown", "always")
#: A pass whose R has κ_est above this leaves ‖I − QᵀQ‖ ≈ u·κ² > 64u: CholQR2/3 add a pass.
ACCEPT_KAPPA = 8.0
#: Fukaya et al.'s shift constant: s = 11(mn + n(n+1))·u·‖A‖₂².
FUKAYA_SHIFT_C = 11.0
#: Growth of the shift per Cholesky retry ("shift only on breakdown", as pyMOR does).
SHIFT_GROWTH = 10.0
#: Retries of a shifted Cholesky before falling back to Householder.
SHIFT_MAX_RETRIES = 12
#: Passes after which a CholeskyQR iteration that has not converged falls back to Householder.
MAX_PASSES = 6
#: One-pass CholQR keeps its Q when ‖I − QᵀQ‖_F <= this: its promise c·u·κ² (c =
#: C_CHOLQR_ORTH = 4 in analysis/bounds.py) at the end of its range κ = u^(−1/2)/10 (docs/qr.md),
#: the same in every format. Past it the passes continue as shifted CholQR3.
ONE_PASS_ORTH_MAX = 4.0 * 0.1 ** 2


# --------------------------------------------------------------------------- BLAS helpers
def _host_blas(ctx: Ctx, X) -> bool:
    """X is a 2-D host fp32/fp64 array of a library whose products and solves are direct BLAS
    calls (the backend's ``host_blas``; NumPy) and nothing is emulated: the passes may work in
    place and read finiteness off the Gram matrix."""
    return X.ndim == 2 and ctx.emulate is None and B.host_blas(X)


def _lambda_max(xp, G, iters: int = 30) -> float:
    """Largest eigenvalue of SPD-ish G by power iteration (an estimate of ‖A‖₂²)."""
    n = G.shape[-1]
    v = xp.ones((n, 1), dtype=G.dtype, device=B.device_of(G))
    lam = 0.0
    for _ in range(iters):
        w = xp.matmul(G, v)
        wmax = to_float(xp.max(xp.abs(w)))
        if wmax == 0 or not math.isfinite(wmax):
            break
        ws = w / wmax  # ‖w‖ without squaring entries near the overflow threshold
        nw = wmax * to_float(xp.sqrt(xp.sum(ws * ws)))
        lam = nw / max(to_float(xp.sqrt(xp.sum(v * v))), 1e-300)
        v = w / nw
    tr = to_float(xp.sum(diagonal(xp, G)))
    return max(lam, tr / max(n, 1))


# --------------------------------------------------------------------------- the engine
class Breakdown(Exception):
    """A CholeskyQR iteration (or a method built on it) cannot produce a trusted factor;
    ``reason`` says why. Not an error: the caller records it and takes its fallback."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def _continue_as_scholqr3(tr, reason: str, max_passes: int):
    """Record that one-pass CholQR does not trust its result and continues as shifted CholQR3;
    returns the new (shift policy, max passes, accepted kappa) of the iteration."""
    tr.fallbacks.append(f"{tr.method} -> scholqr3: {reason}")
    tr.method = "scholqr3"
    return "breakdown", max(max_passes, MAX_PASSES), ACCEPT_KAPPA


def cholqr_iterate(ctx: Ctx, A, *, min_passes: int, max_passes: int, accept: float | None,
                   shift: str | float | None, allow_fallback_shift: bool, A_raw=None,
                   need_q: bool = True, own: bool = False):
    """Run CholeskyQR passes on A (m×n, compute dtype) until accepted.

    Parameters
    ----------
    min_passes, max_passes : int
        Bounds on the number of passes (max_passes grows to ``MAX_PASSES`` once shifting starts).
    accept : float or None
        Stop after ``min_passes`` once the last unshifted pass has κ_est(R) <= accept (None: stop
        at ``min_passes``).
    shift : "breakdown", "always", a float, or None
        None: no shift (a breakdown ends the iteration unless ``allow_fallback_shift``).
    A : array or operand
        An array (wrapped in an :class:`~._operands.ArrayOperand`) or an
        :class:`~._operands.Operand` (a streamed one computes each pass over row blocks of A,
        the Dask one each Gram matrix as per-block tasks and a tree reduction).
    A_raw : array, optional
        The unchecked input, when the finiteness check was deferred to the Gram matrix.
    own : bool
        A is a private work array (a decoded copy) that the passes may overwrite.

    Returns
    -------
    (Q, R) or raises Breakdown(reason).
    """
    xp = ctx.xp
    tr = ctx.trace
    m, n = A.shape[-2], A.shape[-1]
    u_acc = ctx.u_work
    X = A if isinstance(A, Operand) else ArrayOperand(ctx, A, own)
    Rtot = None
    passes = 0
    shifted_any = False
    sexp = 0  # A is scaled by 2^sexp
    policy = shift
    while True:
        G = X.gram()
        if passes == 0:
            d = diagonal(xp, G)
            dmax = to_float(xp.max(d)) if n else 0.0
            if not math.isfinite(dmax):
                if A_raw is not None:
                    B.check_finite(xp, A_raw, "A")
                sexp = X.pow2_exponent()
            elif dmax < ctx.compute.tiny / u_acc or dmax > ctx.compute.max * u_acc:
                sexp = X.pow2_exponent()
            if sexp:
                X.scale(sexp)
                G = X.gram()
                tr.notes.append(f"A scaled by 2^{sexp} to keep the Gram matrix in range")
        s_used = 0.0
        if policy == "always" or (isinstance(policy, float) and policy > 0):
            s_used = _initial_shift(ctx, G, m, n) if policy == "always" else float(policy)
        L, info = _chol(ctx, G, s_used)
        if info != 0 and policy is None and allow_fallback_shift:
            tr.fallbacks.append(f"{tr.method} -> scholqr3: Cholesky breakdown in pass "
                                f"{passes + 1} (leading minor {info} not positive definite)")
            tr.method = "scholqr3"
            policy = "breakdown"
            max_passes = max(max_passes, MAX_PASSES)
            accept = accept or ACCEPT_KAPPA
        if info != 0 and policy is not None and policy != 0.0:
            s_used = s_used or _breakdown_shift(ctx, G, m, n)
            for _ in range(SHIFT_MAX_RETRIES):
                tr.shifts.append(s_used)
                L, info = _chol(ctx, G, s_used)
                if info == 0:
                    break
                s_used *= SHIFT_GROWTH
        elif s_used > 0:
            tr.shifts.append(s_used)
        if info != 0:
            raise Breakdown(f"Cholesky breakdown in pass {passes + 1} (leading minor {info} "
                             f"not positive definite"
                             + (", even after shifting)" if s_used else ")"))
        R = ctx.em(triu(xp, mT(xp, L)))
        kap = kappa_est(xp, R)
        if not kap * u_acc < 1.0:
            raise Breakdown(f"R of pass {passes + 1} is numerically singular "
                             f"(kappa estimate {kap:.3g})")
        if (accept is None and policy is None and allow_fallback_shift
                and u_acc * (kap / max(n, 1)) ** 2 > 1.0):
            # One pass leaves ‖I − QᵀQ‖ ≈ u·κ(R)²; κ₂(R) >= κ₁-estimate / n, so this Q would not
            # be orthonormal in any digit (Cholesky succeeded on a Gram matrix past u⁻¹).
            policy, max_passes, accept = _continue_as_scholqr3(
                tr, f"kappa estimate of R in pass {passes + 1} is {kap:.3g}; one pass would "
                    f"leave ||I - Q^T Q|| ~ u*kappa^2 >= 1", max_passes)
        passes += 1
        shifted_any = shifted_any or s_used > 0
        if policy == "always" or isinstance(policy, float):
            policy = "breakdown"  # the prescribed shift is for the first pass only
        Rtot = R if Rtot is None else ctx.em(xp.matmul(R, Rtot))
        want = max(min_passes, 3 if shifted_any else 0)
        done = passes >= want and s_used == 0 and (accept is None or kap <= accept)
        check = done and accept is None and policy is None and allow_fallback_shift
        if not (done and not need_q) or check:
            X.solve(R, kap)
        if check:
            # One pass is kept only if its Q is orthonormal to within its promise (checked on
            # the result: neither Cholesky's success nor the κ estimate of a Cholesky factor of
            # a rounded Gram matrix says that Q = A R⁻¹ is orthonormal).
            err = _orth_error(ctx, X)
            if not err <= ONE_PASS_ORTH_MAX:
                policy, max_passes, accept = _continue_as_scholqr3(
                    tr, f"||I - Q^T Q||_F = {err:.3g} after one pass (> {ONE_PASS_ORTH_MAX:g}: "
                        f"kappa(A) past u^(-1/2)/10)", max_passes)
                continue
        if done:
            break
        if passes >= max_passes:
            raise Breakdown(f"no acceptable pass after {passes} passes (kappa estimate of the "
                             f"last R {kap:.3g} > {accept})")
        if passes >= min_passes and s_used == 0 and accept is not None and passes >= want:
            tr.notes.append(f"pass {passes + 1} added: kappa estimate of R in pass {passes} is "
                            f"{kap:.3g} > {accept}")
    tr.passes = passes
    if sexp:
        Rtot = ctx.em(unscale_r(ctx, Rtot, -sexp))  # past the range: reported by finish
    return (X.value() if need_q else None), Rtot


def _orth_error(ctx: Ctx, X) -> float:
    """‖I − XᵀX‖_F of an operand (one Gram product, mn² flops; ``inf`` for a non-finite X)."""
    xp = ctx.xp
    G = X.gram(emulate=False)
    E = G - eye(xp, X.shape[-1], like=G)
    err = to_float(xp.sqrt(xp.sum(E * E)))
    return err if math.isfinite(err) else float("inf")


def _chol(ctx: Ctx, G, s: float):
    xp = ctx.xp
    if s:
        G = ctx.em(G + s * eye(xp, G.shape[-1], like=G))
    return B.cholesky(G, lower=True)


def _initial_shift(ctx: Ctx, G, m: int, n: int) -> float:
    """Fukaya et al.'s s = 11(mn + n(n+1))·u·‖A‖₂², u of the accumulating format."""
    return FUKAYA_SHIFT_C * (m * n + n * (n + 1)) * ctx.u_work * _lambda_max(ctx.xp, G)


def _breakdown_shift(ctx: Ctx, G, m: int, n: int) -> float:
    """First shift of the "shift only on breakdown" policy: n·u·‖A‖₂² (grown ×10 per retry)."""
    return max(n, 1) * ctx.u_work * _lambda_max(ctx.xp, G)


# --------------------------------------------------------------------------- completion
def complete_q(ctx: Ctx, Q, R):
    """Q (m×n orthonormal) -> m×m orthogonal [Q, Q⊥]; R padded with zero rows."""
    xp = ctx.xp
    m, n = Q.shape[-2], Q.shape[-1]
    if m == n:
        return Q, R
    Qc, _ = householder_core(ctx.sub("complete"), Q)
    Qfull = xp.concat([Q, Qc[..., :, n:]], axis=-1)
    Rfull = xp.concat([R, zeros(xp, (m - n, R.shape[-1]), like=R)], axis=-2)
    return Qfull, Rfull


def run_family(ctx: Ctx, A, *, min_passes, max_passes, accept, shift, allow_fallback_shift,
               A_raw=None, reload=None):
    """The engine + fallback to Householder + mode handling; returns (Q, R).

    ``A``: an array or a :class:`~._operands.StreamedOperand`. ``reload``: when given, A is a
    private copy the passes may overwrite (or an operand), and ``reload()`` returns A as an array
    for the Householder fallback.
    """
    tr = ctx.trace
    xp = ctx.xp
    m, n = A.shape[-2], A.shape[-1]
    tr.backend = ("lapack" if isinstance(A, StreamedOperand) or _host_blas(ctx, A)
                  else "blas")
    if n == 0 or m == 0:
        Q, R = householder_core(ctx, A)
        tr.passes = 0
        return Q, R
    try:
        Q, R = cholqr_iterate(ctx, A, min_passes=min_passes, max_passes=max_passes,
                              accept=accept, shift=shift, allow_fallback_shift=allow_fallback_shift,
                              A_raw=A_raw, need_q=ctx.mode != "r", own=reload is not None)
    except Breakdown as exc:
        if A_raw is not None:
            B.check_finite(xp, A_raw, "A")
        if reload is not None:
            A = reload()
        tr.fallbacks.append(f"{tr.method} -> householder: {exc.reason}")
        tr.method = "householder"
        tr.passes = 1
        return householder_core(ctx, A)
    if ctx.mode == "complete":
        Q, R = complete_q(ctx, Q, R)
    return Q, R


def _run(A, name, *, mode, storage, compute, emulate, min_passes, max_passes, accept, shift,
         allow_fallback_shift) -> QRResult:
    ctx, A0 = prepare(A, method=name, mode=mode, storage=storage, compute=compute,
                      emulate=emulate, tall_only=True, batch_ok=False, check=False, decode=False)
    A_raw = reload = None
    finite_known = B.dtype_kind(A) != "float"  # integer and boolean input: nothing to check
    # NumPy on the CPU: the passes stream over row blocks of A as it came (no decoded copy)
    Ac = None if mode == "complete" else streamed_operand(ctx, A0, need_q=mode != "r")
    if Ac is not None:
        A_raw = None if finite_known else A  # checked on the Gram matrix's diagonal

        def reload():
            return decode_input(ctx, A0)
    elif _host_blas(ctx, Ac := decode_input(ctx, A0)):
        # finiteness is checked on the Gram matrix's diagonal (NaN/inf reach it)
        A_raw = None if finite_known else A
        if Ac is not A0:  # a decoded copy (bf16/fp16 input, or a cast): the passes work in it
            def reload():
                return decode_input(ctx, A0)
    elif not finite_known:
        B.check_finite(ctx.xp, A, "A")
    Q, R = run_family(ctx, Ac, min_passes=min_passes, max_passes=max_passes, accept=accept,
                      shift=shift, allow_fallback_shift=allow_fallback_shift, A_raw=A_raw,
                      reload=reload)
    ctx.trace.kappa_est = kappa_est(ctx.xp, R)
    return finish(ctx, Q, R)


_PARAMS = """
    Parameters
    ----------
    A : array (m, n), m >= n
        Any supported library and real format (bf16/fp16 decoded exactly into ``compute``).
    mode : {"reduced", "complete", "r"}
        "complete" appends an orthonormal complement (Householder QR of Q, m²n extra flops).
    storage, compute, emulate : optional
        Returned format (default A's), arithmetic (fp32 for 16-bit A, else A's; the Gram matrix
        accumulates in it), and a format every stored intermediate (A, G, R, Q) is rounded to.
"""


def cholqr(A, *, mode: str = "reduced", storage=None, compute=None, emulate=None) -> QRResult:
    """One-pass CholeskyQR: G = AᵀA, R = chol(G), Q = AR⁻¹.
    {params}
    Returns
    -------
    QRResult
        On breakdown the chain shifted CholQR3 -> Householder runs (``info.fallbacks``).

    Notes
    -----
    Cost 2mn² + n³/3 flops and one reduction, plus mn² for the check of the result
    (‖I − QᵀQ‖_F <= ``ONE_PASS_ORTH_MAX`` = 0.04, else the passes continue as shifted CholQR3,
    recorded in ``info.fallbacks``). Bound (Yamamoto et al., ETNA 44, 2015):
    ‖I − QᵀQ‖₂ ≲ c·u·κ(A)², ‖A − QR‖ ≲ c·u‖A‖; needs κ(A) ≲ u^(−1/2).

    Examples
    --------
    >>> import numpy as np
    >>> A = np.random.default_rng(0).standard_normal((100, 5))
    >>> Q, R, info = cholqr(A)
    >>> info.method, info.passes
    ('cholqr', 1)
    """
    return _run(A, "cholqr", mode=mode, storage=storage, compute=compute, emulate=emulate,
                min_passes=1, max_passes=1, accept=None, shift=None, allow_fallback_shift=True)


def cholqr2(A, *, mode: str = "reduced", storage=None, compute=None, emulate=None) -> QRResult:
    """CholeskyQR2: two CholeskyQR passes, R = R₂R₁ (a third when the second is not trusted).
    {params}
    Returns
    -------
    QRResult
        ``info.passes`` is 2 (3 when κ_est of R₂ exceeds ``ACCEPT_KAPPA``). On Cholesky breakdown
        the iteration continues as shifted CholQR3 and, if that fails too, Householder runs;
        both are recorded in ``info.fallbacks``.

    Notes
    -----
    Cost 4mn² + 2n³/3 flops, two reductions, all BLAS-3. Bound (Yamamoto et al., ETNA 44,
    2015, Thm 4.1/5.1): ‖I − QᵀQ‖_F ≤ 6(mnu + n(n+1)u) and ‖A − QR‖_F ≤ 5n²u‖A‖₂ when
    8κ(A)√(mnu + n(n+1)u) ≤ 1; in practice O(u) while κ(A) ≲ u^(−1/2).

    Examples
    --------
    >>> import numpy as np
    >>> A = np.random.default_rng(0).standard_normal((1000, 20)).astype(np.float32)
    >>> Q, R, info = cholqr2(A)
    >>> float(np.linalg.norm(Q.T @ Q - np.eye(20), 2)) < 1e-5
    True
    """
    return _run(A, "cholqr2", mode=mode, storage=storage, compute=compute, emulate=emulate,
                min_passes=2, max_passes=3, accept=ACCEPT_KAPPA, shift=None,
                allow_fallback_shift=True)


def scholqr3(A, *, mode: str = "reduced", storage=None, compute=None, emulate=None,
             shift: str | float = "always") -> QRResult:
    """Shifted CholeskyQR3: a shifted first pass, then CholeskyQR2.
    {params}    shift : {{"always", "breakdown"}} or float
        "always": Fukaya et al.'s s = 11(mn + n(n+1))·u·‖A‖₂² on the first pass, with u of the
        accumulating format. "breakdown": no shift until Cholesky breaks down, then
        s₀ = n·u·‖A‖₂², ×10 per retry. A float: that shift on the first pass.

    Returns
    -------
    QRResult
        ``info.shifts`` lists the shifts tried; Householder runs if every retry breaks down.

    Notes
    -----
    Cost 6mn² + n³ flops, three reductions. Bound (Fukaya et al., SISC 42, 2020, Thm 4.2/4.3):
    O(u) orthogonality and residual for κ(A) ≲ u⁻¹ / (c·√(mn + n(n+1))); the Fukaya shift's
    m·n factor can make the shifted Q₁ too ill-conditioned for large m·n, the "breakdown"
    policy keeps the shift as small as Cholesky allows.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> U, _ = np.linalg.qr(rng.standard_normal((500, 10)))
    >>> A = U * np.logspace(0, -10, 10)
    >>> Q, R, info = scholqr3(A)
    >>> info.passes >= 3 and float(np.linalg.norm(Q.T @ Q - np.eye(10), 2)) < 1e-13
    True
    """
    if not (shift in SHIFT_POLICIES or isinstance(shift, (int, float))
            and not isinstance(shift, bool)):
        raise ValueError(f"shift must be one of {SHIFT_POLICIES} or a number >= 0, got "
                         f"{shift!r}")
    if isinstance(shift, (int, float)) and not isinstance(shift, str):
        if not shift >= 0:
            raise ValueError(f"shift must be >= 0, got {shift!r}")
        shift = float(shift)
    return _run(A, "scholqr3", mode=mode, storage=storage, compute=compute, emulate=emulate,
                min_passes=3 if shift == "always" or (isinstance(shift, float) and shift > 0)
                else 2, max_passes=MAX_PASSES, accept=ACCEPT_KAPPA, shift=shift,
                allow_fallback_shift=False)


for _f in (cholqr, cholqr2, scholqr3):
    _f.__doc__ = _f.__doc__.replace("{params}", _PARAMS).replace("{{", "{").replace("}}", "}")
