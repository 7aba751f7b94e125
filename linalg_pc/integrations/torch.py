"""``torch.optim.Optimizer`` classes over the Kronecker-factored transforms of
:mod:`linalg_pc.precond`.

:class:`KroneckerOptimizer` ``(params, transform)`` runs any transform (``soap``, ``shampoo``,
``kl_shampoo``, ``kl_soap``); :class:`SOAP`, :class:`Shampoo`, :class:`KLShampoo` and
:class:`KLSOAP` take their factory's hyperparameters as keyword arguments and as plain entries
of each parameter group, as ``torch.optim.Adam`` does. In short (docs/precond.md, "torch.optim
adapter", has the details):

- a group's transform is rebuilt when its ``lr`` (a scheduler) or, for the presets, any of its
  hyperparameters changes: each step is exactly the transform's step with that step's values
  (scaling the update by a ratio of learning rates would not be: decoupled weight decay is
  quadratic in η); the hyperparameters that shape the state are fixed once there is state;
- same-shape parameters of a group form one stack (``batched=True``): one batched call per step,
  one shared step (a non-finite gradient in a member skips the stack's step); a stack only
  partly present at a step is split once; ``grad is None``: skipped; sparse: rejected;
- nothing is read from the device here (the transform reads it at first and refresh steps);
- ``state_dict`` holds tensors and plain values only (``torch.load(weights_only=True)``) and
  ``load_state_dict`` restores every state array in its own dtype, bit for bit;
- ``process_group=`` (``reduce_grads=``): data-parallel training over ``torch.distributed``,
  the refreshes divided among the ranks (:mod:`._torch_distributed`; docs/precond.md,
  "Data-parallel training").
"""

from __future__ import annotations

import copy
import dataclasses
import inspect
import math
import numbers
from itertools import chain

import numpy as np
import torch

from .. import precond
from ..basis.state import BasisState
from ..precision import get_format
from ..precond._config import Layout, make_layout
from ..precond._state import PrecondState
from ..precond._transform import KroneckerTransform
from ._torch_distributed import DataParallel

__all__ = ["KroneckerOptimizer", "SOAP", "Shampoo", "KLShampoo", "KLSOAP"]

_FACTORIES = (precond.soap, precond.shampoo, precond.kl_shampoo, precond.kl_soap)
#: every factory's hyperparameters but lr: a KroneckerOptimizer group takes them through its
#: transform
_HYPER_NAMES = frozenset(n for f in _FACTORIES for n in inspect.signature(f).parameters) - {"lr"}
#: the hyperparameters that shape the state (fixed once a parameter has state)
_STRUCTURAL = ("storage", "compute", "max_precond_dim", "merge_dims", "precondition_1d")
_TAG = "__type__"
_RECORDS = {"BasisState": BasisState, "Layout": Layout}


class _Stack:
    """Parameters of one group preconditioned together (one member unless batched) and their
    :class:`~linalg_pc.precond.PrecondState`."""

    def __init__(self, params: tuple, batched: bool, state: PrecondState | None = None):
        self.params = params
        self.batched = batched
        self.state = state
        self.checked = None  # the transform the state was last checked against

    def __repr__(self) -> str:
        shape = tuple(self.params[0].shape)
        return (f"_Stack({len(self.params)} x {shape}, batched={self.batched}, "
                f"method={None if self.state is None else self.state.method!r})")


