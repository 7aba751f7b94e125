"""The compact CSR structure (16-bit column offsets, 8-bit row lengths) of the one-column CG
passes: bit for bit the int32 kernels and SciPy's ``A @ p``, its limits, the engine's choice
and fallback, and a matrix changed between solves."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

import linalg_pc as lpc
from linalg_pc._kernels import _twins
from linalg_pc._kernels import cpu_csr as C
from linalg_pc._kernels import cpu_csr16 as C16
from linalg_pc._policy import Precision
from linalg_pc.solvers import _engine_csr
from linalg_pc.solvers._engine_csr import CsrEngine
from linalg_pc.solvers.pcg import _setup


def _banded(n, band, rng, dtype=np.float64, empty_rows=()):
    """Random symmetric matrix with entries within ``band`` of the diagonal, some rows empty."""
    A = sp.random(n, n, density=0.01, random_state=np.random.default_rng(rng.integers(1 << 30)))
    A = sp.triu(sp.tril(A + A.T, band), -band) + sp.identity(n) * 4.0
    A = A.tolil()
    for i in empty_rows:
        A[i, :] = 0
    A = A.tocsr().astype(dtype)
    A.eliminate_zeros()
    A.sort_indices()
    return A


def _views(A):
    return A.indptr.view(np.uint32), A.indices.view(np.uint32)


@pytest.mark.parametrize("parallel", [True, False])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_compact_kernels_equal_the_int32_kernels_bitwise(parallel, dtype, rng):
    n = 3000
    A = _banded(n, 400, rng, dtype, empty_rows=(0, 17, 1500, n - 1))
    ip, ix = _views(A)
    cmp = C16.compact(ip, ix, parallel)
    assert cmp is not None
    _, rowlen, off = cmp
    np.testing.assert_array_equal(rowlen, np.diff(A.indptr))
    rows = np.repeat(np.arange(n), np.diff(A.indptr))
    np.testing.assert_array_equal(off, A.indices - rows)

    def twin(mod, name):
        t = _twins.twins_of(getattr(mod, name))
        return t.parallel if parallel else t.serial

    p, b, x, r = (rng.standard_normal(n).astype(dtype) for _ in range(4))
    part, part2 = np.empty(C.NCHUNKS), np.empty(C.NCHUNKS)
    q32, q16 = np.empty(n, dtype), np.empty(n, dtype)
    pq32 = twin(C, "csr_matvec_dot")(ip, ix, A.data, p, q32, part)
    pq16 = twin(C16, "csr_matvec_dot16")(*cmp, A.data, p, q16, part)
    np.testing.assert_array_equal(q16, q32)
    assert pq16 == pq32
    if dtype == np.float64:
        np.testing.assert_array_equal(q16, A @ p)  # rows summed in SciPy's order
    r32, r16 = np.empty(n, dtype), np.empty(n, dtype)
    assert (twin(C16, "csr_residual16")(*cmp, A.data, b, x, r16, part)
            == twin(C, "csr_residual")(ip, ix, A.data, b, x, r32, part))
    np.testing.assert_array_equal(r16, r32)
    rt32, rt16 = np.empty(n, dtype), np.empty(n, dtype)
    g16 = twin(C16, "csr_residual_gap16")(*cmp, A.data, b, x, r, rt16, part, part2)
    g32 = twin(C, "csr_residual_gap")(ip, ix, A.data, b, x, r, rt32, part, part2)
    assert g16 == g32
    np.testing.assert_array_equal(rt16, rt32)


@pytest.mark.parametrize("parallel", [True, False])
def test_compact_limits(parallel):
    """Offsets of exactly ±OFFSET_MAX and rows of ROWLEN_MAX entries fit; one more does not."""
    n = C16.OFFSET_MAX + 2
    for far, fits in ((C16.OFFSET_MAX, True), (C16.OFFSET_MAX + 1, False)):
        A = (sp.identity(n) + sp.eye(n, k=far) + sp.eye(n, k=-far)).tocsr()
        A.sort_indices()
        assert (C16.compact(*_views(A), parallel) is not None) == fits
    m = C16.ROWLEN_MAX + 1
    for width, fits in ((C16.ROWLEN_MAX, True), (C16.ROWLEN_MAX + 1, False)):
        A = sp.identity(m, format="lil")
        A[0, :width] = 1.0
        A = A.tocsr()
        A.sort_indices()
        assert (C16.compact(*_views(A), parallel) is not None) == fits


def _engine(A, b):
    pb, _ = _setup(A, b, None, None, 1e-8, 0.0, Precision())
    return CsrEngine(pb.opA, pb.opM, np.asarray(pb.B), pb.X0, pb.zero, np.dtype(pb.dtype))


def test_engine_takes_the_compact_structure_where_it_fits(rng):
    A = _banded(2000, 300, rng)
    b = rng.standard_normal(2000)
    assert len(_engine(A, b).mat) == 4
    wide = (A + sp.eye(2000, k=1999) + sp.eye(2000, k=-1999)).tocsr()
    n = 40000
    far = (sp.identity(n) * 3 + sp.eye(n, k=C16.OFFSET_MAX + 5)
           + sp.eye(n, k=-C16.OFFSET_MAX - 5)).tocsr()
    assert len(_engine(wide, b).mat) == 4  # ±1999 still fits
    assert len(_engine(far, np.ones(n)).mat) == 3  # int32 indices


@pytest.mark.parametrize("precond", [False, True])
def test_solve_is_bitwise_the_int32_path(precond, rng, monkeypatch):
    """The whole solve (iterates, history, checks) on the compact structure equals the solve on
    the int32 indices bit for bit."""
    A = _banded(1500, 200, rng)
    b = rng.standard_normal(1500)
    M = sp.diags(1.0 / A.diagonal()).tocsr() if precond else None
    kw = dict(M=M, rtol=1e-10, check_every=7)
    fast = lpc.pcg(A, b, **kw)
    monkeypatch.setattr(_engine_csr.C16, "compact", lambda *a, **k: None)
    slow = lpc.pcg(A, b, **kw)
    assert fast.status == slow.status == "converged"
    np.testing.assert_array_equal(fast.x, slow.x)
    np.testing.assert_array_equal(fast.residual_norms, slow.residual_norms)
    assert fast.true_residual_norm == slow.true_residual_norm


def test_matrix_changed_in_place_between_solves(rng):
    """Nothing of A is kept between solves: values or structure changed in place give the
    solve of the changed matrix."""
    n = 1200
    A = _banded(n, 100, rng)
    b = rng.standard_normal(n)
    lpc.pcg(A, b, rtol=1e-10)
    A.data *= 2.0  # values
    got = lpc.pcg(A, b, rtol=1e-10)
    np.testing.assert_array_equal(got.x, lpc.pcg(A.copy(), b, rtol=1e-10).x)
    # structure: in the interior rows of a tridiagonal matrix the off-diagonal entries move
    # from columns i ± 1 to i ± 2 (indices still sorted)
    T = sp.diags([np.full(n - 1, -1.0), np.full(n, 4.0), np.full(n - 1, -1.0)], [-1, 0, 1],
                 format="csr")
    lpc.pcg(T, b, rtol=1e-10)
    for i in range(2, n - 2):
        k = T.indptr[i]
        T.indices[k:k + 3] = (i - 2, i, i + 2)
    ref = sp.csr_matrix((T.data.copy(), T.indices.copy(), T.indptr.copy()), shape=(n, n))
    got = lpc.pcg(T, b, rtol=1e-30, maxiter=30)
    np.testing.assert_array_equal(got.x, lpc.pcg(ref, b, rtol=1e-30, maxiter=30).x)
    np.testing.assert_array_equal(ref @ got.x, T @ got.x)
