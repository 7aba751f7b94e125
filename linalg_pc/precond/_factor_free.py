"""Factor-free SOAP: keep each eigenbasis Q and per-column eigenvalue estimates λ, not the d×d
Kronecker factor K, and refresh k columns at a time through an operator form of K.

What is kept per factored axis (d columns, k refreshed per refresh):

- λ (d): the diagonal of QᵀKQ, decayed each step like the factor,
  λ ← βλ + (1−β)·diag(Qᵀ G_(a) G_(a)ᵀ Q). SOAP's projected gradient G̃ = G ×_b Q_bᵀ gives it
  for free: diag(Q_aᵀ G_(a) G_(a)ᵀ Q_a) is the sum of G̃² over every other axis (the other
  bases are orthogonal), the row sums of G̃² for the left factor of a matrix, the column sums
  for the right one.
- J (k, host): the columns of the next refresh, chosen at the previous one (the column
  policies of :func:`linalg_pc.select_columns` are deterministic given the estimates and the
  refresh counter).
- Z (k×k): the running estimate of the block Q_Jᵀ K Q_J. At a refresh (and at the first step)
  Z ← diag(λ_J), then each step Z ← βZ + (1−β)·G̃_J G̃_Jᵀ with G̃_J the rows J of G̃ along
  the axis (G̃_J G̃_Jᵀ = Q_Jᵀ G_(a) G_(a)ᵀ Q_J for orthogonal other bases).

What it approximates. With K_t the exact factor and t₀ the previous refresh (T finite steps
before), K_t = β^T K_t₀ + Σ_s β^(t−s)(1−β) G_s G_sᵀ, so

    Q_Jᵀ K_t Q_J = β^T Q_Jᵀ K_t₀ Q_J + Σ_s β^(t−s)(1−β) (Q_Jᵀ G_s)(Q_Jᵀ G_s)ᵀ.

The sum is accumulated exactly in Z; the one approximation is Q_Jᵀ K_t₀ Q_J ≈ diag(λ_J(t₀)):
the off-diagonal part of the old factor in the current basis is dropped (λ itself carries
the same approximation from refresh to refresh: it tracks the diagonal, never the off-diagonal
couplings of columns refreshed at different times). At the refresh the operator

    K̂ X = Q_J Z (Q_Jᵀ X)

goes to :func:`linalg_pc.basis.state.update`. For a complete basis (m = d) the subspace
refresh uses K only through Q_Jᵀ K Q_J (the rotate step factors it; the project step repairs
the columns against the others but spans the same subspace), so the d×k products K·Q_J of the
factored refresh reduce to this k×k block: the refresh equals the factored one whenever
Q_Jᵀ K_t₀ Q_J is diagonal, for instance at the first refresh after the initial eigh
(tests/precond/test_factor_free.py checks this in fp64). After a refresh the new columns'
λ_J are the Rayleigh quotients diag(Q_new,Jᵀ K̂ Q_new,J), SOAP's column sort and the moments'
rotation and permutation run as in the factored subspace refresh.

A full refresh (``basis_update="full"``) would need K on all of R^d: not available without the
factor, so factor-free SOAP requires ``basis_update="subspace"`` (a k ≥ d refreshes all
columns through a d×d Z, which saves nothing). ``refresh_tol`` (the quality test of QᵀKQ) and
the "residual" column policy (it reads K·Q) need the factor as well. The KL methods need their
factors for their own statistics (S_L ← βS_L + (1−β)/n·G Q_R Λ_R⁻¹ Q_Rᵀ Gᵀ is refreshed
from S_L itself) and Shampoo's refresh is a full one: factor-free is SOAP's option only.

Cost per step and factored axis: N (λ from G̃², already formed) + 2k²N/d (Z), against
2dN for the factor's Gram product; per refresh 4dk² + O(k³) for K̂ Q_J instead of 2d²k.
First step: one eigendecomposition of (1−β)G_(a)G_(a)ᵀ per axis (a transient d×d array, as in
the factored first step), then only Q, λ and Z are kept. Memory per axis: d² (Q) + d (λ) +
k² (Z) against 2d² + d for the factored subspace SOAP. For a d×d parameter in fp32 that is
16.125 bytes per parameter element at k = d/8 (bases 8, moments 8, Z 0.125) against 24 for
the factored state (factors 8, bases 8, moments 8); with every state in bf16, 8.06 against 12.

References
----------
Vyas et al., "SOAP: Improving and Stabilizing Shampoo using Adam", ICLR 2025 (arXiv
2409.11321). Milligan et al., "Reparametrizing Shampoo and SOAP for subspace basis updates
and BFloat16 storage", arXiv 2605.26327 (2026). docs/optimizers.md: the measured quality.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from .. import _backend as B
from ..basis.selection import select_columns
from ._eigen import eigh_descending, where_member
from ._state import materialize_basis
from ._store import ema_into, load, store_into
from ._subspace import subspace_refresh_axis
from ._tensor import mode_gram, mT, reduce_except

__all__ = ["check_options", "init_extra", "first_step", "accumulate", "refresh_all",
           "next_columns", "block_estimate"]


def check_options(tx, factor_free) -> bool:
    """Validate ``factor_free`` against the transform's other options (before any work)."""
    if not isinstance(factor_free, (bool, np.bool_)):
        raise TypeError(f"factor_free must be a bool, got {type(factor_free).__name__}")
    if not factor_free:
        return False
    hp = tx.hp
    if not getattr(tx, "supports_factor_free", False):
        raise ValueError(f"factor_free=True is supported by soap only, not {tx.method!r} (the "
                         f"KL methods update their factors from the factors themselves; "
                         f"Shampoo refreshes every column)")
    if hp.basis_update != "subspace":
        raise ValueError("factor_free=True needs basis_update='subspace': a full refresh "
                         "needs the d×d factor K, which a factor-free state does not keep")
    if hp.refresh_tol is not None:
        raise ValueError("factor_free=True cannot take refresh_tol: the refresh test reads "
                         "QᵀKQ of the factor, which a factor-free state does not keep")
    if hp.basis_policy == "residual":
        raise ValueError("factor_free=True cannot use basis_policy='residual' (it reads K·Q "
                         "of the factor); use 'topk-cyclic', 'topk', 'cyclic' or 'random'")
    return True


