"""Tall-skinny QR of a Dask array chunked along rows: CholeskyQR2, shifted CholeskyQR3,
sketch-preconditioned CholeskyQR and TSQR as "local block work + one small reduction".

A is m×n with row blocks A_i (one column chunk). One CholeskyQR pass is

    G = Σ_i X_iᵀ X_i      (a Gram matrix per block on its worker, summed by a tree of fan-in 4)
    R = chol(G)           (n×n, once, on the client, by the local code and its breakdown checks)

The passes are those of the local code: :func:`linalg_pc.qr_methods.cholesky.cholqr_iterate`
(and, for rand_cholqr, :func:`linalg_pc.qr_methods.randomized.sketch_preconditioned`) run on a
:class:`DaskOperand`, whose Gram matrix is the tree reduction above. X_i = A_i R_1⁻¹ ··· R_(k−1)⁻¹
is recomputed from A_i inside the Gram task of pass k (k − 1 triangular solves of the block,
fused with the Gram product by the local streamed row passes,
:mod:`linalg_pc._kernels.cpu_rowpass`): nothing of size m×n is kept between passes, so A may
be larger than the cluster's memory when its chunks are produced lazily. (Keeping X of the
second pass on the workers saves one solve per block but was measured slower: every pass then
writes a fresh m×n array, see docs/distributed.md.) The fallback chain is the local
one (:mod:`linalg_pc.qr_methods.cholesky`): CholQR2 -> shifted CholQR3 on Cholesky breakdown ->
Householder, here as TSQR (Householder QR of every row block, then of the stacked n×n R
factors: Demmel, Grigori, Hoemmen, Langou, SISC 34, 2012). ``Q`` is a lazy Dask array chunked
like A (Q_i = A_i R_1⁻¹ ··· R_k⁻¹, one task per block, in the storage format); ``R`` and
``info`` are concrete. 16-bit chunks are decoded per chunk, inside the tasks.

Cost: pass k reads A once and does (k − 1)·mn² (solves) + mn² (Gram) flops, communicating one
n×n matrix per block (p·n² words over the tree); Q costs k·mn² more when computed (CholQR2
5mn² in all, against 4mn² locally). Bounds: those
of the local methods (docs/error-analysis.md): ‖I − QᵀQ‖₂ = O(u) for CholQR2 while
κ(A) ≲ u^(−1/2), for shifted CholQR3 and rand_cholqr up to κ ≈ u⁻¹, for TSQR whatever κ; the
tree only reorders the Gram sum (error ≤ γ_m·‖A‖² like the local sum).
"""

from __future__ import annotations

import math

import numpy as np

from .. import _backend as B
from .._backend.dask import register_routine
from ..qr_methods._common import (
    POW2_SAFE,
    QRInfo,
    QRResult,
    finish,
    kappa_est,
    mT,
    prepare,
    scale_pow2,
    to_float,
    unscale_r,
)
from ..qr_methods._operands import Operand
from ..qr_methods.cholesky import (
    ACCEPT_KAPPA,
    MAX_PASSES,
    SHIFT_POLICIES,
    Breakdown,
    cholqr_iterate,
)
from ..qr_methods.randomized import SKETCHES, sketch_block, sketch_preconditioned, sketch_rows
from ._graph import check_row_chunks, dask_modules, decode, store, tree_reduce

__all__ = ["qr_dask", "DASK_QR_METHODS", "DaskOperand"]

#: Methods the distributed QR offers ("auto" is "cholqr2").
DASK_QR_METHODS = ("auto", "cholqr2", "scholqr3", "rand_cholqr", "tsqr")


# --------------------------------------------------------------------------- block tasks
def _passes(block, fc):
    """The local streamed row passes over a host block (:mod:`linalg_pc._kernels.cpu_rowpass`:
    blocks of rows decoded into a cache-sized scratch, the solves and the Gram product fused,
    bf16/fp16 read in their own format), or None where they do not run (CuPy chunks, integer
    or empty blocks): the block is then decoded whole and solved by the backend."""
    if block.ndim != 2 or block.shape[0] == 0:
        return None
    xp = B.array_namespace(block)
    impl = B.delegate(xp, "row_passes")
    return None if impl is None else impl(block, B.native_dtype(xp, fc))


def _apply(block, fin, fc, sexp, Rs):
    """A_i decoded, scaled by 2^sexp, times R_1⁻¹ ··· R_k⁻¹ (the passes' right solves)."""
    X = decode(block, fin, fc)
    if sexp:
        X = scale_pow2(X, sexp)
    for R in Rs:
        X = B.solve_triangular(R, X, lower=False, side="right", overwrite_b=X is not block)
    return X


