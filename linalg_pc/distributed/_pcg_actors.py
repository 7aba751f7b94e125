"""The actor engine of the distributed PCG: one stateful shard per worker, the halo relayed
through the client.

Each worker holding row chunks of A gets one Dask actor (:class:`Shard`, built on that worker
from the chunks it already holds: no block travels through the client). A shard concatenates
its rows into one local matrix over [own columns | ghost columns] (CSR for scipy.sparse blocks,
dense otherwise; a ghost column is a column its rows touch that another shard owns) and keeps
the vectors of its rows between calls. The client computes the exchange maps once from the
shards' ghost lists (which of its own entries each other shard needs, and where the incoming
ones go; for a stencil matrix, the boundary planes) and relays the halos as small arrays.

One iteration is 2 actor rounds without M, 3 with an M that couples the shards (a Jacobi M
needs no halo, 2 rounds), each round one method call per shard and one result each:

- round A (:meth:`Shard.update`, given α): x += αp, r −= αq, z = r (or, for a coupling M, a
  round returning r's halo, then :meth:`Shard.precond`: z = M r), returning the partial rᵀr,
  rᵀz and the outgoing halo of z;
- round B (:meth:`Shard.direction`, given β and the incoming halo of z): p = z + βp on the
  own rows and p_g = z_g + βp_g on the ghosts, with the p_g the shard kept from the previous
  iteration (the same floating-point operations as the owner's, so every ghost equals its
  owner's entry bit for bit), then q = A p and the partial pᵀq.

The client adds the partials in shard order (fixed: runs on the same layout are bit for bit
reproducible). The true-residual check needs x's halo: one extra exchange then. The stopping
rules, residual replacement, stall detection, history and status are those of the local loop
(:func:`linalg_pc.solvers._loop.run`); only the association of the sums differs from the local
solve, so the histories agree to O(u) per step.

Cost per iteration: the local flops (one SpMV, the CG vector updates in the fused passes of
:mod:`linalg_pc._kernels.cpu_csr`, serial twins: a worker is one thread) on each shard's rows,
plus 2 (3) actor round trips (≈ 4 ms each on a quiet 2-core machine, docs/distributed.md) and
the halo through the client: for a 7-point stencil in z-slab chunks, one plane (n² words) per
side of each chunk boundary between shards, each way.

Memory: each shard holds its rows of A (and M) once; the persisted input blocks are released
once the shards are built. During the build, a shard allocates an index map over all N columns
(4 or 8 bytes per column).

Failure: Dask does not recompute an actor whose worker died. :class:`ActorEngine` reports
whether a shard's worker is gone (:meth:`ActorEngine.lost`); the caller then reruns the solve
with the task engine, which Dask can recompute.
"""

from __future__ import annotations

import numpy as np

__all__ = ["Shard", "ActorEngine", "ShardLost", "exchange_maps", "POLL_S"]

#: Seconds between checks that the shards' workers are alive while waiting for a call.
POLL_S = 2.0


class ShardLost(RuntimeError):
    """A worker holding a :class:`Shard` left the cluster (Dask does not recompute actors)."""


def _serial_kernels():
    from ..solvers._engine_csr import _kernels

    return _kernels(False)


def _host_sparse(block) -> bool:
    return hasattr(block, "tocsr") and not hasattr(block, "__array_namespace__")


