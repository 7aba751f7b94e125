"""Mode products of a (batched) tensor with per-axis matrices: the N-D contractions of the
Kronecker-factored preconditioners, never forming a Kronecker product.

A parameter stack X has shape (*batch, d_0, …, d_{k-1}); ``nb`` is the number of batch axes.
For axis a, the mode-a unfolding X_(a) is d_a × (N/d_a) (N = ∏ d_i), and

- :func:`mode_apply` returns X ×_a M: every mode-a fibre multiplied by M (d_out × d_a),
  i.e. (X ×_a M)_(a) = M X_(a) (Kolda & Bader, SIAM Review 51 (2009), §2.5). Cost 2·d_out·N
  flops; the first and last axes need no copy, a middle axis one transposed copy.
- :func:`mode_gram` returns X_(a) X_(a)ᵀ (d_a × d_a), the contraction over every other axis
  that the Shampoo statistics accumulate. Cost 2·d_a·N flops.
- :func:`scale_axis` multiplies every mode-a fibre elementwise by a vector s (…, d_a).

Matrices and vectors may carry the batch shape; every product is one batched ``matmul``.
"""

from __future__ import annotations

import math

from .. import _backend as B

__all__ = ["mT", "mode_apply", "mode_unfold", "mode_gram", "scale_axis", "reduce_except"]


def mT(xp, a):
    """Transpose of the last two axes (a view where the library has views)."""
    return xp.matrix_transpose(a)


def _matmul(a, b):
    return a @ b


def mode_apply(xp, X, M, axis: int, nb: int, *, transpose: bool = False, mm=None):
    """X ×_a op(M), op(M) = Mᵀ when ``transpose`` (M: (…, d_out, d_a) or (…, d_a, d_out)).
    ``mm(a, b)`` forms the product (default ``a @ b``; the fused host path passes one that
    writes into recycled memory)."""
    mm = mm or _matmul
    shape = tuple(X.shape)
    batch, work = shape[:nb], shape[nb:]
    k = len(work)
    Mop = mT(xp, M) if transpose else M
    d_out = int(Mop.shape[-2])
    if axis == 0:
        rest = work[1:]
        Xr = xp.reshape(X, (*batch, work[0], math.prod(rest)))
        return xp.reshape(mm(Mop, Xr), (*batch, d_out, *rest))
    if axis == k - 1:
        rest = work[:-1]
        Xr = xp.reshape(X, (*batch, math.prod(rest), work[-1]))
        return xp.reshape(mm(Xr, mT(xp, Mop)), (*batch, *rest, d_out))
    Xm = xp.moveaxis(X, nb + axis, nb)
    Y = mode_apply(xp, Xm, M, 0, nb, transpose=transpose, mm=mm)
    return xp.moveaxis(Y, nb, nb + axis)


def mode_unfold(xp, X, axis: int, nb: int):
    """The mode-a unfolding X_(a) (*batch, d_a, N/d_a): a view for the first and last axes
    (the last one transposed), one copy for a middle axis."""
    shape = tuple(X.shape)
    batch, work = shape[:nb], shape[nb:]
    k = len(work)
    if axis == k - 1 and k > 1:
        Xr = xp.reshape(X, (*batch, math.prod(work[:-1]), work[-1]))
        return mT(xp, Xr)
    if axis != 0:
        X = xp.moveaxis(X, nb + axis, nb)
        work = tuple(X.shape[nb:])
    return xp.reshape(X, (*batch, work[0], math.prod(work[1:])))


def mode_gram(xp, X, axis: int, nb: int):
    """X_(a) X_(a)ᵀ of shape (*batch, d_a, d_a) (SYRK or a blocked product where the backend
    has one: :func:`linalg_pc._backend.gram`)."""
    return B.gram(mode_unfold(xp, X, axis, nb))


def _axis_shape(nb_shape: tuple, k: int, axis: int, d: int) -> tuple:
    return (*nb_shape, *([1] * axis), d, *([1] * (k - axis - 1)))


def scale_axis(xp, X, s, axis: int, nb: int):
    """X with every mode-``axis`` fibre multiplied elementwise by s (*batch, d_a)."""
    k = X.ndim - nb
    return X * xp.reshape(s, _axis_shape(tuple(s.shape[:-1]), k, axis, int(s.shape[-1])))


def axis_vector(xp, s, axis: int, k: int):
    """s (*batch, d_a) reshaped to broadcast along ``axis`` of a (*batch, *work) tensor."""
    return xp.reshape(s, _axis_shape(tuple(s.shape[:-1]), k, axis, int(s.shape[-1])))


def reduce_except(xp, X, axis: int, nb: int):
    """Mean of X over every work axis but ``axis``: shape (*batch, d_a)."""
    k = X.ndim - nb
    others = tuple(nb + b for b in range(k) if b != axis)
    return xp.mean(X, axis=others) if others else X
