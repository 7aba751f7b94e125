"""Numba kernels: the fused elementwise passes of one Kronecker-preconditioner step.

Between its products, a step of SOAP (Vyas et al., ICLR 2025) or KL-SOAP (Lin et al., ICLR 2026)
does elementwise work on arrays as large as the parameter: the finite-gradient test, the two
moment EMAs in the eigenbasis, the Adam quotient, the step size and decoupled weight decay, and
the EMA of each Kronecker factor. Written as array expressions these are about fifteen passes
over memory per step; for a stack of 64 parameters of 256×256 (16 MB per array) they take as long
as the products. The kernels here do each group in one pass:

- :func:`all_finite`: whether every entry is finite, on the bit patterns (one read);
- :func:`adam_moments`: m ← b₁m + c₁g, v ← b₂v + c₂g², out = m/(√v + ε) (moments stored in the
  compute format, or in bf16 and rounded to nearest even, the quotient then taken of the stored
  values, as a decode of the stored state would give);
- :func:`ema`: K ← bK + c·S (K in the compute format or bf16);
- :func:`assemble`: u = −s·D, then u ← u − λ(P + u) (decoupled weight decay).

Every kernel computes exactly the operations, in the order and format, of the array expressions
in :mod:`linalg_pc.precond` that it replaces (``b·x + c·y`` with both products rounded, never
contracted to a fused multiply-add), so its results equal theirs bit for bit; the tests hold them
to those expressions. Each is compiled as parallel and serial twins (kind "stream" of
:mod:`linalg_pc._kernels._twins`: memory bound, parallel only with two or more threads).

:func:`host_view` is how the callers reach the memory: a NumPy array as itself, a contiguous
PyTorch CPU tensor as the zero-copy NumPy view of its storage (bf16 as its 16-bit patterns);
anything else (a CUDA tensor, a CuPy array, a non-contiguous array) gives None and the caller
keeps its array-API path. :func:`gram_ema` updates a factor by one product with β and α where
the library offers it (PyTorch's in-place ``baddbmm_``), so the EMA costs no pass at all.
"""

from __future__ import annotations

import sys

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.extending import intrinsic

from .. import _buffers
from ._twins import twins
from .cpu import _rne_bits

__all__ = ["host_view", "all_finite", "adam_moments", "ema", "assemble", "gram_ema", "matmul",
           "BF16", "chunks"]

#: dtype of bf16 bit patterns in the kernels (Numba cannot type bfloat16)
BF16 = np.dtype(np.uint16)

_UINT = {4: (np.uint32, np.uint32(0x7F800000)), 8: (np.uint64, np.uint64(0x7FF0000000000000)),
         2: (np.uint16, np.uint16(0x7F80))}


def chunks(n: int) -> int:
    """Chunks of the finite-test reduction (a fixed count: the result never depends on the
    number of threads)."""
    return max(1, min(64, n >> 14))


def host_count(x) -> int | None:
    """The value of a 0-d integer array in host memory (NumPy, or a PyTorch CPU tensor read
    through its zero-copy NumPy view: no device synchronization, no conversion), or None."""
    if isinstance(x, np.ndarray):
        return int(x)
    tv = _torch_views()
    if tv is None or not isinstance(x, tv[0]) or not x.is_cpu:
        return None
    return int(x.numpy())


def _torch_views():
    """``(torch.Tensor, torch.float32, torch.float64, torch.bfloat16, torch.int16)`` once torch
    is imported (a tensor cannot exist before), else None: the objects the host paths compare
    against by identity."""
    if _TORCH_VIEWS:
        return _TORCH_VIEWS[0]
    torch = sys.modules.get("torch")
    if torch is None:
        return None
    _TORCH_VIEWS.append((torch.Tensor, torch.float32, torch.float64, torch.bfloat16,
                         torch.int16))
    return _TORCH_VIEWS[0]


_TORCH_VIEWS: list = []


def host_view(x):
    """A zero-copy, flat NumPy view of ``x``'s memory, or None.

    NumPy arrays and PyTorch CPU tensors that are C-contiguous and need no grad qualify;
    bf16 (ml_dtypes or ``torch.bfloat16``) comes back as its uint16 bit patterns, fp16 is
    declined (no kernel takes it). Everything else gives None. (Called several times per
    optimizer step and stack: the tests are attribute reads, no string formatting.)
    """
    if isinstance(x, np.ndarray):
        if not x.flags.c_contiguous:
            return None
        if x.dtype in (np.float32, np.float64):
            return x.reshape(-1)
        if x.dtype.kind == "V" and x.dtype.itemsize == 2 and x.dtype.name == "bfloat16":
            return x.reshape(-1).view(np.uint16)
        return None
    tv = _torch_views()
    if tv is None or not isinstance(x, tv[0]):
        return None
    if not x.is_cpu or x.requires_grad or not x.is_contiguous():
        return None
    dt = x.dtype
    if dt is tv[1] or dt is tv[2]:
        return x.numpy().reshape(-1)
    if dt is tv[3]:
        return x.view(tv[4]).numpy().reshape(-1).view(np.uint16)
    return None


