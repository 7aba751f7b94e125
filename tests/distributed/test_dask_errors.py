"""Bad chunking, mismatched chunks and non-Dask mixtures raise clear errors before any task is
submitted (a scheduler that fails proves it); importing linalg_pc never imports dask."""

from __future__ import annotations

import subprocess
import sys

import dask
import numpy as np
import pytest
from _dask_cluster import da, no_tasks

import linalg_pc as lpc


@pytest.fixture
def refuse_tasks():
    with dask.config.set(scheduler=no_tasks):
        yield


def test_qr_column_chunks(refuse_tasks):
    A = da.ones((1000, 10), chunks=(100, 5))
    with pytest.raises(ValueError, match=r"chunked along rows only.*rechunk\(\{1: -1\}\)"):
        lpc.qr(A)


@pytest.mark.parametrize("kw,exc,msg", [
    (dict(method="householder"), NotImplementedError, "no distributed implementation"),
    (dict(mode="complete"), NotImplementedError, "mode 'complete'"),
    (dict(emulate="bf16"), NotImplementedError, "emulate"),
    (dict(method="cholqr2", shift=1.0), TypeError, r"unexpected option\(s\) \['shift'\]"),
    (dict(method="bogus"), ValueError, "unknown method"),
])
def test_qr_bad_options(refuse_tasks, kw, exc, msg):
    with pytest.raises(exc, match=msg):
        lpc.qr(da.ones((1000, 10), chunks=(100, 10)), **kw)


def test_qr_wide(refuse_tasks):
    with pytest.raises(ValueError, match="m >= n"):
        lpc.qr(da.ones((5, 10), chunks=(5, 10)))


def test_pcg_mismatched_chunks(refuse_tasks):
    A = da.from_array(np.eye(100), chunks=(25, 100))
    with pytest.raises(ValueError, match="row chunks .* must equal b's chunks"):
        lpc.pcg(A, da.ones(100, chunks=50))
    with pytest.raises(ValueError, match="chunked along rows only"):
        lpc.pcg(da.from_array(np.eye(100), chunks=(25, 25)), da.ones(100, chunks=25))


@pytest.mark.parametrize("which", ["b", "A", "M", "x0"])
def test_pcg_non_dask_mixture(refuse_tasks, which):
    args = dict(A=da.from_array(np.eye(100), chunks=(25, 100)), b=da.ones(100, chunks=25),
                M=None, x0=None)
    args[which] = {"A": np.eye(100), "b": np.ones(100), "M": np.eye(100),
                   "x0": np.zeros(100)}[which]
    with pytest.raises(TypeError, match=f"{which} must be a dask.array.Array"):
        lpc.pcg(args["A"], args["b"], M=args["M"], x0=args["x0"])


def test_batched_mismatched_and_bad_chunks(refuse_tasks):
    H = da.ones((100, 6, 6), chunks=(25, 6, 6))
    with pytest.raises(ValueError, match="same chunks along the batch axes"):
        lpc.solve_degenerate(H, da.ones((100, 6), chunks=(50, 6)))
    with pytest.raises(ValueError, match="batch axes only"):
        lpc.block_degeneracy(da.ones((100, 6, 6), chunks=(25, 3, 6)))
    with pytest.raises(TypeError, match="b must be a dask.array.Array"):
        lpc.solve_degenerate(H, np.ones((100, 6)))


def test_import_never_imports_dask():
    code = ("import sys, linalg_pc; "
            "assert not any(m == 'dask' or m.startswith('dask.') for m in sys.modules), "
            "'dask imported'")
    subprocess.run([sys.executable, "-c", code], check=True)
