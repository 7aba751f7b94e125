"""The actor engine of the distributed PCG (linalg_pc.distributed._pcg_actors) against the local
lpc.pcg on the same system: plain, Jacobi and coupling preconditioners, x0, sparse and dense
blocks, uneven chunks, and chunk layouts chosen per worker (non-contiguous, all on one worker);
the ghost entries of p against their owners', bit for bit."""

from __future__ import annotations

import dask
import numpy as np
import pytest
import scipy.sparse as sp
from _dask_cluster import client, da, get_client, no_tasks  # noqa: F401 - the fixture

import linalg_pc as lpc
from linalg_pc.distributed._pcg_actors import ActorEngine
from linalg_pc.distributed.pcg import pcg_dask
from linalg_pc.solvers._loop import run

pytestmark = pytest.mark.usefixtures("client")

U64 = lpc.unit_roundoff("fp64")
#: uneven chunks; worker 0 holds chunks 0, 2, 3 (not contiguous), worker 1 chunks 1 and 4
SIZES = (70, 130, 50, 90, 60)
SPLIT = (0, 1, 0, 0, 1)


def poisson2d(n):
    T = sp.diags([-1.0, 2.0, -1.0], [-1, 0, 1], shape=(n, n))
    return (sp.kron(T, sp.eye(n)) + sp.kron(sp.eye(n), T)).tocsr()


def placed(cl, X, sizes, where):
    """X (a matrix, sparse or dense, or a vector) as a Dask array of row chunks ``sizes``,
    chunk i held by worker ``where[i]`` (sorted addresses)."""
    addrs = sorted(cl.scheduler_info()["workers"])
    edges = np.concatenate([[0], np.cumsum(sizes)])
    parts = []
    for i, w in enumerate(where):
        blk = X[edges[i]:edges[i + 1]]
        fut = cl.scatter(blk, workers=[addrs[w]], hash=False)
        meta = sp.csr_matrix((0, 0)) if sp.issparse(X) else np.empty((0,) * X.ndim)
        parts.append(da.from_delayed(dask.delayed(fut), shape=blk.shape, dtype=X.dtype,
                                     meta=meta))
    return da.concatenate(parts, axis=0)


def system(case):
    A = poisson2d(20)  # 400 unknowns; the ±20 off-diagonals cross every chunk boundary
    rng = np.random.default_rng(3)
    b = rng.standard_normal(400)
    M = x0 = None
    if case == "jacobi":
        M = sp.diags(1.0 / A.diagonal()).tocsr()
    elif case == "coupled":  # SPD, with A's pattern: its halo is exchanged too
        M = (0.2 * sp.eye(400) + 0.01 * A).tocsr()
    elif case == "x0":
        x0 = rng.standard_normal(400)
    return A, b, M, x0


def dask_system(case, where=SPLIT, sizes=SIZES):
    A, b, M, x0 = system(case)
    cl = get_client()
    args = dict(M=None if M is None else placed(cl, M, sizes, where),
                x0=None if x0 is None else placed(cl, x0, sizes, where))
    return A, b, M, x0, placed(cl, A, sizes, where), placed(cl, b, sizes, where), args


@pytest.mark.parametrize("case", ["plain", "jacobi", "coupled", "x0"])
@pytest.mark.parametrize("where", [SPLIT, (0, 0, 0, 0, 0)], ids=["interleaved", "one-worker"])
def test_actor_history_matches_local(case, where):
    A, b, M, x0, Ad, bd, args = dask_system(case, where)
    res = pcg_dask(Ad, bd, rtol=0.0, maxiter=12, check_every=5, engine="actors", **args)
    loc = lpc.pcg(A, b, M=M, x0=x0, rtol=0.0, maxiter=12, check_every=5)
    assert res.status == loc.status == "maxiter" and res.iterations == loc.iterations == 12
    # the same recurrence with the sums associated differently: O(u) per step (κ(A) ≈ 180)
    np.testing.assert_allclose(res.residual_norms, loc.residual_norms, rtol=1e4 * U64)
    assert res.x.chunks == bd.chunks
    x = res.x.compute()
    np.testing.assert_allclose(x, loc.x, rtol=0, atol=1e4 * U64 * np.abs(loc.x).max())
    assert res.true_residual_norm == pytest.approx(loc.true_residual_norm, rel=1e4 * U64)