# ------------------------------------------------------------------------------ bit casts
@intrinsic
def _bitcast_f32(typingctx, b):
    """The float32 whose bit pattern is the low 32 bits of the integer ``b``."""
    if not isinstance(b, types.Integer):
        return None

    def codegen(context, builder, sig, args):
        x = args[0]
        if b.bitwidth > 32:
            x = builder.trunc(x, ir.IntType(32))
        elif b.bitwidth < 32:
            x = builder.zext(x, ir.IntType(32))
        return builder.bitcast(x, ir.FloatType())

    return types.float32(b), codegen


@intrinsic
def _bitcast_u32(typingctx, x):
    """The uint32 bit pattern of the float32 ``x``."""
    if x != types.float32:
        return None

    def codegen(context, builder, sig, args):
        return builder.bitcast(args[0], ir.IntType(32))

    return types.uint32(x), codegen


@njit(cache=True, inline="always")
def _decode(h):
    """bf16 bits (uint16) -> float32 (exact)."""
    return _bitcast_f32(np.uint32(h) << np.uint32(16))


# ------------------------------------------------------------------------------ finite test
def _nonfinite_impl(bits, mask, nchunk):
    n = bits.size
    per = (n + nchunk - 1) // nchunk
    bad = np.zeros(nchunk, dtype=np.int64)
    for c in prange(nchunk):
        acc = 0
        for i in range(c * per, min(n, (c + 1) * per)):
            acc |= (bits[i] & mask) == mask
        bad[c] = acc
    return bad.sum()


_nonfinite = twins(_nonfinite_impl, "stream")


def all_finite(x: np.ndarray) -> bool:
    """Whether every entry of the flat array ``x`` (float32, float64 or bf16 bits) is finite:
    one read of the exponent bits. Cost: one pass over ``x``."""
    if x.size == 0:
        return True
    uint, mask = _UINT[x.dtype.itemsize]
    bits = x.view(uint)
    return int(_nonfinite.pick(bits.size)(bits, mask, chunks(bits.size))) == 0


# ------------------------------------------------------------------------------ moments
def _adam_impl(g, m, v, out, b1, c1, b2, c2, eps):
    for i in prange(g.size):
        gi = g[i]
        mi = b1 * m[i] + c1 * gi
        vi = b2 * v[i] + c2 * (gi * gi)
        m[i] = mi
        v[i] = vi
        out[i] = mi / (np.sqrt(vi) + eps)


def _adam_bf16_impl(g, m, v, out, b1, c1, b2, c2, eps):
    for i in prange(g.size):
        gi = g[i]
        mb = _rne_bits(_bitcast_u32(b1 * _decode(m[i]) + c1 * gi))
        vb = _rne_bits(_bitcast_u32(b2 * _decode(v[i]) + c2 * (gi * gi)))
        m[i] = mb
        v[i] = vb
        out[i] = _decode(mb) / (np.sqrt(_decode(vb)) + eps)


_adam = twins(_adam_impl, "stream")
_adam_bf16 = twins(_adam_bf16_impl, "stream")


def adam_moments(g, m, v, out, b1: float, b2: float, eps: float) -> None:
    """m ← b₁m + (1−b₁)g, v ← b₂v + (1−b₂)g², out = m/(√v + ε), one pass, in place.

    ``g`` and ``out`` are flat arrays of the compute dtype (float32 or float64; ``out`` may be
    ``g``); ``m`` and ``v`` of the compute dtype, or bf16 bit patterns (uint16) with float32
    compute, rounded to nearest even when written, and the quotient is taken of the rounded
    values. Constants are rounded to the compute dtype first, as the array expressions'
    0-d constants are. Cost: 3 reads, 3 writes per entry.
    """
    dt = g.dtype.type
    args = (dt(b1), dt(1.0 - b1), dt(b2), dt(1.0 - b2), dt(eps))
    k = _adam_bf16 if m.dtype == BF16 else _adam
    k.pick(g.size)(g, m, v, out, *args)


# ------------------------------------------------------------------------------ factor EMA
def _ema_impl(K, S, b, c):
    for i in prange(K.size):
        K[i] = b * K[i] + c * S[i]


def _ema_bf16_impl(K, S, b, c):
    for i in prange(K.size):
        K[i] = _rne_bits(_bitcast_u32(b * _decode(K[i]) + c * S[i]))


_ema = twins(_ema_impl, "stream")
_ema_bf16 = twins(_ema_bf16_impl, "stream")


def ema(K, S, beta: float) -> None:
    """K ← βK + (1−β)S in place (flat arrays; K of S's dtype, or bf16 bits with float32 S,
    rounded to nearest even). Cost: 2 reads, 1 write per entry."""
    dt = S.dtype.type
    k = _ema_bf16 if K.dtype == BF16 else _ema
    k.pick(K.size)(K, S, dt(beta), dt(1.0 - beta))


