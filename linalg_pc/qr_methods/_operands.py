"""The operand of the CholeskyQR passes: X = (A·2^e)·R₁⁻¹···R_k⁻¹, held as an array or streamed.

The CholeskyQR engine (:func:`linalg_pc.qr_methods.cholesky.cholqr_iterate`) asks its operand
for five things: the Gram matrix XᵀX, the scale exponent of A, a power-of-two scaling, a right
solve X ← X·R⁻¹, and finally X itself (Q). Two operands answer them:

- :class:`ArrayOperand` holds X as an array of any library and updates it pass by pass (in place
  when it is a private work array), exactly as the engine did before operands existed;
- :class:`StreamedOperand` (NumPy on the CPU, the backend's ``row_passes``) never forms X: it
  keeps A as it came (bf16, fp16 or fp32), the exponent and the chain of R's, and computes each
  Gram matrix, and finally Q in the storage format, in passes over row blocks of A
  (:mod:`linalg_pc._kernels.cpu_rowpass`). A bf16 CholeskyQR2 then reads A three times, at two
  bytes an entry, and writes the bf16 Q once; no fp32 copy of A and no fp32 Q exist (extra memory
  O(block·n + n²)). When Q has the compute dtype, the Gram pass of the first solve also writes
  X = A·R₁⁻¹ into Q's memory, and the later passes run there in place.

Both compute the same quantities with the same operations (Gram matrices by SYRK, solves by
TRSM, each in the compute format), so the error bounds of the CholeskyQR family hold for either
(the streamed Gram matrix sums the row blocks' Gram matrices in a fixed order: a different
summation order of the same inner products, within the same bound γ_m·|X|ᵀ|X|). A streamed
operand recomputes the solves of earlier passes on each block instead of storing X: k solves in
the pass after the k-th Cholesky factor, mn² flops each.
"""

from __future__ import annotations

import numpy as np

from .. import _backend as B
from .. import _buffers
from ._common import Ctx, mT, pow2_exponent, scale_pow2

__all__ = ["Operand", "ArrayOperand", "StreamedOperand", "gram", "right_solve", "streamed_operand",
           "STREAM_MIN_ENTRIES"]

#: A (m×n) is streamed from m·n >= STREAM_MIN_ENTRIES (below, one block holds it all and the
#: array-at-once path has less overhead).
STREAM_MIN_ENTRIES = 1 << 16


def gram(ctx: Ctx, X):
    """XᵀX in the compute dtype (NumPy dispatches ``Xᵀ @ X`` of one buffer to BLAS SYRK)."""
    xp = ctx.xp
    with np.errstate(over="ignore", invalid="ignore"):  # overflow is detected and rescaled
        return xp.matmul(mT(xp, X), X)


def right_solve(ctx: Ctx, X, R, *, own: bool, kap: float):
    """X R⁻¹ for upper-triangular R. ``own``: X is a work array that may be overwritten.

    Through :func:`linalg_pc._backend.solve_triangular` (right side, ``overwrite_b=own``,
    ``cond=kap``): on NumPy a TRSM in place from NumPy's own BLAS (mn² flops, backward stable)
    when it is reachable, TRTRI + GEMM while κ_est(R) <= 100 otherwise (2mn² flops, extra error
    u·κ(R)).
    """
    return ctx.em(B.solve_triangular(R, X, lower=False, side="right", overwrite_b=own,
                                     cond=kap))


class Operand:
    """The interface the CholeskyQR passes (:func:`.cholesky.cholqr_iterate`) work through.

    X starts as A and becomes X·2^e·R₁⁻¹···R_k⁻¹ as ``scale`` and ``solve`` are called;
    ``gram()`` returns XᵀX (n×n, in A's library, concrete), ``pow2_exponent()`` the exponent
    of max|X| (raising ValueError when X holds NaN/inf and the operand alone can tell),
    ``value()`` the final X (Q). Implementations: :class:`ArrayOperand` (an array in memory),
    :class:`StreamedOperand` (row-block passes over a host array) and the Dask operand of
    :mod:`linalg_pc.distributed.qr` (per-block tasks and a tree reduction of the Gram matrix).
    """

    shape: tuple

    def gram(self, emulate: bool = True):  # pragma: no cover - interface
        raise NotImplementedError

    def pow2_exponent(self) -> int:  # pragma: no cover - interface
        raise NotImplementedError

    def scale(self, e: int) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def solve(self, R, kap: float) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def value(self):  # pragma: no cover - interface
        raise NotImplementedError


