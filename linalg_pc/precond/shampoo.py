"""Shampoo: the gradient's momentum preconditioned by inverse roots of Kronecker factors,
with the step length grafted from Adam.

Per step, with G the gradient (work shape, k axes), factors K_a and their eigenpairs
(Q_a, λ_a) from the last refresh:

    m ← β₁m + (1−β₁)G,  v ← β₂v + (1−β₂)G²       (bias-corrected m̂, v̂ when correct_bias)
    P = m̂ ×_a Q_a diag((λ_a + ε_K)^e) Q_aᵀ         (every factored axis; e = ``exponent``)
    D = P·‖A‖_F/‖P‖_F,  A = m̂/(√v̂ + ε)              (Adam grafting; D = P without it)
    p ← (p − ηD)(1 − η·wd)
    K_a ← βK_a + (1−β)G_(a)G_(a)ᵀ

The inverse roots come from the eigenpairs of each factor, recomputed every T steps: by eigh
(``refresh="eigh"``, default: the exact roots of the Shampoo references; fp64 retry), or by one
orthogonal-iteration step Q ← qr(KQ) with λ the Rayleigh quotients diag(QᵀKQ)
(``refresh="qr"``, cheaper, exact in the limit of a slowly moving factor). The first gradient
only builds the factors and their eigenpairs (no parameter update, as in SOAP; Distributed
Shampoo instead takes grafted steps until its first root).

The exponent: −1/(2k) per factor for a k-axis parameter in the original paper (−1/4 for a
matrix); −1/2 per side is the variant SOAP relates to Adafactor in the eigenbasis.

Cost per step (m×n parameter): 4 products of a factor with the gradient (the roots applied as
Q diag(r) Qᵀ, two per axis) + 2 (statistics); per refresh an eigh (≈ 9d³) per factor.
State: factors, bases, eigenvalues, and Adam's two moments in the parameter's shape.

References
----------
Gupta, Koren, Singer, "Shampoo: Preconditioned Stochastic Tensor Optimization", ICML 2018.
Anil, Gupta, Koren, Regan, Singer, "Scalable Second Order Optimization for Deep Learning",
arXiv 2002.09018 (2020): grafting, ε, exponents.
Shi et al., "A Distributed Data-Parallel PyTorch Implementation of the Distributed Shampoo
Optimizer", arXiv 2309.06497 (2023).
"""

from __future__ import annotations

from .. import _backend as B
from ._config import check_nonneg, check_real
from ._eigen import eigh_descending, orthogonal_iteration, rayleigh, where_member
from ._store import ema_into, load, store_into
from ._tensor import mode_apply, scale_axis
from ._transform import KroneckerTransform

__all__ = ["shampoo", "Shampoo"]

GRAFTINGS = ("adam", None)
REFRESHES = ("eigh", "qr")


class Shampoo(KroneckerTransform):
    """The Shampoo transform (build it with :func:`shampoo`)."""

    method = "shampoo"
    moment_names = ("exp_avg", "exp_avg_sq")
    rotate_momentum = False
    track_estimates = False  # the eigenvalues are the estimates

    def __init__(self, *, exponent, matrix_eps, grafting, refresh, **kw):
        super().__init__(**kw)
        if exponent is not None:
            exponent = check_real(exponent, "exponent")
            if exponent >= 0:
                raise ValueError(f"exponent must be negative (an inverse root), got {exponent!r}")
        self.exponent = exponent
        self.matrix_eps = check_nonneg(matrix_eps, "matrix_eps")
        if grafting not in GRAFTINGS:
            raise ValueError(f"grafting must be one of {GRAFTINGS}, got {grafting!r}")
        if refresh not in REFRESHES:
            raise ValueError(f"refresh must be one of {REFRESHES}, got {refresh!r}")
        self.grafting, self.refresh = grafting, refresh

    def power(self, order: int) -> float:
        """The exponent applied to each factor of a parameter with ``order`` axes."""
        return self.exponent if self.exponent is not None else -1.0 / (2 * order)

    def _init_eigenvalues(self, xp, layout, cdt, dev):
        return [xp.zeros((*layout.batch, d), dtype=cdt, device=dev) if f else None
                for d, f in zip(layout.work_shape, layout.factored)]

    def _after_eigh(self, xp, state, a, w, good):
        store_into(state.eigenvalues[a], xp.maximum(w, xp.zeros_like(w)))

    def _step_size(self, xp, state, ctx):
        return self.hp.lr  # the bias correction is folded into m̂ and v̂

    def _direction(self, xp, G, state, ctx):
        hp = self.hp
        comp = hp.compute
        lay = state.layout
        nb = lay.nb
        b1, c1 = ctx.decay(hp.beta1)
        b2, c2 = ctx.decay(hp.beta2)
        m = load(ema_into(state.moments["exp_avg"], G, b1, c1, comp), comp)
        v = load(ema_into(state.moments["exp_avg_sq"], G * G, b2, c2, comp), comp)
        if hp.correct_bias:
            cnt = xp.astype(state.count, ctx.dtype)
            one = ctx.const(1.0)
            bc1 = one - xp.pow(ctx.const(hp.beta1), cnt)
            bc2 = one - xp.pow(ctx.const(hp.beta2), cnt)
            m = m / xp.where(bc1 > 0, bc1, one)
            v = v / xp.where(bc2 > 0, bc2, one)
        e = self.power(lay.order)
        P = m
        for a, Q in enumerate(self.bases(state)):
            if Q is None:
                continue
            r = xp.pow(state.eigenvalues[a] + self.matrix_eps, ctx.const(e))
            r = xp.where(xp.isfinite(r), r, xp.zeros_like(r))  # λ + ε_K = 0: pseudo-inverse
            if self.grafting is not None:
                # grafting fixes the length: scale each root to max 1 so that tiny eigenvalues
                # (subnormal λ, ε_K = 0) cannot overflow the product before the norms are taken
                rmax = xp.max(r, axis=-1, keepdims=True)
                r = r / xp.where(rmax > 0, rmax, xp.ones_like(rmax))
            P = mode_apply(xp, P, Q, a, nb, transpose=True)
            P = scale_axis(xp, P, r, a, nb)
            P = mode_apply(xp, P, Q, a, nb)
        if self.grafting == "adam":
            A = m / (xp.sqrt(v) + hp.eps)
            axes = tuple(range(nb, P.ndim))
            na = xp.sqrt(xp.sum(A * A, axis=axes, keepdims=True))
            npn = xp.sqrt(xp.sum(P * P, axis=axes, keepdims=True))
            P = P * xp.where(npn > 0, na / xp.where(npn > 0, npn, ctx.const(1.0)),
                             xp.zeros_like(npn))
        return P

    def _refresh_axis(self, xp, state, a, K, Q):
        comp = self.hp.compute
        if self.refresh == "eigh":
            w, V, good = eigh_descending(xp, K, comp, Q)
            lam = state.eigenvalues[a]
            mask = xp.asarray(good, device=B.device_of(lam))
            store_into(lam, xp.where(mask[..., None], xp.maximum(w, xp.zeros_like(w)), lam))
            store_into(state.bases[a].Q, V)
            return good
        Qn, _, good = orthogonal_iteration(xp, K, Q, comp, sort=False)
        lam = state.eigenvalues[a]
        w = rayleigh(xp, K, Qn)
        mask = xp.asarray(good, device=B.device_of(lam))
        store_into(lam, xp.where(mask[..., None], xp.maximum(w, xp.zeros_like(w)), lam))
        store_into(state.bases[a].Q, where_member(xp, mask, Qn, Q))
        return good

    def _after_subspace(self, xp, state, a, J, eig, scatter):
        lam = state.eigenvalues[a]
        store_into(lam, scatter(xp, lam, xp.maximum(eig, xp.zeros_like(eig)), J, -1))

    def _after_fallback(self, xp, state, a, mask):
        lam = state.eigenvalues[a]
        store_into(lam, xp.where(mask[..., None], xp.ones_like(lam), lam))


