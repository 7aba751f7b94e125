"""PCG on a Dask cluster: the local PCG loop (:mod:`linalg_pc.solvers._loop`) driving a Dask
engine whose vectors are Dask arrays chunked like b.

One iteration is one distributed SpMV and two scalar reductions (round trips to the client):

    p = z + β p;  q = A p;  pᵀq              (SpMV: row block i reads only the chunks of p its
                                               columns touch; one reduction)
    x += α p;  r −= α q;  z = M r;  ‖r‖, rᵀz  (the residual norm of the stopping test and the
                                               next ρ together: one reduction)

plus the true-residual check every ``check_every`` steps, as locally; the stopping rules,
residual replacement, stall detection, history and status are those of the local loop, so the
result record is the same. A's row blocks are split at the call into the column pieces that
meet the chunks of p (empty sparse pieces dropped) and persisted on the workers for the whole
solve. Three engines run the loop (``engine=`` of :func:`pcg_dask`):

- :class:`linalg_pc.distributed._pcg_actors.ActorEngine` (``"actors"``, the default when a
  ``distributed`` Client is in use and A, M are Dask arrays of NumPy or scipy.sparse blocks):
  one stateful actor per worker holding that worker's rows (A's blocks, the vectors, ghost
  entries of p), 2 actor round trips per iteration (3 with an M that couples the workers'
  rows), the halo relayed through the client. It does not split A: each shard concatenates
  its rows into one local matrix. A lost worker makes the solve rerun with the task engine.
- :class:`FuturesEngine` (``"tasks"``; the default for other blocks, e.g. CuPy): the
  vectors are one future per chunk on the workers and each step is submitted as chunk tasks
  (3 layers of c tasks and 2 summing tasks per iteration, no collection built per step); the
  only data gathered are the two scalars, one small result per round trip.
- :class:`DaskEngine` (``"collections"``: an operator given as a callable on Dask vectors,
  or a local scheduler): vectors are Dask arrays, persisted after each step, scalars by
  ``dask.compute``.

Inputs: A a Dask array (N, N) chunked along rows only, its chunks NumPy arrays or scipy.sparse
matrices (or CuPy / cupyx), or a Dask-backed operator: a callable taking a Dask vector chunked
like b and returning A·p as one; b (N,) a Dask vector whose chunks equal A's row chunks; M
(optional) of the same kinds as A (z = M r, SciPy's convention); x0 (optional) a Dask vector
chunked like b.

Cost per iteration: the local flops (one SpMV, 5 vector updates) spread over the workers, plus
the scheduler's fixed cost (a few milliseconds per round trip, measured in docs/distributed.md)
and the halo: with the tasks, each row block fetches the neighbouring chunks of p its columns
touch; with the actors, each shard receives only the ghost entries its rows touch (for a
7-point stencil, one grid plane per boundary between shards).
"""

from __future__ import annotations

import warnings

import numpy as np

from .. import _backend as B
from .._backend.dask import is_dask, register_routine
from .._formats import get_format
from ..solvers._loop import run
from ..solvers._status import CONVERGED, status_names
from ..solvers.pcg import PCGResult
from ._graph import check_dask_array, check_row_chunks, dask_modules

__all__ = ["pcg_dask", "prepare_pcg", "PreparedPCG", "DaskEngine", "FuturesEngine", "ENGINES"]

#: The values of ``pcg_dask(engine=...)`` (None: chosen from the inputs).
ENGINES = (None, "actors", "tasks", "collections")


# --------------------------------------------------------------------------- block tasks
def _split(block, offsets, dtype):
    """A row block cut into its pieces against p's chunks (None for an empty sparse piece);
    also whether the block is finite."""
    sparse = hasattr(block, "tocsr") and not hasattr(block, "__array_namespace__")
    if sparse:
        block = block.tocsr().astype(dtype)
        finite = bool(np.all(np.isfinite(block.data)))
    else:
        xp = B.array_namespace(block)
        block = xp.astype(block, dtype) if block.dtype != dtype else block
        finite = bool(xp.all(xp.isfinite(block)))
    pieces = []
    for j in range(len(offsets) - 1):
        pc = block[:, offsets[j]:offsets[j + 1]]
        if sparse and pc.nnz == 0:
            pc = None
        pieces.append(pc)
    return pieces, finite


