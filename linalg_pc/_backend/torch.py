"""PyTorch delegates: torch.linalg (and, for CPU stacks of small matrices, the Numba batched
kernel on the tensor's memory) for the primitives of :mod:`linalg_pc._backend`."""

from __future__ import annotations

import numpy as np
import torch

from ._core import register


@register("torch", "bf16_dtype")
def bf16_dtype():
    return torch.bfloat16


@register("torch", "dtype_kind")
def dtype_kind(dt) -> str:
    if dt.is_complex:
        return "complex"
    if dt.is_floating_point:
        return "float"
    return "bool" if dt == torch.bool else "int"


@register("torch", "from_bf16_bits")
def from_bf16_bits(h, device):
    out = torch.from_numpy(np.ascontiguousarray(h)).view(torch.bfloat16)
    return out if device is None else out.to(device)


@register("torch", "all_finite")
def all_finite(x) -> bool:
    """CPU tensors: NumPy's check on the tensor's memory (``torch.isfinite`` + ``all`` of a
    20000×8×8 fp32 stack takes ~10x longer); CUDA tensors: torch's."""
    if x.device.type == "cpu":
        from .numpy import all_finite as host_all_finite

        return host_all_finite(to_numpy(x))
    return bool(torch.all(torch.isfinite(x)))


@register("torch", "memory_extent")
def memory_extent(x):
    """(device, address of element 0, itemsize, shape, byte strides) for memory_overlap."""
    item = x.element_size()
    return (str(x.device), int(x.data_ptr()), int(item), tuple(x.shape),
            tuple(int(s) * item for s in x.stride()))


@register("torch", "finite_flag")
def finite_flag(x):
    """CPU tensors: :func:`all_finite` as a 0-d tensor; CUDA tensors: None (the generic
    ``all(isfinite(x))`` stays on the device: no synchronization)."""
    return torch.tensor(all_finite(x)) if x.device.type == "cpu" else None


@register("torch", "solve_triangular")
def solve_triangular(A, B, *, lower, trans, unit_diagonal, side, overwrite_b, cond):
    if side != "left":
        return None  # the generic code solves the transposed left-side system
    At = A.mT if trans else A
    upper = (not lower) != trans
    return torch.linalg.solve_triangular(At, B, upper=upper, left=True,
                                         unitriangular=unit_diagonal)


@register("torch", "cholesky")
def cholesky(A):
    """torch.linalg.cholesky_ex; a non-finite factor counts as a failure of the last minor."""
    batch = A.shape[:-2]
    L, inf = torch.linalg.cholesky_ex(A, upper=False)
    info = inf.cpu().numpy().astype(np.int64)
    bad = ~torch.isfinite(L).reshape(batch + (-1,)).all(dim=-1)
    info = np.where((info == 0) & bad.cpu().numpy(), A.shape[-1], info)
    return L, info


@register("torch", "qr")
def qr(A, mode):
    """torch.linalg.qr (LAPACK on the CPU, cuSOLVER/MAGMA on CUDA), a matrix or a stack."""
    Q, R = torch.linalg.qr(A, mode=mode)
    return (None if mode == "r" else Q), R, "torch"


@register("torch", "batched_qr")
def batched_qr(A, mode):
    """CPU fp32/fp64 stacks: the Numba batched kernel on the tensor's own memory
    (``Tensor.numpy`` shares it; the factors come back as tensors without a copy): 20000 8×8
    fp32 matrices in 19-32 ms, as fast as the NumPy path, against 60-140 ms for torch.linalg.qr
    and 0.2-1.3 s for the array-API reference (2 shared cores). bf16 stacks arrive decoded to
    fp32 (the compute format). CUDA tensors: None (the caller's array-API code runs)."""
    if A.device.type != "cpu" or A.dtype not in (torch.float32, torch.float64):
        return None
    from .numpy import batched_numba

    Q, R, backend = batched_numba(A.detach().numpy(), mode)
    return (None if Q is None else torch.from_numpy(Q)), torch.from_numpy(R), backend


@register("torch", "detach")
def detach(x):
    """The tensor without its autograd history (the same memory): linalg_pc's routines do not
    differentiate, so they read their inputs detached and return tensors that need no grad."""
    return x.detach() if x.requires_grad else x


@register("torch", "to_numpy")
def to_numpy(x):
    """Host copy (a view for CPU tensors); bf16 travels as its 16-bit pattern."""
    t = x.detach().cpu()
    if t.dtype == torch.bfloat16:
        import ml_dtypes

        return t.contiguous().view(torch.int16).numpy().view(np.dtype(ml_dtypes.bfloat16))
    return t.numpy()


@register("torch", "uniform")
def uniform(shape, rng, *, device, dtype):
    """Draws from a ``torch.Generator``; None (use the NumPy draw) for any other rng."""
    if isinstance(rng, torch.Generator):
        return torch.rand(shape, generator=rng, dtype=dtype, device=device)
    return None


@register("torch", "countsketch")
def countsketch(X, rows, signs, k):
    """A scatter-add (``index_add_``): O(mn)."""
    dev = X.device
    idx = torch.as_tensor(rows, device=dev)
    sg = torch.as_tensor(signs, dtype=X.dtype, device=dev)
    Y = torch.zeros((k, X.shape[1]), dtype=X.dtype, device=dev)
    Y.index_add_(0, idx, X * sg[:, None])
    return Y


# --------------------------------------------------------------------------- operators, columns
@register("torch", "take_columns")
def take_columns(Q, cols):
    """Slices of the runs of consecutive columns (strided gathers are slow)."""
    from .columns import take_by_runs

    return take_by_runs(Q, cols)


@register("torch", "take_along_axis")
def take_along_axis(x, idx, axis):
    """One gather (the index may be a broadcast, stride-0 view)."""
    return torch.gather(x, axis, idx)


@register("torch", "put_columns")
def put_columns(Q, cols, new, *, inplace):
    """Slice assignments of the runs, an index-put beyond (on a copy unless ``inplace``)."""
    from .columns import put_by_runs

    def index_put(o, c, v):
        o[..., torch.as_tensor(c, device=o.device)] = v

    return put_by_runs(Q if inplace else Q.clone(), cols, new, index_put)


#: Row-block size of the blocked Gram product of CPU tensors (measured at d = 1024 and 4096 on
#: 2 cores: 256-row blocks take 0.70-0.78 of one full product).
GRAM_BLOCK = 256


@register("torch", "gram")
def gram(X):
    """X Xᵀ for CPU tensors of at least 2 blocks of rows: the blocks on and above the diagonal,
    mirrored below it (torch exposes no SYRK); one product otherwise (and on CUDA)."""
    d = X.shape[-2]
    if X.device.type != "cpu" or d < 2 * GRAM_BLOCK:
        return X @ X.mT
    out = torch.empty((*X.shape[:-2], d, d), dtype=X.dtype, device=X.device)
    starts = range(0, d, GRAM_BLOCK)
    for a in starts:
        Xa = X[..., a:a + GRAM_BLOCK, :]
        for c in starts:
            if c < a:
                continue
            blk = Xa @ X[..., c:c + GRAM_BLOCK, :].mT
            if c == a:  # a product's rounding need not be symmetric: mirror its upper half
                blk = torch.triu(blk) + torch.triu(blk, 1).mT
            out[..., a:a + GRAM_BLOCK, c:c + GRAM_BLOCK] = blk
            if c != a:
                out[..., c:c + GRAM_BLOCK, a:a + GRAM_BLOCK] = blk.mT
    return out
