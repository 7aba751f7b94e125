"""SOAP: Adam run in the eigenbasis of Shampoo's factors.

Per step, with G the gradient (work shape) and Q_a the eigenbases:

    G̃ = G ×_a Q_aᵀ (every factored axis)        m̃ ← β₁m̃ + (1−β₁)G̃      v ← β₂v + (1−β₂)G̃²
    N = (m̃ / (√v + ε)) ×_a Q_a                   p ← (p − η_t N)(1 − η·wd)
    K_a ← βK_a + (1−β) G_(a)G_(a)ᵀ                (after the parameter update)

with η_t = η·√(1−β₂ᵗ)/(1−β₁ᵗ). Every T steps each basis is refreshed by one step of orthogonal
iteration after sorting its columns by the Rayleigh quotients diag(QᵀKQ) (descending); v is
permuted with the columns. The first gradient only builds K and Q = eigh(K) (fp64 retry).

The reference code keeps the momentum in the parameter's space and projects it every step;
here it is kept in the eigenbasis (m̃ = m ×_a Q_aᵀ, linear, so equal in exact arithmetic) and
rotated by Q_newᵀQ_old at each refresh: per step 6 products of a d_a-matrix with the gradient
(2 projections, 2 back-projections, 2 Gram matrices for a matrix parameter) instead of 8, plus
2 per refresh.

Cost per step (m×n parameter): 4mn(m+n) flops for the projections + 2mn(m+n) for the
statistics; per refresh 2(m³+n³) (K Q) + QR (≈ 8/3(m³+n³)) + 2mn(m+n) + 2(m³+n³) (rotating m̃).
State: factors m²+n², bases m²+n², two moments 2mn, in their storage formats.

References
----------
Vyas, Morwani, Zhao, Shapira, Brandfonbrener, Janson, Kakade, "SOAP: Improving and Stabilizing
Shampoo using Adam", ICLR 2025 (arXiv 2409.11321); reference code nikhilvyas/SOAP.
"""

from __future__ import annotations

from . import _fused
from ._store import ema_into, load
from ._tensor import mode_apply
from ._transform import KroneckerTransform

__all__ = ["soap", "SOAP"]


class SOAP(KroneckerTransform):
    """The SOAP transform (build it with :func:`soap`)."""

    method = "soap"
    moment_names = ("exp_avg", "exp_avg_sq")
    sort_refresh = True
    supports_factor_free = True

    def _direction(self, xp, G, state, ctx):
        hp = self.hp
        comp = hp.compute
        nb = state.layout.nb
        Qs = self.bases(state)
        mm = _fused.product if ctx.fused else None
        Gt = G
        for a, Q in enumerate(Qs):
            if Q is not None:
                Gt = mode_apply(xp, Gt, Q, a, nb, transpose=True, mm=mm)
        self._projected(xp, Gt, state, ctx)
        N = None
        if ctx.fused:  # one pass: both moments and the quotient (into G̃ when it is ours)
            N = _fused.adam_direction(Gt, state.moments["exp_avg"],
                                      state.moments["exp_avg_sq"], hp.beta1, hp.beta2,
                                      hp.eps, comp, inplace=Gt is not G)
        if N is None:
            b1, c1 = ctx.decay(hp.beta1)
            b2, c2 = ctx.decay(hp.beta2)
            N = _fused.device_adam(Gt, state.moments["exp_avg"],
                                   state.moments["exp_avg_sq"], b1, c1, b2, c2, hp.eps, comp)
        if N is None:
            m = ema_into(state.moments["exp_avg"], Gt, b1, c1, comp)
            v = ema_into(state.moments["exp_avg_sq"], Gt * Gt, b2, c2, comp)
            N = load(m, comp) / (xp.sqrt(load(v, comp)) + hp.eps)
        for a, Q in enumerate(Qs):
            if Q is not None:
                N = mode_apply(xp, N, Q, a, nb, mm=mm)
        return N