def _touches(split):
    return [j for j, pc in enumerate(split[0]) if pc is not None], split[1]


def _spmv(split, used, *pj):
    pieces = split[0]
    out = None
    for j, v in zip(used, pj):
        t = pieces[j] @ v
        out = t if out is None else out + t
    return out


def _finite_vec(v):
    xp = B.array_namespace(v)
    return bool(xp.all(xp.isfinite(v)))


# --------------------------------------------------------------------------- operators
class _Matrix:
    """A row-chunked Dask matrix persisted as column pieces; ``apply(p)`` is the SpMV graph."""

    def __init__(self, A, name, chunks, dtype):
        dask, da, HighLevelGraph, Delayed, tokenize = dask_modules()
        self.da, self.HLG, self.tokenize = da, HighLevelGraph, tokenize
        offsets = np.concatenate([[0], np.cumsum(chunks)]).astype(np.int64).tolist()
        keys = [k[0] for k in A.__dask_keys__()]
        sname = f"lpc-pcg-split-{tokenize(A, offsets, str(dtype))}"
        layer = {(sname, i): (_split, k, offsets, dtype) for i, k in enumerate(keys)}
        hlg = HighLevelGraph.from_collections(sname, layer, dependencies=[A])
        splits = [Delayed((sname, i), hlg, layer=sname) for i in range(len(keys))]
        self.splits = list(dask.persist(*splits))
        info = dask.compute(*[dask.delayed(_touches)(s) for s in self.splits])
        if not all(f for _, f in info):
            raise ValueError(f"{name} must not contain NaN or inf")
        self.used = [u for u, _ in info]
        self.chunks = tuple(chunks)
        self.dtype = dtype

    def apply(self, p):
        name = f"lpc-spmv-{self.tokenize(p.name, self.splits[0].key)}"
        pkeys = [k for k in p.__dask_keys__()]
        layer = {(name, i): (_spmv, s.key, u, *[pkeys[j] for j in u])
                 for i, (s, u) in enumerate(zip(self.splits, self.used))}
        g = self.HLG.from_collections(name, layer, dependencies=[p, *self.splits])
        return self.da.Array(g, name, chunks=(self.chunks,), dtype=p.dtype, meta=p._meta)


class _Callable:
    def __init__(self, f, name):
        self.f, self.name = f, name

    def apply(self, p):
        out = self.f(p)
        if not is_dask(out) or tuple(getattr(out, "chunks", ())) != tuple(p.chunks):
            raise ValueError(f"{self.name}(p) must return a Dask vector chunked like b "
                             f"{p.chunks}")
        return out


# --------------------------------------------------------------------------- the engine
class DaskEngine:
    """:class:`linalg_pc.solvers._loop.Engine` for one system whose vectors are Dask arrays."""

    def __init__(self, A, M, b, x0, zero):
        self.dask = dask_modules()[0]
        self.A, self.M, self.b, self.x0, self.zero = A, M, b, x0, zero
        self._cached = None

    def _persist(self, *xs):
        return self.dask.persist(*xs)

    def _scalars(self, *xs):
        return [float(v) for v in self.dask.compute(*xs)]

    @staticmethod
    def _dot(u, v):
        return (u * v).sum()

    def init(self):
        if self.x0 is None or self.zero:
            self.x = self.b * 0
            self.r = self.b * 1 if not self.zero else self.b * 0
        else:
            self.x = self.x0
            self.r = self.b - self.A.apply(self.x)
        self.p = self.b * 0
        self.x, self.r, self.p = self._persist(self.x, self.r, self.p)
        (rr,) = self._scalars(self._dot(self.r, self.r))
        return np.array([np.sqrt(rr)])

    def true_residual(self):
        (self.rt,) = self._persist(self.b - self.A.apply(self.x))
        d = self.r - self.rt
        tt, dd = self._scalars(self._dot(self.rt, self.rt), self._dot(d, d))
        return np.array([np.sqrt(tt)]), np.array([np.sqrt(dd)])

    def replace(self, mask):
        if bool(mask[0]):
            self.r = self.rt
            self._cached = None

    def precondition(self, active):
        if self._cached is not None and self._cached[0] is self.r:
            _, self.z, rho = self._cached
            return np.array([rho])
        self.z = self.r if self.M is None else self._persist(self.M.apply(self.r))[0]
        (rho,) = self._scalars(self._dot(self.r, self.z))
        return np.array([rho])

    def direction(self, beta, active):
        p = self.z + float(beta[0]) * self.p
        (self.p,) = self._persist(p)
        (self.q,) = self._persist(self.A.apply(self.p))
        (pq,) = self._scalars(self._dot(self.p, self.q))
        return np.array([pq])

    def update(self, alpha, active):
        a = float(alpha[0])
        x, r = self._persist(self.x + a * self.p, self.r - a * self.q)
        self.x, self.r = x, r
        z = r if self.M is None else self.M.apply(r)
        (z,) = self._persist(z)
        rr, rz = self._scalars(self._dot(r, r), self._dot(r, z))
        self._cached = (r, z, rz)
        return np.array([np.sqrt(rr)])

    def current_x(self):
        return self.x

    def X(self):
        return self.x