def _local_matrix(blocks, own, N, dtype, name):
    """The shard's rows of a matrix as one (n_own, n_own + g) matrix over [own | ghost]
    columns, and the ghosts' global indices (sorted). ValueError on NaN/inf."""
    import scipy.sparse as sp

    from ..solvers._engine_csr import sparse_entries_finite

    n = own.shape[0]
    if all(_host_sparse(b) for b in blocks):
        # the blocks' entries go straight into the local arrays, their column indices through
        # the [own | ghost] map: one copy of the entries (none for the data of a single block
        # of the working dtype), no stacked intermediate (scipy.sparse.vstack measured 0.53 of
        # the 0.94 s a 4·10⁶-row shard of the 200³ Poisson matrix took to build)
        parts = []
        for b in blocks:
            b = b.tocsr()
            lo, hi = int(b.indptr[0]), int(b.indptr[-1])
            if not sparse_entries_finite(b):
                raise ValueError(f"{name} must not contain NaN or inf")
            parts.append((b.data[lo:hi], b.indices[lo:hi], b.indptr - lo, b.shape[0]))
        nnz = sum(p[0].shape[0] for p in parts)
        itype = np.int32 if max(N, nnz) < 2**31 - 1 else np.int64
        touched = np.zeros(N, dtype=bool)
        for _, ind, _, _ in parts:
            touched[ind] = True
        touched[own] = False
        ghost = np.flatnonzero(touched)
        del touched
        loc = np.empty(N, dtype=itype)
        loc[own] = np.arange(n, dtype=itype)
        loc[ghost] = np.arange(n, n + ghost.shape[0], dtype=itype)
        indices = np.empty(nnz, dtype=itype)
        indptr = np.empty(n + 1, dtype=itype)
        indptr[0] = 0
        one = len(parts) == 1 and parts[0][0].dtype == dtype
        data = parts[0][0] if one else np.empty(nnz, dtype=dtype)
        pos = row = 0
        for vals, ind, ptr, rows in parts:
            k = vals.shape[0]
            np.take(loc, ind, out=indices[pos:pos + k])
            if not one:
                data[pos:pos + k] = vals
            indptr[row + 1:row + rows + 1] = ptr[1:] + pos
            pos, row = pos + k, row + rows
        del loc, parts
        L = sp.csr_matrix((data, indices, indptr), shape=(n, n + ghost.shape[0]))
        return L, ghost
    parts = [np.asarray(b.toarray() if _host_sparse(b) else b, dtype=dtype) for b in blocks]
    D = np.concatenate(parts, axis=0) if len(parts) > 1 else parts[0]
    del parts
    if not bool(np.all(np.isfinite(D))):
        raise ValueError(f"{name} must not contain NaN or inf")
    touched = np.any(D != 0, axis=0)
    touched[own] = False
    ghost = np.flatnonzero(touched)
    return np.ascontiguousarray(D[:, np.concatenate([own, ghost])]), ghost


def _timed(f):
    """Adds the seconds spent in the method to the shard's ``busy`` time."""
    import functools
    import time

    @functools.wraps(f)
    def g(self, *args):
        t0 = time.perf_counter()
        try:
            return f(self, *args)
        finally:
            self.busy += time.perf_counter() - t0

    return g