def _gram_task(block, fin, fc, sexp, Rs):
    rp = _passes(block, fc)
    if rp is not None:
        return rp.gram(Rs, sexp)
    X = _apply(block, fin, fc, sexp, Rs)
    xp = B.array_namespace(X)
    with np.errstate(over="ignore", invalid="ignore"):
        return xp.matmul(mT(xp, X), X)


def _q_task(block, fin, fc, sexp, Rs, fs):
    rp = _passes(block, fc)
    if rp is not None:
        # the task's result, kept by the worker: not recycled memory
        out = np.empty(block.shape, dtype=B.native_dtype(B.array_namespace(block), fs))
        return rp.fill(out, Rs, sexp)
    return store(_apply(block, fin, fc, sexp, Rs), fs)


def _amax_task(block, fin, fc, sexp, Rs):
    X = _apply(block, fin, fc, sexp, Rs)
    xp = B.array_namespace(X)
    return np.float64(to_float(xp.max(xp.abs(X)))) if X.size else np.float64(0.0)


def _max(parts):
    return max(parts)


def _sketch_task(block, i, fin, fc, sexp, Rs, seed, kind, k):
    """S_i X_i for the block's columns of the sketch S (k×m), drawn from (seed, block index)."""
    return sketch_block(_apply(block, fin, fc, sexp, Rs), kind, k,
                        np.random.default_rng([seed, i]))


def _leaf_qr(block, fin, fc, sexp):
    """Householder QR of one decoded block (its Q and R in the compute format)."""
    from ..qr_methods.householder import householder_qr

    X = _apply(block, fin, fc, sexp, [])
    res = householder_qr(X, storage=fc.name, compute=fc.name)
    return res.Q, res.R


# --------------------------------------------------------------------------- the operand
class DaskOperand(Operand):
    """X = (A·2^e)·R₁⁻¹···R_k⁻¹ over the row blocks of a Dask array A: the operand the local
    CholeskyQR passes (:func:`linalg_pc.qr_methods.cholesky.cholqr_iterate`) run on.

    ``scale`` and ``solve`` only record the exponent and the chain of R factors; ``gram()``
    builds one task per block (A_i decoded, scaled, times the chain's inverses, then X_iᵀX_i)
    and a tree reduction of fan-in ``TREE_SPLIT``, and computes the n×n sum (one round trip,
    n² words per block over the tree); ``value()`` is the lazy Q, chunked like A, in the
    storage format. Nothing of size m×n is kept between passes.
    """

    def __init__(self, A, ctx):
        self.A, self.ctx = A, ctx
        self.fin, self.fc, self.fs = ctx.prec.input, ctx.compute, ctx.storage
        #: A and its format as given (the TSQR fallback starts from them)
        self.A0, self.fin0 = A, self.fin
        self.shape = tuple(A.shape)
        self.n = A.shape[1]
        self.exp = 0
        self.chain: list = []
        self.dask = dask_modules()[0]

    def _compute(self, leaf, args, prefix, **kw):
        return self.dask.compute(tree_reduce(self.A, leaf, (self.fin, self.fc, self.exp,
                                                             list(self.chain), *args),
                                             prefix, **kw))[0]

    def gram(self, emulate: bool = True):
        """XᵀX: one task per block (A_i decoded, scaled, solved by the chain, its Gram matrix
        summed in the same streamed pass) and the tree reduction; one round trip."""
        return self.ctx.xp.asarray(self._compute(_gram_task, (), "lpc-gram"))

    def amax(self) -> float:
        return float(self._compute(_amax_task, (), "lpc-amax", combine=_max))

    def pow2_exponent(self) -> int:
        """The exponent of max|X| (ValueError when A holds NaN or inf)."""
        amax = self.amax()
        if not math.isfinite(amax):
            raise ValueError("A must not contain NaN or inf")
        return 0 if amax == 0 else -math.frexp(amax)[1]

    def scale(self, e: int) -> None:
        self.exp += e

    def solve(self, R, kap: float) -> None:
        self.chain.append(R)

    def sketch(self, kind: str, k: int, seed: int):
        """Y = S X (k×n): a Gaussian or CountSketch S drawn per block from (seed, block)."""
        return self.ctx.xp.asarray(self._compute(_sketch_task, (seed, kind, k), "lpc-sketch",
                                                 indexed=True))

    def value(self):
        meta = self.A._meta
        xp = B.array_namespace(meta)
        dtype = B.native_dtype(xp, self.fs)
        out_meta = xp.zeros((0, self.n), dtype=dtype)
        return self.A.map_blocks(_q_task, self.fin, self.fc, self.exp, list(self.chain),
                                 self.fs, dtype=dtype, meta=out_meta)