# --------------------------------------------------------------------------- futures engine
# Chunk tasks of :class:`FuturesEngine`. A chunk's state is one tuple (r_i, parts, x_i): the
# residual, the chunk's partial sums the step needs ([rᵀr] or [rᵀr, rᵀz]) and the iterate.
def _r(v):
    return v[0] if isinstance(v, tuple) else v


def _sum(v):
    return float(B.array_namespace(v).sum(v)) if v.size else 0.0


def _matvec(split, used, vs):
    pieces = split[0]
    out = None
    for j, v in zip(used, vs):
        t = pieces[j] @ _r(v)
        out = t if out is None else out + t
    return out


def _init_chunk(b, x, split, used, *xs):
    """(r = b − A x, [rᵀr], x); x None: x = 0 and r = b."""
    if x is None:
        r, x = b, b * 0
    else:
        r = b - _matvec(split, used, xs)
    return r, [_sum(r * r)], x


def _p_chunk(z, beta, p):
    """p = z + β p (p None in the first step: p = z)."""
    z = _r(z)
    return z if p is None else z + beta * p


def _q_chunk(split, used, p, *ps):
    """(q = A p, [pᵀq]) for the chunk's rows."""
    q = _matvec(split, used, ps)
    return q, [_sum(p * q)]


def _step_chunk(st, p, q, alpha, with_rr):
    """x += α p, r −= α q; (r, [rᵀr, rᵀr] when M is None else [], x)."""
    r, _, x = st
    q = q[0]
    x = x + alpha * p
    r = r - alpha * q
    return r, ([_sum(r * r)] * 2 if with_rr else []), x


def _z_chunk(split, used, *rs):
    return _matvec(split, used, rs)


def _dots_chunk(st, z):
    r, z = st[0], _r(z)
    return [_sum(r * r), _sum(r * z)]


def _rz_chunk(st, z):
    return [_sum(st[0] * _r(z))]


def _true_chunk(b, st, split, used, *xs):
    """(b − A x, [‖b − A x‖², ‖r − (b − A x)‖²])."""
    rt = b - _matvec(split, used, [s[2] for s in xs])
    d = st[0] - rt
    return rt, [_sum(rt * rt), _sum(d * d)]


def _replace_chunk(st, rt):
    return rt[0], st[1], st[2]


def _x_chunk(st):
    return st[2]


def _add_parts(*parts):
    """The partial sums of every chunk added (each an item of ``parts``: a list, or a tuple
    whose second item is the list)."""
    rows = [p[1] if isinstance(p, tuple) else p for p in parts]
    return [float(sum(c)) for c in zip(*rows)]