class Shard:
    """The rows of one worker: its local A (and M), b, x, r, z, p (with ghosts), q.

    Built on the worker by ``client.submit(Shard, ..., actor=True, workers=[addr])``; the
    block arguments arrive as the worker's own persisted chunks. Every method returns plain
    floats and small halo arrays (``{shard: values}``).

    Parameters
    ----------
    own : numpy.ndarray of int64
        The global row indices of the shard, chunk after chunk (chunk order).
    N : int
        The global size.
    dtype : numpy.dtype
        The working dtype (float32 or float64).
    A_blocks, M_blocks : list
        The shard's row blocks of A and M (M_blocks None without M), chunk order.
    b_chunks, x0_chunks : list
        The matching chunks of b and x0 (x0_chunks None: x0 = 0).
    """

    def __init__(self, own, N, dtype, A_blocks, M_blocks, b_chunks, x0_chunks):
        self.dtype = np.dtype(dtype)
        self.n = n = own.shape[0]
        self.A, self.gA = _local_matrix(A_blocks, own, N, self.dtype, "A")
        del A_blocks
        if M_blocks is None:
            self.M, self.gM = None, np.zeros(0, dtype=np.int64)
        else:
            self.M, self.gM = _local_matrix(M_blocks, own, N, self.dtype, "M")
        gA, gM = self.gA.shape[0], self.gM.shape[0]
        self.x_full = np.zeros(n + gA, dtype=self.dtype)
        self.x = self.x_full[:n]
        self.load(b_chunks, x0_chunks)
        self.r_full = np.zeros(n + gM, dtype=self.dtype)
        self.r = self.r_full[:n]
        self.z = self.r if M_blocks is None else np.zeros(n, dtype=self.dtype)
        self.zg = np.zeros(gA, dtype=self.dtype)
        self.p_full = np.zeros(n + gA, dtype=self.dtype)
        self.p = self.p_full[:n]
        self.pg = self.p_full[n:]
        self.q = np.zeros(n, dtype=self.dtype)
        self.rt = np.zeros(n, dtype=self.dtype)
        self.dummy = np.zeros(gA, dtype=self.dtype)
        self.pending = 0.0  # deferred x += pending · p (done in the next pass over p)
        self.part = np.empty(64)
        self.part2 = np.empty(64)
        self.k = _serial_kernels()
        #: seconds spent in the iteration's methods (the rest of a round is communication)
        self.busy = 0.0
        self.sendA: dict = {}
        self.recvA: dict = {}
        self.sendM: dict = {}
        self.recvM: dict = {}

    # ------------------------------------------------------------------ setup
    def load(self, b_chunks, x0_chunks):
        """b (and x0; None: x0 = 0) of the next solve, from the shard's chunks in chunk
        order. A shard serves any number of solves: :meth:`init` starts each one."""
        b = np.concatenate([np.asarray(c) for c in b_chunks]) if b_chunks else np.zeros(0)
        self.b = np.ascontiguousarray(b, dtype=self.dtype)
        if x0_chunks is not None:
            self.x[:] = np.concatenate([np.asarray(c) for c in x0_chunks])

    def ghosts(self):
        """The global indices of the ghost columns of A and of M."""
        return self.gA, self.gM

    def set_maps(self, sendA, recvA, sendM, recvM):
        """The exchange maps: ``send[t]`` own positions shard t needs, ``recv[t]`` ghost
        positions that shard t's values fill (for A's ghosts and for M's)."""
        self.sendA, self.recvA, self.sendM, self.recvM = sendA, recvA, sendM, recvM

    # ------------------------------------------------------------------ helpers
    def _sync(self):
        if self.pending != 0.0:
            self.k["axpy"](self.x, self.pending, self.p)
            self.pending = 0.0

    @staticmethod
    def _out(v, send):
        return {t: v[idx] for t, idx in send.items()}

    @staticmethod
    def _fill(g, recv, incoming):
        for t, vals in incoming.items():
            g[recv[t]] = vals

    def _dot(self, u, v):
        return float(self.k["dot_chunked"](u, v, self.part))

    def _mv(self, L, v):
        return np.ascontiguousarray(np.asarray(L @ v).reshape(-1), dtype=self.dtype)

    def _z(self):
        """z = M r on the own rows (r's ghosts filled); returns rᵀz."""
        self.z[:] = self._mv(self.M, self.r_full)
        return self._dot(self.r, self.z)

    # ------------------------------------------------------------------ steps
    @_timed
    def outgoing(self, name):
        """The outgoing halo of x (A's map) or r (M's map)."""
        if name == "x":
            self._sync()
            return self._out(self.x, self.sendA)
        return self._out(self.r, self.sendM)

    @_timed
    def init(self, x_in):
        """r = b − A x (x_in: the incoming halo of x0) or r = b (x_in None); returns rᵀr."""
        self.p_full[:] = 0
        self.pending = 0.0
        if x_in is None:
            self.x[:] = 0
            self.r[:] = self.b
        else:
            self._fill(self.x_full[self.n:], self.recvA, x_in)
            self.r[:] = self.b - self._mv(self.A, self.x_full)
        return self._dot(self.r, self.r)

    @_timed
    def precond(self, r_in):
        """z = M r (r_in: the incoming halo of r) or z = r; returns (rᵀz, outgoing halo of
        z)."""
        if self.M is None:
            rz = self._dot(self.r, self.r)
        else:
            self._fill(self.r_full[self.n:], self.recvM, r_in)
            rz = self._z()
        return rz, self._out(self.z, self.sendA)

    @_timed
    def direction(self, beta, z_in):
        """p = z + βp on the own rows and on the ghosts (z's ghosts from ``z_in``), then
        q = A p; returns pᵀq."""
        k = self.k
        self._fill(self.zg, self.recvA, z_in)
        k["update_xp"](self.x, self.p, self.z, self.pending, beta)
        self.pending = 0.0
        k["update_xp"](self.dummy, self.pg, self.zg, 0.0, beta)
        self.q = self._mv(self.A, self.p_full)
        return self._dot(self.p, self.q)

    @_timed
    def update(self, alpha, with_z):
        """x += αp (deferred to the next pass over p), r −= αq; with ``with_z`` also z = M r
        (M without ghosts) or z = r. Returns (rᵀr, rᵀz or None, outgoing halo of z, or of r
        when z needs r's halo first)."""
        self.pending = alpha
        rr = float(self.k["update_r"](self.r, self.q, alpha, self.part))
        if not with_z:
            return rr, None, self._out(self.r, self.sendM)
        rz = rr if self.M is None else self._z()
        return rr, rz, self._out(self.z, self.sendA)

    @_timed
    def true_residual(self, x_in):
        """rt = b − A x (x_in: the incoming halo of x); returns (rtᵀrt, ‖r − rt‖²)."""
        self._sync()
        self._fill(self.x_full[self.n:], self.recvA, x_in)
        self.rt = self.b - self._mv(self.A, self.x_full)
        d = self.r - self.rt
        return self._dot(self.rt, self.rt), self._dot(d, d)

    @_timed
    def replace(self):
        """r = rt (of the last :meth:`true_residual`)."""
        self.r[:] = self.rt

    def sync(self):
        """Apply the deferred x update (before tasks read x through :meth:`x_rows`)."""
        self._sync()

    def x_rows(self, lo, hi):
        """A copy of x[lo:hi] (local row positions); call :meth:`sync` first (tasks on a
        multi-threaded worker may read concurrently: this method does not write)."""
        return self.x[lo:hi].copy()

    def busy_time(self):
        """Seconds spent computing in the iteration's methods since the shard was built."""
        return self.busy

    def p_state(self):
        """(p on the own rows, p on the ghosts): lets a test compare every ghost with its
        owner's entry."""
        return self.p.copy(), self.pg.copy()


