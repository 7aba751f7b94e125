"""The generic PCG engine: array-API arithmetic in any namespace (dense, operator and batched
systems; NumPy, array_api_strict, PyTorch, CuPy).

Vectors are kept as (n, s) ("cols": s right-hand sides of one A) or (N, n) ("batch": N systems)
arrays of the caller's library and device; each step is a handful of whole-array operations with
per-system coefficients, and finished systems are masked (``where``), so every system follows
its own PCG recurrence. Implements :class:`linalg_pc.solvers._loop.Engine`; cost per iteration
one application of A and of M, 2 reductions and 3 masked updates (about 5·n·s flops plus the
matvec); memory 5 arrays the size of b.
"""

from __future__ import annotations

import numpy as np

from .._backend import device_of, to_numpy
from .._operators import Operator

__all__ = ["XpEngine"]


class XpEngine:
    """Array-API arithmetic for :func:`linalg_pc.solvers._loop.run`: layouts "cols" (n, s)
    and "batch" (N, n)."""

    def __init__(self, xp, opA: Operator, opM: Operator | None, B, X0, layout, zero):
        self.xp, self.A, self.M, self.B, self.layout = xp, opA, opM, B, layout
        self.axis = 0 if layout == "cols" else 1
        self.dev = device_of(B)
        self.X0 = X0
        self.zero = zero
        self.single = False

    def _coef(self, c):
        c = self.xp.asarray(np.asarray(c, dtype=np.float64), device=self.dev)
        c = self.xp.astype(c, self.B.dtype)
        return c[None, :] if self.layout == "cols" else c[:, None]

    def _mask(self, m):
        m = self.xp.asarray(np.asarray(m, dtype=bool), device=self.dev)
        return m[None, :] if self.layout == "cols" else m[:, None]

    def _norms(self, R):
        xp = self.xp
        return np.sqrt(np.asarray(to_numpy(xp.sum(R * R, axis=self.axis)), dtype=np.float64))

    def _dots(self, U, V):
        return np.asarray(to_numpy(self.xp.sum(U * V, axis=self.axis)), dtype=np.float64)

    def _matvec(self, X):
        return self.A.apply(self.xp, X, self.layout)

    def init(self):
        xp = self.xp
        zm = self._mask(self.zero)
        if self.X0 is None:
            self.x = xp.zeros_like(self.B)
            self.r = self.B * 1
        else:
            self.x = xp.where(zm, xp.zeros_like(self.X0), self.X0)
            self.r = self.B - self._matvec(self.x)
        self.r = xp.where(zm, xp.zeros_like(self.r), self.r)
        self.p = xp.zeros_like(self.B)
        self.z = self.r
        return self._norms(self.r)

    def true_residual(self):
        self.rt = self.B - self._matvec(self.x)
        return self._norms(self.rt), self._norms(self.r - self.rt)

    def replace(self, mask):
        self.r = self.xp.where(self._mask(mask), self.rt, self.r)

    def precondition(self, active):
        if self.M is None:
            self.z = self.r
        else:
            self.z = self.M.apply(self.xp, self.r, self.layout)
        return self._dots(self.r, self.z)

    def direction(self, beta, active):
        xp = self.xp
        am = self._mask(active)
        self.p = xp.where(am, self.z + self._coef(beta) * self.p, self.p)
        self.q = self._matvec(self.p)
        return self._dots(self.p, self.q)

    def update(self, alpha, active):
        xp = self.xp
        am = self._mask(active)
        a = self._coef(alpha)
        self.x = xp.where(am, self.x + a * self.p, self.x)
        self.r = xp.where(am, self.r - a * self.q, self.r)
        return self._norms(self.r)

    def current_x(self):
        # a copy: the callback may write to it without changing the solve
        return self.xp.asarray(self.x[:, 0] if self.single else self.x, copy=True)

    def X(self):
        return self.x
