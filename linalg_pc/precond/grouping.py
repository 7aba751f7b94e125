"""Many parameters, few calls: group a list of parameters by shape and precondition each group
as one stack (one batched product per axis, one batched decomposition per refresh).

:func:`group_by_shape` is the grouping; :func:`grouped` wraps a transform so that it takes and
returns lists: ``gtx = lpc.precond.grouped(lpc.precond.soap())``, ``state = gtx.init(params)``,
``updates, state = gtx.update(grads, state, params)``. A group's state is one batched
:class:`~linalg_pc.precond.PrecondState`; its members share one step (a non-finite gradient in
any member skips the step for its group, as a mixed-precision gradient scaler skips a step).
Stacking the gradients costs one copy of them per step (O(N), against the O(N·d) products).

Groups are by parameter shape, not by factor size: a refresh's batched QR could also serve
same-size factors of different shapes (the 256-factors of 256×512 and 512×256 parameters), but
on the CPU a batched QR loops over its members, so merging saves one call and costs a copy of
the products (measured no win: docs/precond.md, "Grouping by factor size").
"""

from __future__ import annotations

from dataclasses import dataclass

from .. import _backend as B
from .._operators import is_array
from ._transform import KroneckerTransform

__all__ = ["ShapeGroup", "GroupedState", "GroupedTransform", "group_by_shape", "grouped"]


@dataclass(frozen=True)
class ShapeGroup:
    """Parameters that share library, device, format and shape.

    Attributes
    ----------
    shape : tuple
        The members' shape.
    indices : tuple of int
        Positions of the members in the list that was grouped (ascending).
    key : tuple
        (library, device, format, shape): what the members share.
    """

    shape: tuple
    indices: tuple
    key: tuple


def group_by_shape(params) -> list[ShapeGroup]:
    """Group a sequence of arrays by (library, device, format, shape), first-seen order."""
    params = list(params)
    groups: dict = {}
    for i, p in enumerate(params):
        if not is_array(p):
            raise TypeError(f"params[{i}] must be an array, got {type(p).__name__}")
        xp = B.array_namespace(p)
        key = (B.namespace_name(xp), str(B.device_of(p)),
               B.format_of(p, argname=f"params[{i}]").name, tuple(int(s) for s in p.shape))
        groups.setdefault(key, []).append(i)
    return [ShapeGroup(k[3], tuple(ix), k) for k, ix in groups.items()]


def _stack(arrays, group: ShapeGroup, name: str):
    members = [arrays[i] for i in group.indices]
    xp = B.array_namespace(members[0])
    for i, a in zip(group.indices, members):
        if not is_array(a) or tuple(a.shape) != group.shape:
            got = tuple(a.shape) if is_array(a) else type(a).__name__
            raise ValueError(f"{name}[{i}] must have shape {group.shape}, got {got}")
    return xp.stack(members, axis=0)


@dataclass(frozen=True)
class GroupedState:
    """States of a grouped transform: one batched state per :class:`ShapeGroup`."""

    groups: tuple
    states: tuple
    n: int

    @property
    def nbytes(self) -> int:
        """Bytes of every stored array of every group."""
        return sum(s.nbytes for s in self.states)


class GroupedTransform:
    """A transform over lists of parameters (see :func:`grouped`)."""

    def __init__(self, tx: KroneckerTransform):
        if not isinstance(tx, KroneckerTransform):
            raise TypeError(f"tx must be a transform of linalg_pc.precond, got "
                            f"{type(tx).__name__}")
        self.tx = tx

    def init(self, params) -> GroupedState:
        """One batched state per group of same-shape parameters."""
        params = list(params)
        if not params:
            raise ValueError("params must not be empty")
        groups = group_by_shape(params)
        states = tuple(self.tx.init(_stack(params, g, "params"), batched=True) for g in groups)
        return GroupedState(tuple(groups), states, len(params))

    def update(self, grads, state: GroupedState, params=None):
        """Updates for every parameter (a list in the order of ``params`` at init)."""
        if not isinstance(state, GroupedState):
            raise TypeError(f"state must be a GroupedState, got {type(state).__name__}")
        grads = list(grads)
        if len(grads) != state.n:
            raise ValueError(f"grads has {len(grads)} arrays, the state was built for {state.n}")
        if params is not None:
            params = list(params)
            if len(params) != state.n:
                raise ValueError(f"params has {len(params)} arrays, the state was built for "
                                 f"{state.n}")
        updates = [None] * state.n
        new_states = []
        for g, st in zip(state.groups, state.states):
            G = _stack(grads, g, "grads")
            P = None if params is None else _stack(params, g, "params")
            U, st2 = self.tx.update(G, st, P)
            new_states.append(st2)
            for j, i in enumerate(g.indices):
                updates[i] = U[j, ...]
        return updates, GroupedState(state.groups, tuple(new_states), state.n)


def grouped(tx: KroneckerTransform) -> GroupedTransform:
    """Wrap ``tx`` to take lists of parameters, grouped by shape into batched states.

    Examples
    --------
    >>> import numpy as np, linalg_pc as lpc
    >>> params = [np.ones((4, 3), np.float32), np.ones(5, np.float32), np.ones((4, 3), np.float32)]
    >>> gtx = lpc.precond.grouped(lpc.precond.soap())
    >>> state = gtx.init(params)
    >>> [g.indices for g in state.groups]
    [(0, 2), (1,)]
    """
    return GroupedTransform(tx)


