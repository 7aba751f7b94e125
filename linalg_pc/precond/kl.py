"""KL-Shampoo and KL-SOAP: Kronecker factors estimated by the joint KL-divergence optimum.

With the current bases Q_a and eigenvalue estimates λ_a of every axis, s_a = λ_a^(−1/2)
(clamped at c_a = max(10, min(d_a, 4000))), and the gradient G of N entries, each step

    C = G ×_b Q_bᵀ (every factored axis)                        (the gradient in the eigenbasis)
    m̃ ← β₁m̃ + (1−β₁)C
    KL-Shampoo:  D = (m̃ ⊙ S / (1 + ε S)) ×_b Q_b,  S = ⊗_b s_b  (= m̃/(√(⊗λ) + ε))
    KL-SOAP:     v ← β₂v + (1−β₂)C²,  D = (m̃ / (√v + ε)) ×_b Q_b
    p ← (p − η D)(1 − η·wd)
then, for every factored axis a, with H_a = G ×_{b≠a} diag(s_b)Q_bᵀ,
    S_a ← βS_a + (1−β)·(d_a/N)·H_a,(a) H_a,(a)ᵀ
(2-D: S_L ← βS_L + (1−β)/n·G Q_R Λ_R⁻¹ Q_Rᵀ Gᵀ),
and for every axis (a factor-free axis keeps a diagonal λ with the identity basis)
    λ_a ← max(βλ_a + (1−β)·mean_{others}(C² ⊙ ⊗_{b≠a} s_b²), c_a⁻²).
Every T steps each basis is refreshed by one orthogonal-iteration step Q_a ← qr(S_a Q_a),
without sorting: λ stays tied to its column; m̃ is rotated into the new basis (the reference
code keeps KL-Shampoo's momentum in the parameter's space: equal in exact arithmetic). The first
gradient only sets S_a = (1−β)(d_a/N) G_(a)G_(a)ᵀ, Q_a = eigh(S_a) and λ = ``init_factor``.

Cost per step (m×n parameter): 2mn(m+n) (C) + 2mn(m+n) (H) + 2mn(m+n) (S) + 2mn(m+n) (back),
less one product reused between C and H: ≈ 7 products of a factor with the gradient; per
refresh as SOAP. State: S_a and Q_a per factored axis, λ_a per axis, m̃ (and v for KL-SOAP).

References
----------
Lin, Lowe, Dangel, Eschenhagen, Xu, Grosse, "Understanding and Improving Shampoo and SOAP via
Kullback-Leibler Minimization", ICLR 2026 (arXiv 2509.03378); reference code
yorkerlin/KL-Methods.
"""

from __future__ import annotations

from . import _fused
from ._config import check_positive
from ._store import ema_into, load, store_into
from ._tensor import axis_vector, mode_apply, mode_gram, reduce_except, scale_axis
from ._transform import KroneckerTransform

__all__ = ["kl_shampoo", "kl_soap", "KLShampoo", "KLSOAP"]


