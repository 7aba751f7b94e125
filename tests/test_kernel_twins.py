"""Parallel kernels and their serial twins must not share Numba's on-disk cache entries.

Numba keys a cached compilation on the function's qualified name and signature, not on
``parallel=True``: two compilations of one function would load each other's machine code in a
later process (the "parallel" kernel silently running serially, or the reverse).
"""

import importlib

import pytest

MODULES = ["linalg_pc._kernels.cpu", "linalg_pc._kernels.cpu_qr", "linalg_pc._kernels.cpu_columns",
           "linalg_pc._kernels.cpu_solvers"]


def _pairs(mod):
    serial = getattr(mod, "_SERIAL", {})  # cpu_solvers registers its twins by name
    for name, seq in serial.items():
        yield name, getattr(mod, name), seq
    for name in dir(mod):
        if name.endswith("_par"):
            twin = name[:-4] + "_seq"
            if hasattr(mod, twin):
                yield name, getattr(mod, name), getattr(mod, twin)


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
