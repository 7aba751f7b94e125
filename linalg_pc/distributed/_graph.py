"""Graph plumbing shared by the distributed algorithms: the Dask import, input checks, per-chunk
decoding, tree reductions of small per-chunk results, and records mapped over batch chunks.

Nothing here imports Dask at module level: :func:`dask_modules` imports it on first use with a
message naming the ``dask`` extra.
"""

from __future__ import annotations

import numpy as np

from .. import _backend as B
from .._backend.convert import DECODE, STORE, convert
from .._backend.dask import is_dask
from .._formats import Format

__all__ = ["dask_modules", "check_dask_array", "check_row_chunks", "decode", "store",
           "tree_reduce", "TREE_SPLIT"]

#: Fan-in of the reduction trees: each combine task adds (or stacks) this many children.
TREE_SPLIT = 4

#: Arguments of the leaf tasks up to this size are written into every leaf task; larger ones
#: (e.g. the chain of R factors for a wide A) become one graph key each, shared by the leaves.
INLINE_ARGS_BYTES = 1 << 20


def dask_modules():
    """``(dask, dask.array, HighLevelGraph, Delayed, tokenize)``; ImportError names the extra."""
    try:
        import dask
        import dask.array as da
        from dask.base import tokenize
        from dask.delayed import Delayed
        from dask.highlevelgraph import HighLevelGraph
    except ImportError as exc:  # pragma: no cover - the extra is installed in the test env
        raise ImportError("Dask arrays need dask: pip install 'linalg_pc[dask]' (dask[array,"
                          "distributed])") from exc
    return dask, da, HighLevelGraph, Delayed, tokenize


def check_dask_array(x, name: str):
    """x is a dask.array.Array (TypeError naming ``name`` otherwise, e.g. a NumPy array mixed
    with a Dask one)."""
    if not (is_dask(x) and hasattr(x, "chunks") and hasattr(x, "_meta")):
        raise TypeError(f"{name} must be a dask.array.Array like the other Dask arguments, got "
                        f"{type(x).__module__}.{type(x).__name__}; wrap it with "
                        f"dask.array.from_array or compute the Dask ones")
    return x


def check_row_chunks(A, name: str = "A"):
    """A is 2-D and chunked along rows only (ValueError naming ``name`` and the fix)."""
    check_dask_array(A, name)
    if A.ndim != 2:
        raise ValueError(f"{name} must be a 2-D Dask array (m, n) for the distributed "
                         f"algorithm, got shape {tuple(A.shape)}")
    if len(A.chunks[1]) != 1:
        raise ValueError(f"{name} must be chunked along rows only (one column chunk); got "
                         f"{len(A.chunks[1])} column chunks {A.chunks[1]}: use "
                         f"{name}.rechunk({{1: -1}})")
    if any(np.isnan(c) for c in A.chunks[0]):
        raise ValueError(f"{name} has unknown chunk sizes; call {name}.compute_chunk_sizes()")


def decode(block, fin: Format, fc: Format):
    """One chunk in the compute format: 16-bit formats decoded exactly, integers cast."""
    xp = B.array_namespace(block)
    kind = B.dtype_kind(block)
    if kind in ("int", "bool"):
        return xp.astype(block, xp.float64 if fc.name == "fp64" else xp.float32)
    return block if fin == fc else convert(block, fin, fc, op=DECODE, xp=xp)


def store(X, fmt: Format):
    """A compute-format chunk in the storage format (rounded to nearest even)."""
    src = B.format_of(X)
    return X if src == fmt else convert(X, src, fmt, op=STORE, xp=B.array_namespace(X))


def _add(parts):
    out = parts[0]
    for p in parts[1:]:
        out = out + p
    return out


def tree_reduce(A, leaf, args: tuple, prefix: str, combine=_add, split: int = TREE_SPLIT,
                indexed: bool = False):
    """A Delayed of the tree reduction over A's row blocks: ``leaf(block, *args)`` per block
    (``leaf(block, i, *args)`` when ``indexed``), ``combine(list)`` over groups of ``split``
    children, up to one root.

    Small ``args`` (``INLINE_ARGS_BYTES``) are written into every leaf task, so a leaf's only
    dependency is its block and the scheduler runs it where the block lives: with the
    arguments as separate keys a leaf has two dependencies, and leaves whose own work was short
    were placed by the scheduler's occupancy estimate on the other worker, fetching their
    block (tens of MB) over the network (docs/distributed.md). Larger ``args`` are embedded
    once in the graph (one key each) and shared by the leaves.
    """
    _, _, HighLevelGraph, Delayed, tokenize = dask_modules()
    keys = [k[0] if isinstance(k, list) else k for k in A.__dask_keys__()]
    name = f"{prefix}-{tokenize(A, *args, prefix)}"
    layer: dict = {}
    arg_keys = list(args)
    if _nbytes(args) > INLINE_ARGS_BYTES:
        arg_keys = []
        for j, a in enumerate(args):
            layer[(name + "-arg", j)] = a
            arg_keys.append((name + "-arg", j))
    level = []
    for i, k in enumerate(keys):
        layer[(name + "-leaf", i)] = (leaf, k, *((i,) if indexed else ()), *arg_keys)
        level.append((name + "-leaf", i))
    depth = 0
    while len(level) > 1:
        nxt = []
        for j in range(0, len(level), split):
            key = (f"{name}-L{depth}", j // split)
            layer[key] = (combine, list(level[j:j + split]))
            nxt.append(key)
        level = nxt
        depth += 1
    root = name
    layer[root] = (_identity, level[0])
    hlg = HighLevelGraph.from_collections(name, layer, dependencies=[A])
    return Delayed(root, hlg)


def _identity(x):
    return x


def _nbytes(x) -> int:
    """Bytes of the arrays in x (lists and tuples searched)."""
    if isinstance(x, (list, tuple)):
        return sum(_nbytes(v) for v in x)
    return int(getattr(x, "nbytes", 0))
