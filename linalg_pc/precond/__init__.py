"""Kronecker-factored preconditioners as optax-style transforms over arrays.

``tx = lpc.precond.soap(...)`` (or :func:`shampoo`, :func:`kl_shampoo`, :func:`kl_soap`);
``state = tx.init(param)``; ``update, state = tx.update(grad, state, param)``. Every state
array lives in the parameter's library and on its device, in the storage format chosen per
kind; the arithmetic runs in the compute format. A stack of same-shape parameters
(``tx.init(stack, batched=True)``) is preconditioned by batched products and one batched
decomposition per axis. See docs/precond.md.
"""

from ._config import STATE_KINDS, Layout, merge_shape
from ._state import PrecondState, StateArray
from .grouping import GroupedState, GroupedTransform, ShapeGroup, group_by_shape, grouped
from .kl import KLSOAP, KLShampoo, kl_shampoo, kl_soap
from .kronecker import KroneckerOperator
from .shampoo import Shampoo, shampoo
from .soap import SOAP, soap

__all__ = ["soap", "shampoo", "kl_shampoo", "kl_soap", "SOAP", "Shampoo", "KLShampoo", "KLSOAP",
           "KroneckerOperator", "grouped", "group_by_shape", "GroupedTransform", "GroupedState",
           "ShapeGroup", "PrecondState", "StateArray", "Layout", "STATE_KINDS",
           "merge_shape"]
