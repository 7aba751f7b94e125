"""Sketch-preconditioned CholeskyQR ("rand_cholqr").

    Y = S A            (k×n, k ≈ 2n; S a Gaussian or CountSketch embedding, k×m)
    R_s = qr(Y).R      (Householder on the small sketch)
    Q₀ = A R_s⁻¹       (well conditioned with high probability: κ(Q₀) = O(1))
    Q, R₁ = CholQR(Q₀) (a second CholeskyQR pass when κ_est(R₁) is not small)
    R = R₁ R_s

S is an ε-subspace embedding of range(A) with high probability, so κ(Q₀) ≤ (1+ε)/(1−ε) for
numerically full-rank A and the CholeskyQR pass on Q₀ is accurate: O(u) orthogonality and
residual for κ(A) up to ≈ u⁻¹ (Balabanov, arXiv 2210.09953; Higgins, Szyld, Boman, Yamazaki,
arXiv 2309.05868; Fan, Guo, Lin, "A novel randomized XR-based preconditioned CholeskyQR
algorithm", 2021). The sketch only has to capture the conditioning, so it may run in a lower
format (``sketch_format="fp16"`` or ``"bf16"``: S and A are rounded to it before the product, the
product accumulates in the compute format; fp16 is enough for κ ≲ 1e4, as measured for
mixed-precision randomized CholeskyQR, MRCQR, arXiv 2606.18411).

Sketches:

- ``"gaussian"``: S has i.i.d. N(0, 1/k) entries; Y costs 2kmn flops (one GEMM).
- ``"countsketch"``: each row of A is added, with a random sign, to one of k rows of Y
  (Clarkson & Woodruff 2013); O(mn) work; needs k ≳ n² for a worst-case embedding guarantee,
  k = 2n is used with the a-posteriori check below in practice.

A sketch that does not embed well shows up as an ill-conditioned R₁: the CholeskyQR iteration
then adds passes (and falls back to Householder if it cannot converge), recorded in ``info``.
"""

from __future__ import annotations

import math

import numpy as np

from .. import _backend as B
from ..precision import round_to
from ._common import QRResult, finish, kappa_est, pow2_rescaling, prepare, scale_pow2, unscale_r
from ._operands import ArrayOperand, Operand
from .cholesky import ACCEPT_KAPPA, MAX_PASSES, Breakdown, cholqr_iterate, complete_q
from .householder import householder_core

__all__ = ["rand_cholqr", "SKETCHES", "sketch_rows", "sketch_block", "sketch_preconditioned"]

SKETCHES = ("gaussian", "countsketch")
#: Sketch rows per column of A (k = SKETCH_OVERSAMPLING · n, at least n + 1).
SKETCH_OVERSAMPLING = 2


def _np_rng(rng):
    return rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)


def sketch_rows(m: int, n: int, sketch_size) -> int:
    """Rows k of the sketch: ``sketch_size`` (an int >= n, ValueError otherwise) or
    ``SKETCH_OVERSAMPLING``·n (at least n + 1), at most m."""
    if sketch_size is None:
        return min(m, max(SKETCH_OVERSAMPLING * n, n + 1))
    if not (isinstance(sketch_size, int) and n <= sketch_size):
        raise ValueError(f"sketch_size must be an int >= n = {n}, got {sketch_size!r}")
    return min(m, sketch_size)


def sketch_block(X, kind: str, k: int, gen: np.random.Generator, sketch_format=None):
    """S X (k×n) for a fresh S (k × rows of X) drawn from ``gen``: Gaussian N(0, 1/k) entries
    (2kmn flops, one GEMM) or a CountSketch (O(mn)); S and X rounded to ``sketch_format`` when
    given, the product in X's dtype. A sum of the row blocks' ``sketch_block`` with
    independent generators is the sketch of the whole matrix (the distributed sketch)."""
    xp = B.array_namespace(X)
    mi, dt = X.shape[0], X.dtype
    if sketch_format is not None:
        X = round_to(X, sketch_format)
    if kind == "gaussian":
        S = xp.asarray(gen.standard_normal((k, mi)) / math.sqrt(k), dtype=dt,
                       device=B.device_of(X))
        if sketch_format is not None:
            S = round_to(S, sketch_format)
        return xp.matmul(S, X)
    rows = gen.integers(0, k, size=mi)
    signs = gen.choice(np.array([-1.0, 1.0]), size=mi)
    return B.countsketch(X, rows, signs, k)