def _tsqr(d: DaskOperand):
    """Householder QR of every block (kept on the workers), of the stacked R's on the client;
    returns (Q lazy or None, R)."""
    dask, da, HighLevelGraph, Delayed, tokenize = dask_modules()
    ctx, xp = d.ctx, d.ctx.xp
    A, fin = d.A0, d.fin0
    keys = [k[0] for k in A.__dask_keys__()]
    name = f"lpc-tsqr-leaf-{tokenize(A, fin, d.fc)}"
    layer = {(name, i): (_leaf_qr, k, fin, d.fc, 0) for i, k in enumerate(keys)}
    hlg = HighLevelGraph.from_collections(name, layer, dependencies=[A])
    leaves = [Delayed((name, i), hlg, layer=name) for i in range(len(keys))]
    need_q = ctx.mode != "r"
    if need_q:
        leaves = list(dask.persist(*leaves))
    rs = dask.compute(*[lf[1] for lf in leaves])
    rows = [r.shape[0] for r in rs]
    stack = xp.concat([xp.asarray(r) for r in rs], axis=0)
    from ..qr_methods.householder import householder_qr

    top = householder_qr(stack, storage=d.fc.name, compute=d.fc.name)
    ctx.trace.passes = 2
    ctx.trace.notes.append(f"TSQR over {len(keys)} row blocks (Householder per block, then of "
                           f"the stacked {stack.shape[0]}x{d.n} R factors)")
    if not need_q:
        return None, top.R
    Qt = top.Q
    offs = np.concatenate([[0], np.cumsum(rows)])
    qname = f"lpc-tsqr-q-{tokenize(name, d.fs)}"
    qlayer = {(qname, i, 0): (_tsqr_q, lf.key, Qt[offs[i]:offs[i + 1]], d.fs)
              for i, lf in enumerate(leaves)}
    qg = HighLevelGraph.from_collections(qname, qlayer, dependencies=leaves)
    dtype = B.native_dtype(B.array_namespace(A._meta), d.fs)
    meta = B.array_namespace(A._meta).zeros((0, d.n), dtype=dtype)
    return da.Array(qg, qname, chunks=A.chunks, dtype=dtype, meta=meta), top.R


def _tsqr_q(leaf, Wi, fs):
    Ql = leaf[0]
    xp = B.array_namespace(Ql)
    return store(xp.matmul(Ql, xp.asarray(Wi)), fs)


