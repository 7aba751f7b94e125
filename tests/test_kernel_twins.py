"""Parallel kernels and their serial twins must not share Numba's on-disk cache entries.

Numba keys a cached compilation on the function's qualified name and signature, not on
``parallel=True``: two compilations of one function would load each other's machine code in a
later process (the "parallel" kernel silently running serially, or the reverse).
"""

import importlib

import pytest

MODULES = ["linalg_pc._kernels.cpu", "linalg_pc._kernels.cpu_qr", "linalg_pc._kernels.cpu_columns",
           "linalg_pc._kernels.cpu_csr", "linalg_pc._kernels.cpu_dense_small",
           "linalg_pc._kernels.cpu_pcg_small", "linalg_pc._kernels.cpu_dcreg"]


def _pairs(mod):
    from linalg_pc._kernels import _twins

    for key, t in _twins._REGISTRY.items():  # every kernel compiled by twins()
        if key.startswith(mod.__name__ + "."):
            yield key, t.parallel, t.serial


@pytest.mark.parametrize("modname", MODULES)
def test_twins_have_separate_cache_keys(modname):
    mod = importlib.import_module(modname)
    pairs = list(_pairs(mod))
    assert pairs, f"no parallel/serial kernel pairs found in {modname}"
    for name, par, seq in pairs:
        assert par.targetoptions.get("parallel") and not seq.targetoptions.get("parallel"), name
        assert par.py_func.__qualname__ != seq.py_func.__qualname__, name
        assert par.py_func.__code__ is seq.py_func.__code__, name  # one body, two compilations


def test_twins_compute_the_same():
    import numpy as np

    from linalg_pc._kernels import cpu

    src = np.random.default_rng(0).standard_normal(1000).astype(np.float32).view(np.uint32)
    a = np.empty(src.size, np.uint16)
    b = np.empty(src.size, np.uint16)
    cpu._f32_to_bf16_sr_par(src, a, np.uint32(7))
    cpu._f32_to_bf16_sr_seq(src, b, np.uint32(7))
    assert np.array_equal(a, b)


def test_importing_loads_the_layer_but_starts_no_thread():
    """Importing linalg_pc loads Numba's threading layer (so its wait policy is ours, whatever
    is imported next) and creates no thread; the workers start at the first parallel kernel."""
    import subprocess
    import sys

    code = ("import os, numpy, scipy, numba\n"
            "from numba.np.ufunc import parallel\n"
            "def threads(): return len(os.listdir('/proc/self/task'))\n"
            "n0 = threads()\n"
            "import linalg_pc\n"
            "assert parallel._is_initialized\n"
            "assert threads() == n0, (n0, threads())\n"
            "import torch\n"
            "linalg_pc.to_storage(numpy.ones(1 << 20, numpy.float32), 'bf16')\n"
            "assert numba.get_num_threads() == 1 or threads() > n0\n")
    pytest.importorskip("torch")
    if not __import__("os").path.isdir("/proc/self/task"):
        pytest.skip("no /proc to count threads")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_one_policy_table_picks_the_twin(monkeypatch):
    """pick() follows POLICIES: below the size threshold, or with fewer threads than the kind
    needs, the serial twin; otherwise the parallel one."""
    import numba

    from linalg_pc._kernels import _twins, cpu_dense_small

    kern = cpu_dense_small.symmetrize_batch
    t = _twins.twins_of(kern)
    monkeypatch.setitem(_twins.POLICIES, "dense", (100, 1))
    assert _twins.pick(kern, 99) is t.serial
    assert _twins.pick(kern, 100) is t.parallel
    monkeypatch.setitem(_twins.POLICIES, "stream", (100, numba.get_num_threads() + 1))
    assert _twins.pick(kern, 10**6, "stream") is t.serial
    with pytest.raises(ValueError, match="kind"):
        _twins.twins(lambda x: x, "nonsense")
