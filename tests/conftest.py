"""Shared fixtures: the ``xp`` namespace matrix and markers.

``xp`` runs a test over every array library present: NumPy, array_api_strict, PyTorch (if
installed) and CuPy (only if a CUDA device is usable: ``import cupy`` succeeds without one).
Each param is the array-API namespace linalg_pc resolves for that library.
"""

from __future__ import annotations

import importlib.util
import os

import numpy as np
import pytest
from hypothesis import settings

import linalg_pc._backend as B

# Hypothesis profiles. "default" draws new examples on every run (how counterexamples are found);
# "ci" derandomizes (each test's examples are seeded from its own source), so whether a change
# lands cannot depend on the draw. Choose with LINALG_PC_HYPOTHESIS_PROFILE.
settings.register_profile("ci", derandomize=True, print_blob=True)
settings.load_profile(os.environ.get("LINALG_PC_HYPOTHESIS_PROFILE", "default"))


def _cupy_usable() -> bool:
    if importlib.util.find_spec("cupy") is None:
        return False
    try:
        import cupy

        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:  # noqa: BLE001 - no driver, no device
        return False


HAS_TORCH = importlib.util.find_spec("torch") is not None
HAS_CUPY = _cupy_usable()


def _namespaces():
    params = [pytest.param("numpy", id="numpy"),
              pytest.param("array_api_strict", id="array_api_strict")]
    if HAS_TORCH:
        params.append(pytest.param("torch", id="torch"))
    params.append(pytest.param("cupy", id="cupy", marks=[
        pytest.mark.gpu,
        pytest.mark.skipif(not HAS_CUPY, reason="no usable CUDA device for CuPy"),
    ]))
    return params


def namespace_of(name: str):
    """The array-API namespace linalg_pc uses for library ``name``."""
    if name == "numpy":
        return B.array_namespace(np.zeros(1))
    if name == "array_api_strict":
        import array_api_strict

        return array_api_strict
    if name == "torch":
        import torch

        return B.array_namespace(torch.zeros(1))
    if name == "cupy":
        import cupy

        return B.array_namespace(cupy.zeros(1))
    raise ValueError(name)


@pytest.fixture(params=_namespaces())
def xp(request):
    """Array-API namespace of each library present; build arrays with ``xp.asarray(numpy_arr)``."""
    return namespace_of(request.param)


def to_np(a) -> np.ndarray:
    """Host NumPy copy of any array (bf16 stays ml_dtypes.bfloat16)."""
    return B.to_numpy(a)


@pytest.fixture
def buffer_cache():
    """The recycled-buffer cache on at its default size and empty, restored afterwards."""
    from linalg_pc import _buffers

    old = _buffers.set_max_bytes(_buffers.DEFAULT_MAX_BYTES)
    _buffers.clear()
    yield
    _buffers.clear()
    _buffers.set_max_bytes(old)


@pytest.fixture
def rng():
    return np.random.default_rng(20261122)