@register_routine("qr")
def qr_dask(A, *, method: str = "auto", mode: str = "reduced", storage=None, compute=None,
            emulate=None, rng=None, **options) -> QRResult:
    """``lpc.qr`` of a Dask array chunked along rows (see the module docstring).

    Parameters
    ----------
    A : dask.array.Array (m, n), m >= n, one column chunk
        NumPy (ml_dtypes bf16/fp16 included) or CuPy chunks; a stack (..., m, n) chunked along
        its leading axes goes to the batched map (:func:`linalg_pc.distributed.batched.qr_stack`).
    method : {"auto", "cholqr2", "scholqr3", "rand_cholqr", "tsqr"}
    mode : {"reduced", "r"}
    storage, compute : optional
        As :func:`linalg_pc.qr`; Q's chunks are written in ``storage``.
    rng, **options
        ``shift`` (scholqr3), ``sketch``, ``sketch_size`` (rand_cholqr; ``rng`` seeds it).

    Returns
    -------
    QRResult
        Q a lazy Dask array chunked like A (None for mode "r"); R (n×n, the chunks' library)
        and ``info`` concrete, ``info.backend == "dask"``.

    Raises
    ------
    ValueError, TypeError, NotImplementedError
        Before any task is submitted: bad chunking (the message says how to rechunk), m < n,
        an unknown method or option, ``emulate`` or ``mode="complete"``, a non-float dtype.
        NaN/inf in A raise ValueError after the first Gram pass reveals them (as locally, the
        check rides on the Gram matrix's diagonal).
    """
    from ..qr_methods._common import METHODS

    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; valid methods are {list(METHODS)}")
    if getattr(A, "ndim", 0) > 2:
        from .batched import qr_stack

        return qr_stack(A, method=method, mode=mode, storage=storage, compute=compute,
                        emulate=emulate, rng=rng, **options)
    if method not in DASK_QR_METHODS:
        raise NotImplementedError(f"method {method!r} has no distributed implementation; "
                                  f"Dask arrays take {list(DASK_QR_METHODS)}")
    if mode not in ("reduced", "r"):
        raise NotImplementedError(f"mode {mode!r} is not offered for Dask arrays (an m×m Q); "
                                  f"use 'reduced' or 'r'")
    if emulate is not None:
        raise NotImplementedError("emulate is not offered for Dask arrays; run the study on "
                                  "an in-memory array")
    check_row_chunks(A, "A")
    allowed = {"scholqr3": ("shift",), "rand_cholqr": ("sketch", "sketch_size")}
    name = "cholqr2" if method == "auto" else method
    bad = sorted(set(options) - set(allowed.get(name, ())))
    if bad:
        raise TypeError(f"unexpected option(s) {bad} for method {name!r} on a Dask array; it "
                        f"takes {list(allowed.get(name, ())) or 'no options'}")
    m, n = A.shape
    meta = A._meta
    xp = B.array_namespace(meta)
    small = xp.zeros((n, n), dtype=meta.dtype)
    ctx, _ = prepare(small, method=name, mode=mode, storage=storage, compute=compute,
                     tall_only=True, batch_ok=False, check=False)
    if m < n:
        raise ValueError(f"method {name!r} needs m >= n (a tall or square A); got A of shape "
                         f"{(m, n)}")
    shift = options.get("shift", "always")
    if name == "scholqr3" and not (shift in SHIFT_POLICIES or (
            isinstance(shift, (int, float)) and not isinstance(shift, bool) and shift >= 0)):
        raise ValueError(f"shift must be one of {SHIFT_POLICIES} or a number >= 0, got "
                         f"{shift!r}")
    sketch = options.get("sketch", "gaussian")
    if name == "rand_cholqr" and sketch not in SKETCHES:
        raise ValueError(f"sketch must be one of {SKETCHES}, got {sketch!r}")
    tr = ctx.trace
    tr.requested = method
    tr.backend = "dask"
    if method == "auto":
        tr.notes.append(f"auto chose cholqr2 for the Dask array of shape {(m, n)}")
    d = DaskOperand(A, ctx)
    need_q = mode != "r"
    Q = None
    if n == 0 or m == 0:
        name = "tsqr"
    try:
        if name == "tsqr":
            tr.method = "tsqr"
            Q, R = _tsqr(d)  # a block with NaN/inf raises ValueError in its Householder QR
        elif name == "rand_cholqr":
            k = sketch_rows(m, n, options.get("sketch_size"))
            e = d.pow2_exponent()  # NaN/inf: ValueError before the sketch
            sexp = e if abs(e) > POW2_SAFE else 0
            if sexp:
                d.scale(sexp)
                tr.notes.append(f"A scaled by 2^{sexp} to keep the Gram matrix in range")
            gen = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
            Y = d.sketch(sketch, k, int(gen.integers(0, 2**62)))
            tr.notes.append(f"{sketch} sketch, {k} rows (drawn per row block)")
            Q, R = sketch_preconditioned(ctx, d, Y, need_q=need_q)
            if sexp:
                R = unscale_r(ctx, R, -sexp)
        else:
            if name == "scholqr3":
                sh = float(shift) if not isinstance(shift, str) else shift
                kw = dict(min_passes=3 if sh == "always" or (isinstance(sh, float) and sh > 0)
                          else 2, max_passes=MAX_PASSES, accept=ACCEPT_KAPPA, shift=sh,
                          allow_fallback_shift=False)
            else:
                kw = dict(min_passes=2, max_passes=3, accept=ACCEPT_KAPPA, shift=None,
                          allow_fallback_shift=True)
            Q, R = cholqr_iterate(ctx, d, need_q=need_q, **kw)
    except Breakdown as exc:
        tr.fallbacks.append(f"{tr.method} -> householder: {exc.reason}")
        tr.method = "householder"
        Q, R = _tsqr(d)
        tr.notes.append("Householder ran as TSQR over the row blocks")
    tr.kappa_est = kappa_est(xp, R)
    res = finish(ctx, None, R)
    info = QRInfo(**{**res.info.as_dict(), "mode": mode})
    return QRResult(Q, res.R, info)