def test_float32_blocks_stay_float32():
    A, b, *_ = system("plain")
    A, b = A.astype(np.float32), b.astype(np.float32)
    cl = get_client()
    res = pcg_dask(placed(cl, A, SIZES, SPLIT), placed(cl, b, SIZES, SPLIT), rtol=0.0,
                   maxiter=8, engine="actors")
    loc = lpc.pcg(A, b, rtol=0.0, maxiter=8)
    x = res.x.compute()
    assert x.dtype == np.float32
    u = lpc.unit_roundoff("fp32")
    np.testing.assert_allclose(res.residual_norms, loc.residual_norms, rtol=1e3 * u)
    np.testing.assert_allclose(x, loc.x, rtol=0, atol=1e3 * u * np.abs(loc.x).max())


def test_dense_blocks_converge_like_local():
    rng = np.random.default_rng(4)
    G = rng.standard_normal((200, 200))
    A = G @ G.T / 200 + np.diag(rng.uniform(1, 10, 200))
    b = rng.standard_normal(200)
    sizes, where = (50, 80, 70), (1, 0, 1)
    Minv = np.diag(1.0 / np.diag(A))
    res = pcg_dask(placed(get_client(), A, sizes, where), placed(get_client(), b, sizes, where),
                   M=placed(get_client(), Minv, sizes, where), rtol=1e-10, engine="actors")
    loc = lpc.pcg(A, b, M=Minv, rtol=1e-10)
    assert res.status == loc.status == "converged"
    assert abs(res.iterations - loc.iterations) <= 1
    np.testing.assert_allclose(res.x.compute(), loc.x, rtol=0,
                               atol=1e-9 * np.abs(loc.x).max())


@pytest.mark.parametrize("case", ["coupled", "plain"])
def test_converges_and_stops_like_local(case):
    A, b, M, x0, Ad, bd, args = dask_system(case)
    res = pcg_dask(Ad, bd, rtol=1e-8, engine="actors", **args)
    loc = lpc.pcg(A, b, M=M, rtol=1e-8)
    assert res.status == loc.status == "converged" and res.converged
    assert abs(res.iterations - loc.iterations) <= 1
    assert res.true_residual_norm < 1e-8 * np.linalg.norm(b)
    short = pcg_dask(Ad, bd, rtol=1e-8, maxiter=5, engine="actors", **args)
    assert short.status == "maxiter" and short.iterations == 5 and not short.converged


def test_default_engine_is_actors_and_reproducible():
    """Without engine= a Client and Dask-array inputs pick the actors; the client adds the
    shards' partial sums in a fixed order, so two runs on one layout agree bit for bit. The
    task engine associates the SpMV and the sums differently: O(u) apart."""
    A, b, M, x0, Ad, bd, args = dask_system("coupled")
    r1 = lpc.pcg(Ad, bd, M=args["M"], rtol=0.0, maxiter=10)
    r2 = pcg_dask(Ad, bd, M=args["M"], rtol=0.0, maxiter=10, engine="actors")
    rt = lpc.pcg(Ad, bd, M=args["M"], rtol=0.0, maxiter=10, engine="tasks")  # passed through
    np.testing.assert_array_equal(r1.residual_norms, r2.residual_norms)
    np.testing.assert_array_equal(r1.x.compute(), r2.x.compute())
    np.testing.assert_allclose(r1.residual_norms, rt.residual_norms, rtol=1e4 * U64)


@pytest.mark.parametrize("case", ["plain", "coupled"])
def test_ghosts_equal_owners_bit_for_bit(case):
    """Each shard updates the ghost entries of p itself (p_g = z_g + βp_g); they must equal
    the owners' entries exactly, or the SpMVs would drift apart from one matrix-vector
    product."""
    A, b, M, x0, Ad, bd, args = dask_system(case)
    eng = ActorEngine(get_client(), Ad, args["M"], bd, None, False, np.float64)
    try:
        raw = run(eng, np.array([0.0]), 7, 25)
        assert raw.iters[0] == 7
        p = np.full(400, np.nan)
        edges = np.concatenate([[0], np.cumsum(SIZES)])
        states = eng._round("p_state")
        for rows, (own, _) in zip(eng.rows, states):
            for c, lo, hi in rows:
                p[edges[c]:edges[c + 1]] = own[lo:hi]
        assert np.all(np.isfinite(p)) and np.any(p != 0)
        nghost = 0
        for (_, ghost), (gA, _) in zip(states, eng._round("ghosts")):
            assert ghost.shape == gA.shape
            np.testing.assert_array_equal(ghost, p[gA])
            nghost += gA.shape[0]
        assert nghost > 0
    finally:
        eng.close()


