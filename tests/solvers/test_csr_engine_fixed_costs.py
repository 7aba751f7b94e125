"""The CSR engine's per-call work: the one-pass check of a float64 host b (``sum_squares``:
its bits, the cases it hands to the generic checks) and the recycled work memory (reused
across solves, never while a returned x is alive)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

import linalg_pc as lpc
from linalg_pc import _buffers
from linalg_pc._kernels import _twins
from linalg_pc._kernels import cpu_csr as C
from linalg_pc.solvers._engine_csr import sum_squares


def _poisson2d(n):
    T = sp.diags([-np.ones(n - 1), 2 * np.ones(n), -np.ones(n - 1)], [-1, 0, 1])
    eye = sp.identity(n)
    return (sp.kron(T, eye) + sp.kron(eye, T)).tocsr()


@pytest.mark.parametrize("n", [7, 1000, 200_000])
def test_sum_squares_is_the_chunked_dot(n, rng):
    b = rng.standard_normal(n)
    ss = sum_squares(b)
    t = _twins.twins_of(C.dot_chunked)
    for kern in (t.parallel, t.serial):  # the engine's ‖r₀‖² for r₀ = b, bit for bit
        assert ss == kern(b, b, np.empty(C.NCHUNKS))
    assert abs(ss - float(np.dot(b, b))) <= n * np.finfo(np.float64).eps * ss


def test_sum_squares_declines_what_the_generic_checks_handle(rng):
    b = rng.standard_normal(100)
    for bad in (np.nan, np.inf, -np.inf):
        c = b.copy()
        c[17] = bad
        assert sum_squares(c) is None
    assert sum_squares(b * 1e-170) is None  # squares underflow: the scaling path decides
    assert sum_squares(np.full(100, 1e200)) is None  # finite entries, sum overflows
    assert sum_squares(b.astype(np.float32)) is None
    assert sum_squares(b[::2]) is None
    assert sum_squares(b[:, None]) is None
    assert sum_squares(b) is not None


def test_csr_solve_checks_b_and_handles_large_entries(rng):
    A = _poisson2d(12)
    b = rng.standard_normal(A.shape[0])
    for bad in (np.nan, np.inf):
        c = b.copy()
        c[5] = bad
        with pytest.raises(ValueError, match="b has non-finite"):
            lpc.pcg(A, c)
    # finite entries whose ‖b‖² overflows: not refused; the same outcome as the dense engine
    big = b * 1e200
    with np.errstate(over="ignore"):
        res = lpc.pcg(A, big, rtol=1e-10)
        ref = lpc.pcg(A.toarray(), big, rtol=1e-10)
    assert res.status == ref.status
    assert res.iterations == ref.iterations


def test_work_memory_is_recycled_but_never_under_a_live_x(buffer_cache, rng):
    A = _poisson2d(100)  # 10 000 unknowns: 80 kB vectors, above the engine's threshold
    b1, b2 = rng.standard_normal((2, A.shape[0]))
    r1 = lpc.pcg(A, b1, rtol=1e-8)
    x1 = r1.x.copy()
    hits = _buffers.info()["hits"]
    r2 = lpc.pcg(A, b2, rtol=1e-8)
    assert _buffers.info()["hits"] > hits  # the first solve's work vectors, handed out again
    np.testing.assert_array_equal(r1.x, x1)  # the returned x was not among them
    assert not np.shares_memory(r1.x, r2.x)
    assert r2.x.flags.writeable and r2.x.flags.c_contiguous
    np.testing.assert_array_equal(r2.x, lpc.pcg(A, b2, rtol=1e-8).x)
    # the same solves with recycling off give the same bits
    _buffers.set_max_bytes(0)
    np.testing.assert_array_equal(lpc.pcg(A, b2, rtol=1e-8).x, r2.x)


def test_empty_min_bytes(buffer_cache):
    small = _buffers.empty(1000, np.float64)
    assert small.flags.owndata  # 8 kB: below MIN_BYTES, numpy.empty
    a = _buffers.empty(1000, np.float64, min_bytes=4096)
    assert not a.flags.owndata
    p = a.__array_interface__["data"][0]
    del a
    b = _buffers.empty(1000, np.float64, min_bytes=4096)
    assert b.__array_interface__["data"][0] == p
