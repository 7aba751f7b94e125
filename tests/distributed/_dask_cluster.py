"""The test cluster: a distributed.LocalCluster of 2 worker processes with 1 thread each, started
once per test session (the first test that asks for it) and closed at exit. Imported by the
distributed tests; they skip when dask or distributed is missing."""

from __future__ import annotations

import atexit

import pytest

da = pytest.importorskip("dask.array")
distributed = pytest.importorskip("distributed")

_STATE: dict = {}


def get_client():
    """The session's Client (the cluster is started on first use)."""
    if "client" not in _STATE:
        cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                           dashboard_address=None, memory_limit="2GiB")
        client = distributed.Client(cluster)
        _STATE.update(cluster=cluster, client=client)

        def _close():
            client.close()
            cluster.close()

        atexit.register(_close)
    client = _STATE["client"]
    client.as_current()
    return client


@pytest.fixture(scope="session")
def client():
    c = get_client()
    with c.as_current():
        yield c


def no_tasks(*args, **kwargs):
    """A Dask scheduler that fails: ``dask.config.set(scheduler=no_tasks)`` proves that an
    error is raised before any task is submitted."""
    raise AssertionError("a task graph was submitted")