def test_bad_engine_raises_before_any_task():
    A, b, *_ = system("plain")
    Ad = da.from_array(A.toarray(), chunks=(100, 400))
    bd = da.from_array(b, chunks=100)
    with dask.config.set(scheduler=no_tasks):
        with pytest.raises(ValueError, match="engine must be one of"):
            pcg_dask(Ad, bd, engine="mpi")
    with dask.config.set(scheduler="threads"):  # no distributed Client in use
        with pytest.raises(ValueError, match="engine='actors' needs a distributed Client"):
            pcg_dask(Ad, bd, engine="actors")
        with pytest.raises(ValueError, match="engine must be one of"):
            lpc.pcg(Ad, bd, engine="mpi")
    with pytest.raises(ValueError, match="applies to Dask arrays only"):
        lpc.pcg(A, b, engine="tasks")


def test_nan_in_a_block_raises():
    A, b, *_ = system("plain")
    A = A.tolil()
    A[150, 170] = np.nan
    A = A.tocsr()
    with pytest.raises(ValueError, match="A must not contain NaN"):
        pcg_dask(placed(get_client(), A, SIZES, SPLIT), placed(get_client(), b, SIZES, SPLIT),
                 engine="actors")


def _rows(A, lo, hi):
    return A[lo:hi]


def _recomputable_system(cl):
    """The "plain" system with A persisted on ``cl``'s workers from a graph Dask can rerun
    (a killed worker's chunks are recomputed) and b from the client: (A, b, Ad, bd)."""
    from distributed import wait

    A, b, *_ = system("plain")
    edges = np.concatenate([[0], np.cumsum(SIZES)])
    Ad = cl.persist(da.concatenate([
        da.from_delayed(dask.delayed(_rows)(A, lo, hi), shape=(hi - lo, 400), dtype=A.dtype,
                        meta=sp.csr_matrix((0, 0)))
        for lo, hi in zip(edges[:-1], edges[1:])]))
    wait(Ad)
    return A, b, Ad, da.from_array(b, chunks=(SIZES,))


@pytest.mark.slow
def test_worker_killed_mid_solve_reruns_with_tasks():
    """Dask does not recompute an actor: when a shard's worker dies mid-solve, the solve is
    rerun from x0 by the task engine (whose lost chunks Dask recomputes) with a warning, and
    the result is still the local one. A cluster of its own: the session's is not disturbed."""
    import os
    import signal

    from _dask_cluster import distributed

    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                       dashboard_address=None, memory_limit="2GiB")
    cl = distributed.Client(cluster, set_as_default=False)
    try:
        with cl.as_current():
            A, b, Ad, bd = _recomputable_system(cl)
            holder = cl.who_has(Ad)[Ad.__dask_keys__()[0][0]][0]
            victim = cl.run(os.getpid)[holder]
            steps = []

            def callback(x):
                steps.append(1)
                if len(steps) == 3:
                    os.kill(victim, signal.SIGKILL)

            with pytest.warns(RuntimeWarning, match="rerun from x0 with engine='tasks'"):
                res = pcg_dask(Ad, bd, rtol=0.0, maxiter=8, check_every=5, callback=callback,
                               engine="actors")
            x = res.x.compute()
        loc = lpc.pcg(A, b, rtol=0.0, maxiter=8, check_every=5)
        assert res.status == "maxiter" and res.iterations == 8
        assert len(steps) >= 3 + 8  # 3 steps by the actors, then all 8 again by the tasks
        np.testing.assert_allclose(res.residual_norms, loc.residual_norms, rtol=1e4 * U64)
        np.testing.assert_allclose(x, loc.x, rtol=0, atol=1e4 * U64 * np.abs(loc.x).max())
    finally:
        cl.close()
        cluster.close()