class FuturesEngine:
    """:class:`linalg_pc.solvers._loop.Engine` for one system on a ``distributed`` Client, the
    vectors kept on the workers as one future per chunk and every step submitted as chunk
    tasks (no graph building, no optimization pass, no collection per step).

    One iteration is two batches of chunk tasks and two round trips for one small result each,
    as the loop needs them: p = z + βp and (q = A p, pᵀq) per chunk, their sum; then
    x += αp, r −= αq (and z = M r) with the partial rᵀr, rᵀz per chunk, their sum. A chunk
    task runs where its chunk's data live (the persisted row block of A and the chunk's
    vectors); the SpMV of a block fetches only the chunks of p its columns touch.
    """

    def __init__(self, client, A, M, b, x0, zero):
        from distributed import futures_of

        self.c = client
        self.A, self.M = A, M
        self.sA = [futures_of(s)[0] for s in A.splits]
        self.sM = None if M is None else [futures_of(s)[0] for s in M.splits]
        byk = {f.key: f for f in futures_of(b)}
        self.b = [byk[k] for k in b.__dask_keys__()]
        self.x0 = None
        if x0 is not None:
            (x0,) = client.persist([x0])
            byk = {f.key: f for f in futures_of(x0)}
            self.x0 = [byk[k] for k in x0.__dask_keys__()]
        self.zero = zero
        self.meta = b._meta
        self.chunks = b.chunks
        self._cached = None

    def _gather(self, parts):
        """The chunks' partial sums added on a worker; one small result to the client."""
        return self.c.submit(_add_parts, *parts, pure=False).result()

    def init(self):
        n = len(self.b)
        if self.x0 is None or self.zero:
            self.st = [self.c.submit(_init_chunk, b, None, None, None, pure=False)
                       for b in self.b]
        else:
            self.st = [self.c.submit(_init_chunk, self.b[i], self.x0[i], self.sA[i],
                                     self.A.used[i], *[self.x0[j] for j in self.A.used[i]],
                                     pure=False) for i in range(n)]
        self.p = [None] * n
        (rr,) = self._gather(self.st)
        return np.array([np.sqrt(rr)])

    def true_residual(self):
        self.rt = [self.c.submit(_true_chunk, self.b[i], self.st[i], self.sA[i],
                                 self.A.used[i], *[self.st[j] for j in self.A.used[i]],
                                 pure=False) for i in range(len(self.b))]
        tt, dd = self._gather(self.rt)
        return np.array([np.sqrt(tt)]), np.array([np.sqrt(dd)])

    def replace(self, mask):
        if bool(mask[0]):
            self.st = [self.c.submit(_replace_chunk, s, rt, pure=False)
                       for s, rt in zip(self.st, self.rt)]
            self._cached = None

    def _z(self):
        return [self.c.submit(_z_chunk, s, u, *[self.st[j] for j in u], pure=False)
                for s, u in zip(self.sM, self.M.used)]

    def precondition(self, active):
        if self._cached is not None and self._cached[0] is self.st:
            _, self.z, rho = self._cached
            return np.array([rho])
        self.z = self.st if self.M is None else self._z()
        (rho,) = self._gather([self.c.submit(_rz_chunk, s, z, pure=False)
                               for s, z in zip(self.st, self.z)])
        return np.array([rho])
    def direction(self, beta, active):
        bt = float(beta[0])
        self.p = [self.c.submit(_p_chunk, z, bt, p, pure=False) for z, p in zip(self.z, self.p)]
        self.q = [self.c.submit(_q_chunk, s, u, self.p[i], *[self.p[j] for j in u], pure=False)
                  for i, (s, u) in enumerate(zip(self.sA, self.A.used))]
        (pq,) = self._gather(self.q)
        return np.array([pq])

    def update(self, alpha, active):
        a = float(alpha[0])
        st = [self.c.submit(_step_chunk, s, p, q, a, self.M is None, pure=False)
              for s, p, q in zip(self.st, self.p, self.q)]
        self.st = st
        if self.M is None:
            rr, rz = self._gather(st)
            z = st
        else:
            z = self._z()
            rr, rz = self._gather([self.c.submit(_dots_chunk, s, zi, pure=False)
                                   for s, zi in zip(st, z)])
        self._cached = (st, z, rz)
        return np.array([np.sqrt(rr)])

    def X(self):
        dask, da, *_ = dask_modules()
        xs = [self.c.submit(_x_chunk, s, pure=False) for s in self.st]
        parts = [da.from_delayed(dask.delayed(f), shape=(c,), dtype=self.meta.dtype,
                                 meta=self.meta) for f, c in zip(xs, self.chunks[0])]
        return da.concatenate(parts) if parts else da.zeros((0,), dtype=self.meta.dtype)

    current_x = X