def exchange_maps(ghosts, offsets, chunk_shard, chunk_start):
    """Per shard, ``send[t]`` (own positions shard t needs) and ``recv[t]`` (ghost positions
    filled by shard t) from the ghost lists.

    ``chunk_shard[c]`` is the shard holding chunk c and ``chunk_start[c]`` the position of the
    chunk's first row in that shard's own rows.
    """
    S = len(ghosts)
    send = [dict() for _ in range(S)]
    recv = [dict() for _ in range(S)]
    for s, g in enumerate(ghosts):
        if g.shape[0] == 0:
            continue
        c = np.searchsorted(offsets, g, side="right") - 1
        owner = chunk_shard[c]
        pos = g - offsets[c] + chunk_start[c]
        for t in np.unique(owner):
            sel = np.flatnonzero(owner == t)
            recv[s][int(t)] = sel
            send[int(t)][s] = pos[sel]
    return send, recv


def _load_task(key, b_chunks, x0_chunks):
    """:meth:`Shard.load` on the shard ``key`` living on this worker (a task pinned to it,
    its chunk arguments resolved by Dask); returns True."""
    from distributed import get_worker

    get_worker().state.actors[key].load(b_chunks, x0_chunks)
    return True


def _x_task(key, lo, hi):
    """x[lo:hi] of the shard ``key`` living on this worker (a task pinned to it).

    The task reads the actor object from the worker's state. (An ``Actor`` handle passed to a
    task would work too, but a call from a task thread, unlike one from another actor on the
    same worker, goes through an RPC to the worker itself and the worker's event loop.)
    """
    from distributed import get_worker

    return get_worker().state.actors[key].x_rows(lo, hi)