def shampoo(lr: float = 1e-3, betas=(0.9, 0.999), shampoo_beta: float | None = None,
            eps: float = 1e-8, weight_decay: float = 0.01, precondition_frequency: int = 10,
            max_precond_dim: int = 10000, merge_dims: bool = False,
            precondition_1d: bool = False, normalize_grads: bool = False,
            correct_bias: bool = True, *, exponent: float | None = None,
            matrix_eps: float = 1e-12, grafting: str | None = "adam", refresh: str = "eigh",
            storage=None, compute="fp32", refresh_tol: float | None = None,
            max_failures: int = 3, basis_update: str = "full", basis_k=None,
            basis_policy: str = "topk-cyclic", basis_scheme: str | None = None) -> Shampoo:
    """The Shampoo transform with Adam grafting.

    Parameters
    ----------
    lr : float
        Learning rate η (default 1e-3: with grafting the step has Adam's length).
    betas : (float, float)
        β₁ of the momentum and β₂ of the grafting's second moment (default (0.9, 0.999)).
    shampoo_beta : float, optional
        Decay β of the factors (default β₂).
    eps : float
        Adam's ε in the grafting.
    weight_decay : float
        Decoupled weight decay p ← p·(1 − η·wd) after the step (default 0.01).
    precondition_frequency : int
        Period T of the eigendecompositions (default 10).
    max_precond_dim, merge_dims, precondition_1d, normalize_grads
        As in :func:`linalg_pc.precond.soap`.
    correct_bias : bool
        Bias-correct m and v (t counts steps after the first).
    exponent : float, optional
        Power applied to each factor (negative); default −1/(2k) for k axes (−1/4 for a
        matrix, the original paper); −0.5 gives the "power 1/2" variant.
    matrix_eps : float
        ε_K added to the eigenvalues before the power (default 1e-12; 0 with a zero eigenvalue
        gives the pseudo-inverse root).
    grafting : {"adam", None}
        Graft the step length of Adam (layer-wise Frobenius norm), or none.
    refresh : {"eigh", "qr"}
        How the eigenpairs are recomputed every T steps.
    storage, compute, refresh_tol, max_failures, basis_update, basis_k, basis_policy,
    basis_scheme
        As in :func:`linalg_pc.precond.soap` (a subspace refresh sets the eigenvalues of the
        refreshed columns to their Rayleigh quotients; ``refresh`` applies to full ones).

    Returns
    -------
    Shampoo
    """
    return Shampoo(lr=lr, betas=betas, shampoo_beta=shampoo_beta, eps=eps,
                   weight_decay=weight_decay, precondition_frequency=precondition_frequency,
                   max_precond_dim=max_precond_dim, merge_dims=merge_dims,
                   precondition_1d=precondition_1d, normalize_grads=normalize_grads,
                   correct_bias=correct_bias, storage=storage, compute=compute,
                   refresh_tol=refresh_tol, max_failures=max_failures, exponent=exponent,
                   matrix_eps=matrix_eps, grafting=grafting, refresh=refresh,
                   basis_update=basis_update, basis_k=basis_k, basis_policy=basis_policy,
                   basis_scheme=basis_scheme)
