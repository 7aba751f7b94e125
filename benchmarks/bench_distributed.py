"""Distributed suite: linalg_pc on Dask arrays over a 2-worker LocalCluster (1 thread each).

Cases (full size; ``--quick`` shrinks every size):

- ``tsqr``: lpc.qr (CholQR2) of a 4,000,000×64 fp32 Dask array in 32 row chunks against
  ``dask.array.linalg.tsqr`` on the same array and cluster. Both sides time the same thing:
  the input is persisted on the workers before timing (no generation inside the timed
  region), and the timed call ends with Q (and R) computed into chunks persisted on the
  workers, never gathered to the client; the results are released after each repeat so the
  next one computes from scratch. ‖I − QᵀQ‖₂ of ours against the CholQR2 bound
  6(mn + n(n+1))u of docs/error-analysis.md.
- ``qr_vs_local``: the same distributed QR against lpc.qr of the array held in memory by this
  process (its BLAS on every core), Q returned in memory: the price of distribution.
- ``dcreg``: lpc.solve_degenerate over N 6×6 systems in Dask chunks against one local process
  on the same systems in memory (the Numba kernel on every core); ``dcreg_1thread``: the same
  against the local process on one Numba thread, which is what each 1-thread worker has (each
  worker's tasks run the serial kernels, :func:`linalg_pc._kernels._twins.thread_limit`). On
  a 2-core machine 2 one-thread workers can at best match the local process on both cores;
  the 1-thread ratio is the parallel efficiency of the distribution. The full size is
  N = 2·10⁶ in chunks of 2.5·10⁵ (10⁷ systems do not fit twice in this machine's memory).
- ``pcg``: 3-D Poisson, n³ unknowns (200³ = 8·10⁶ full, 40³ quick), 16 row chunks built on
  the workers, 20 PCG iterations (rtol 0) with the actor engine
  (:class:`linalg_pc.distributed._pcg_actors.ActorEngine`, the default) against local
  lpc.pcg on the same CSR matrix. ``ours_s`` / ``baseline_s`` time whole calls (setup
  included: persisting the blocks, building the shards, x returned as persisted chunks);
  the per-iteration figures without the setup are ``*_ms_per_iter_steady``
  ((t(25 iterations) − t(5)) / 20, both sides interleaved, medians of 3) and, from the
  engine driven directly, ``actors_loop_ms_per_iter`` split into the busiest shard's
  computing time and the rest (``actors_overhead_ms_per_iter``: actor round trips, the halo
  relayed through the client, the client's loop); ``prepared_*``: whole solves on shards
  kept by :func:`linalg_pc.distributed.prepare_pcg` (the first, which builds them, and the
  median of three more) against whole local solves. The row blocks are placed contiguously
  (half the chunks on each worker: 1 boundary between workers, recorded as
  ``worker_boundaries``). Measured at full size (docs/distributed.md, four runs at load
  average 1.5–4.6 on the 2 shared cores): 75–148 ms per iteration against 67–119 ms locally
  in the same run, 0.9–1.7×, of which 21–44 ms communication and scheduling; whole calls of
  20 iterations 2.6–3.5× the local ones (the setup, 2.5–5 s, is paid once per solve).
- ``pcg_overhead``: the same on a tiny problem (10³ unknowns in 16 chunks), the actor engine
  against the task engine (:class:`linalg_pc.distributed.pcg.FuturesEngine`: three layers of
  chunk tasks and two round trips of one small result each): the per-iteration time is the
  scheduler's overhead.
"""

from __future__ import annotations

import os

import numpy as np
from harness import Case

import linalg_pc as lpc

U32 = 2.0**-24
_CLUSTER: dict = {}


def client():
    if "client" not in _CLUSTER:
        import sys

        import cloudpickle
        from distributed import Client, LocalCluster

        # the workers cannot import this module: its functions travel by value
        cloudpickle.register_pickle_by_value(sys.modules[__name__])

        cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                               dashboard_address=None, memory_limit="8GiB")
        _CLUSTER.update(cluster=cluster, client=Client(cluster))
    return _CLUSTER["client"]


def _wait(*xs):
    """Persist and wait, then release (the next call must not find these keys computed)."""
    from distributed import wait

    out = client().persist(list(xs))
    wait(out)
    client().cancel(out)