# --------------------------------------------------------------------------- entry point
def _client():
    """The current ``distributed`` Client, or None (no distributed, or the local scheduler:
    then the collections engine runs)."""
    try:
        from distributed import default_client
    except ImportError:  # pragma: no cover - the extra installs it
        return None
    import dask

    if dask.config.get("scheduler", None) not in (None, "dask.distributed", "distributed"):
        return None
    try:
        return default_client()
    except ValueError:
        return None


def _as_operator(A, name, b):
    if callable(A) and not hasattr(A, "chunks"):
        return _Callable(A, name)
    check_row_chunks(A, name)
    if A.shape[0] != A.shape[1]:
        raise ValueError(f"{name} must be square, got shape {tuple(A.shape)}")
    if A.shape[0] != b.shape[0]:
        raise ValueError(f"{name} of shape {tuple(A.shape)} does not match b of shape "
                         f"{tuple(b.shape)}")
    if A.chunks[0] != b.chunks[0]:
        raise ValueError(f"{name}'s row chunks {A.chunks[0]} must equal b's chunks "
                         f"{b.chunks[0]}: rechunk one like the other")
    return A


@register_routine("pcg")
def pcg_dask(A, b, *, M=None, x0=None, rtol=1e-5, atol=0.0, maxiter=None, callback=None,
             check_every=25, compute=None, engine=None):
    """``lpc.pcg`` on Dask arrays (see the module docstring); a batch A (N, n, n) with b (N, n)
    goes to :func:`linalg_pc.distributed.batched.pcg_batched`.

    Parameters
    ----------
    engine : {None, "actors", "tasks", "collections"}
        How the iteration runs (module docstring). None picks ``"actors"`` when a
        ``distributed`` Client is in use and A (and M) are Dask arrays of NumPy or
        scipy.sparse blocks, ``"tasks"`` when they hold other blocks (CuPy), and
        ``"collections"`` otherwise (a callable operator, or the local scheduler).
        ``"actors"`` (:class:`linalg_pc.distributed._pcg_actors.ActorEngine`): one stateful
        shard per worker, 2 actor round trips per iteration (3 with a coupling M); if a
        shard's worker is lost, the solve is rerun from x0 with ``"tasks"`` (a
        ``RuntimeWarning`` names the cause). ``"tasks"`` (:class:`FuturesEngine`): chunk
        tasks, recomputed by Dask if a worker dies. ``"collections"`` (:class:`DaskEngine`).

    Returns
    -------
    PCGResult
        x a Dask vector chunked like b (persisted on the workers); converged, iterations,
        residual_norms, true_residual_norm and status concrete, as locally.

    Raises
    ------
    TypeError
        b, M or x0 not Dask arrays while A is one (or the reverse).
    ValueError
        A chunked along columns, not square, or with row chunks different from b's; x0 chunked
        unlike b; NaN/inf in A, M or b (found when the blocks are persisted); an unknown
        ``engine``, or ``"actors"`` / ``"tasks"`` without a ``distributed`` Client or with a
        callable A or M.
    NotImplementedError
        ``compute="fp32"`` on fp64 data (iterative refinement), x0 "Mb".
    """
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
    check_dask_array(b, "b")
    if getattr(A, "ndim", 0) == 3:
        from .batched import pcg_batched

        check_dask_array(A, "A")
        return pcg_batched(A, b, M=M, x0=x0, rtol=rtol, atol=atol, maxiter=maxiter,
                           callback=callback, check_every=check_every,
                           compute=None if compute is None else compute.compute)
    if not callable(A) or hasattr(A, "chunks"):
        check_dask_array(A, "A")
    if b.ndim != 1:
        raise ValueError(f"b must be a Dask vector (N,) for the distributed PCG, got shape "
                         f"{tuple(b.shape)}")
    if M is not None and not callable(M) or hasattr(M, "chunks"):
        check_dask_array(M, "M")
    if isinstance(x0, str):
        raise NotImplementedError("x0='Mb' is not offered for Dask arrays; pass M @ b")
    if x0 is not None:
        check_dask_array(x0, "x0")
        if x0.chunks != b.chunks:
            raise ValueError(f"x0's chunks {x0.chunks} must equal b's {b.chunks}")
    A = _as_operator(A, "A", b)
    M = None if M is None else _as_operator(M, "M", b)
    work, dtype = _working_format([x.dtype for x in (A, b, M, x0) if hasattr(x, "dtype")],
                                  compute)
    chunks = b.chunks[0]
    client = _client()
    arrays = hasattr(A, "chunks") and (M is None or hasattr(M, "chunks"))
    if engine in ("actors", "tasks") and (client is None or not arrays):
        raise ValueError(f"engine={engine!r} needs a distributed Client in use and A (and M) "
                         f"given as Dask arrays; use engine='collections'")
    if engine is None:
        engine = ("collections" if client is None or not arrays else
                  "actors" if all(_host_blocks(X) for X in (A, M) if X is not None) else "tasks")
    bw, bnorm = _rhs(b, dtype)
    x0w = None if x0 is None else x0.astype(dtype)
    args = (np.array([max(rtol * bnorm, atol)]),
            10 * b.shape[0] if maxiter is None else int(maxiter), int(check_every), callback)
    if engine == "actors":
        from ._pcg_actors import ActorEngine

        raw, eng = _run_actors(
            None, lambda: ActorEngine(client, A, M, bw, x0w, bnorm == 0, dtype), bw, x0w,
            bnorm == 0, args, work, (client, A, M, chunks, dtype))
        if eng is not None:
            eng.close()
        return _result(raw)
    opA = _Matrix(A, "A", chunks, dtype) if hasattr(A, "chunks") else A
    opM = None if M is None else (_Matrix(M, "M", chunks, dtype) if hasattr(M, "chunks")
                                  else M)
    if engine == "tasks":
        eng = FuturesEngine(client, opA, opM, bw, x0w, bnorm == 0)
    else:
        eng = DaskEngine(opA, opM, bw, x0w, bnorm == 0)
    return _result(run(eng, *args, u=work.unit_roundoff))