@pytest.mark.parametrize("layout", ["several", "one", "one_float32", "empty_block"])
def test_local_matrix_is_the_stacked_rows_over_own_and_ghost_columns(layout):
    """The shard's matrix, read back through [own | ghost] to global columns, is the stack of
    its row blocks, entry for entry, whatever the blocks' count and dtype."""
    from linalg_pc.distributed._pcg_actors import _local_matrix

    rng = np.random.default_rng(3)
    N = 60
    sizes = {"several": [7, 0, 12, 5], "one": [15], "one_float32": [15],
             "empty_block": [0, 9]}[layout]
    dt = np.float32 if layout == "one_float32" else np.float64
    blocks = [sp.random(r, N, density=0.2, random_state=rng, format="csr", dtype=dt)
              for r in sizes]
    own = np.arange(20, 20 + sum(sizes), dtype=np.int64)
    L, ghost = _local_matrix(blocks, own, N, np.dtype(np.float64), "A")
    assert L.dtype == np.float64 and L.shape == (own.size, own.size + ghost.size)
    stacked = sp.vstack(blocks, format="csr").toarray() if sizes else np.zeros((0, N))
    back = np.zeros((own.size, N))
    back[:, np.concatenate([own, ghost])] = L.toarray()
    np.testing.assert_array_equal(back, stacked)
    touched = np.flatnonzero(np.any(stacked != 0, axis=0))
    np.testing.assert_array_equal(ghost, np.setdiff1d(touched, own))
    bad = blocks[-1].copy()
    if bad.nnz:
        bad.data[0] = np.nan
        with pytest.raises(ValueError, match="A must not contain NaN"):
            _local_matrix(blocks[:-1] + [bad], own, N, np.dtype(np.float64), "A")


# --------------------------------------------------------------------------- prepared systems
def _shard_tasks(ts) -> int:
    """How many actor-creation tasks (one per shard built) a task stream holds."""
    return sum(1 for t in ts.data if str(t["key"]).startswith("Shard-"))


@pytest.mark.parametrize("case", ["plain", "coupled", "x0"])
def test_prepared_solves_equal_one_shot_solves_bit_for_bit(case):
    """Solves on the kept shards (new b, new x0, the first b again) give, bit for bit, what a
    one-shot actor solve gives on the same layout; an earlier solve's x is not changed by the
    later ones; the shards are built once."""
    from distributed import get_task_stream

    A, b, M, x0, Ad, bd, args = dask_system(case)
    cl = get_client()
    b2 = np.random.default_rng(8).standard_normal(b.shape[0])
    bd2 = placed(cl, b2, SIZES, (1, 1, 0, 1, 0))  # b's chunks held elsewhere than A's rows
    rhs = [(bd, args["x0"]), (bd2, None), (bd, args["x0"])]
    with lpc.distributed.prepare_pcg(Ad, M=args["M"]) as system_:
        assert not system_.built
        with get_task_stream(cl) as ts:
            got = [system_.pcg(v, x0=x, rtol=0.0, maxiter=9, check_every=4) for v, x in rhs[:1]]
        assert _shard_tasks(ts) == 2 and system_.built
        with get_task_stream(cl) as ts:
            got += [system_.pcg(v, x0=x, rtol=0.0, maxiter=9, check_every=4) for v, x in rhs[1:]]
        assert _shard_tasks(ts) == 0  # the later solves reuse the shards
    assert not system_.built
    for (v, x), res in zip(rhs, got):
        one = pcg_dask(Ad, v, M=args["M"], x0=x, rtol=0.0, maxiter=9, check_every=4,
                       engine="actors")
        np.testing.assert_array_equal(res.residual_norms, one.residual_norms)
        np.testing.assert_array_equal(res.x.compute(), one.x.compute())
        assert res.status == one.status and res.true_residual_norm == one.true_residual_norm
    loc = lpc.pcg(A, b2, M=M, rtol=0.0, maxiter=9, check_every=4)
    np.testing.assert_allclose(got[1].residual_norms, loc.residual_norms, rtol=1e4 * U64)


