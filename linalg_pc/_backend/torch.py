"""PyTorch delegates: torch.linalg for the primitives of :mod:`linalg_pc._backend`."""

from __future__ import annotations

import numpy as np
import torch

from . import register


@register("torch", "solve_triangular")
def solve_triangular(A, B, *, lower, trans, unit_diagonal):
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


# --------------------------------------------------------------------------- operators, columns
@register("torch", "take_columns")
def take_columns(Q, cols):
    """Slices for up to four runs of consecutive columns (strided gathers are slow)."""
    from . import column_runs

    runs = column_runs(cols)
    if len(runs) > 4:
        return None
    parts = [Q[..., a:b] for a, b, _ in runs]
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim=-1)


@register("torch", "put_columns")
def put_columns(Q, cols, new, *, inplace):
    """Slice assignments for up to eight runs, an index-put otherwise (on a clone unless
    ``inplace``)."""
    from . import column_runs

    out = Q if inplace else Q.clone()
    runs = column_runs(cols)
    if len(runs) <= 8:
        for a, b, pos in runs:
            out[..., a:b] = new[..., pos:pos + (b - a)]
    else:
        out[..., torch.as_tensor(cols, device=Q.device)] = new
    return out
