"""Batched routines over Dask arrays chunked along the batch axis: the local kernels mapped over
the chunks, results chunked the same way, no chunk gathered to the client.

- :func:`round_to`, :func:`to_storage`, :func:`from_storage`: elementwise, fully lazy
  (``map_blocks``), any chunking.
- :func:`qr_stack` (``lpc.qr`` of a stack (..., m, n)), :func:`block_degeneracy`,
  :func:`solve_degenerate`, batched :func:`pcg` (A (N, n, n), b (N, n)): one task per batch
  chunk runs the local routine (the Numba kernels with ``prange`` over the chunk's systems);
  the tasks run on the cluster at the call (``persist``) and every array field of the returned
  record is a Dask array backed by the workers' memory, chunked like the input. Fields that do
  not depend on the data (labels, split, ...) are plain values; the small per-chunk ``QRInfo``
  records are gathered and merged (largest κ estimate, every fallback, prefixed by its chunk).

Each chunk is computed by the local code, so results equal the local ones on the same systems
bit for bit (the batched kernels treat every system independently). Cost: that of the local
kernel per chunk, plus one task per chunk; communication: none beyond the results.
"""

from __future__ import annotations

import math

import numpy as np

from .. import _backend as B
from .._backend.dask import register_routine
from .._kernels._twins import thread_limit
from ._graph import check_dask_array, dask_modules

__all__ = ["round_to", "to_storage", "from_storage", "qr_stack", "block_degeneracy",
           "solve_degenerate", "pcg_batched"]


# --------------------------------------------------------------------------- elementwise
def _out_meta(x, fmt_dtype_fn):
    xp = B.array_namespace(x._meta)
    dt = fmt_dtype_fn(xp)
    return dt, xp.zeros((0,) * x.ndim, dtype=dt)


def _no_out(out, name):
    if out is not None:
        raise TypeError(f"out= is not supported for Dask arrays ({name} returns a new lazy "
                        f"array)")


@register_routine("round_to")
def round_to(x, fmt, mode: str = "nearest", rng=None, *, out=None):
    """``lpc.round_to`` chunk by chunk (lazy; x's dtype). Stochastic rounding draws an
    independent stream per chunk from ``rng`` (an int or a Generator seeds the streams)."""
    from ..precision import _check_mode, get_format
    from ..precision import round_to as local

    _no_out(out, "round_to")
    get_format(fmt, argname="fmt")
    _check_mode(mode, rng)
    if mode == "stochastic":
        gen = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
        base = int(gen.integers(0, 2**62))
        return x.map_blocks(_round_stochastic, fmt, base, dtype=x.dtype, meta=x._meta)
    return x.map_blocks(local, fmt, mode, dtype=x.dtype, meta=x._meta)


def _round_stochastic(block, fmt, base, block_info=None):
    from ..precision import round_to as local

    loc = block_info[0]["chunk-location"] if block_info else (0,)
    return local(block, fmt, "stochastic", np.random.default_rng([base, *loc]))


@register_routine("to_storage")
def to_storage(x, fmt="bf16", *, mode: str = "nearest", rng=None, out=None):
    """``lpc.to_storage`` chunk by chunk: a lazy array of ``fmt``'s dtype (nearest rounding;
    stochastic as :func:`round_to`)."""
    from ..precision import _check_mode, get_format

    _no_out(out, "to_storage")
    f = get_format(fmt, argname="fmt")
    _check_mode(mode, rng)
    dt, meta = _out_meta(x, lambda xp: B.native_dtype(xp, f))
    if mode == "stochastic":
        gen = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
        base = int(gen.integers(0, 2**62))
        return x.map_blocks(_store_stochastic, f, base, dtype=dt, meta=meta)
    return x.map_blocks(_store, f, mode, dtype=dt, meta=meta)


def _store(block, f, mode):
    from ..precision import to_storage as local

    return local(block, f, mode=mode)


def _store_stochastic(block, f, base, block_info=None):
    from ..precision import to_storage as local

    loc = block_info[0]["chunk-location"] if block_info else (0,)
    return local(block, f, mode="stochastic", rng=np.random.default_rng([base, *loc]))


@register_routine("from_storage")
def from_storage(x, compute="fp32", *, out=None):
    """``lpc.from_storage`` chunk by chunk: exact widening, lazy."""
    from ..precision import get_format

    _no_out(out, "from_storage")
    f = get_format(compute, argname="compute")
    dt, meta = _out_meta(x, lambda xp: B.native_dtype(xp, f))
    return x.map_blocks(_decode, f, dtype=dt, meta=meta)


def _decode(block, f):
    from ..precision import from_storage as local

    return local(block, f)