class _KL(KroneckerTransform):
    rotate_momentum = True
    sort_refresh = False
    track_estimates = False  # λ is the estimate

    def __init__(self, *, init_factor, max_clamp, **kw):
        super().__init__(**kw)
        self.init_factor = check_positive(init_factor, "init_factor")
        self.max_clamp = None if max_clamp is None else check_positive(max_clamp, "max_clamp")

    def _floor(self, d: int) -> float:
        """Smallest λ kept: λ^(−1/2) ≤ max(10, min(d, max_clamp))."""
        if self.max_clamp is None:
            return 0.0
        c = max(10.0, min(float(d), self.max_clamp))
        return 1.0 / (c * c)

    def _init_eigenvalues(self, xp, layout, cdt, dev):
        return [xp.full((*layout.batch, d), self.init_factor, dtype=cdt, device=dev)
                for d in layout.work_shape]

    def _first_factor(self, xp, G, a, lay):
        d = lay.work_shape[a]
        return ((1.0 - self.hp.shampoo_beta) * d / lay.size) * mode_gram(xp, G, a, lay.nb)

    def _scales(self, xp, state):
        return [1.0 / xp.sqrt(lam) for lam in state.eigenvalues]

    def _project(self, xp, G, state, ctx):
        """C = G in the eigenbasis; keeps G projected on all axes but the last for H."""
        nb = state.layout.nb
        Qs = self.bases(state)
        k = len(Qs)
        C = G
        ctx.partial = None
        for a, Q in enumerate(Qs):
            if a == k - 1:
                ctx.partial = C
            if Q is not None:
                C = mode_apply(xp, C, Q, a, nb, transpose=True)
        ctx.C, ctx.Qs = C, Qs
        return C

    def _back(self, xp, X, state, ctx):
        nb = state.layout.nb
        for a, Q in enumerate(ctx.Qs):
            if Q is not None:
                X = mode_apply(xp, X, Q, a, nb)
        return X

    def _accumulate(self, xp, G, state, ctx):
        hp = self.hp
        comp = hp.compute
        lay = state.layout
        nb, k = lay.nb, lay.order
        b, c = ctx.decay(hp.shampoo_beta)
        s = self._scales(xp, state)
        Qs = ctx.Qs
        for a, S in enumerate(state.factors):
            if S is None:
                continue
            if a == k - 1 and ctx.partial is not None:
                H = ctx.partial
                for bb in range(k - 1):
                    H = scale_axis(xp, H, s[bb], bb, nb)
            else:
                H = G
                for bb in range(k):
                    if bb == a:
                        continue
                    if Qs[bb] is not None:
                        H = mode_apply(xp, H, Qs[bb], bb, nb, transpose=True)
                    H = scale_axis(xp, H, s[bb], bb, nb)
            scale = lay.work_shape[a] / lay.size
            new = scale * mode_gram(xp, H, a, nb)
            if not (ctx.fused and _fused.ema(S, new, hp.shampoo_beta, comp)):
                ema_into(S, new, b, c, comp)
        C2 = ctx.C * ctx.C
        s2 = [axis_vector(xp, si * si, a, k) for a, si in enumerate(s)]
        new = []
        for a in range(k):
            W = C2
            for bb in range(k):
                if bb != a:
                    W = W * s2[bb]
            new.append(reduce_except(xp, W, a, nb))
        for a, lam in enumerate(state.eigenvalues):
            upd = b * lam + c * new[a]
            # statistics that overflow (C² of a huge finite gradient) leave λ as it was
            upd = xp.where(xp.isfinite(upd), upd, lam)
            floor = self._floor(lay.work_shape[a])
            if floor > 0:  # the clamp belongs to the step: a skipped step leaves λ as it was
                upd = xp.where(ctx.ok, xp.maximum(upd, ctx.const(floor)), lam)
            store_into(lam, upd)

    def _after_fallback(self, xp, state, a, mask):
        lam = state.eigenvalues[a]
        store_into(lam, xp.where(mask[..., None], xp.full_like(lam, self.init_factor), lam))


class KLShampoo(_KL):
    """The KL-Shampoo transform (build it with :func:`kl_shampoo`)."""

    method = "kl_shampoo"
    moment_names = ("exp_avg",)

    def _direction(self, xp, G, state, ctx):
        hp = self.hp
        C = self._project(xp, G, state, ctx)
        b1, c1 = ctx.decay(hp.beta1)
        m = ema_into(state.moments["exp_avg"], C, b1, c1, hp.compute)
        lay = state.layout
        S = None
        for a, si in enumerate(self._scales(xp, state)):
            v = axis_vector(xp, si, a, lay.order)
            S = v if S is None else S * v
        Dt = load(m, hp.compute) * (S / (1.0 + hp.eps * S))
        return self._back(xp, Dt, state, ctx)



class KLSOAP(_KL):
    """The KL-SOAP transform (build it with :func:`kl_soap`)."""

    method = "kl_soap"
    moment_names = ("exp_avg", "exp_avg_sq")

    def _direction(self, xp, G, state, ctx):
        hp = self.hp
        comp = hp.compute
        C = self._project(xp, G, state, ctx)
        Dt = None
        if ctx.fused:  # one pass (C is read again by the statistics: a new output)
            Dt = _fused.adam_direction(C, state.moments["exp_avg"],
                                       state.moments["exp_avg_sq"], hp.beta1, hp.beta2,
                                       hp.eps, comp, inplace=False)
        if Dt is None:
            b1, c1 = ctx.decay(hp.beta1)
            b2, c2 = ctx.decay(hp.beta2)
            Dt = _fused.device_adam(C, state.moments["exp_avg"],
                                    state.moments["exp_avg_sq"], b1, c1, b2, c2, hp.eps, comp)
        if Dt is None:
            m = ema_into(state.moments["exp_avg"], C, b1, c1, comp)
            v = ema_into(state.moments["exp_avg_sq"], C * C, b2, c2, comp)
            Dt = load(m, comp) / (xp.sqrt(load(v, comp)) + hp.eps)
        return self._back(xp, Dt, state, ctx)


