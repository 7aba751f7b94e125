"""Data-parallel mode of the torch.optim adapter over ``torch.distributed``.

Every process (rank) of a process group holds the whole optimizer state and takes the same
steps on the same (reduced) gradients. The refreshes of the eigenbases, the cubic part of the
cost, are divided among the ranks: each stack of parameters (one parameter, or the same-shape
parameters of a group with ``batched=True``) has one owning rank, which runs its refreshes;
the other ranks step it with :func:`linalg_pc.precond._deferred.follower` (their refresh steps
compute nothing) and, once every stack has stepped, receive the refreshed arrays in their
storage formats (a bf16 basis travels as bf16: half the bytes of fp32) and the host fields of
the failure policy (failure counts, fallbacks, status) from the owner. The owner's arithmetic
is the single-process arithmetic, so the result equals the single-process run bit for bit
(tested with two gloo processes).

Ownership (:func:`assign_owners`): the stacks are sorted by refresh cost n·Σ_a d_a³ (n
members, d_a the factored axes), largest first, and each goes to the rank with the least cost
so far (lowest rank on ties): the longest-processing-time rule, deterministic, within one
stack's cost of the best balance. A stack whose refresh costs nothing (no factored axis: a
bias without ``precondition_1d``) is stepped in full by every rank and never sent.

Collectives, at refresh steps only (a step that refreshes nothing adds none): one
``all_gather_object`` of the owners' host fields, then one ``broadcast`` per owning rank of
one flat byte buffer of its refreshed arrays. With ``reduce_grads=True`` one ``all_reduce`` per
(device, dtype) of the gradients precedes every step.

References
----------
Shi, Lee, Iwasaki, Gallego-Posada, Li, Rangadurai, Mudigere, Rabbat, "A Distributed
Data-Parallel PyTorch Implementation of the Distributed Shampoo Optimizer for Training Neural
Networks At-Scale", arXiv 2309.06497 (2023): the same division of the preconditioner work
among data-parallel ranks. docs/precond.md, "Data-parallel training".
"""

from __future__ import annotations

import dataclasses
import weakref

import torch
import torch.distributed as dist

from ..precond._config import make_layout
from ..precond._deferred import REFRESH_HOST_FIELDS, follower, refreshed_arrays

__all__ = ["DataParallel", "assign_owners", "stack_cost"]


def stack_cost(shape, n: int, hp, layout=None) -> int:
    """Refresh cost n·Σ_a d_a³ of a stack of ``n`` parameters of ``shape`` under the
    hyperparameters ``hp`` (the sum over the axes that get a factor)."""
    if layout is None:
        layout = make_layout(shape, (), max_precond_dim=hp.max_precond_dim,
                             merge_dims=hp.merge_dims, precondition_1d=hp.precondition_1d)
    return n * sum(d ** 3 for d, f in zip(layout.work_shape, layout.factored) if f)


def assign_owners(costs, world: int) -> list:
    """The owning rank of each cost (None for a zero cost): largest first, each to the rank
    with the least total so far (lowest rank on ties; equal costs in their order).

    Cost O(s log s + s·world) for s stacks, on the host; the largest total exceeds the
    smallest by at most the largest cost.
    """
    owners: list = [None] * len(costs)
    load = [0] * world
    for i in sorted(range(len(costs)), key=lambda j: (-costs[j], j)):
        if costs[i] <= 0:
            continue
        r = min(range(world), key=lambda q: (load[q], q))
        owners[i] = r
        load[r] += costs[i]
    return owners