class ActorEngine:
    """:class:`linalg_pc.solvers._loop.Engine` over one :class:`Shard` actor per worker (see
    the module docstring)."""

    def __init__(self, client, A, M, b, x0, zero, dtype):
        """A, M: Dask matrices row-chunked like b (M may be None); b, x0: Dask vectors (x0
        may be None); all in the working ``dtype``. Persists A (and M), builds the shards and
        the exchange maps, then releases the persisted blocks."""
        from distributed import futures_of, wait

        self.c = client
        self.zero = zero
        self.meta = b._meta
        self.chunks = b.chunks[0]
        self.dtype = np.dtype(dtype)
        N = b.shape[0]
        offsets = np.concatenate([[0], np.cumsum(self.chunks)]).astype(np.int64)
        cols = [A, b] + ([M] if M is not None else []) + ([x0] if x0 is not None else [])
        persisted = client.persist(cols)
        futs = []
        for coll in persisted:
            byk = {f.key: f for f in futures_of(coll)}
            keys = [k[0] if isinstance(k, list) else k for k in coll.__dask_keys__()]
            futs.append([byk[k] for k in keys])
        fA, fb = futs[0], futs[1]
        fM = futs[2] if M is not None else None
        fx = futs[-1] if x0 is not None else None
        wait(fA)
        who = client.who_has(fA)
        workers = sorted(client.scheduler_info()["workers"])
        holder = []
        for f in fA:
            h = sorted(who.get(f.key, ()))
            holder.append(h[0] if h else workers[0])
        addrs = sorted(set(holder))
        nch = len(self.chunks)
        chunk_shard = np.array([addrs.index(h) for h in holder], dtype=np.int64)
        chunk_start = np.zeros(nch, dtype=np.int64)
        self.rows = []  # per shard: [(chunk, lo, hi)] local row ranges
        owns = []
        for s in range(len(addrs)):
            mine = [c for c in range(nch) if chunk_shard[c] == s]
            pos, rows, own = 0, [], []
            for c in mine:
                chunk_start[c] = pos
                rows.append((c, pos, pos + int(self.chunks[c])))
                own.append(np.arange(offsets[c], offsets[c + 1], dtype=np.int64))
                pos += int(self.chunks[c])
            self.rows.append(rows)
            owns.append(np.concatenate(own))
        self.addrs = addrs
        self.futures = []
        for s, a in enumerate(addrs):
            mine = [c for c, _, _ in self.rows[s]]
            self.futures.append(client.submit(
                Shard, owns[s], N, self.dtype.str, [fA[c] for c in mine],
                None if fM is None else [fM[c] for c in mine], [fb[c] for c in mine],
                None if fx is None else [fx[c] for c in mine],
                actor=True, workers=[a], allow_other_workers=False, pure=False))
        wait(self.futures)
        for f in self.futures:
            if f.status == "error":
                f.result()  # raises the shard's error (NaN/inf in A or M)
        self.shards = [f.result() for f in self.futures]
        del persisted, futs, fA, fb, fM, fx  # the blocks live in the shards now
        gh = self._round("ghosts")
        sA, rA = exchange_maps([g[0] for g in gh], offsets, chunk_shard, chunk_start)
        sM, rM = exchange_maps([g[1] for g in gh], offsets, chunk_shard, chunk_start)
        self.M = M is not None
        self.m_halo = self.M and any(g[1].shape[0] for g in gh)
        self.x0 = x0 is not None
        self._round("set_maps", [(sA[s], rA[s], sM[s], rM[s]) for s in range(len(addrs))])
        self._rz = None
        self._zin = None

    def load(self, b, x0, zero):
        """The next solve's b (and x0; None: x0 = 0) on the same shards: Dask vectors chunked
        like A's rows, in the working dtype. One task per shard, pinned to its worker, gets
        that shard's chunks (Dask moves a chunk held elsewhere); A and M stay where they are.
        ``zero``: b = 0 (the loop then stops at once)."""
        from distributed import futures_of

        if tuple(b.chunks[0]) != tuple(self.chunks):
            raise ValueError(f"b's chunks {b.chunks[0]} must equal the row chunks "
                             f"{tuple(self.chunks)} of the prepared system")
        cols = [b] + ([x0] if x0 is not None else [])
        futs = []
        for coll in self.c.persist(cols):
            byk = {f.key: f for f in futures_of(coll)}
            futs.append([byk[k[0] if isinstance(k, list) else k] for k in coll.__dask_keys__()])
        fb, fx = futs[0], (futs[1] if x0 is not None else None)
        tasks = []
        for s, rows in enumerate(self.rows):
            mine = [c for c, _, _ in rows]
            tasks.append(self.c.submit(
                _load_task, self.futures[s].key, [fb[c] for c in mine],
                None if fx is None else [fx[c] for c in mine], workers=[self.addrs[s]],
                allow_other_workers=False, pure=False))
        for t in tasks:
            self._result(t)  # a shard's error; ShardLost when its worker is gone
        self.zero = zero
        self.x0 = x0 is not None
        self._rz = None
        self._zin = None

    # ------------------------------------------------------------------ plumbing
    def _round(self, method, args=None):
        """One call of ``method`` on every shard (``args[s]`` the arguments of shard s), the
        results in shard order."""
        S = len(self.shards)
        args = [()] * S if args is None else args
        futs = [getattr(sh, method)(*a) for sh, a in zip(self.shards, args)]
        return [self._result(f) for f in futs]

    def _result(self, f):
        """The result of an actor call. A call to a shard whose worker died may never
        return (the actor's task waits for its worker to come back): every ``POLL_S`` the
        shards' workers are checked, and a lost one raises."""
        while True:
            try:
                return f.result(timeout=POLL_S)
            except TimeoutError:
                if self.lost():
                    raise ShardLost("a worker holding a shard of the actor engine left the "
                                    "cluster") from None

    @staticmethod
    def _relay(outs):
        """The incoming halos of every shard from their outgoing ones."""
        inc = [dict() for _ in outs]
        for t, out in enumerate(outs):
            for s, v in out.items():
                inc[s][t] = v
        return inc

    @staticmethod
    def _sum(vals):
        tot = 0.0
        for v in vals:
            tot += v
        return tot

    def lost(self, wait: float = 0.0) -> bool:
        """Whether a shard's worker has left the cluster (or a shard's future failed),
        checking for up to ``wait`` seconds (the scheduler learns of a dead worker a moment
        after its connections break)."""
        import time

        deadline = time.monotonic() + wait
        while True:
            try:
                alive = set(self.c.scheduler_info()["workers"])
            except Exception:  # noqa: BLE001 - the scheduler itself unreachable
                return True
            if (any(a not in alive for a in self.addrs)
                    or any(f.status != "finished" for f in self.futures)):
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.2)

    # ------------------------------------------------------------------ Engine
    def init(self):
        if self.x0 and not self.zero:
            xin = self._relay(self._round("outgoing", [("x",)] * len(self.shards)))
            parts = self._round("init", [(v,) for v in xin])
        else:
            parts = self._round("init", [(None,)] * len(self.shards))
        self._rz = None
        return np.array([np.sqrt(self._sum(parts))])

    def true_residual(self):
        xin = self._relay(self._round("outgoing", [("x",)] * len(self.shards)))
        res = self._round("true_residual", [(v,) for v in xin])
        tt = self._sum(t for t, _ in res)
        dd = self._sum(d for _, d in res)
        return np.array([np.sqrt(tt)]), np.array([np.sqrt(dd)])

    def replace(self, mask):
        if bool(mask[0]):
            self._round("replace")
            self._rz = None

    def _precond(self, rin):
        res = self._round("precond", [(v,) for v in rin])
        self._zin = self._relay([h for _, h in res])
        return self._sum(rz for rz, _ in res)

    def precondition(self, active):
        if self._rz is None:
            rin = ([{}] * len(self.shards) if not self.m_halo else
                   self._relay(self._round("outgoing", [("r",)] * len(self.shards))))
            self._rz = self._precond(rin)
        return np.array([self._rz])

    def direction(self, beta, active):
        bt = float(beta[0])
        parts = self._round("direction", [(bt, v) for v in self._zin])
        self._rz = None
        return np.array([self._sum(parts)])

    def update(self, alpha, active):
        a = float(alpha[0])
        res = self._round("update", [(a, not self.m_halo)] * len(self.shards))
        rr = self._sum(r for r, _, _ in res)
        if self.m_halo:
            self._rz = self._precond(self._relay([h for _, _, h in res]))
        else:
            self._zin = self._relay([h for _, _, h in res])
            self._rz = self._sum(rz for _, rz, _ in res)
        return np.array([np.sqrt(rr)])

    def X(self):
        from distributed import wait

        dask, da = _dask()
        self._round("sync")
        parts = [None] * len(self.chunks)
        futs = []
        for s, rows in enumerate(self.rows):
            for c, lo, hi in rows:
                f = self.c.submit(_x_task, self.futures[s].key, lo, hi, workers=[self.addrs[s]],
                                  allow_other_workers=False, pure=False)
                futs.append(f)
                parts[c] = da.from_delayed(dask.delayed(f), shape=(hi - lo,), dtype=self.dtype,
                                           meta=self.meta)
        wait(futs)
        return da.concatenate(parts) if parts else da.zeros((0,), dtype=self.dtype)

    current_x = X

    def close(self):
        """Release the shards (their memory on the workers)."""
        if self.futures and self.lost():
            self.c.cancel(self.futures)  # a lost shard's task would wait for its worker
        self.shards = []
        self.futures = []


def _dask():
    import dask
    import dask.array as da

    return dask, da