def _k(tx, d: int) -> int:
    k = tx._subspace_k(d)
    return d if k is None else k


def next_columns(tx, lam, refresh: int, k: int):
    """The columns of refresh number ``refresh`` (host int64), from the estimates λ."""
    hp = tx.hp
    d = int(lam.shape[-1])
    opts: dict = {"step": refresh, "ncols": d}
    if hp.basis_policy in ("topk", "topk-cyclic"):
        opts["estimates"] = lam
    elif hp.basis_policy == "random":
        opts["rng"] = np.random.default_rng(refresh)
    return np.asarray(select_columns(hp.basis_policy, k, **opts), dtype=np.int64)


def _diag_block(xp, lam, J):
    """diag(λ_J) (*batch, k, k) in λ's format."""
    lj = xp.take(lam, xp.asarray(J, device=B.device_of(lam)), axis=-1)
    k = int(J.size)
    eye = xp.eye(k, dtype=lj.dtype, device=B.device_of(lam))
    return lj[..., :, None] * eye


def init_extra(xp, layout, k_of, zeros) -> dict:
    """The factor-free fields of a new state: per axis Z (zeros of (*batch, k, k)) and J."""
    Z, J = [], []
    for d, f in zip(layout.work_shape, layout.factored):
        if not f:
            Z.append(None)
            J.append(None)
            continue
        k = k_of(d)
        k = d if k is None else k  # k ≥ d: every column, through a d×d block
        Z.append(zeros((*layout.batch, k, k)))
        J.append(np.arange(k, dtype=np.int64))
    return {"ff_Z": tuple(Z), "ff_J": tuple(J)}


def block_estimate(state, a: int):
    """(J, Z) of axis a: the columns of the next refresh and the running Q_Jᵀ K Q_J."""
    return state.extra["ff_J"][a], state.extra["ff_Z"][a]


def first_step(tx, xp, G, state):
    """Initial bases from the eigendecomposition of (1−β)G_(a)G_(a)ᵀ (not kept), λ its
    eigenvalues, J the columns of the first refresh, Z = diag(λ_J). Returns (fails,
    consecutive, extra)."""
    hp = tx.hp
    comp = hp.compute
    lay = state.layout
    fails = 0
    consecutive = list(state.consecutive)
    J = list(state.extra["ff_J"])
    for a, f in enumerate(lay.factored):
        if not f:
            continue
        K0 = (1.0 - hp.shampoo_beta) * mode_gram(xp, G, a, lay.nb)
        Qold = load(state.bases[a].Q, comp)
        w, V, good = eigh_descending(xp, K0, comp, Qold)
        store_into(state.bases[a].Q, V)
        store_into(state.estimates[a], w)
        J[a] = next_columns(tx, state.estimates[a], 1, _k(tx, int(w.shape[-1])))
        store_into(state.extra["ff_Z"][a], _diag_block(xp, load(state.estimates[a], comp),
                                                       J[a]))
        consecutive[a] = np.where(good, 0, consecutive[a] + 1)
        fails += int((~good).sum())
    return fails, consecutive, {**state.extra, "ff_J": tuple(J)}