def _working_format(dtypes, compute):
    """(working format, NumPy dtype): the widest of the operands' formats, at least fp32, or
    ``compute.compute`` (NotImplementedError for fp32 on fp64 data)."""
    fmts = [get_format(np.dtype(d).name if np.dtype(d).kind == "f" else "fp64") for d in dtypes]
    widest = min(fmts, key=lambda f: f.unit_roundoff)
    if widest.name in ("bf16", "fp16"):
        widest = get_format("fp32")
    work = widest if compute is None or compute.compute is None else get_format(compute.compute)
    if work.name == "fp32" and widest.name == "fp64":
        raise NotImplementedError("compute='fp32' on fp64 data (iterative refinement) is not "
                                  "offered for Dask arrays")
    return work, np.dtype("float64" if work.name == "fp64" else "float32")


def _rhs(b, dtype):
    """b in the working dtype, persisted, and its norm (one round trip); ValueError when b
    holds a NaN or inf."""
    dask = dask_modules()[0]
    (bw,) = dask.persist(b.astype(dtype))
    bb, bfin = dask.compute((bw * bw).sum(), dask.delayed(all)(
        [dask.delayed(_finite_vec)(c) for c in bw.to_delayed().ravel()]))
    if not bfin:
        raise ValueError("b must not contain NaN or inf")
    return bw, float(np.sqrt(bb))