def soap(lr: float = 3e-3, betas=(0.95, 0.95), shampoo_beta: float | None = None,
         eps: float = 1e-8, weight_decay: float = 0.01, precondition_frequency: int = 10,
         max_precond_dim: int = 10000, merge_dims: bool = False, precondition_1d: bool = False,
         normalize_grads: bool = False, correct_bias: bool = True, *, storage=None,
         compute="fp32", refresh_tol: float | None = None, max_failures: int = 3,
         basis_update: str = "full", basis_k=None, basis_policy: str = "topk-cyclic",
         basis_scheme: str | None = None, factor_free: bool = False) -> SOAP:
    """The SOAP transform: ``state = tx.init(param)``; ``update, state = tx.update(grad,
    state, param)``; ``param + update`` is the new parameter.

    Parameters
    ----------
    lr : float
        Learning rate η (default 3e-3, the reference code's).
    betas : (float, float)
        Adam's (β₁, β₂) in the eigenbasis (default (0.95, 0.95)).
    shampoo_beta : float, optional
        Decay β of the factors (default β₂).
    eps : float
        Adam's ε (> 0).
    weight_decay : float
        Decoupled weight decay: p ← p·(1 − η·wd) after the step (default 0.01).
    precondition_frequency : int
        Refresh period T of the eigenbases (default 10).
    max_precond_dim : int
        Axes longer than this get no factor (identity basis; default 10000).
    merge_dims : bool
        Merge consecutive small axes (product ≤ max_precond_dim) before factoring.
    precondition_1d : bool
        Give 1-D parameters a factor (default: Adam on them).
    normalize_grads : bool
        Divide the direction by its RMS (+ε) per parameter.
    correct_bias : bool
        Adam's bias correction η·√(1−β₂ᵗ)/(1−β₁ᵗ) (t counts steps after the first).
    storage : str or dict, optional
        Storage format of each kind of state ("factors", "basis", "moments"): one format for
        all ("fp32", "bf16", "fp16"; "fp64" with compute fp64) or a dict; default: compute.
    compute : {"fp32", "fp64"}
        Arithmetic format of every statistic, product and decomposition (never TF32).
    refresh_tol : float, optional
        Skip a refresh of a factor while ‖offdiag(QᵀKQ)‖_F ≤ refresh_tol·‖QᵀKQ‖_F (Meta's
        Distributed Shampoo criterion, :func:`linalg_pc.eigenbasis_quality`).
    max_failures : int
        Consecutive failed refreshes of an axis before its basis falls back to the identity.
    basis_update : {"full", "subspace"}
        How a refresh updates an eigenbasis: every column by one orthogonal-iteration step
        (default, as the reference codes), or k columns by a QR in their subspace
        (:func:`linalg_pc.subspace_refresh`; 2d²k flops instead of ≈ 4.7d³).
    basis_k : int or float, optional
        Columns per subspace refresh: a count, or a fraction of d (default 1/8).
    basis_policy : str
        Which columns a subspace refresh takes (:data:`linalg_pc.COLUMN_POLICIES`; default
        "topk-cyclic", the best of the basis studies, docs/basis.md).
    basis_scheme : str, optional
        Storage scheme of the eigenbases (:mod:`linalg_pc.basis.state`): "dense" (the basis
        storage format), "fp32", "bf16", "bf16-project", "bf16-rectify"; default from
        ``storage``'s basis format ("bf16-project" for a bf16 basis refreshed in subspaces,
        which would drift as plain "bf16").
    factor_free : bool
        Keep no d×d factors: only the bases, per-column eigenvalue estimates (the diagonal of
        QᵀKQ, decayed like the factor) and a k×k block Q_Jᵀ K Q_J accumulated for the columns
        of the next refresh (``linalg_pc.precond._factor_free``: what it approximates and
        costs; docs/optimizers.md: the measured quality). Needs ``basis_update="subspace"``;
        saves d² − k² entries per factored axis (8 of 24 bytes per parameter element for a
        square fp32 parameter at k = d/8).

    Returns
    -------
    SOAP
        The transform (``init``, ``update``).

    Examples
    --------
    >>> import numpy as np, linalg_pc as lpc
    >>> tx = lpc.precond.soap(lr=1e-2)
    >>> p = np.ones((4, 3), dtype=np.float32)
    >>> state = tx.init(p)
    >>> for _ in range(3):
    ...     upd, state = tx.update(2 * p, state, p)
    ...     p = p + upd
    >>> bool(np.all(p < 1))
    True
    """
    return SOAP(lr=lr, betas=betas, shampoo_beta=shampoo_beta, eps=eps,
                weight_decay=weight_decay, precondition_frequency=precondition_frequency,
                max_precond_dim=max_precond_dim, merge_dims=merge_dims,
                precondition_1d=precondition_1d, normalize_grads=normalize_grads,
                correct_bias=correct_bias, storage=storage, compute=compute,
                refresh_tol=refresh_tol, max_failures=max_failures, basis_update=basis_update,
                basis_k=basis_k, basis_policy=basis_policy, basis_scheme=basis_scheme,
                factor_free=factor_free)