def sketch_preconditioned(ctx, X: Operand, Y, *, need_q: bool):
    """The steps after the sketch: R_s = qr(Y).R, X <- X R_s⁻¹, then the CholeskyQR passes
    (:func:`.cholesky.cholqr_iterate`) on the operand X; returns (Q or None, R₁R_s).

    Raises :class:`.cholesky.Breakdown` when R_s is numerically singular or the passes do not
    converge (the caller falls back to Householder). Shared by the in-memory method and the
    distributed one (:mod:`linalg_pc.distributed.qr`), which pass their own operands.
    """
    n = Y.shape[-1]
    _, Rs = householder_core(ctx.sub("r"), Y)
    Rs = ctx.em(Rs[:n, :])
    kap_s = kappa_est(ctx.xp, Rs)
    if not kap_s * ctx.u_work < 1.0:
        raise Breakdown(f"sketched R is numerically singular (kappa estimate {kap_s:.3g})")
    X.solve(Rs, kap_s)
    Q, R1 = cholqr_iterate(ctx, X, min_passes=1, max_passes=MAX_PASSES, accept=ACCEPT_KAPPA,
                           shift=None, allow_fallback_shift=False, need_q=need_q)
    ctx.trace.passes += 1
    return Q, ctx.em(ctx.xp.matmul(R1, Rs))


def rand_cholqr(A, *, mode: str = "reduced", storage=None, compute=None, emulate=None,
                sketch: str = "gaussian", sketch_size: int | None = None, sketch_format=None,
                rng=None) -> QRResult:
    """Sketch-preconditioned CholeskyQR.

    Parameters
    ----------
    A : array (m, n), m >= n
        Any supported library and real format.
    mode : {"reduced", "complete", "r"}
    storage, compute, emulate : optional
        Returned format, arithmetic (Gram matrices accumulate in it), emulated storage.
    sketch : {"gaussian", "countsketch"}
        The embedding S.
    sketch_size : int, optional
        Rows k of S (default 2n, at least n + 1, at most m).
    sketch_format : format, optional
        Lower format for the sketch product (S and A rounded to it), e.g. "fp16" or "bf16".
    rng : None, int or numpy.random.Generator
        Randomness of S (results depend on it only).

    Returns
    -------
    QRResult
        ``info.notes`` names the sketch; ``info.passes`` counts the CholeskyQR passes after
        preconditioning (+1 for the sketch-preconditioning solve).

    Notes
    -----
    Cost: sketch 2kmn (Gaussian) or mn (CountSketch) flops, R_s 2kn², preconditioning mn²,
    each CholeskyQR pass 2mn². Bound (Higgins et al. 2023, Thm 3.x): with probability ≥ 1 − δ,
    ‖I − QᵀQ‖ ≤ c·(mn + n(n+1))·u and ‖A − QR‖ ≤ c·n²·u‖A‖ for κ(A) ≲ u⁻¹·(1−ε)/(1+ε)/poly(m,n).

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> U, _ = np.linalg.qr(rng.standard_normal((2000, 20)))
    >>> A = U * np.logspace(0, -12, 20)
    >>> Q, R, info = rand_cholqr(A, rng=1)
    >>> float(np.linalg.norm(Q.T @ Q - np.eye(20), 2)) < 1e-13
    True
    """
    if sketch not in SKETCHES:
        raise ValueError(f"sketch must be one of {SKETCHES}, got {sketch!r}")
    ctx, Ac = prepare(A, method="rand_cholqr", mode=mode, storage=storage, compute=compute,
                      emulate=emulate, tall_only=True, batch_ok=False)
    xp = ctx.xp
    tr = ctx.trace
    tr.backend = "blas"
    m, n = Ac.shape
    k = sketch_rows(m, n, sketch_size)
    sfmt = None
    if sketch_format is not None:
        from .._formats import get_format

        sfmt = get_format(sketch_format, argname="sketch_format")
    tr.notes.append(f"{sketch} sketch, {k} rows" + (f", in {sfmt.name}" if sfmt else ""))
    if m == 0 or n == 0:
        Q, R = householder_core(ctx, Ac)
        tr.passes = 0
        tr.kappa_est = kappa_est(xp, R)
        return finish(ctx, Q, R)
    sexp = pow2_rescaling(ctx, Ac, "the Gram matrix")
    As = ctx.em(scale_pow2(Ac, sexp)) if sexp else Ac
    try:
        Y = sketch_block(As, sketch, k, _np_rng(rng), sfmt)
        if sfmt is not None:
            Y = round_to(Y, sfmt)
        Q, R = sketch_preconditioned(ctx, ArrayOperand(ctx, As, As is not Ac), ctx.em(Y),
                                     need_q=ctx.mode != "r")
        R = ctx.em(unscale_r(ctx, R, -sexp)) if sexp else R  # past the range: reported by finish
    except Breakdown as exc:
        tr.fallbacks.append(f"rand_cholqr -> householder: {exc.reason}")
        tr.method = "householder"
        tr.passes = 1
        Q, R = householder_core(ctx, Ac)
        tr.kappa_est = kappa_est(xp, R)
        return finish(ctx, Q, R)
    if ctx.mode == "complete":
        Q, R = complete_q(ctx, Q, R)
    tr.kappa_est = kappa_est(xp, R)
    return finish(ctx, Q, R)
