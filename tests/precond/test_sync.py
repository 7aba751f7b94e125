"""A step reads nothing back from the device: no ``bool(tensor)``, ``.item()``, ``float()``,
``int()`` or ``.tolist()`` of a tensor between refreshes (on a GPU each would wait for the
device). Only the initializing step and the steps at which the refresh schedule is due (the
host reads the step count, and the refresh's decompositions wait anyway) may read.

The reads are counted on real PyTorch CPU tensors by wrapping the Tensor methods that convert
to host values and the backend's host exchange (``to_numpy``, through which every other host
read of the library goes); on the CPU they are cheap, but the same code path runs on CUDA
tensors. (Zero-copy ``Tensor.numpy()`` views of CPU tensors, which the CPU kernels use, are not
reads: CUDA tensors take other kernels.)
"""

from __future__ import annotations

import numpy as np
import pytest

import linalg_pc as lpc
import linalg_pc._backend as B
import linalg_pc._backend._core as core
import linalg_pc._backend.linalg as blinalg

torch = pytest.importorskip("torch")

READS = ("__bool__", "item", "__float__", "__int__", "__index__", "tolist")
METHODS = ["soap", "shampoo", "kl_shampoo", "kl_soap"]


@pytest.fixture
def host_reads(monkeypatch):
    """Counter of tensor-to-host conversions while the fixture is active."""
    counter = {"n": 0}
    for name in READS:
        orig = getattr(torch.Tensor, name)

        def wrapped(self, *a, _orig=orig, **k):
            counter["n"] += 1
            return _orig(self, *a, **k)

        monkeypatch.setattr(torch.Tensor, name, wrapped)
    orig_to_numpy = core.to_numpy

    def to_numpy(x):
        if isinstance(x, torch.Tensor):
            counter["n"] += 1
        return orig_to_numpy(x)

    for mod in (B, core, blinalg):
        monkeypatch.setattr(mod, "to_numpy", to_numpy)
    return counter


@pytest.mark.parametrize("storage", [None, "bf16"])
@pytest.mark.parametrize("method", METHODS)
def test_steps_between_refreshes_read_nothing(method, storage, host_reads):
    T = 4
    tx = getattr(lpc.precond, method)(precondition_frequency=T, storage=storage)
    rng = np.random.default_rng(0)
    p = torch.from_numpy(rng.standard_normal((6, 5)).astype(np.float32))
    state = tx.init(p)
    reads = []
    for step in range(1, 3 * T + 2):
        g = torch.from_numpy(rng.standard_normal((6, 5)).astype(np.float32))
        if step == 3:
            g[0, 0] = float("nan")  # a skipped step reads nothing either
        before = host_reads["n"]
        u, state = tx.update(g, state, p)
        reads.append(host_reads["n"] - before)
        p = p + u
    # call 1 initializes; later calls: the host's hint reaches a multiple of T at calls
    # T+1, 2T+1, ... (one NaN step delays the count by one: it is re-read one call later)
    quiet = [i for i, n in enumerate(reads, start=1) if i > 1 and n == 0]
    loud = [i for i, n in enumerate(reads, start=1) if i > 1 and n > 0]
    assert len(loud) <= 4, (loud, reads)
    assert all((i - 1) % T in (0, 1) for i in loud), (loud, reads)
    assert len(quiet) >= len(reads) - 1 - 4
    assert state.last_refresh >= T
    assert sum(reads[1:]) > 0  # the counter sees the schedule's reads at refresh steps