def _fresh(x):
    """x under new keys (an identity task per chunk): each timed call computes from scratch
    instead of finding the previous call's results on the workers."""
    import uuid

    return x.map_blocks(_same, dtype=x.dtype, meta=x._meta, token=uuid.uuid4().hex)


def _same(block):
    return block


def load() -> dict:
    return {"loadavg_1m": os.getloadavg()[0]}


# --------------------------------------------------------------------------- TSQR
def qr_cases(quick: bool) -> list[Case]:
    import dask.array as da

    m, n, chunks = (400_000, 64, 32) if quick else (4_000_000, 64, 32)
    c = client()
    A = da.random.default_rng(0).standard_normal((m, n), chunks=(m // chunks, n),
                                                dtype=np.float32)
    A = c.persist(A)
    from distributed import wait

    wait(A)

    def ours():
        # A itself (persisted: its chunks are in the workers' memory); every intermediate
        # and Q are released by _wait, so each repeat computes from scratch
        Q, R, info = lpc.qr(A)
        _wait(Q)
        return info

    def dask_tsqr():
        Q, R = da.linalg.tsqr(A)
        _wait(Q, R)

    def acc(o, b):
        Q, R, info = lpc.qr(A)
        G = (Q.T @ Q).compute().astype(np.float64)
        err = float(np.linalg.norm(G - np.eye(n), 2))
        bound = 6 * (m * n + n * (n + 1)) * U32
        return {"m": m, "n": n, "chunks": chunks, "orth_err": err, "orth_bound": bound,
                "method": info.method, **load()}

    Al = A.compute()

    def local():
        return lpc.qr(Al)

    def acc_l(o, b):
        return {"m": m, "n": n, **load()}

    def derived(rec):
        return {"ratio_dist_over_local": rec["ours_s"] / rec["baseline_s"]}

    return [Case(f"tsqr {m}x{n} fp32, {chunks} chunks", ours, dask_tsqr,
                 "dask.array.linalg.tsqr", accuracy=acc, repeats=3 if quick else 3),
            Case(f"qr_vs_local {m}x{n} fp32", ours, local, "local lpc.qr (in memory)",
                 accuracy=acc_l, repeats=3, derived=derived)]


# --------------------------------------------------------------------------- DCReg
def _dcreg_chunk(N, seed):
    rng = np.random.default_rng(seed)
    J = rng.standard_normal((N, 20, 6))
    weak = rng.integers(0, 6, N)
    sel = rng.random(N) < 1 / 3
    J[np.nonzero(sel)[0], :, weak[sel]] *= 1e-3
    return J.transpose(0, 2, 1) @ J, rng.standard_normal((N, 6))


def dcreg_cases(quick: bool) -> list[Case]:
    import dask
    import dask.array as da

    N, per = (100_000, 10_000) if quick else (2_000_000, 250_000)
    c = client()
    parts = [dask.delayed(_dcreg_chunk)(per, i) for i in range(N // per)]
    H = da.concatenate([da.from_delayed(p[0], (per, 6, 6), np.float64) for p in parts])
    b = da.concatenate([da.from_delayed(p[1], (per, 6), np.float64) for p in parts])
    H, b = c.persist([H, b])
    Hl, bl = dask.compute(H, b)

    def ours():
        x, rep, res = lpc.solve_degenerate(_fresh(H), _fresh(b))
        _wait(x, res.status)

    def local():
        return lpc.solve_degenerate(Hl, bl)

    def local_1t():
        from linalg_pc._kernels._twins import thread_limit

        with thread_limit(1):
            return lpc.solve_degenerate(Hl, bl)

    def acc(o, loc):
        x = lpc.solve_degenerate(H, b)[0].compute()
        return {"systems": N, "chunk": per,
                "max_diff_vs_local": float(np.max(np.abs(x - loc[0]))), **load()}

    def derived(rec):
        return {"throughput_ratio": rec["baseline_s"] / rec["ours_s"],
                "systems_per_s": N / rec["ours_s"]}

    return [Case(f"dcreg N={N} chunks of {per}", ours, local,
                 "one local process (Numba on every core)", accuracy=acc, repeats=3,
                 derived=derived),
            Case(f"dcreg_1thread N={N} chunks of {per}", ours, local_1t,
                 "one local process on one thread (what each worker has)", accuracy=acc,
                 repeats=3, derived=derived)]


# --------------------------------------------------------------------------- PCG
def poisson3d_rows(n: int, r0: int, r1: int):
    """Rows [r0, r1) of the 7-point 3-D Laplacian on an n³ grid, as a CSR block."""
    import scipy.sparse as sp

    r = np.arange(r0, r1, dtype=np.int64)
    i, j, k = r // (n * n), (r // n) % n, r % n
    rows, cols, vals = [r - r0], [r], [np.full(r.size, 6.0)]
    for ok, off in ((i > 0, -n * n), (i < n - 1, n * n), (j > 0, -n), (j < n - 1, n),
                    (k > 0, -1), (k < n - 1, 1)):
        rows.append((r - r0)[ok])
        cols.append(r[ok] + off)
        vals.append(np.full(int(ok.sum()), -1.0))
    N = n**3
    return sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                         shape=(r1 - r0, N))


def _dask_poisson(n, nchunks):
    """The n³ Poisson matrix as a Dask array of ``nchunks`` row blocks built on the workers,
    placed contiguously (the first half of the chunks on one worker, the rest on the other:
    a fixed layout, so that the halo does not change from run to run), and a random b."""
    import dask
    import dask.array as da
    import scipy.sparse as sp

    c = client()
    addrs = sorted(c.scheduler_info()["workers"])
    N = n**3
    edges = np.linspace(0, N, nchunks + 1).astype(int)
    futs = [c.submit(poisson3d_rows, n, a, b, workers=[addrs[i * len(addrs) // nchunks]],
                     pure=False) for i, (a, b) in enumerate(zip(edges[:-1], edges[1:]))]
    blocks = [da.from_delayed(dask.delayed(f), (b - a, N), np.float64,
                              meta=sp.csr_matrix((0, 0)))
              for f, a, b in zip(futs, edges[:-1], edges[1:])]
    A = da.concatenate(blocks, axis=0)
    rhs = np.random.default_rng(0).standard_normal(N)
    return A, da.from_array(rhs, chunks=(tuple(np.diff(edges)),)), rhs


def _worker_boundaries(A) -> int:
    """How many of the boundaries between consecutive row chunks of the persisted A separate
    chunks held by different workers."""
    who = client().who_has(A)
    held = [tuple(sorted(who[k[0]])) for k in A.__dask_keys__()]
    return sum(1 for u, v in zip(held, held[1:]) if u != v)


def _pcg_run(A, b, engine, iters):
    """One distributed solve of ``iters`` iterations (rtol 0) from scratch, x persisted."""
    from linalg_pc.distributed.pcg import pcg_dask

    res = pcg_dask(_fresh(A), _fresh(b), rtol=0.0, maxiter=iters, engine=engine)
    _wait(res.x)
    return res._replace(x=None)


def _per_iteration(fns: dict, lo: int = 5, hi: int = 25, repeats: int = 3) -> dict:
    """Seconds per iteration of each ``fns[name](iters)`` as (t(hi) − t(lo)) / (hi − lo):
    the setup (persisting and splitting A, building the shards, the local CSR checks) cancels.
    The functions are called interleaved, ``repeats`` times each; medians."""
    import statistics
    import time

    per: dict = {k: [] for k in fns}
    for _ in range(repeats):
        for k, f in fns.items():
            t0 = time.perf_counter()
            f(lo)
            t1 = time.perf_counter()
            f(hi)
            t2 = time.perf_counter()
            per[k].append(((t2 - t1) - (t1 - t0)) / (hi - lo))
    return {k: statistics.median(v) for k, v in per.items()}


def _actor_split(A, b, iters):
    """The actor engine driven directly: wall time of the loop per iteration, the busiest
    shard's computing time per iteration (its methods' own time) and the difference, which is
    the communication and scheduling cost per iteration (actor round trips, the halo relayed
    through the client, the client's loop); also the setup time (shards built, maps set)."""
    import time

    from linalg_pc.distributed._pcg_actors import ActorEngine
    from linalg_pc.solvers._loop import run

    c = client()
    t0 = time.perf_counter()
    eng = ActorEngine(c, _fresh(A), None, c.persist(_fresh(b)), None, False, np.float64)
    t1 = time.perf_counter()
    try:
        busy0 = eng._round("busy_time")
        t2 = time.perf_counter()
        raw = run(eng, np.array([0.0]), iters, 25)
        t3 = time.perf_counter()
        busy = max(e - s for s, e in zip(busy0, eng._round("busy_time")))
    finally:
        eng.close()
    k = int(raw.iters[0])
    return {"setup_s": t1 - t0, "loop_ms_per_iter": (t3 - t2) / k * 1e3,
            "shard_compute_ms_per_iter": busy / k * 1e3,
            "overhead_ms_per_iter": (t3 - t2 - busy) / k * 1e3, "shards": len(eng.addrs)}


def _prepared(A, b, iters, local, repeats: int = 3) -> dict:
    """Whole solves on kept shards (:func:`linalg_pc.distributed.prepare_pcg`): the first
    (which builds the shards) and the median of the next ``repeats``, each from a fresh b,
    against whole local solves timed in between."""
    import statistics
    import time

    with lpc.distributed.prepare_pcg(_fresh(A)) as system:
        t0 = time.perf_counter()
        _wait(system.pcg(_fresh(b), rtol=0.0, maxiter=iters).x)
        first = time.perf_counter() - t0
        ours, loc = [], []
        for _ in range(repeats):
            t0 = time.perf_counter()
            _wait(system.pcg(_fresh(b), rtol=0.0, maxiter=iters).x)
            t1 = time.perf_counter()
            local()
            t2 = time.perf_counter()
            ours.append(t1 - t0)
            loc.append(t2 - t1)
    o, lo = statistics.median(ours), statistics.median(loc)
    return {"prepared_first_solve_s": first, "prepared_solve_s": o, "prepared_local_s": lo,
            "prepared_ratio_over_local": o / lo}


def pcg_cases(quick: bool) -> list[Case]:
    import scipy.sparse as sp

    iters = 20
    out = []
    for label, n, nchunks in (("pcg", 40 if quick else 200, 16),
                              ("pcg_overhead", 10, 16)):
        A, b, rhs = _dask_poisson(n, nchunks)
        A = client().persist(A)
        Al = sp.vstack([poisson3d_rows(n, 0, n**3)]).tocsr()

        def ours(A=A, b=b):
            return _pcg_run(A, b, "actors", iters)

        def tasks(A=A, b=b):
            return _pcg_run(A, b, "tasks", iters)

        def local(Al=Al, rhs=rhs):
            return lpc.pcg(Al, rhs, rtol=0.0, maxiter=iters)

        def acc(o, other, n=n, A=A, b=b, Al=Al, rhs=rhs, label=label, local=local):
            loc = local()
            rec = {"unknowns": n**3, "iterations": o.iterations,
                   "worker_boundaries": _worker_boundaries(A),
                   "hist_rel_diff": float(np.max(np.abs(o.residual_norms - loc.residual_norms)
                                                 / loc.residual_norms)), **load()}
            fns = {"actors": lambda k: _pcg_run(A, b, "actors", k)}
            if label == "pcg":
                fns["local"] = lambda k: lpc.pcg(Al, rhs, rtol=0.0, maxiter=k)
            else:  # the local iteration (µs) is below what a difference of calls resolves
                fns["tasks"] = lambda k: _pcg_run(A, b, "tasks", k)
            per = _per_iteration(fns, repeats=3)
            rec.update({f"{k}_ms_per_iter_steady": v * 1e3 for k, v in per.items()})
            other = "local" if label == "pcg" else "tasks"
            rec[f"steady_ratio_actors_over_{other}"] = per["actors"] / per[other]
            rec.update({f"actors_{k}": v for k, v in _actor_split(A, b, iters).items()})
            if label == "pcg":
                rec.update(_prepared(A, b, iters, local))
            rec["loadavg_1m_end"] = os.getloadavg()[0]
            return rec

        def derived(rec):
            return {"ours_ms_per_iter": rec["ours_s"] / iters * 1e3,
                    "baseline_ms_per_iter": rec["baseline_s"] / iters * 1e3,
                    "per_iter_ratio": rec["ours_s"] / rec["baseline_s"]}

        if label == "pcg":
            out.append(Case(f"{label} {n}^3 in {nchunks} row chunks, actor engine", ours, local,
                            "local lpc.pcg (CSR)", accuracy=acc, repeats=3, derived=derived))
        else:
            out.append(Case(f"{label} {n}^3 in {nchunks} row chunks, actors vs tasks", ours,
                            tasks, "the task engine (FuturesEngine)", accuracy=acc, repeats=3,
                            derived=derived))
    return out


def cases(quick: bool) -> list[Case]:
    return qr_cases(quick) + dcreg_cases(quick) + pcg_cases(quick)