class DataParallel:
    """The distributed part of a :class:`~linalg_pc.integrations.torch.KroneckerOptimizer`:
    the process group, the gradient reduction, the ownership of the refreshes and their
    exchange. Built by the optimizer from its ``process_group`` and ``reduce_grads``."""

    def __init__(self, process_group, reduce_grads: bool):
        if not isinstance(reduce_grads, bool):
            raise TypeError(f"reduce_grads must be a bool, got {type(reduce_grads).__name__}")
        if process_group is None:
            raise ValueError("process_group is required for data-parallel training")
        if not (dist.is_available() and dist.is_initialized()):
            raise RuntimeError("process_group was given but torch.distributed is not "
                               "initialized: call torch.distributed.init_process_group first")
        if not isinstance(process_group, dist.ProcessGroup):
            raise TypeError(f"process_group must be a torch.distributed ProcessGroup (e.g. "
                            f"torch.distributed.group.WORLD), got "
                            f"{type(process_group).__name__}")
        self.group = process_group
        self.rank = dist.get_rank(process_group)
        self.world = dist.get_world_size(process_group)
        self.reduce_grads = reduce_grads
        self._plan: tuple = (None, None)
        #: {index of a stack's first parameter: owning rank or None}, from the last plan
        self.owner_of: dict = {}
        #: refresh steps exchanged, and the bytes of the arrays broadcast by them (this rank
        #: as the source or a receiver)
        self.exchanges = 0
        self.exchanged_bytes = 0
        self._followers: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    def __repr__(self) -> str:
        return (f"DataParallel(rank={self.rank}, world={self.world}, "
                f"reduce_grads={self.reduce_grads})")

    # ------------------------------------------------------------------ gradients
    def reduce(self, params) -> None:
        """Average the gradients of ``params`` over the group in place: one ``all_reduce`` of
        a flat buffer per (device, dtype). Every rank must pass the same parameters."""
        buckets: dict = {}
        for p in params:
            buckets.setdefault((p.grad.device, p.grad.dtype), []).append(p.grad)
        for key in sorted(buckets, key=str):
            grads = buckets[key]
            flat = torch.cat([g.reshape(-1) for g in grads])
            dist.all_reduce(flat, group=self.group)
            flat.div_(self.world)
            off = 0
            for g in grads:
                n = g.numel()
                g.copy_(flat[off:off + n].view_as(g))
                off += n

    # ------------------------------------------------------------------ ownership
    def owners(self, jobs: list, index: dict) -> list:
        """The owning rank (or None: every rank) of each (stack, transform) of ``jobs``,
        recomputed only when the stacks change."""
        key = tuple((index[id(stk.params[0])], len(stk.params)) for stk, _ in jobs)
        if self._plan[0] != key:
            costs = [stack_cost(tuple(stk.params[0].shape), len(stk.params), tx.hp,
                                None if stk.state is None else stk.state.layout)
                     for stk, tx in jobs]
            self._plan = (key, assign_owners(costs, self.world))
            self.owner_of = {lead: r for (lead, _), r in zip(key, self._plan[1])}
        return self._plan[1]

    def transform_for(self, tx, owner):
        """``tx`` for a stack this rank owns (or every rank steps), else its follower."""
        if owner is None or owner == self.rank:
            return tx
        f = self._followers.get(tx)
        if f is None:
            f = self._followers[tx] = follower(tx)
        return f

    # ------------------------------------------------------------------ exchange
    def exchange(self, events: list) -> None:
        """Copy every refreshed state from its owner to the other ranks.

        ``events`` lists (stack, transform, owner, first, fallbacks before the step) in the
        same order on every rank: the stacks that reached a refresh step (or their first
        step) at this step. Host fields first (one ``all_gather_object``), then the arrays
        of each owner (one ``broadcast`` of their bytes)."""
        mine = {i: _host_fields(stk.state) for i, (stk, _, owner, _, _) in enumerate(events)
                if owner == self.rank}
        gathered: list = [None] * self.world
        dist.all_gather_object(gathered, mine, group=self.group)
        host = {i: f for part in gathered for i, f in part.items()}
        for i, (stk, _, owner, _, _) in enumerate(events):
            if owner != self.rank:
                stk.state = _with_host_fields(stk.state, host[i])
        for r in range(self.world):
            arrays = []
            for stk, tx, owner, first, fallbacks in events:
                if owner != r:
                    continue
                fell = stk.state.fallbacks != fallbacks
                axes = [a for a, K in enumerate(stk.state.factors) if K is not None] \
                    if fell else ()
                arrays.extend(refreshed_arrays(tx, stk.state, first=first, fallback_axes=axes))
            self._broadcast(arrays, r)
        self.exchanges += 1

    def _broadcast(self, arrays: list, src: int) -> None:
        by_device: dict = {}
        for a in arrays:
            by_device.setdefault(a.device, []).append(a)
        for device in sorted(by_device, key=str):
            arrs = by_device[device]
            offsets, total = byte_layout(arrs)
            self.exchanged_bytes += sum(a.numel() * a.element_size() for a in arrs)
            if self.rank == src:
                flat = pack(arrs, device)
            else:
                flat = torch.empty(total, dtype=torch.uint8, device=device)
            dist.broadcast(flat, src=dist.get_global_rank(self.group, src), group=self.group)
            if self.rank != src:
                unpack(flat, arrs)


#: alignment of each array in a packed buffer (the largest element size: fp64, int64)
_ALIGN = 8


def byte_layout(arrays: list) -> tuple[list, int]:
    """Byte offsets of ``arrays`` in one buffer (each aligned to 8 bytes, so that a slice can
    be viewed in its dtype) and the buffer's size."""
    offsets, off = [], 0
    for a in arrays:
        offsets.append(off)
        off += -(-a.numel() * a.element_size() // _ALIGN) * _ALIGN
    return offsets, off


def pack(arrays: list, device) -> torch.Tensor:
    """One uint8 buffer holding the bytes of ``arrays`` (each in its own dtype, bit for bit) at
    the offsets of :func:`byte_layout`."""
    offsets, total = byte_layout(arrays)
    flat = torch.zeros(total, dtype=torch.uint8, device=device)
    for a, off in zip(arrays, offsets):
        b = a.reshape(-1).contiguous().view(torch.uint8)
        flat[off:off + b.numel()] = b
    return flat


def unpack(flat: torch.Tensor, arrays: list) -> None:
    """Write the bytes of a :func:`pack` buffer back into ``arrays`` (in place)."""
    offsets, _ = byte_layout(arrays)
    for a, off in zip(arrays, offsets):
        n = a.numel() * a.element_size()
        a.copy_(flat[off:off + n].view(a.dtype).view(a.shape))


def _host_fields(st) -> dict:
    fields = {f: getattr(st, f) for f in REFRESH_HOST_FIELDS}
    fields["bases"] = tuple(None if Q is None else
                            {f.name: getattr(Q, f.name) for f in dataclasses.fields(Q)
                             if f.name not in ("Q", "W")}
                            for Q in st.bases)
    return fields


def _with_host_fields(st, fields: dict):
    fields = dict(fields)
    meta = fields.pop("bases")
    bases = tuple(None if Q is None else dataclasses.replace(Q, **m)
                  for Q, m in zip(st.bases, meta))
    return dataclasses.replace(st, bases=bases, **fields)