def test_prepared_converges_and_float32():
    A, b, *_ = system("plain")
    A32, b32 = A.astype(np.float32), b.astype(np.float32)
    cl = get_client()
    with lpc.distributed.prepare_pcg(placed(cl, A32, SIZES, SPLIT)) as s:
        assert s.dtype == np.float32
        for scale in (1.0, -3.0):
            res = s.pcg(placed(cl, scale * b32, SIZES, SPLIT), rtol=1e-5)
            loc = lpc.pcg(A32, scale * b32, rtol=1e-5)
            assert res.status == loc.status == "converged"
            assert abs(res.iterations - loc.iterations) <= 1
            x = res.x.compute()
            assert x.dtype == np.float32
            assert np.linalg.norm(A @ x - scale * b) <= 2e-5 * np.linalg.norm(scale * b)
        zero = s.pcg(placed(cl, np.zeros(400, np.float32), SIZES, SPLIT))
        assert zero.converged and zero.iterations == 0
        assert not np.any(zero.x.compute())


def test_prepared_bad_input_raises_before_any_task():
    A, b, *_ = system("plain")
    Ad = da.from_array(A.toarray(), chunks=(100, 400))
    bd = da.from_array(b, chunks=100)
    s = lpc.distributed.prepare_pcg(Ad)
    with dask.config.set(scheduler=no_tasks):
        with pytest.raises(ValueError, match="chunks .* must equal the row chunks"):
            s.pcg(bd.rechunk(50))
        with pytest.raises(ValueError, match="length 400"):
            s.pcg(bd[:300])
        with pytest.raises(TypeError):
            s.pcg(b)
    s32 = lpc.distributed.prepare_pcg(Ad.astype(np.float32))
    with dask.config.set(scheduler=no_tasks):
        with pytest.raises(ValueError, match="fp64 but the system was prepared in fp32"):
            s32.pcg(bd)
    # prepare_pcg submits nothing (the shards are built by the first solve)
    with pytest.raises(ValueError, match="must be square"):
        lpc.distributed.prepare_pcg(Ad[:, :300])
    with pytest.raises(ValueError, match="must match A"):
        lpc.distributed.prepare_pcg(Ad, M=Ad.rechunk((50, 400)))
    with pytest.raises(TypeError):
        lpc.distributed.prepare_pcg(A)
    assert not s.built and not s32.built
    s.close()
    with pytest.raises(ValueError, match="closed"):
        s.pcg(bd)
    with dask.config.set(scheduler="threads"):  # no distributed Client in use
        with pytest.raises(ValueError, match="needs a distributed Client"):
            lpc.distributed.prepare_pcg(Ad)


@pytest.mark.slow
def test_prepared_system_survives_a_lost_worker():
    """A shard's worker dies between two solves: the next solve warns, reruns with the task
    engine (Dask recomputes the lost chunks) and is still right; the one after builds new
    shards on the workers left."""
    import os
    import signal
    import time

    from _dask_cluster import distributed

    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                       dashboard_address=None, memory_limit="2GiB")
    cl = distributed.Client(cluster, set_as_default=False)
    try:
        with cl.as_current():
            A, b, Ad, bd = _recomputable_system(cl)
            loc = lpc.pcg(A, b, rtol=0.0, maxiter=8, check_every=5)
            s = lpc.distributed.prepare_pcg(Ad)
            first = s.pcg(bd, rtol=0.0, maxiter=8, check_every=5)
            np.testing.assert_allclose(first.x.compute(), loc.x, rtol=0,
                                       atol=1e4 * U64 * np.abs(loc.x).max())
            victim = cl.run(os.getpid)[sorted(cl.scheduler_info()["workers"])[0]]
            os.kill(victim, signal.SIGKILL)
            deadline = time.monotonic() + 30
            while len(cl.scheduler_info()["workers"]) > 1 and time.monotonic() < deadline:
                time.sleep(0.1)
            with pytest.warns(RuntimeWarning, match="rerun from x0 with engine='tasks'"):
                second = s.pcg(bd, rtol=0.0, maxiter=8, check_every=5)
            assert not s.built
            third = s.pcg(bd, rtol=0.0, maxiter=8, check_every=5)
            assert s.built
            for res in (second, third):
                assert res.status == "maxiter" and res.iterations == 8
                np.testing.assert_allclose(res.residual_norms, loc.residual_norms,
                                           rtol=1e4 * U64)
                np.testing.assert_allclose(res.x.compute(), loc.x, rtol=0,
                                           atol=1e4 * U64 * np.abs(loc.x).max())
            s.close()
    finally:
        cl.close()
        cluster.close()