def accumulate(tx, xp, Gt, state, ctx):
    """The statistics of one step from the projected gradient G̃ (every factored axis in its
    eigenbasis): λ ← βλ + (1−β)·Σ_{other axes} G̃², Z ← βZ + (1−β)·G̃_J G̃_Jᵀ."""
    hp = tx.hp
    comp = hp.compute
    lay = state.layout
    nb = lay.nb
    b, c = ctx.decay(hp.shampoo_beta)
    G2 = None
    for a, f in enumerate(lay.factored):
        if not f:
            continue
        if G2 is None:
            G2 = Gt * Gt
        n_other = lay.size // lay.work_shape[a]
        ema_into(state.estimates[a], n_other * reduce_except(xp, G2, a, nb), b, c, comp)
        J, Z = block_estimate(state, a)
        GJ = xp.take(Gt, xp.asarray(J, device=B.device_of(Gt)), axis=nb + a)
        ema_into(Z, mode_gram(xp, GJ, a, nb), b, c, comp)


def _operator(xp, QJ, Z):
    """K̂ X = Q_J Z (Q_Jᵀ X): the factor on span(Q_J) (4dk² + 2k³ flops for k columns)."""

    def apply(X):
        return QJ @ (Z @ (mT(xp, QJ) @ X))

    return apply


def refresh_all(tx, xp, state, count: int):
    """Refresh the columns J of every factored axis through K̂, then choose the next J from
    the estimates and restart Z at diag(λ_J). Failures and fallbacks as the factored refresh
    (a fallback restarts λ and Z from zero with the identity basis)."""
    hp = tx.hp
    comp = hp.compute
    lay = state.layout
    consecutive = list(state.consecutive)
    bases = list(state.bases)
    Js = list(state.extra["ff_J"])
    fails = fallbacks = 0
    r = count // hp.precondition_frequency
    for a, f in enumerate(lay.factored):
        if not f:
            continue
        J, Z = block_estimate(state, a)
        Q = materialize_basis(state.bases[a], comp)
        QJ = xp.asarray(B.take_columns(Q, J), copy=True)
        op = _operator(xp, QJ, load(Z, comp))
        good, bases[a] = subspace_refresh_axis(tx, xp, state, a, op, Q, int(J.size), count,
                                               cols=J)
        state = dataclasses.replace(state, bases=tuple(bases))
        fails += int((~good).sum())
        cons = np.where(good, 0, consecutive[a] + 1)
        reset = cons >= hp.max_failures
        if reset.any():
            _fallback(tx, xp, state, a, reset)
            fallbacks += int(reset.sum())
            cons = np.where(reset, 0, cons)
        consecutive[a] = cons
        lam = load(state.estimates[a], comp)
        Js[a] = next_columns(tx, lam, r + 1, int(J.size))
        store_into(Z, _diag_block(xp, lam, Js[a]))
    if fallbacks:
        status = f"fallback: {fallbacks} basis(es) reset to the identity"
    elif fails:
        status = f"refresh-failed: {fails} basis(es) kept"
    else:
        status = "refresh"
    return dataclasses.replace(state, last_refresh=count, consecutive=tuple(consecutive),
                               refresh_failures=state.refresh_failures + fails,
                               fallbacks=state.fallbacks + fallbacks, last_status=status,
                               extra={**state.extra, "ff_J": tuple(Js)})


def _fallback(tx, xp, state, a, reset):
    """Members of axis a that failed ``max_failures`` refreshes in a row: identity basis (the
    moments moved into it), λ restarted from zero."""
    comp = tx.hp.compute
    Q = load(state.bases[a].Q, comp)
    mask = xp.asarray(reset, device=B.device_of(Q))
    d = int(Q.shape[-1])
    eye = xp.broadcast_to(xp.eye(d, dtype=Q.dtype, device=B.device_of(Q)), Q.shape)
    Qn = where_member(xp, mask, eye, Q)
    tx._move_moments(xp, state, a, Qn, Q, None)
    store_into(state.bases[a].Q, Qn)
    lam = load(state.estimates[a], comp)
    store_into(state.estimates[a], xp.where(mask[..., None], xp.zeros_like(lam), lam))