# --------------------------------------------------------------------------- records
def _check_batch(arrays: dict, trailing: dict):
    """Each named Dask array has one chunk along its ``trailing[name]`` last axes and the same
    chunks along the leading (batch) axes; returns those batch chunks."""
    ref = None
    for name, x in arrays.items():
        check_dask_array(x, name)
        t = trailing[name]
        if x.ndim < t + 1:
            raise ValueError(f"{name} must have a leading batch axis for the distributed "
                             f"batched routine, got shape {tuple(x.shape)}")
        if any(len(c) != 1 for c in x.chunks[x.ndim - t:]):
            fix = ", ".join(f"{a}: -1" for a in range(x.ndim - t, x.ndim))
            raise ValueError(f"{name} must be chunked along its batch axes only (its last {t} "
                             f"axes in one chunk); got chunks {x.chunks}: use "
                             f"{name}.rechunk({{{fix}}})")
        bc = x.chunks[: x.ndim - t]
        if ref is None:
            ref = (name, bc)
        elif bc != ref[1]:
            raise ValueError(f"{name} and {ref[0]} must have the same chunks along the batch "
                             f"axes; got {bc} and {ref[1]} (rechunk one like the other)")
    return ref[1]


def _flat_keys(x, nbatch):
    keys = np.empty(tuple(len(c) for c in x.chunks[:nbatch]), dtype=object)
    nested = x.__dask_keys__()
    for idx in np.ndindex(keys.shape):
        k = nested
        for i in idx:
            k = k[i]
        while isinstance(k, list):
            k = k[0]
        keys[idx] = k
    return keys


def _call(fn, kwargs, *blocks):
    """The local routine on one chunk; on a ``distributed`` worker its Numba kernels use at
    most the worker's threads (a 1-thread worker runs the serial kernels: the other workers
    own the other cores)."""
    n = _worker_threads()
    if n is None:
        return fn(*blocks, **kwargs)
    with thread_limit(n):
        return fn(*blocks, **kwargs)


def _worker_threads():
    """The thread count of the ``distributed`` worker running this task, or None."""
    try:
        from distributed import get_worker

        return get_worker().state.nthreads
    except (ImportError, ValueError, AttributeError):
        return None


def _field(rec, path):
    for p in path:
        rec = rec[p] if isinstance(p, int) else getattr(rec, p)
    return rec


def _pad_history(h, rows):
    h = np.asarray(h)
    if h.shape[0] >= rows:
        return h[:rows]
    return np.concatenate([h, np.repeat(h[-1:], rows - h.shape[0], axis=0)], axis=0)


def _map_record(fn, arrays: dict, trailing: dict, kwargs: dict, meta_record, prefix: str,
                hist_rows: int | None = None, persist: bool = True):
    """Run ``fn(*blocks, **kwargs)`` per batch chunk and rebuild ``meta_record`` with every
    batch-shaped array field a Dask array over the chunks' results."""
    dask, da, HighLevelGraph, Delayed, tokenize = dask_modules()
    bchunks = _check_batch(arrays, trailing)
    nb = len(bchunks)
    xs = list(arrays.values())
    keys = [_flat_keys(x, nb) for x in xs]
    name = f"{prefix}-{tokenize(*xs, kwargs, prefix)}"
    layer = {}
    grid = keys[0].shape
    for idx in np.ndindex(grid):
        layer[(name, *idx)] = (_call, fn, kwargs, *[k[idx] for k in keys])
    hlg = HighLevelGraph.from_collections(name, layer, dependencies=xs)
    blocks = {idx: Delayed((name, *idx), hlg, layer=name) for idx in np.ndindex(grid)}
    if persist:
        vals = dask.persist(*blocks.values())
        blocks = dict(zip(blocks, vals))
    deps = list(blocks.values())

    def build(value, path):
        if hasattr(value, "_fields") or hasattr(value, "__dataclass_fields__"):
            names = value._fields if hasattr(value, "_fields") else list(
                value.__dataclass_fields__)
            vals = {f: build(getattr(value, f), path + (f,)) for f in names}
            if hasattr(value, "_fields"):
                return type(value)(**vals)
            import dataclasses

            return dataclasses.replace(value, **vals)
        if path and path[-1] == "residual_norms" and hist_rows is not None and nb == 1:
            fname = f"{name}-{'.'.join(path)}"
            fl = {(fname, 0, i): (_pad_history, (_field, blocks[(i,)].key, list(path)),
                                  hist_rows) for i in range(grid[0])}
            g = HighLevelGraph.from_collections(fname, fl, dependencies=deps)
            return da.Array(g, fname, chunks=((hist_rows,), bchunks[0]),
                            dtype=np.float64, meta=np.zeros((0, 0)))
        shape = getattr(value, "shape", None)
        if shape is None or len(shape) < nb or tuple(shape[:nb]) != (1,) * nb:
            return value
        fname = f"{name}-{'.'.join(path)}"
        tail = tuple(shape[nb:])
        fl = {(fname, *idx, *(0,) * len(tail)): (_field, blocks[idx].key, list(path))
              for idx in np.ndindex(grid)}
        g = HighLevelGraph.from_collections(fname, fl, dependencies=deps)
        xp = B.array_namespace(value) if not isinstance(value, np.ndarray) else np
        meta = xp.zeros((0,) * len(shape), dtype=value.dtype)
        return da.Array(g, fname, chunks=tuple(bchunks) + tuple((t,) for t in tail),
                        dtype=value.dtype, meta=meta)

    return build(meta_record, ()), blocks


