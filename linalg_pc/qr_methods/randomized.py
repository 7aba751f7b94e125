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
from .cholesky import (
    ACCEPT_KAPPA,
    MAX_PASSES,
    _Breakdown,
    cholqr_iterate,
    complete_q,
    right_solve,
)
from .householder import householder_core

__all__ = ["rand_cholqr", "SKETCHES"]

SKETCHES = ("gaussian", "countsketch")
#: Sketch rows per column of A (k = SKETCH_OVERSAMPLING · n, at least n + 1).
SKETCH_OVERSAMPLING = 2


def _np_rng(rng):
    return rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)


def _sketch(ctx, A, kind: str, k: int, rng, sketch_format):
    """Y = S A in the compute dtype (S and A rounded to ``sketch_format`` when given)."""
    xp = ctx.xp
    m, n = A.shape
    gen = _np_rng(rng)
    dev = B.device_of(A)
    X = A if sketch_format is None else round_to(A, sketch_format)
    if kind == "gaussian":
        S = gen.standard_normal((k, m)) / math.sqrt(k)
        S = xp.asarray(S, dtype=A.dtype, device=dev)
        if sketch_format is not None:
            S = round_to(S, sketch_format)
        Y = xp.matmul(S, X)
    else:
        rows = gen.integers(0, k, size=m)
        signs = gen.choice(np.array([-1.0, 1.0]), size=m)
        Y = B.countsketch(X, rows, signs, k)
    if sketch_format is not None:
        Y = round_to(Y, sketch_format)
    return ctx.em(Y)


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
    if sketch_size is None:
        k = min(m, max(SKETCH_OVERSAMPLING * n, n + 1))
    else:
        if not (isinstance(sketch_size, int) and n <= sketch_size):
            raise ValueError(f"sketch_size must be an int >= n = {n}, got {sketch_size!r}")
        k = min(m, sketch_size)
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
        Y = _sketch(ctx, As, sketch, k, rng, sfmt)
        _, Rs = householder_core(ctx.sub("r"), Y)
        Rs = ctx.em(Rs[:n, :])
        kap_s = kappa_est(xp, Rs)
        if not kap_s * ctx.u_work < 1.0:
            raise _Breakdown(f"sketched R is numerically singular (kappa estimate {kap_s:.3g})")
        Q0 = ctx.em(right_solve(ctx, As, Rs, own=As is not Ac, kap=kap_s))
        Q, R1 = cholqr_iterate(ctx, Q0, min_passes=1, max_passes=MAX_PASSES,
                               accept=ACCEPT_KAPPA, shift=None, allow_fallback_shift=False,
                               need_q=ctx.mode != "r")
        tr.passes += 1
        R = ctx.em(xp.matmul(R1, Rs))
        R = ctx.em(unscale_r(ctx, R, -sexp)) if sexp else R  # past the range: reported by finish
    except _Breakdown as exc:
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