class ArrayOperand(Operand):
    """X as an array of A's library; ``own``: X is a private work array (overwritten)."""

    def __init__(self, ctx: Ctx, X, own: bool):
        self.ctx, self.X, self.own = ctx, X, own

    @property
    def shape(self):
        return self.X.shape

    def gram(self, emulate: bool = True):
        G = gram(self.ctx, self.X)
        return self.ctx.em(G) if emulate else G

    def pow2_exponent(self) -> int:
        return pow2_exponent(self.ctx.xp, self.X)

    def scale(self, e: int) -> None:
        self.X = self.ctx.em(scale_pow2(self.X, e))
        self.own = True

    def solve(self, R, kap: float) -> None:
        self.X = right_solve(self.ctx, self.X, R, own=self.own, kap=kap)
        self.own = True

    def value(self):
        return self.X


class StreamedOperand(Operand):
    """X = (A·2^e)·R₁⁻¹···R_k⁻¹ computed in row-block passes over A (see the module docstring).

    ``passes``: the backend's row-pass object over A; ``out_dtype``: the dtype Q is returned in
    (the storage format's); ``need_q``: Q will be asked for (else no pass writes anything).
    """

    def __init__(self, ctx: Ctx, passes, out_dtype, need_q: bool):
        self.ctx, self.rp = ctx, passes
        self.out_dtype = np.dtype(out_dtype)
        self.exp = 0
        self.chain: list = []
        #: X materialized in Q's memory (compute dtype), the chain then applies to it
        self.W = None
        self.materialize = need_q and self.out_dtype == passes.dtype

    @property
    def shape(self):
        return self.rp.A.shape

    def gram(self, emulate: bool = True):
        rp = self.rp
        if self.materialize and self.chain:
            # this pass writes X into Q's memory; the next ones start from there
            if self.W is None:
                self.W = _buffers.empty(self.shape, self.out_dtype)
                G = rp.gram(self.chain, self.exp, write=self.W)
                self.exp = 0
            else:
                G = rp.gram(self.chain, src=self.W, write=self.W)
            self.chain = []
            return G
        return rp.gram(self.chain, self.exp, src=self.W)

    def pow2_exponent(self) -> int:
        """The exponent of A's largest entry (called before any solve)."""
        amax = self.rp.absmax()
        return pow2_exponent(np, np.array([[amax]], dtype=np.float64))

    def scale(self, e: int) -> None:
        self.exp += e

    def solve(self, R, kap: float) -> None:
        self.chain.append(np.ascontiguousarray(R, dtype=self.rp.dtype))

    def value(self):
        """Q = X in the output dtype (one more pass, in place in Q's memory when materialized)."""
        if self.W is not None:
            if self.chain:
                self.rp.fill(self.W, self.chain, src=self.W)
                self.chain = []
            return self.W
        out = _buffers.empty(self.shape, self.out_dtype)
        return self.rp.fill(out, self.chain, self.exp)


def streamed_operand(ctx: Ctx, A, need_q: bool):
    """A :class:`StreamedOperand` over A (as it came: not decoded) when the backend streams it:
    a 2-D host array, nothing emulated, m·n >= ``STREAM_MIN_ENTRIES``, Q (when needed)
    returned in the compute dtype or in bf16/fp16; else None."""
    if ctx.emulate is not None or A.ndim != 2 or A.shape[0] * A.shape[1] < STREAM_MIN_ENTRIES:
        return None
    impl = B.delegate(ctx.xp, "row_passes")
    if impl is None:
        return None
    dt = ctx.dtype
    out = B.native_dtype(ctx.xp, ctx.storage) if need_q else dt
    rp = impl(A, dt)
    if rp is None or not (np.dtype(out) == np.dtype(dt) or np.dtype(out).itemsize == 2):
        return None
    return StreamedOperand(ctx, rp, out, need_q)