_KL_DOC = """

    Parameters
    ----------
    lr : float
        Learning rate η (default 1e-4, the reference code's).
    betas : (float, float)
        β₁ of the momentum and β₂ (default (0.9, 0.98)){v_note}.
    shampoo_beta : float, optional
        Decay β of the factors and eigenvalue estimates (default β₂).
    eps : float
        ε of the direction's denominator (default 1e-8).
    weight_decay : float
        Decoupled weight decay p ← p·(1 − η·wd) after the step (default 0.01).
    precondition_frequency : int
        Refresh period T of the bases (default 10).
    max_precond_dim : int
        Axes longer than this keep only a diagonal λ with the identity basis.
    merge_dims, precondition_1d : bool
        Merge consecutive small axes; give 1-D parameters a factor (default: diagonal λ).
    normalize_grads : bool
        Divide the direction by its RMS (+1e-30) per parameter (the reference's option).
    correct_bias : bool
        Adam-style bias correction of the step size (default False, as the reference code).
    init_factor : float
        Initial eigenvalue estimate λ (default 0.1).
    max_clamp : float or None
        λ^(−1/2) is clamped at max(10, min(d, max_clamp)) (default 4000; None: no clamp).
    storage, compute, refresh_tol, max_failures, basis_update, basis_k, basis_policy, basis_scheme
        As in :func:`linalg_pc.precond.soap` (the reference code stores every state in bf16
        except the decompositions: ``storage="bf16"``; a subspace refresh keeps λ tied to its
        column).

    Returns
    -------
    {cls}
    """


def _make(cls, lr, betas, shampoo_beta, eps, weight_decay, precondition_frequency,
          max_precond_dim, merge_dims, precondition_1d, normalize_grads, correct_bias, storage,
          compute, refresh_tol, max_failures, init_factor, max_clamp, eps_positive, basis):
    return cls(lr=lr, betas=betas, shampoo_beta=shampoo_beta, eps=eps, weight_decay=weight_decay,
               precondition_frequency=precondition_frequency, max_precond_dim=max_precond_dim,
               merge_dims=merge_dims, precondition_1d=precondition_1d,
               normalize_grads=normalize_grads, correct_bias=correct_bias, storage=storage,
               compute=compute, refresh_tol=refresh_tol, max_failures=max_failures,
               init_factor=init_factor, max_clamp=max_clamp, eps_positive=eps_positive, **basis)


def kl_shampoo(lr: float = 1e-4, betas=(0.9, 0.98), shampoo_beta: float | None = None,
               eps: float = 1e-8, weight_decay: float = 0.01, precondition_frequency: int = 10,
               max_precond_dim: int = 10000, merge_dims: bool = False,
               precondition_1d: bool = False, normalize_grads: bool = False,
               correct_bias: bool = False, *, storage=None, compute="fp32",
               refresh_tol: float | None = None, max_failures: int = 3,
               init_factor: float = 0.1, max_clamp: float | None = 4000,
               basis_update: str = "full", basis_k=None, basis_policy: str = "topk-cyclic",
               basis_scheme: str | None = None) -> KLShampoo:
    """The KL-Shampoo transform: momentum preconditioned by ⊗(QΛQᵀ)^(−1/2) with KL factors.

    No Adam statistics and no grafting; ``eps`` may be 0.
    """
    return _make(KLShampoo, lr, betas, shampoo_beta, eps, weight_decay, precondition_frequency,
                 max_precond_dim, merge_dims, precondition_1d, normalize_grads, correct_bias,
                 storage, compute, refresh_tol, max_failures, init_factor, max_clamp, False,
                 dict(basis_update=basis_update, basis_k=basis_k, basis_policy=basis_policy,
                      basis_scheme=basis_scheme))


def kl_soap(lr: float = 1e-4, betas=(0.9, 0.98), shampoo_beta: float | None = None,
            eps: float = 1e-8, weight_decay: float = 0.01, precondition_frequency: int = 10,
            max_precond_dim: int = 10000, merge_dims: bool = False,
            precondition_1d: bool = False, normalize_grads: bool = False,
            correct_bias: bool = False, *, storage=None, compute="fp32",
            refresh_tol: float | None = None, max_failures: int = 3,
            init_factor: float = 0.1, max_clamp: float | None = 4000,
            basis_update: str = "full", basis_k=None, basis_policy: str = "topk-cyclic",
            basis_scheme: str | None = None) -> KLSOAP:
    """The KL-SOAP transform: Adam in the eigenbasis of KL-estimated factors."""
    return _make(KLSOAP, lr, betas, shampoo_beta, eps, weight_decay, precondition_frequency,
                 max_precond_dim, merge_dims, precondition_1d, normalize_grads, correct_bias,
                 storage, compute, refresh_tol, max_failures, init_factor, max_clamp, True,
                 dict(basis_update=basis_update, basis_k=basis_k, basis_policy=basis_policy,
                      basis_scheme=basis_scheme))


kl_shampoo.__doc__ += _KL_DOC.format(v_note="", cls="KLShampoo")
kl_soap.__doc__ += _KL_DOC.format(v_note="; β₂ also decays KL-SOAP's second moment",
                                  cls="KLSOAP")