def _run_actors(eng, build, bw, x0w, zero, args, work, fallback, stacklevel=4):
    """The loop on the actor engine ``eng`` given b (and x0) by :meth:`ActorEngine.load`, or
    on ``build()`` when ``eng`` is None. If a shard's worker is lost (before or during the
    loop), a ``RuntimeWarning`` names the cause and the solve reruns from x0 with the task
    engine (``fallback`` = (client, A, M, chunks, dtype)). Returns (raw result, the actor
    engine, or None after a fallback: its shards are gone)."""
    try:
        if eng is None:
            eng = build()
        else:
            eng.load(bw, x0w, zero)
        return run(eng, *args, u=work.unit_roundoff), eng
    except Exception as exc:
        # a broken connection (OSError) or a lost actor (RuntimeError) may come before the
        # scheduler has removed the worker: give it a few seconds
        wait = 10.0 if isinstance(exc, (OSError, RuntimeError)) else 0.0
        if eng is None or not eng.lost(wait=wait):
            raise
        eng.close()
        warnings.warn(f"distributed PCG: a worker holding a shard of the actor engine was "
                      f"lost ({type(exc).__name__}: {exc}); the solve was rerun from x0 with "
                      f"engine='tasks'", RuntimeWarning, stacklevel=stacklevel)
    client, A, M, chunks, dtype = fallback
    opM = None if M is None else _Matrix(M, "M", chunks, dtype)
    eng = FuturesEngine(client, _Matrix(A, "A", chunks, dtype), opM, bw, x0w, zero)
    return run(eng, *args, u=work.unit_roundoff), None


def _result(raw) -> PCGResult:
    names = status_names(raw.status)
    conv = raw.status == CONVERGED
    return PCGResult(raw.X, bool(conv[0]), int(raw.iters[0]), raw.hist[:, 0],
                     float(raw.tnorm[0]), str(names[0]), False)


def _host_blocks(X) -> bool:
    """Whether the Dask matrix X holds NumPy or scipy.sparse blocks (its meta says so)."""
    mod = type(getattr(X, "_meta", None)).__module__
    return mod.startswith(("numpy", "scipy"))


# --------------------------------------------------------------------------- prepared systems
def prepare_pcg(A, *, M=None, compute=None) -> PreparedPCG:
    """A (and M) of many distributed PCG solves, split over the workers once.

    The actor engine's setup (each worker assembling its row blocks of A and M into one local
    matrix, the ghost lists and the exchange maps) is done by the first solve and kept:
    every later :meth:`PreparedPCG.pcg` sends only b (and x0) to the shards. For a sequence of
    solves with one matrix (time steps, several right-hand sides in turn) this removes the
    setup from every solve but the first (measured in docs/distributed.md).

    Parameters
    ----------
    A : dask.array.Array (N, N)
        Chunked along rows only, NumPy or scipy.sparse blocks (the actor engine's inputs).
    M : dask.array.Array (N, N), optional
        Preconditioner (z = M r), chunked like A's rows, blocks of the same kinds.
    compute : Precision, optional
        The working format (``compute.compute``: "fp32" or "fp64"); default: the wider of A's
        and M's formats, at least fp32. It is fixed here: a later b or x0 in a wider format
        raises ValueError.

    Returns
    -------
    PreparedPCG
        Holds the shards on the workers until :meth:`PreparedPCG.close` (also a context
        manager).

    Raises
    ------
    ValueError
        No ``distributed`` Client in use; A or M chunked along columns, not square, or with
        different row chunks; blocks other than NumPy or scipy.sparse (use
        ``lpc.pcg(..., engine="tasks")``). NaN or inf in A or M raise in the first solve,
        when the shards are built.
    TypeError
        A or M not a Dask array.
    NotImplementedError
        ``compute`` fp32 on fp64 data.

    Examples
    --------
    >>> with prepare_pcg(A) as system:                 # doctest: +SKIP
    ...     for b in right_hand_sides:
    ...         x = system.pcg(b, rtol=1e-8).x
    """
    client = _client()
    if client is None:
        raise ValueError("prepare_pcg needs a distributed Client in use (the shards live on "
                         "its workers)")
    check_dask_array(A, "A")
    if M is not None:
        check_dask_array(M, "M")
    for X, name in ((A, "A"), (M, "M")):
        if X is None:
            continue
        check_row_chunks(X, name)
        if X.ndim != 2 or X.shape[0] != X.shape[1]:
            raise ValueError(f"{name} must be square, got shape {tuple(X.shape)}")
        if not _host_blocks(X):
            raise ValueError(f"prepare_pcg needs {name} with NumPy or scipy.sparse blocks; "
                             f"other blocks (CuPy) run with lpc.pcg(..., engine='tasks')")
    if M is not None and (M.shape != A.shape or M.chunks[0] != A.chunks[0]):
        raise ValueError(f"M (shape {tuple(M.shape)}, row chunks {M.chunks[0]}) must match A "
                         f"(shape {tuple(A.shape)}, row chunks {A.chunks[0]})")
    work, dtype = _working_format([X.dtype for X in (A, M) if X is not None], compute)
    return PreparedPCG(client, A, M, work, dtype)


