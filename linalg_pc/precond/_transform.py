"""The shared skeleton of the Kronecker-factored transforms: input checks, the state record,
the step schedule and the failure policy. Each method (:mod:`.soap`, :mod:`.shampoo`,
:mod:`.kl`) supplies its moments, its direction, its statistics and its refresh.

One call ``update, state = tx.update(grad, state, param)``:

1. checks ``grad`` (and ``param``) against the state before any work;
2. decodes the gradient into the compute format and reduces it to one device flag
   ``ok = all(isfinite(grad))``; a non-finite gradient is replaced by zeros and every decay
   rate by 1 (``where(ok, β, 1)``) so the statistics are left bit for bit as they were,
   the update is zero, and ``count`` does not advance: the step is skipped without the host
   reading the flag;
3. the first finite gradient only builds the factors and their eigenbases (eigh, fp64 retry;
   no parameter update, as in the SOAP and KL reference codes);
4. later steps compute the direction from the current bases, then accumulate the statistics,
   then refresh the bases when ``count`` reaches a multiple of the refresh period T. The host
   keeps ``hint`` ≥ ``count`` and reads ``count`` only when ``hint`` reaches a multiple of T,
   so a refresh happens at exactly the same step of the finite-gradient sequence as in a run
   that never saw the skipped gradients, and a step that refreshes nothing reads nothing.
5. a refresh (or the first eigendecomposition) that fails for a member (non-finite factor or
   product, eigh failing in fp32 and fp64, QR failing) keeps that member's previous basis and
   counts the failure; after ``max_failures`` consecutive failures of an axis its members fall
   back to the identity basis (the method's diagonal/Adam direction on that axis) and its
   factor restarts from zero.

A stack of parameters (``batched=True``) shares one step: a non-finite gradient in any member
skips the step for the whole stack, as a mixed-precision gradient scaler skips a whole step.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

from .. import _backend as B
from .._backend.convert import STORE, convert
from .._operators import is_array, is_complex_dtype, is_integer_dtype
from ..precision import get_format
from . import _factor_free, _fused
from ._config import (
    check_beta,
    check_betas,
    check_int,
    check_nonneg,
    check_positive,
    make_layout,
    parse_compute,
    parse_storage,
)
from ._eigen import eigh_descending, orthogonal_iteration, rayleigh, rotation, where_member
from ._state import PrecondState, materialize_basis, new_basis
from ._store import ema_into, load, store_into
from ._subspace import check_basis_options, subspace_refresh_axis
from ._tensor import mode_apply, mode_gram, mode_unfold

__all__ = ["KroneckerTransform", "Hyper"]

#: The update overwrites the step's direction (when it is a temporary of the step) from this
#: many entries on; below, a small fresh array costs less than the memory-overlap checks.
_INPLACE_MIN_ENTRIES = 1 << 16


@dataclass(frozen=True)
class Hyper:
    """Checked hyperparameters shared by the four methods (see each method's docstring)."""

    lr: float
    beta1: float
    beta2: float
    shampoo_beta: float
    eps: float
    weight_decay: float
    precondition_frequency: int
    max_precond_dim: int
    merge_dims: bool
    precondition_1d: bool
    normalize_grads: bool
    correct_bias: bool
    storage: dict
    compute: str
    refresh_tol: float | None
    max_failures: int
    basis_update: str = "full"
    basis_k: float | None = None
    basis_policy: str = "topk-cyclic"
    basis_scheme: str = "dense"
    factor_free: bool = False


class KroneckerTransform:
    """Base of the optax-style transforms: ``state = tx.init(param)``,
    ``update, state = tx.update(grad, state, param)`` with ``param + update`` the new
    parameter. Subclasses set :attr:`method` and implement the hooks."""

    method = "kronecker"
    #: names of the moment arrays (each of the work shape, "moments" storage format)
    moment_names: tuple = ()
    #: whether the first moment lives in the eigenbasis (rotated at each refresh)
    rotate_momentum = True
    #: whether refreshes sort columns by Rayleigh quotient (SOAP) or keep λ tied to them (KL)
    sort_refresh = False
    #: whether the state keeps per-column eigenvalue estimates for the column policies (the KL
    #: methods use their λ instead)
    track_estimates = True
    #: whether the method can run without its d×d factors (``linalg_pc.precond._factor_free``)
    supports_factor_free = False

    def __init__(self, *, lr, betas, shampoo_beta, eps, weight_decay, precondition_frequency,
                 max_precond_dim, merge_dims, precondition_1d, normalize_grads, correct_bias,
                 storage, compute, refresh_tol, max_failures, basis_update="full",
                 basis_k=None, basis_policy="topk-cyclic", basis_scheme=None,
                 eps_positive=True, factor_free=False):
        lr = check_nonneg(lr, "lr")
        b1, b2 = check_betas(betas)
        sb = b2 if shampoo_beta is None else check_beta(shampoo_beta, "shampoo_beta")
        eps = check_positive(eps, "eps") if eps_positive else check_nonneg(eps, "eps")
        wd = check_nonneg(weight_decay, "weight_decay")
        T = check_int(precondition_frequency, "precondition_frequency")
        mpd = check_int(max_precond_dim, "max_precond_dim")
        for name, v in (("merge_dims", merge_dims), ("precondition_1d", precondition_1d),
                        ("normalize_grads", normalize_grads), ("correct_bias", correct_bias)):
            if not isinstance(v, (bool, np.bool_)):
                raise TypeError(f"{name} must be a bool, got {type(v).__name__}")
        comp = parse_compute(compute)
        fmts = parse_storage(storage, comp)
        tol = None if refresh_tol is None else check_nonneg(refresh_tol, "refresh_tol")
        mf = check_int(max_failures, "max_failures")
        upd, k, policy, scheme, fmts = check_basis_options(basis_update, basis_k, basis_policy,
                                                           basis_scheme, fmts, comp)
        self.hp = Hyper(lr, b1, b2, sb, eps, wd, T, mpd, bool(merge_dims), bool(precondition_1d),
                        bool(normalize_grads), bool(correct_bias), fmts, comp, tol, mf,
                        upd, k, policy, scheme)
        if _factor_free.check_options(self, factor_free):
            self.hp = dataclasses.replace(self.hp, factor_free=True)

    def __repr__(self) -> str:
        fields = ", ".join(f"{f.name}={getattr(self.hp, f.name)!r}"
                           for f in dataclasses.fields(self.hp))
        return f"{self.method}({fields})"

    # ------------------------------------------------------------------ init
    def init(self, param, *, batched: bool = False) -> PrecondState:
        """The state for ``param`` (a stack of same-shape parameters when ``batched``).

        Factors start at zero, bases at the identity, moments at zero (in their storage
        formats), on ``param``'s library and device. Cost: O(N + Σd²) memory writes.
        """
        xp, pfmt = _check_array(param, "param")
        param = detached(param)
        if not isinstance(batched, (bool, np.bool_)):
            raise TypeError(f"batched must be a bool, got {type(batched).__name__}")
        shape = tuple(int(s) for s in param.shape)
        if batched and not shape:
            raise ValueError("batched=True needs param with a leading batch axis")
        nb = 1 if batched else 0
        hp = self.hp
        layout = make_layout(shape[nb:], shape[:nb], max_precond_dim=hp.max_precond_dim,
                             merge_dims=hp.merge_dims, precondition_1d=hp.precondition_1d)
        dev = B.device_of(param)
        comp = hp.compute
        cdt = B.native_dtype(xp, get_format(comp))

        def zeros(shp, kind):
            dt = B.native_dtype(xp, get_format(hp.storage[kind]))
            return xp.zeros(shp, dtype=dt, device=dev)

        factors, bases = [], []
        for d, f in zip(layout.work_shape, layout.factored):
            if not f:
                factors.append(None)
                bases.append(None)
                continue
            factors.append(None if hp.factor_free else zeros((*layout.batch, d, d), "factors"))
            eye = xp.broadcast_to(xp.eye(d, dtype=cdt, device=dev), (*layout.batch, d, d))
            Qs = zeros((*layout.batch, d, d), "basis")
            bases.append(new_basis(store_into(Qs, eye), hp.basis_scheme))
        moments = {n: zeros((*layout.batch, *layout.work_shape), "moments")
                   for n in self.moment_names}
        eig = self._init_eigenvalues(xp, layout, cdt, dev)
        extra = (_factor_free.init_extra(xp, layout, self._subspace_k, lambda s: zeros(
            s, "factors")) if hp.factor_free else {})
        i32 = xp.int32
        return PrecondState(
            method=self.method, layout=layout, formats=dict(hp.storage), compute=comp,
            param_format=pfmt, factors=tuple(factors), bases=tuple(bases),
            eigenvalues=tuple(eig), moments=moments,
            estimates=tuple(xp.zeros((*layout.batch, d), dtype=cdt, device=dev)
                            if f and self.track_estimates and hp.basis_update == "subspace"
                            else None
                            for d, f in zip(layout.work_shape, layout.factored)),
            count=xp.zeros((), dtype=i32, device=dev), skipped=xp.zeros((), dtype=i32, device=dev),
            step_ok=xp.ones((), dtype=xp.bool, device=dev),
            consecutive=tuple(np.zeros(layout.batch, dtype=np.int64)
                              for _ in layout.work_shape), extra=extra)

    def _init_eigenvalues(self, xp, layout, cdt, dev) -> list:
        return [None] * layout.order

    # ------------------------------------------------------------------ update
    def update(self, grad, state: PrecondState, param=None):
        """One step: returns ``(update, state)`` with ``param + update`` the new parameter.

        Parameters
        ----------
        grad : array
            Gradient of the state's shape, library, device and format.
        state : PrecondState
            From :meth:`init` or a previous :meth:`update` (its arrays are updated in place
            on NumPy, PyTorch and CuPy; :meth:`PrecondState.copy` keeps a checkpoint).
        param : array, optional
            The current parameter; required when ``weight_decay > 0``.

        Returns
        -------
        update : array
            Same shape, library, device and format as ``grad``; zero on the first step and on
            a step whose gradient is not finite.
        state : PrecondState
        """
        if not isinstance(state, PrecondState):
            raise TypeError(f"state must be a PrecondState from init, got {type(state).__name__}")
        if state.method != self.method:
            raise ValueError(f"state belongs to {state.method!r}, not {self.method!r}")
        xp = _check_like(grad, state, "grad")
        grad = detached(grad)
        hp = self.hp
        if param is not None:
            _check_like(param, state, "param")
            param = detached(param)
        elif hp.weight_decay > 0:
            raise ValueError("param is required when weight_decay > 0 (decoupled weight decay "
                             "scales the parameter)")
        comp = hp.compute
        lay = state.layout
        if lay.size == 0 or 0 in lay.batch:  # nothing to precondition
            return xp.zeros_like(grad), state
        wshape = (*lay.batch, *lay.work_shape)
        G = xp.reshape(load(grad, comp), wshape)
        dev = B.device_of(G)
        # host memory: the kernels test finiteness in one pass and a finite step runs fused
        host_ok = _fused.host_step(G, comp) if state.initialized else None
        if host_ok:
            ok = xp.ones((), dtype=xp.bool, device=dev)
        else:
            ok = xp.all(xp.isfinite(G))
            zero = xp.zeros((), dtype=G.dtype, device=dev)
            G = xp.where(ok, G, zero)
        ctx = _StepContext(xp, ok, G.dtype, dev, fused=bool(host_ok))

        if not state.initialized:
            return self._first_step(xp, grad, G, ok, ctx, state)

        count = state.count
        if ctx.fused:  # a finite gradient, known on the host
            count += 1
            state.step_ok[...] = True
        else:
            count += xp.astype(ok, xp.int32)
            state.skipped[...] = state.skipped + xp.astype(~ok, xp.int32)
            state.step_ok[...] = ok
        P = None if param is None else xp.reshape(load(param, comp), wshape)
        D = self._direction(xp, G, state, ctx)
        if hp.normalize_grads:
            D = self._normalize(xp, D, lay.nb)
        ss = self._step_size(xp, state, ctx)
        upd = None
        if ctx.fused:
            upd = _fused.assemble(D, P if hp.weight_decay > 0 else None, ss,
                                  hp.lr * hp.weight_decay, comp,
                                  inplace=(math.prod(wshape) >= _INPLACE_MIN_ENTRIES
                                           and self._owned(D, G, P, state)))
        else:
            upd = _fused.device_assemble(D, P if hp.weight_decay > 0 else None, ss,
                                         hp.lr * hp.weight_decay, ctx.okf, comp)
        if upd is None:
            upd = -ss * D
            if hp.weight_decay > 0:
                upd = upd - (hp.lr * hp.weight_decay) * (P + upd)
            upd = upd * ctx.okf
        self._accumulate(xp, G, state, ctx)
        state = dataclasses.replace(state, hint=state.hint + 1)
        state = self._maybe_refresh(xp, state)
        out = _to_param_format(xp, xp.reshape(upd, tuple(grad.shape)), grad)
        return out, state

    @staticmethod
    def _owned(D, G, P, state) -> bool:
        """Whether the direction D is a temporary of this step (shares no memory with the
        gradient, the parameter or a moment), so the update may overwrite it."""
        others = [G, P, *state.moments.values()]
        return all(o is None or B.memory_overlap(D, o) == "none" for o in others)

    def _normalize(self, xp, D, nb):
        """D / (RMS(D) + 1e-30) per parameter, as the SOAP and KL reference codes do."""
        axes = tuple(range(nb, D.ndim))
        rms = xp.sqrt(xp.mean(D * D, axis=axes, keepdims=True))
        return D / (rms + 1e-30)

    def _step_size(self, xp, state, ctx):
        hp = self.hp
        if not hp.correct_bias:
            return hp.lr
        n = _fused.host_count(state.count) if ctx.fused else None
        if n is not None:
            # the count is in host memory: the same operations on NumPy 0-d arrays of the
            # compute dtype (the same bits as NumPy's device path, no library ops on 0-d arrays)
            dt = np.dtype(np.float32 if hp.compute == "fp32" else np.float64)

            def const(v):
                return np.full((), v, dtype=dt)

            return np.asarray(_bias_corrected_lr(np, const(n), const, hp), dtype=dt)
        return _bias_corrected_lr(xp, xp.astype(state.count, ctx.dtype), ctx.const, hp)

    # ------------------------------------------------------------------ first step
    def _first_step(self, xp, grad, G, ok, ctx, state):
        if not bool(ok):  # the first step reads the device once (its eigh waits anyway)
            state.skipped[...] = state.skipped + 1
            state.step_ok[...] = ok
            st = dataclasses.replace(state, last_status="init-skipped: non-finite gradient")
            return xp.zeros_like(grad), st
        state.step_ok[...] = ok
        lay = state.layout
        comp = self.hp.compute
        if self.hp.factor_free:
            fails, consecutive, extra = _factor_free.first_step(self, xp, G, state)
            status = "init" if not fails else f"init-failed: {fails} eigendecomposition(s)"
            st = dataclasses.replace(state, initialized=True, refresh_failures=state.
                                     refresh_failures + fails, consecutive=tuple(consecutive),
                                     last_status=status, extra=extra)
            return xp.zeros_like(grad), st
        for a, K in enumerate(state.factors):
            if K is None:
                continue
            store_into(K, self._first_factor(xp, G, a, lay))
        fails = 0
        consecutive = list(state.consecutive)
        for a, K in enumerate(state.factors):
            if K is None:
                continue
            Qold = load(state.bases[a].Q, comp)
            w, V, good = eigh_descending(xp, load(K, comp), comp, Qold)
            store_into(state.bases[a].Q, V)
            if state.estimates[a] is not None:
                store_into(state.estimates[a], w)
            self._after_eigh(xp, state, a, w, good)
            consecutive[a] = np.where(good, 0, consecutive[a] + 1)
            fails += int((~good).sum())
        status = "init" if not fails else f"init-failed: {fails} eigendecomposition(s)"
        st = dataclasses.replace(state, initialized=True, refresh_failures=state.refresh_failures
                                 + fails, consecutive=tuple(consecutive), last_status=status)
        return xp.zeros_like(grad), st

    def _first_factor(self, xp, G, a, lay):
        return (1.0 - self.hp.shampoo_beta) * mode_gram(xp, G, a, lay.nb)

    def _after_eigh(self, xp, state, a, w, good):
        """Hook: the eigenvalues of the first eigendecomposition of axis a."""

    # ------------------------------------------------------------------ refresh
    def _maybe_refresh(self, xp, state):
        T = self.hp.precondition_frequency
        if state.hint % T or state.hint <= state.last_refresh:
            return state
        count = int(B.to_float(state.count))  # the one read of the schedule
        if count != state.hint:
            state = dataclasses.replace(state, hint=count)
            if count % T or count <= state.last_refresh:
                return state
        return self._refresh_all(xp, state, count)

    def _refresh_all(self, xp, state, count):
        hp = self.hp
        if hp.factor_free:
            return _factor_free.refresh_all(self, xp, state, count)
        comp = hp.compute
        consecutive = list(state.consecutive)
        bases = list(state.bases)
        fails = fallbacks = 0
        skipped_all = True
        for a, K in enumerate(state.factors):
            if K is None:
                continue
            Kc = load(K, comp)
            Q = materialize_basis(state.bases[a], comp)
            if hp.refresh_tol is not None and self._good_enough(Kc, Q):
                continue
            skipped_all = False
            k = self._subspace_k(Q.shape[-1])
            if k is None:
                good = self._refresh_axis(xp, state, a, Kc, Q)
            else:
                good, bases[a] = subspace_refresh_axis(self, xp, state, a, Kc, Q, k, count)
                state = dataclasses.replace(state, bases=tuple(bases))
            fails += int((~good).sum())
            cons = np.where(good, 0, consecutive[a] + 1)
            reset = cons >= hp.max_failures  # per member
            if reset.any():
                self._fallback(xp, state, a, load(state.bases[a].Q, comp), reset)
                fallbacks += int(reset.sum())
                cons = np.where(reset, 0, cons)
            consecutive[a] = cons
        if fallbacks:
            status = f"fallback: {fallbacks} basis(es) reset to the identity"
        elif fails:
            status = f"refresh-failed: {fails} basis(es) kept"
        else:
            status = "refresh-skipped" if skipped_all and hp.refresh_tol is not None else "refresh"
        return dataclasses.replace(state, last_refresh=count, consecutive=tuple(consecutive),
                                   refresh_failures=state.refresh_failures + fails,
                                   fallbacks=state.fallbacks + fallbacks, last_status=status)

    def _subspace_k(self, d: int) -> int | None:
        """Columns refreshed per subspace refresh of a d-column basis; None: a full refresh."""
        hp = self.hp
        if hp.basis_update != "subspace":
            return None
        k = hp.basis_k
        k = int(k) if isinstance(k, int) else max(1, round(k * d))
        return None if k >= d else k

    def _good_enough(self, K, Q) -> bool:
        from ..basis.selection import eigenbasis_quality

        q = np.asarray(eigenbasis_quality(K, Q))
        return bool(np.all(q <= self.hp.refresh_tol))

    def _refresh_axis(self, xp, state, a, K, Q):
        """Default refresh: one orthogonal-iteration step; the eigenbasis moments follow."""
        Qn, perm, good = orthogonal_iteration(xp, K, Q, self.hp.compute, sort=self.sort_refresh)
        self._move_moments(xp, state, a, Qn, Q, perm)
        store_into(state.bases[a].Q, Qn)
        if state.estimates[a] is not None and self.hp.basis_update == "subspace":
            store_into(state.estimates[a], rayleigh(xp, K, Qn))  # the column policy's input
        return good

    def _move_moments(self, xp, state, a, Qn, Q, perm):
        """Rotate the first moment into the new basis, permute the second one (SOAP)."""
        comp = self.hp.compute
        nb = state.layout.nb
        if self.rotate_momentum and "exp_avg" in state.moments:
            m = state.moments["exp_avg"]
            mc = load(m, comp)
            d = int(Q.shape[-1])
            if d * d < state.layout.size:
                # form Q_newᵀQ_old (2d³) and apply it once (2dN): cheaper when d² < N
                mc = mode_apply(xp, mc, rotation(xp, Qn, Q), a, nb)
            else:  # back to the parameter's space and into the new basis: 4dN
                mc = mode_apply(xp, mode_apply(xp, mc, Q, a, nb), Qn, a, nb, transpose=True)
            store_into(m, mc)
        if perm is not None:
            self._permute_second_moment(xp, state, a, perm)

    def _permute_second_moment(self, xp, state, a, perm):
        """v's entries follow their columns: new column j descends from old column perm[j]."""
        if "exp_avg_sq" not in state.moments:
            return
        comp = self.hp.compute
        nb = state.layout.nb
        v = state.moments["exp_avg_sq"]
        vc = load(v, comp)
        k = state.layout.order
        shp = (*perm.shape[:-1], *([1] * a), int(perm.shape[-1]), *([1] * (k - a - 1)))
        idx = xp.broadcast_to(xp.reshape(perm, shp), vc.shape)
        store_into(v, B.take_along_axis(vc, idx, nb + a))

    def _after_subspace(self, xp, state, a, J, eig, scatter):
        """Hook: the Rayleigh quotients ``eig`` of the refreshed columns J of axis a."""

    def _fallback(self, xp, state, a, Q, reset):
        """Members of axis a whose refresh failed ``max_failures`` times in a row (host mask
        ``reset``): identity basis (moments moved into it), factor restarted from zero."""
        comp = self.hp.compute
        mask = xp.asarray(reset, device=B.device_of(Q))
        d = int(Q.shape[-1])
        eye = xp.broadcast_to(xp.eye(d, dtype=Q.dtype, device=B.device_of(Q)), Q.shape)
        Qn = where_member(xp, mask, eye, Q)
        self._move_moments(xp, state, a, Qn, Q, None)
        store_into(state.bases[a].Q, Qn)
        K = state.factors[a]
        store_into(K, where_member(xp, mask, xp.zeros_like(load(K, comp)), load(K, comp)))
        self._after_fallback(xp, state, a, mask)

    def _after_fallback(self, xp, state, a, mask):
        """Hook: method-specific state of axis a after a fallback."""

    # ------------------------------------------------------------------ method hooks
    def _direction(self, xp, G, state, ctx):
        raise NotImplementedError

    def _projected(self, xp, Gt, state, ctx):
        """Hook: the gradient in the eigenbasis of every factored axis, G̃ = G ×_a Q_aᵀ,
        before the direction's passes may overwrite it (the factor-free statistics)."""
        if self.hp.factor_free:
            _factor_free.accumulate(self, xp, Gt, state, ctx)

    def _accumulate(self, xp, G, state, ctx):
        """Default (Shampoo/SOAP statistics): K_a ← β K_a + (1 − β) G_(a) G_(a)ᵀ (a
        factor-free state has no factors: its statistics come from :meth:`_projected`)."""
        hp = self.hp
        if hp.factor_free:
            return
        nb = state.layout.nb
        if ctx.fused:
            for a, K in enumerate(state.factors):
                if K is None:
                    continue
                X = mode_unfold(xp, G, a, nb)
                if not _fused.gram_ema(xp, K, X, hp.shampoo_beta, hp.compute):
                    S = B.gram(X)
                    if not _fused.ema(K, S, hp.shampoo_beta, hp.compute):
                        b, c = ctx.decay(hp.shampoo_beta)
                        ema_into(K, S, b, c, hp.compute)
            return
        b, c = ctx.decay(hp.shampoo_beta)
        for a, K in enumerate(state.factors):
            if K is not None:
                S = mode_gram(xp, G, a, nb)
                if not _fused.device_ema(K, S, b, c, hp.compute):
                    ema_into(K, S, b, c, hp.compute)

    # ------------------------------------------------------------------ helpers
    def bases(self, state: PrecondState) -> list:
        """The eigenbases in the compute format (None for an axis without a factor)."""
        return [None if Q is None else materialize_basis(Q, self.hp.compute)
                for Q in state.bases]


def _bias_corrected_lr(xp, c, const, hp: Hyper):
    """η·√(1−β₂ᶜ)/(1−β₁ᶜ) on 0-d arrays of namespace ``xp`` (``const(v)``: a 0-d constant in
    the compute dtype); 1−β₁ᶜ = 0 (a skipped first step, whose update is zeroed) reads as 1."""
    one = const(1.0)
    bc1 = one - xp.pow(const(hp.beta1), c)
    bc2 = one - xp.pow(const(hp.beta2), c)
    bc1 = xp.where(bc1 > 0, bc1, one)
    return hp.lr * xp.sqrt(bc2) / bc1


class _StepContext:
    """Device constants of one step: the finite flag and decay rates gated by it."""

    def __init__(self, xp, ok, dtype, device, *, fused: bool = False):
        self.xp, self.ok, self.dtype, self.device = xp, ok, dtype, device
        self.okf = xp.astype(ok, dtype)
        #: a finite gradient in host memory: the kernels of ``_fused`` may run
        self.fused = fused

    def const(self, v: float):
        # a fill on the device: asarray of a Python float would copy from the host and wait
        return self.xp.full((), v, dtype=self.dtype, device=self.device)

    def decay(self, beta: float):
        """(b, c) = (β, 1 − β) for a finite gradient, (1, 0) otherwise: b·old + c·new."""
        xp = self.xp
        return (xp.where(self.ok, self.const(beta), self.const(1.0)),
                xp.where(self.ok, self.const(1.0 - beta), self.const(0.0)))


def detached(x):
    """``x`` without autograd history (the same memory): the transforms do not
    differentiate, so a parameter that requires grad is read detached and the update needs no
    grad."""
    impl = B.delegate(B.array_namespace(x), "detach")
    return x if impl is None else impl(x)


def _check_array(x, name: str):
    if not is_array(x):
        raise TypeError(f"{name} must be an array, got {type(x).__name__}")
    xp = B.array_namespace(x)
    if is_complex_dtype(xp, x.dtype):
        raise TypeError(f"{name} must be real: complex parameters are not supported")
    if is_integer_dtype(xp, x.dtype) or x.dtype == xp.bool:
        raise TypeError(f"{name} must be a floating array, got dtype {x.dtype}")
    return xp, B.format_of(x, argname=name).name


#: Signatures (library type, dtype, device, shape of x; the state's) that passed
#: :func:`_check_like`, with their namespace: an optimizer checks the same signature every step.
_LIKE_OK: dict = {}


def _check_like(x, state: PrecondState, name: str):
    ref = state.count
    try:
        key = (type(x), x.dtype, str(getattr(x, "device", "")), tuple(x.shape), type(ref),
               str(getattr(ref, "device", "")), state.shape, state.param_format)
        hit = _LIKE_OK.get(key)
    except (AttributeError, TypeError):  # not an array: the full check names the problem
        key = hit = None
    if hit is not None:
        return hit
    xp = _check_like_full(x, state, name)
    if key is not None:
        if len(_LIKE_OK) >= 256:
            _LIKE_OK.clear()
        _LIKE_OK[key] = xp
    return xp


def _check_like_full(x, state: PrecondState, name: str):
    xp, fmt = _check_array(x, name)
    ref = state.count
    if B.namespace_name(xp) != B.namespace_name(B.array_namespace(ref)):
        raise TypeError(f"{name} comes from {B.namespace_name(xp)} but the state from "
                        f"{B.namespace_name(B.array_namespace(ref))}")
    if str(B.device_of(x)) != str(B.device_of(ref)):
        raise ValueError(f"{name} is on device {B.device_of(x)} but the state on "
                         f"{B.device_of(ref)}")
    if tuple(x.shape) != state.shape:
        raise ValueError(f"{name} has shape {tuple(x.shape)}, the state was built for "
                         f"{state.shape}")
    if fmt != state.param_format:
        raise TypeError(f"{name} has format {fmt}, the state was built for "
                        f"{state.param_format}")
    return xp


def _to_param_format(xp, upd, like):
    f = B.format_of(like)
    u = B.format_of(upd)
    return upd if f == u else convert(upd, u, f, op=STORE)
