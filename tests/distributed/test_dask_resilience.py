"""Slow: CholQR2 of a matrix larger than a worker's memory limit, and a worker killed in the
middle of a QR (Dask recomputes the lost tasks; the result is still correct). Each test starts
its own 2-worker cluster, so the session's cluster is not disturbed."""

from __future__ import annotations

import os
import signal
import threading
import time

import numpy as np
import pytest
from _dask_cluster import da, distributed

import linalg_pc as lpc

U32 = 2.0**-24

pytestmark = pytest.mark.slow


def _cluster(memory_limit):
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                       dashboard_address=None, memory_limit=memory_limit)
    return cluster, distributed.Client(cluster, set_as_default=False)


def test_cholqr2_larger_than_worker_memory():
    m, n = 3_000_000, 64  # 768 MB of fp32, produced chunk by chunk
    cluster, client = _cluster("600MiB")
    try:
        with client.as_current():
            before = set(client.scheduler_info()["workers"])
            A = da.random.default_rng(0).standard_normal((m, n), chunks=(93_750, n),
                                                        dtype=np.float32)
            assert A.nbytes > 600 * 2**20
            Q, R, info = lpc.qr(A)
            G = (Q.T @ Q).compute()
            after = set(client.scheduler_info()["workers"])
        assert info.method == "cholqr2" and not info.fallbacks
        assert before == after  # no worker was restarted (a restarted one has a new address)
        assert np.linalg.norm(G.astype(np.float64) - np.eye(n), 2) <= 6 * (m * n + n * n) * U32
    finally:
        client.close()
        cluster.close()


def test_worker_killed_mid_qr_is_survived():
    m, n = 1_000_000, 32
    cluster, client = _cluster("2GiB")
    try:
        with client.as_current():
            A = da.random.default_rng(1).standard_normal((m, n), chunks=(31_250, n),
                                                        dtype=np.float32)
            A = A.map_blocks(_slow, dtype=A.dtype)
            pids = client.run(os.getpid)
            victim = sorted(pids.values())[0]
            out = {}

            def work():
                with client.as_current():
                    res = lpc.qr(A)
                    out["res"] = res
                    out["Q"] = res.Q.compute()

            t = threading.Thread(target=work)
            t.start()
            time.sleep(3.0)  # the first Gram pass is running (32 chunks of >= 0.2 s)
            os.kill(victim, signal.SIGKILL)
            t.join(timeout=600)
            assert "Q" in out, "the QR did not finish after a worker was killed"
            Al = A.compute()
        loc = lpc.qr(Al)
        Q, R = out["Q"], out["res"].R
        assert np.linalg.norm(Q.T.astype(np.float64) @ Q - np.eye(n), 2) <= 6 * m * n * U32
        np.testing.assert_allclose(R, loc.R, rtol=0, atol=100 * n * U32 * np.abs(loc.R).max())
    finally:
        client.close()
        cluster.close()


def _slow(block):
    time.sleep(0.2)
    return block