# ------------------------------------------------------------------------------ update
def _assemble_impl(D, P, out, s, lam, wd):
    ss = s[0]
    for i in prange(D.size):
        u = -ss * D[i]
        if wd:
            u = u - lam * (P[i] + u)
        out[i] = u


_assemble = twins(_assemble_impl, "stream")


def assemble(D, P, out, s, lam: float) -> None:
    """out = −s·D, then (``P`` given) out ← out − λ(P + out): the update of a step with
    decoupled weight decay. ``s`` is a 1-element array of the compute dtype (the step size,
    read inside the kernel); ``out`` may be ``D``. Cost: 2 reads, 1 write per entry."""
    dt = D.dtype.type
    wd = P is not None
    _assemble.pick(D.size)(D, D if P is None else P, out, s, dt(lam), wd)


# ------------------------------------------------------------------------------ Gram EMA
def gram_ema(K, X, Xt, beta: float) -> bool:
    """K ← βK + (1−β)·X Xᵀ (``Xt`` = Xᵀ, a view) by one product with β and α, where the library
    offers it: PyTorch's in-place ``baddbmm_``/``addmm_`` on float32/float64 CPU tensors of one
    dtype, for factors that PyTorch's Gram product (``_backend.torch.gram``) forms by one plain
    product anyway (d < 2 blocks; larger factors save a quarter of the flops by their symmetry,
    more than one EMA pass costs). Returns False when not offered (the caller forms the Gram
    matrix and calls :func:`ema`)."""
    if type(K).__module__.split(".")[0] != "torch" or type(X) is not type(K):
        return False
    from .._backend.torch import GRAM_BLOCK

    if (K.device.type != "cpu" or K.dtype != X.dtype or K.requires_grad
            or str(K.dtype) not in ("torch.float32", "torch.float64")
            or X.shape[-2] >= 2 * GRAM_BLOCK or not K.is_contiguous()):
        return False
    if K.ndim == 2:
        K.addmm_(X, Xt, beta=beta, alpha=1.0 - beta)
        return True
    lead = (-1, *K.shape[-2:])
    K.view(lead).baddbmm_(X.reshape(-1, *X.shape[-2:]), Xt.reshape(-1, *Xt.shape[-2:]),
                          beta=beta, alpha=1.0 - beta)
    return True


# ------------------------------------------------------------------------------ products
def empty_like(x):
    """An uninitialized C-contiguous array of x's library (NumPy, or a PyTorch CPU tensor of
    float32/float64), shape and dtype, over recycled host memory (:mod:`linalg_pc._buffers`: no
    page faults for a step's same-size temporaries)."""
    if isinstance(x, np.ndarray):
        return _buffers.empty(x.shape, x.dtype)
    import torch

    dt = np.float32 if x.dtype == torch.float32 else np.float64
    return torch.from_numpy(_buffers.empty(tuple(x.shape), dt))


def _batch_shape(a: tuple, b: tuple) -> tuple:
    """The broadcast batch shape of two products' operands (the common cases without a call
    into the libraries' shape machinery, which costs more than a small product)."""
    if a == b or not b:
        return a
    if not a:
        return b
    return np.broadcast_shapes(a, b)


def matmul(a, b):
    """``a @ b`` written into recycled host memory (:mod:`linalg_pc._buffers`) for NumPy arrays
    and PyTorch CPU tensors of float32/float64, else None.

    A fresh 16 MB result is paid twice: once by the product and once by the page faults of its
    new memory (measured on a loaded 2-core machine: filling a fresh 64×256×256 fp32 tensor
    16 ms, a reused one 1.8 ms). The same product into the same kind of memory: the same bits.
    """
    if isinstance(a, np.ndarray) and isinstance(b, np.ndarray):
        if a.dtype != b.dtype or a.dtype not in (np.float32, np.float64):
            return None
        shape = _batch_shape(a.shape[:-2], b.shape[:-2]) + (a.shape[-2], b.shape[-1])
        return np.matmul(a, b, out=_buffers.empty(shape, a.dtype))
    if type(a).__module__.split(".")[0] != "torch" or type(b) is not type(a):
        return None
    if (a.device.type != "cpu" or b.device.type != "cpu" or a.dtype != b.dtype
            or a.requires_grad or b.requires_grad
            or str(a.dtype) not in ("torch.float32", "torch.float64")):
        return None
    import torch

    shape = (*_batch_shape(tuple(a.shape[:-2]), tuple(b.shape[:-2])), a.shape[-2], b.shape[-1])
    dt = np.float32 if a.dtype == torch.float32 else np.float64
    out = torch.from_numpy(_buffers.empty(shape, dt))
    return torch.matmul(a, b, out=out)