class KroneckerOptimizer(torch.optim.Optimizer):
    """A ``torch.optim.Optimizer`` over a transform of :mod:`linalg_pc.precond`.

    Parameters
    ----------
    params : iterable of tensors or of dicts
        Parameters, or parameter groups: dicts with ``"params"`` and optionally
        ``"transform"`` (a transform of :mod:`linalg_pc.precond`), ``"lr"`` (overrides the
        transform's learning rate; LR schedulers change it) and ``"batched"``.
    transform : KroneckerTransform
        ``lpc.precond.soap(...)``, ``shampoo(...)``, ``kl_shampoo(...)`` or ``kl_soap(...)``:
        every group's transform unless the group has its own.
    lr : float, optional
        Learning rate of the groups without their own ``"transform"`` or ``"lr"`` (default:
        ``transform.hp.lr``); a group with its own transform defaults to that one's.
    batched : bool
        Precondition the same-shape parameters of a group as one stack (default) or each
        parameter alone.
    process_group : torch.distributed.ProcessGroup, optional
        Data-parallel training over this group (e.g. ``torch.distributed.group.WORLD``):
        every rank keeps the whole state and takes the same steps, each stack's refreshes run
        on one rank (largest first, balanced by n·Σd³) and are copied to the others in their
        storage formats; the result equals the one-process run (docs/precond.md,
        "Data-parallel training"). Default None: one process.
    reduce_grads : bool
        With ``process_group``: average the gradients over the group at each step (one
        ``all_reduce`` per dtype). Default False: the gradients are already reduced
        (``DistributedDataParallel`` does it in the backward pass).

    Examples
    --------
    >>> import torch, linalg_pc as lpc
    >>> from linalg_pc.integrations.torch import KroneckerOptimizer
    >>> model = torch.nn.Linear(4, 3)
    >>> opt = KroneckerOptimizer(model.parameters(), lpc.precond.soap(lr=1e-2))
    >>> loss = model(torch.ones(2, 4)).square().sum()
    >>> loss.backward()
    >>> opt.step()
    """

    def __init__(self, params, transform, *, lr: float | None = None, batched: bool = True,
                 process_group=None, reduce_grads: bool = False):
        _check_transform(transform, "transform")
        self._dp = _data_parallel(process_group, reduce_grads)
        defaults = {"transform": transform, "lr": transform.hp.lr if lr is None else lr,
                    "batched": batched}
        self._cache: dict = {}
        super().__init__(params, defaults)

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)  # torch pickles defaults, state and groups only
        self._cache = {}
        self._dp = None  # a copy is not part of the process group

    # ------------------------------------------------------------------ groups
    def add_param_group(self, param_group: dict) -> None:
        """Add a group (checked at once: its transform, ``lr``, ``batched``, its tensors).

        A group with its own ``"transform"`` and no ``"lr"`` takes its transform's lr."""
        if isinstance(param_group, dict) and "transform" in param_group \
                and "lr" not in param_group:
            _check_transform(param_group["transform"], "param group transform")
            param_group["lr"] = param_group["transform"].hp.lr
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        try:
            self._check_group(group, len(self.param_groups) - 1)
            for p in group["params"]:
                if p.is_complex():
                    raise TypeError("complex parameters are not supported")
            self._transform_for(group, len(self.param_groups) - 1)
        except Exception:
            self.param_groups.pop()
            raise

    def _check_group(self, group: dict, gi: int) -> None:
        _check_batched(group, gi)
        bad = sorted(_HYPER_NAMES & set(group))
        if bad:
            raise TypeError(f"param group {gi} has hyperparameter entries {bad}: a "
                            f"KroneckerOptimizer group takes them through its 'transform' "
                            f"(and 'lr'); give the group its own transform, or use "
                            f"linalg_pc.integrations.torch.SOAP/Shampoo/KLShampoo/KLSOAP, whose "
                            f"groups take every hyperparameter")
        _check_transform(group.get("transform"), f"param group {gi}: transform")

    def _transform_key(self, group: dict, gi: int):
        return group["transform"], _check_lr(group["lr"], gi)

    def _make_transform(self, group: dict, gi: int, key) -> KroneckerTransform:
        tx, lr = key
        if lr == tx.hp.lr:
            return tx
        new = copy.copy(tx)
        new.hp = dataclasses.replace(tx.hp, lr=lr)
        return new

    def _transform_for(self, group: dict, gi: int) -> KroneckerTransform:
        """The group's transform for its current entries (rebuilt only when they change)."""
        key = self._transform_key(group, gi)
        hit = self._cache.get(id(group))
        if hit is not None and hit[0] is group and hit[1] == key:
            return hit[2]
        tx = self._make_transform(group, gi, key)
        self._cache[id(group)] = (group, key, tx)
        return tx

    # ------------------------------------------------------------------ step
    def step(self, closure=None):
        """One step of every group; returns the closure's loss (None without a closure).

        Parameters whose ``grad`` is None are skipped. No tensor is read on the host here; the
        transform reads the device only at a stack's first step and at refresh steps.
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        work = []  # every check first: a bad group or gradient updates no parameter
        for gi, group in enumerate(self.param_groups):
            present = [p for p in group["params"] if p.grad is not None]
            if not present:
                continue
            for p in present:
                if p.grad.layout != torch.strided:
                    raise RuntimeError(f"{type(self).__name__} does not support sparse "
                                       f"gradients (param group {gi}, a parameter of shape "
                                       f"{tuple(p.shape)} has a {p.grad.layout} gradient)")
            tx = self._transform_for(group, gi)
            for p in present:
                entry = self.state.get(p)
                stk = entry.get("stack") if entry else None
                if stk is not None and stk.checked is not tx:
                    _check_compatible(stk.state, tx, gi)
                    stk.checked = tx
            work.append((gi, group, tx, present))
        with torch.no_grad():
            if self._dp is None:
                for gi, _, tx, present in work:
                    for stk in self._stacks_of(present, self.param_groups[gi]["batched"]):
                        self._step_stack(stk, tx)
            else:
                self._step_data_parallel(work)
        return loss

    def _step_data_parallel(self, work: list) -> None:
        """The step of every stack with the refreshes divided among the ranks
        (:mod:`linalg_pc.integrations._torch_distributed`)."""
        dp = self._dp
        if dp.reduce_grads:
            dp.reduce([p for *_, present in work for p in present])
        jobs = [(stk, tx) for gi, _, tx, present in work
                for stk in self._stacks_of(present, self.param_groups[gi]["batched"])]
        owners = dp.owners(jobs, self._param_index())
        events = []
        for (stk, tx), owner in zip(jobs, owners):
            st = stk.state
            before = (False, 0, 0) if st is None else (st.initialized, st.last_refresh,
                                                       st.fallbacks)
            self._step_stack(stk, dp.transform_for(tx, owner))
            st = stk.state
            if owner is not None and (st.initialized != before[0]
                                      or st.last_refresh != before[1]):
                events.append((stk, tx, owner, not before[0], before[2]))
        if events:
            dp.exchange(events)

    def _param_index(self) -> dict:
        """{id(param): its index in the groups' order} (the state_dict's numbering)."""
        index: dict = {}
        start = 0
        for group in self.param_groups:
            for i, p in enumerate(group["params"], start):
                index.setdefault(id(p), i)
            start += len(group["params"])
        return index

    def _stacks_of(self, present: list, batched: bool) -> list[_Stack]:
        """The stacks of the parameters with a gradient: existing ones (split when only some
        of their members are present) and new ones for parameters without state."""
        known: dict = {}
        new = []
        for p in present:
            entry = self.state.get(p)
            stk = entry.get("stack") if entry else None
            if stk is None:
                new.append(p)
            else:
                known.setdefault(id(stk), (stk, []))[1].append(p)
        out = []
        for stk, ps in known.values():
            out.append(stk if len(ps) == len(stk.params) else self._split(stk, ps))
        if batched:
            groups = precond.group_by_shape([p.grad for p in new])
            out.extend(_Stack(tuple(new[i] for i in g.indices), True) for g in groups)
        else:
            out.extend(_Stack((p,), False) for p in new)
        return out

    def _step_stack(self, stk: _Stack, tx: KroneckerTransform) -> None:
        ps = stk.params
        decay = tx.hp.weight_decay > 0
        if not stk.batched:
            G = ps[0].grad
            P = ps[0].detach() if decay else None
        elif len(ps) == 1:
            G = ps[0].grad.unsqueeze(0)
            P = ps[0].detach().unsqueeze(0) if decay else None
        else:
            G = torch.stack([p.grad for p in ps])
            P = torch.stack([p.detach() for p in ps]) if decay else None
        if stk.state is None:
            stk.state, stk.checked = tx.init(G, batched=stk.batched), tx
            self._register(stk)
        U, stk.state = tx.update(G, stk.state, P)
        if stk.batched:
            torch._foreach_add_(list(ps), list(U.unbind(0)))
        else:
            ps[0].add_(U)

    def _register(self, stk: _Stack) -> None:
        for j, p in enumerate(stk.params):
            self.state[p] = {"stack": stk, "member": j}

    def _split(self, stk: _Stack, present: list) -> _Stack:
        pos = {id(p): j for j, p in enumerate(stk.params)}
        idx = [pos[id(p)] for p in present]
        rest = [j for j in range(len(stk.params)) if j not in set(idx)]
        parts = []
        for sel in (idx, rest):
            part = _Stack(tuple(stk.params[j] for j in sel), True, _take(stk.state, sel))
            part.checked = stk.checked
            self._register(part)
            parts.append(part)
        return parts[0]

    # ------------------------------------------------------------------ queries
    def precond_state(self, param) -> tuple[PrecondState, int] | None:
        """``(state, member)``: the :class:`~linalg_pc.precond.PrecondState` of ``param``'s
        stack and its position in the stack (None before its first gradient). The state is
        live: its arrays change in place at the next step (``state.copy()`` keeps one)."""
        entry = self.state.get(param)
        if not entry or "stack" not in entry:
            return None
        return entry["stack"].state, entry["member"]

    def refresh_owner(self, param) -> int | None:
        """The rank (in the process group) that computes the refreshes of ``param``'s stack in
        data-parallel training; None with no ``process_group``, before the parameter's first
        step, or for a stack without a factor (every rank steps it, nothing is refreshed)."""
        entry = self.state.get(param)
        if self._dp is None or not entry or "stack" not in entry:
            return None
        return self._dp.owner_of.get(self._param_index()[id(entry["stack"].params[0])])

    def _stacks(self) -> list[_Stack]:
        seen: dict = {}
        for group in self.param_groups:
            for p in group["params"]:
                entry = self.state.get(p)
                if entry and "stack" in entry and entry["stack"].state is not None:
                    seen.setdefault(id(entry["stack"]), entry["stack"])
        return list(seen.values())

    # ------------------------------------------------------------------ state_dict
    def _plain_group(self, group: dict) -> dict:
        out = dict(group)
        if "transform" in out:
            out["transform"] = _describe(out["transform"])
        return out

    def state_dict(self) -> dict:
        """The state as torch lays it out (``{"state": {index: dict}, "param_groups": [...]}``)
        with tensors and plain Python values only (``torch.load(weights_only=True)`` reads it).

        A stack's leader (its first member) holds ``{"leader": i, "member": 0, "members":
        [indices], "precond": {field: value}}`` (every field of its PrecondState: tensors, as
        references like torch's optimizers, and plain values; bases and the layout as tagged
        dicts); the other members ``{"leader": i, "member": j}``. A group's ``"transform"``
        becomes a description (method and hyperparameters).
        """
        index = self._param_index()
        encoded: dict = {}
        for stk in self._stacks():
            lead = index[id(stk.params[0])]
            for j, p in enumerate(stk.params):
                encoded[p] = {"leader": lead, "member": j}
            encoded[stk.params[0]].update(
                members=[index[id(p)] for p in stk.params], precond=_encode_state(stk.state))
        runtime = self.state, self.param_groups
        self.state = encoded
        self.param_groups = [self._plain_group(g) for g in runtime[1]]
        try:
            return super().state_dict()
        finally:
            self.state, self.param_groups = runtime

    def _check_saved_group(self, saved: dict, group: dict, gi: int) -> None:
        desc = saved.get("transform")
        if isinstance(desc, dict) and desc.get("method") != group["transform"].method:
            raise ValueError(f"param group {gi}: the saved state is for {desc.get('method')!r}, "
                             f"this group's transform is {group['transform'].method!r}")
        bad = sorted(_HYPER_NAMES & set(saved))
        if bad:
            raise ValueError(f"param group {gi}: the saved group has hyperparameter entries "
                             f"{bad} (saved by a preset optimizer?); a KroneckerOptimizer group "
                             f"takes them through its transform")

    def load_state_dict(self, state_dict: dict) -> None:
        """Load a :meth:`state_dict`: every state array bit for bit in its own dtype (moved to
        its parameter's device) and the host fields; group entries as torch restores them.

        The state is rebuilt after torch's loading (whose hooks see the groups, not the
        state). A saved state that does not fit (method, shapes, formats, group sizes) raises
        before anything changes.
        """
        groups = self.param_groups
        saved_groups = state_dict["param_groups"]
        if len(saved_groups) != len(groups) or any(
                len(s["params"]) != len(g["params"]) for s, g in zip(saved_groups, groups)):
            super().load_state_dict(state_dict)  # raises torch's own error
        for gi, (s, g) in enumerate(zip(saved_groups, groups)):
            self._check_saved_group(s, g, gi)
        id_map = dict(zip(chain.from_iterable(s["params"] for s in saved_groups),
                          chain.from_iterable(g["params"] for g in groups)))
        group_of = {id(p): gi for gi, g in enumerate(groups) for p in g["params"]}
        stacks = [_decode_stack(k, entry, id_map, group_of)
                  for k, entry in state_dict["state"].items() if "precond" in entry]
        covered = {i for e in state_dict["state"].values() for i in e.get("members", ())}
        for k in state_dict["state"]:
            if k not in covered:
                raise ValueError(f"state entry {k!r} belongs to no stack: not a state_dict of "
                                 f"a linalg_pc optimizer")
        transforms = [g.get("transform") for g in groups]
        stripped = dict(state_dict)
        stripped["state"] = {}
        super().load_state_dict(stripped)
        for g, tx in zip(self.param_groups, transforms):
            if tx is not None:
                g["transform"] = tx
        self._cache.clear()
        for stk in stacks:
            self._register(stk)
        for gi, g in enumerate(self.param_groups):
            self._check_group(g, gi)
            self._transform_for(g, gi)


class _Preset(KroneckerOptimizer):
    """A KroneckerOptimizer whose groups carry the hyperparameters of one factory."""

    _factory = None
    _names: tuple = ()

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if cls.__dict__.get("_factory") is not None:
            cls._names = tuple(inspect.signature(cls._factory).parameters)

    def __init__(self, params, lr: float | None = None, *, batched: bool = True,
                 process_group=None, reduce_grads: bool = False, **hyperparameters):
        sig = inspect.signature(type(self)._factory).parameters
        unknown = sorted(set(hyperparameters) - set(sig))
        if unknown:
            raise TypeError(f"{type(self).__name__} got unknown hyperparameters {unknown}; it "
                            f"takes those of linalg_pc.precond.{type(self)._factory.__name__}: "
                            f"{list(sig)}")
        defaults = {n: p.default for n, p in sig.items()}
        defaults.update(hyperparameters)
        if lr is not None:
            defaults["lr"] = lr
        defaults["batched"] = batched
        self._dp = _data_parallel(process_group, reduce_grads)
        self._cache = {}
        torch.optim.Optimizer.__init__(self, params, defaults)

    def _check_group(self, group: dict, gi: int) -> None:
        _check_batched(group, gi)
        if "transform" in group:
            raise TypeError(f"param group {gi}: {type(self).__name__} builds each group's "
                            f"transform from the group's hyperparameters; use "
                            f"KroneckerOptimizer for a group with its own transform")

    def _transform_key(self, group: dict, gi: int):
        _check_lr(group["lr"], gi)
        return _freeze({n: group[n] for n in self._names})

    def _make_transform(self, group: dict, gi: int, key) -> KroneckerTransform:
        try:
            return type(self)._factory(**{n: group[n] for n in self._names})
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"param group {gi}: {exc}") from None

    def _plain_group(self, group: dict) -> dict:
        return dict(group)

    def _check_saved_group(self, saved: dict, group: dict, gi: int) -> None:
        if "transform" in saved:
            raise ValueError(f"param group {gi}: the saved group has a transform (saved by a "
                             f"KroneckerOptimizer?); {type(self).__name__} takes plain "
                             f"hyperparameters")


class SOAP(_Preset):
    """SOAP as a ``torch.optim.Optimizer``: ``SOAP(params, lr=3e-3, *, batched=True,
    process_group=None, reduce_grads=False, **hp)`` with ``hp`` the keyword arguments of
    :func:`linalg_pc.precond.soap` (defaults: its own), also accepted per parameter group;
    ``batched``, ``process_group`` and ``reduce_grads`` as in :class:`KroneckerOptimizer`."""

    _factory = staticmethod(precond.soap)


class Shampoo(_Preset):
    """Shampoo with Adam grafting as a ``torch.optim.Optimizer``: the keyword arguments of
    :func:`linalg_pc.precond.shampoo`, also per parameter group."""

    _factory = staticmethod(precond.shampoo)


class KLShampoo(_Preset):
    """KL-Shampoo as a ``torch.optim.Optimizer``: the keyword arguments of
    :func:`linalg_pc.precond.kl_shampoo`, also per parameter group."""

    _factory = staticmethod(precond.kl_shampoo)


class KLSOAP(_Preset):
    """KL-SOAP as a ``torch.optim.Optimizer``: the keyword arguments of
    :func:`linalg_pc.precond.kl_soap`, also per parameter group."""

    _factory = staticmethod(precond.kl_soap)


# --------------------------------------------------------------------------- helpers


def _check_transform(tx, name: str) -> None:
    if isinstance(tx, KroneckerTransform):
        return
    if isinstance(tx, precond.GroupedTransform):
        raise TypeError(f"{name} must be a transform of linalg_pc.precond, not grouped(...): "
                        f"the optimizer groups the parameters itself (batched=True)")
    raise TypeError(f"{name} must be a transform of linalg_pc.precond (soap, shampoo, "
                    f"kl_shampoo, kl_soap), got {type(tx).__name__}")


def _data_parallel(process_group, reduce_grads) -> DataParallel | None:
    """The data-parallel mode of ``process_group`` (None: one process)."""
    if not isinstance(reduce_grads, (bool, np.bool_)):
        raise TypeError(f"reduce_grads must be a bool, got {type(reduce_grads).__name__}")
    if process_group is None:
        if reduce_grads:
            raise ValueError("reduce_grads=True needs a process_group to reduce over")
        return None
    return DataParallel(process_group, bool(reduce_grads))


def _check_batched(group: dict, gi: int) -> None:
    if not isinstance(group.get("batched"), (bool, np.bool_)):
        raise TypeError(f"param group {gi}: batched must be a bool, got "
                        f"{type(group.get('batched')).__name__}")


def _check_lr(lr, gi: int) -> float:
    if isinstance(lr, torch.Tensor):
        raise TypeError(f"param group {gi}: lr must be a Python number, got a tensor (the "
                        f"transforms take the learning rate on the host; a tensor would be "
                        f"read from the device at every step)")
    if isinstance(lr, bool) or not isinstance(lr, numbers.Real):
        raise TypeError(f"param group {gi}: lr must be a real number, got {type(lr).__name__}")
    v = float(lr)
    if not math.isfinite(v) or v < 0:
        raise ValueError(f"param group {gi}: lr must be finite and >= 0, got {lr!r}")
    return v


def _freeze(v):
    if isinstance(v, dict):
        return ("dict", tuple(sorted((k, _freeze(x)) for k, x in v.items())))
    if isinstance(v, (list, tuple)):
        return ("seq", tuple(_freeze(x) for x in v))
    return v


def _check_compatible(st: PrecondState, tx: KroneckerTransform, gi: int) -> None:
    """The state can go on under ``tx`` (same method, formats and layout)."""
    hp = tx.hp
    lay = st.layout
    want = make_layout(lay.shape, lay.batch, max_precond_dim=hp.max_precond_dim,
                       merge_dims=hp.merge_dims, precondition_1d=hp.precondition_1d)
    if st.method != tx.method or dict(st.formats) != hp.storage or st.compute != hp.compute \
            or want != lay:
        raise ValueError(
            f"param group {gi}: the transform changed what the state of a parameter of shape "
            f"{lay.shape} is ({st.method}, storage {st.formats}, compute {st.compute}, factored "
            f"axes {lay.factored} -> {tx.method}, storage {hp.storage}, compute {hp.compute}, "
            f"{want.factored}); {', '.join(_STRUCTURAL)} and the method are fixed once a "
            f"parameter has state")
    if ("ff_Z" in st.extra) != hp.factor_free:
        raise ValueError(
            f"param group {gi}: the state of a parameter of shape {lay.shape} was built "
            f"{'without' if 'ff_Z' in st.extra else 'with'} its factors (factor_free="
            f"{'ff_Z' in st.extra}), the transform has factor_free={hp.factor_free}; "
            f"factor_free is fixed once a parameter has state")


def _take(st: PrecondState, members: list) -> PrecondState:
    """The state of some members of a batched state (copies of their slices)."""
    ix = torch.tensor(members, dtype=torch.int64, device=st.count.device)

    def sel(a):
        return None if a is None else a.index_select(0, ix)

    bases = tuple(None if Q is None else dataclasses.replace(Q, Q=sel(Q.Q), W=sel(Q.W))
                  for Q in st.bases)
    return dataclasses.replace(
        st, layout=dataclasses.replace(st.layout, batch=(len(members),)),
        factors=tuple(sel(K) for K in st.factors), bases=bases,
        eigenvalues=tuple(sel(v) for v in st.eigenvalues),
        estimates=tuple(sel(v) for v in st.estimates),
        moments={k: sel(v) for k, v in st.moments.items()},
        count=st.count.clone(), skipped=st.skipped.clone(), step_ok=st.step_ok.clone(),
        consecutive=tuple(np.asarray(c)[members].copy() for c in st.consecutive),
        extra={k: tuple(x.copy() if isinstance(x, np.ndarray) else sel(x) for x in v)
               for k, v in st.extra.items()})


def _describe(tx: KroneckerTransform) -> dict:
    extra = {k: _encode(v) for k, v in vars(tx).items() if k != "hp"}
    return {"method": tx.method, **_encode(dataclasses.asdict(tx.hp)), **extra}


def _encode(v):
    if v is None or isinstance(v, (bool, int, float, str, torch.Tensor)):
        return v
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, np.ndarray):  # host arrays (per-member failure counts)
        return {_TAG: "ndarray", "dtype": str(v.dtype), "shape": tuple(v.shape),
                "data": tuple(v.ravel().tolist())}
    if isinstance(v, tuple(_RECORDS.values())):
        return {_TAG: type(v).__name__,
                **{f.name: _encode(getattr(v, f.name)) for f in dataclasses.fields(v)}}
    if isinstance(v, (tuple, list)):
        return tuple(_encode(x) for x in v)
    if isinstance(v, dict):
        return {k: _encode(x) for k, x in v.items()}
    raise TypeError(f"cannot write a {type(v).__name__} into a state_dict")


def _encode_state(st: PrecondState) -> dict:
    return {f.name: _encode(getattr(st, f.name)) for f in dataclasses.fields(PrecondState)}


def _decode(v, device):
    if isinstance(v, torch.Tensor):
        return v.detach().to(device=device, copy=True)
    if isinstance(v, dict):
        if v.get(_TAG) == "ndarray":
            return np.asarray(v["data"], dtype=v["dtype"]).reshape(v["shape"])
        if _TAG in v:
            return _RECORDS[v[_TAG]](**{k: _decode(x, device) for k, x in v.items()
                                        if k != _TAG})
        return {k: _decode(x, device) for k, x in v.items()}
    if isinstance(v, (tuple, list)):
        return tuple(_decode(x, device) for x in v)
    return v


def _decode_stack(k, entry: dict, id_map: dict, group_of: dict) -> _Stack:
    """The stack whose leader's saved entry is ``entry`` (index ``k``), checked against the
    parameters it is loaded into."""
    try:
        members = [id_map[i] for i in entry["members"]]
    except KeyError as exc:
        raise ValueError(f"state entry {k!r} names parameter {exc.args[0]!r}, which no group "
                         f"of this optimizer has") from None
    if len({group_of[id(p)] for p in members}) != 1:
        raise ValueError(f"state entry {k!r}: the members of a stack must share a group")
    saved = entry["precond"]
    names = {f.name for f in dataclasses.fields(PrecondState)}
    if set(saved) != names:
        raise ValueError(f"state entry {k!r} is not a PrecondState: fields "
                         f"{sorted(set(saved) ^ names)} differ")
    st = PrecondState(**{n: _decode(v, members[0].device) for n, v in saved.items()})
    batched = bool(st.layout.batch)
    n = st.layout.batch[0] if batched else 1
    if len(members) != n:
        raise ValueError(f"state entry {k!r} holds {n} members, names {len(members)}")
    for p in members:
        if tuple(p.shape) != tuple(st.layout.shape):
            raise ValueError(f"state entry {k!r} is for shape {st.layout.shape}, the parameter "
                             f"has shape {tuple(p.shape)}")
        if get_format(p.dtype).name != st.param_format:
            raise ValueError(f"state entry {k!r} is for {st.param_format} parameters, the "
                             f"parameter is {p.dtype}")
    return _Stack(tuple(members), batched, st)