class PreparedPCG:
    """A (and M) split over the workers' shards for many solves; made by
    :func:`prepare_pcg`.

    Attributes
    ----------
    shape : tuple
        (N, N).
    chunks : tuple
        A's row chunks (every b and x0 must be chunked the same way).
    dtype : numpy.dtype
        The working dtype.
    built : bool
        Whether the shards exist (after the first solve, until :meth:`close` or a lost
        worker).
    """

    def __init__(self, client, A, M, work, dtype):
        self._client, self._A, self._M = client, A, M
        self._work, self.dtype = work, dtype
        self.shape = tuple(A.shape)
        self.chunks = tuple(A.chunks[0])
        self._eng = None
        self._closed = False

    @property
    def built(self) -> bool:
        return self._eng is not None

    def pcg(self, b, *, x0=None, rtol=1e-5, atol=0.0, maxiter=None, callback=None,
            check_every=25) -> PCGResult:
        """Solve A x = b by PCG on the shards (built by the first call, reused after).

        The arguments and the result are those of ``lpc.pcg`` on Dask arrays
        (:func:`pcg_dask`): b and x0 Dask vectors chunked like A's rows, x returned as a Dask
        vector persisted on the workers. The first call costs what one ``lpc.pcg`` call does;
        each later one persists b (and x0) and sends each shard its chunks, then iterates. A
        solve on the same shards gives, bit for bit, what ``lpc.pcg(A, b, M=M)`` with the
        actor engine gives on the same chunk layout. If a shard's worker is lost, the solve
        reruns with the task engine (``RuntimeWarning``) and the next call builds new shards.

        Raises
        ------
        ValueError
            After :meth:`close`; b or x0 not a Dask vector of length N chunked like A's rows;
            b or x0 in a format wider than the working one; NaN or inf in b.
        """
        if self._closed:
            raise ValueError("this PreparedPCG is closed")
        check_dask_array(b, "b")
        if isinstance(x0, str):
            raise NotImplementedError("x0='Mb' is not offered for Dask arrays; pass M @ b")
        for v, name in ((b, "b"), (x0, "x0")):
            if v is None:
                continue
            check_dask_array(v, name)
            if v.ndim != 1 or v.shape[0] != self.shape[0]:
                raise ValueError(f"{name} must be a Dask vector of length {self.shape[0]}, "
                                 f"got shape {tuple(v.shape)}")
            if tuple(v.chunks[0]) != self.chunks:
                raise ValueError(f"{name}'s chunks {v.chunks[0]} must equal the row chunks "
                                 f"{self.chunks} of the prepared system: rechunk it")
            wide, _ = _working_format([v.dtype], None)
            if wide.unit_roundoff < self._work.unit_roundoff:
                raise ValueError(f"{name} is {wide.name} but the system was prepared in "
                                 f"{self._work.name}: prepare it with compute="
                                 f"Precision(compute='{wide.name}')")
        bw, bnorm = _rhs(b, self.dtype)
        x0w = None if x0 is None else x0.astype(self.dtype)
        args = (np.array([max(rtol * bnorm, atol)]),
                10 * self.shape[0] if maxiter is None else int(maxiter), int(check_every),
                callback)
        from ._pcg_actors import ActorEngine

        client, A, M, dtype = self._client, self._A, self._M, self.dtype
        raw, self._eng = _run_actors(
            self._eng, lambda: ActorEngine(client, A, M, bw, x0w, bnorm == 0, dtype), bw, x0w,
            bnorm == 0, args, self._work, (client, A, M, self.chunks, dtype), stacklevel=3)
        return _result(raw)

    def close(self) -> None:
        """Release the shards (their memory on the workers). Idempotent."""
        if self._eng is not None:
            eng, self._eng = self._eng, None
            eng.close()
        self._closed = True

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False
