"""Batched routines over Dask arrays chunked along the batch axis equal the local ones bit for
bit (every chunk runs the local kernel on the same systems)."""

from __future__ import annotations

import numpy as np
import pytest
from _dask_cluster import client, da  # noqa: F401 - the fixture

import linalg_pc as lpc

pytestmark = pytest.mark.usefixtures("client")


def _systems(N, seed=0):
    rng = np.random.default_rng(seed)
    J = rng.standard_normal((N, 30, 6))
    J[: N // 2, :, 3] *= 1e-3  # half of them degenerate along x
    H = np.einsum("nki,nkj->nij", J, J)
    return H, rng.standard_normal((N, 6))


def test_block_degeneracy():
    H, _ = _systems(700)
    rep = lpc.block_degeneracy(da.from_array(H, chunks=(200, 6, 6)))
    loc = lpc.block_degeneracy(H)
    assert isinstance(rep.cond_t, da.Array) and rep.cond_t.chunks[0] == (200, 200, 200, 100)
    for f in ("eigvals_t", "eigvecs_t", "degenerate", "cond_t", "blocks_pd"):
        np.testing.assert_array_equal(getattr(rep, f).compute(), getattr(loc, f))
    assert rep.labels == loc.labels and rep.split == loc.split


def test_solve_degenerate():
    H, b = _systems(600, seed=1)
    x, rep, res = lpc.solve_degenerate(da.from_array(H, chunks=(250, 6, 6)),
                                       da.from_array(b, chunks=(250, 6)))
    xl, repl, resl = lpc.solve_degenerate(H, b)
    np.testing.assert_array_equal(x.compute(), xl)
    np.testing.assert_array_equal(res.status.compute(), resl.status)
    np.testing.assert_array_equal(res.iterations.compute(), resl.iterations)
    np.testing.assert_array_equal(res.fallback.compute(), resl.fallback)
    h = res.residual_norms.compute()
    k = resl.residual_norms.shape[0]
    np.testing.assert_array_equal(h[:k], resl.residual_norms)
    assert np.all(h[k:] == h[k - 1])  # a finished system repeats its last value


def test_pcg_batched():
    H, b = _systems(300, seed=2)
    res = lpc.pcg(da.from_array(H, chunks=(100, 6, 6)), da.from_array(b, chunks=(100, 6)),
                  rtol=1e-10)
    loc = lpc.pcg(H, b, rtol=1e-10)
    np.testing.assert_array_equal(res.x.compute(), loc.x)
    np.testing.assert_array_equal(res.converged.compute(), loc.converged)


@pytest.mark.parametrize("fmt", ["bf16", "fp16"])
def test_conversions(fmt):
    rng = np.random.default_rng(4)
    x = (rng.standard_normal((900, 7)) * 10.0**rng.integers(-2, 3, (900, 7))).astype(np.float32)
    dx = da.from_array(x, chunks=(250, 3))
    np.testing.assert_array_equal(lpc.round_to(dx, fmt).compute(), lpc.round_to(x, fmt))
    s = lpc.to_storage(dx, fmt)
    assert s.dtype == lpc.to_storage(x, fmt).dtype
    np.testing.assert_array_equal(s.compute().view(np.uint16),
                                  lpc.to_storage(x, fmt).view(np.uint16))
    np.testing.assert_array_equal(lpc.from_storage(s).compute(),
                                  lpc.from_storage(lpc.to_storage(x, fmt)))
    # stochastic rounding: every value one of its two neighbours in the format
    r = lpc.round_to(dx, fmt, "stochastic", rng=0).compute()
    u = lpc.unit_roundoff(fmt)
    assert np.array_equal(lpc.round_to(r, fmt), r)  # representable in fmt
    assert np.all(np.abs(r - x) <= 2 * u * np.abs(x)
                  + 2 * lpc.get_format(fmt).smallest_subnormal)  # a neighbour of x
    assert not np.array_equal(r, lpc.round_to(x, fmt))  # not the nearest everywhere