def _meta_inputs(arrays: dict, trailing: dict, kinds: dict):
    """One small synthetic system per input (identity matrices, ones vectors) of the chunks'
    library and dtype: run locally once to learn the record's layout."""
    out = []
    for name, x in arrays.items():
        xp = B.array_namespace(x._meta)
        t = trailing[name]
        nbat = x.ndim - t
        tail = tuple(x.shape[nbat:])
        if kinds[name] == "eye":
            v = xp.eye(tail[-1], dtype=x.dtype)
            v = xp.reshape(v, (1,) * nbat + tail)
        else:
            v = xp.ones((1,) * nbat + tail, dtype=x.dtype)
        out.append(v)
    return out


def _record(fn, arrays, trailing, kinds, kwargs, prefix, hist_rows=None):
    meta = fn(*_meta_inputs(arrays, trailing, kinds), **kwargs)
    rec, _ = _map_record(fn, arrays, trailing, kwargs, meta, prefix, hist_rows=hist_rows)
    return rec


@register_routine("block_degeneracy")
def block_degeneracy(H, **kwargs):
    """``lpc.block_degeneracy`` per batch chunk of H (N, n, n)."""
    from ..solvers.schur import block_degeneracy as local

    return _record(local, {"H": H}, {"H": 2}, {"H": "eye"}, kwargs, "lpc-degeneracy")


@register_routine("solve_degenerate")
def solve_degenerate(H, b, **kwargs):
    """``lpc.solve_degenerate`` per batch chunk of H (N, n, n), b (N, n); ``pcg_result.
    residual_norms`` has ``maxiter + 1`` rows (a finished system repeats its last value)."""
    from ..solvers.degenerate import solve_degenerate as local

    check_dask_array(H, "H")
    check_dask_array(b, "b")
    n = H.shape[-1]
    maxiter = kwargs.get("maxiter")
    rows = (10 * n if maxiter is None else int(maxiter)) + 1
    return _record(local, {"H": H, "b": b}, {"H": 2, "b": 1}, {"H": "eye", "b": "ones"},
                   kwargs, "lpc-solve-degenerate", hist_rows=rows)


def pcg_batched(A, b, **kwargs):
    """``lpc.pcg`` of a batch A (N, n, n), b (N, n) per batch chunk (M, if given, a Dask
    (N, n, n) array chunked like A); ``residual_norms`` has ``maxiter + 1`` rows."""
    from ..solvers.pcg import pcg as local

    M = kwargs.pop("M", None)
    for k in ("callback", "x0"):
        if kwargs.get(k) is not None:
            raise NotImplementedError(f"{k} is not offered for batched Dask systems")
    n = A.shape[-1]
    maxiter = kwargs.get("maxiter")
    rows = (10 * n if maxiter is None else int(maxiter)) + 1
    arrays, trailing, kinds = {"A": A, "b": b}, {"A": 2, "b": 1}, {"A": "eye", "b": "ones"}
    if M is not None:
        arrays["M"], trailing["M"], kinds["M"] = M, 2, "eye"

        def fn(a, bb, m, **kw):
            return local(a, bb, M=m, **kw)
    else:
        fn = local
    return _record(fn, arrays, trailing, kinds, kwargs, "lpc-pcg-batched", hist_rows=rows)


def qr_stack(A, *, method="auto", **kwargs):
    """``lpc.qr`` of a stack (..., m, n) per chunk of its leading axes: Q and R Dask arrays
    chunked like A's batch axes, ``info`` merged from the chunks' infos."""
    from ..qr_methods._common import QRInfo, QRResult
    from ..qr_methods.dispatch import qr as local

    check_dask_array(A, "A")
    nb = A.ndim - 2
    kw = dict(kwargs, method=method)
    meta = local(*_meta_inputs({"A": A}, {"A": 2}, {"A": "ones"}), **kw)
    rec, blocks = _map_record(local, {"A": A}, {"A": 2}, kw, meta, "lpc-qr-stack")
    dask = dask_modules()[0]
    infos = dask.compute(*[_info_of(b) for b in blocks.values()])
    locs = list(blocks)
    used = sorted({i.method for i in infos})
    kaps = [i.kappa_est for i in infos if not math.isnan(i.kappa_est)]
    first = infos[0]
    info = QRInfo(**{**first.as_dict(),
                     "method": used[0] if len(used) == 1 else "+".join(used),
                     "fallbacks": tuple(f"[chunk {locs[j]}] {f}" for j, i in enumerate(infos)
                                        for f in i.fallbacks),
                     "shifts": tuple(s for i in infos for s in i.shifts),
                     "passes": max(i.passes for i in infos),
                     "kappa_est": max(kaps) if kaps else float("nan"),
                     "notes": (f"mapped over {len(infos)} chunks of the Dask stack "
                               f"({nb} batch axes)",) + tuple(first.notes),
                     "r_overflow": any(i.r_overflow for i in infos)})
    return QRResult(rec.Q, rec.R, info)


def _info_of(block):
    return block[2]
