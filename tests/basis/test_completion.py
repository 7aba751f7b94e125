"""complete_basis: [U W] orthogonal to O(u) and spanning, on every namespace; bad input."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import linalg_pc as lpc
import linalg_pc._backend as B
from linalg_pc.precision import to_storage, unit_roundoff

sys.path.insert(0, str(Path(__file__).parent))
from _helpers import LAPACK_RATIO, loss_1, np64  # noqa: E402

SHAPES = [(1, 0), (1, 1), (2, 1), (3, 2), (5, 1), (10, 3), (50, 10), (50, 49), (50, 50), (8, 0)]


def _u_types(d, k, rng):
    """Orthonormal d×k U from several constructions (fp64)."""
    out = {"random": np.linalg.qr(rng.standard_normal((d, k)))[0] if k else np.zeros((d, 0))}
    out["unit_columns"] = np.eye(d)[:, rng.permutation(d)[:k]]
    if k:
        g = rng.standard_normal((d, k)) * np.geomspace(1, 1e-12, k)  # graded: κ = 1e12
        out["graded"] = np.linalg.qr(g)[0]
        h = 1.0 / (np.arange(d)[:, None] + np.arange(k)[None, :] + 1.0)  # Hilbert-like
        out["hilbert"] = np.linalg.qr(h)[0]
    return out


@pytest.mark.parametrize("method", ["householder", "random"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("d,k", SHAPES)
def test_complete_orthogonal_and_spanning(xp, rng, method, dtype, d, k):
    u = unit_roundoff("fp32" if dtype == "float32" else "fp64")
    for name, U in _u_types(d, k, rng).items():
        Ux = xp.asarray(U.astype(dtype))
        W = lpc.complete_basis(Ux, method=method, rng=1)
        assert B.namespace_name(B.array_namespace(W)) == B.namespace_name(xp)
        assert tuple(W.shape) == (d, d - k)
        assert B.format_of(W).name == ("fp32" if dtype == "float32" else "fp64")
        V = np.concatenate([np64(Ux), np64(W)], axis=1)
        ratio = loss_1(V) / (max(d, 1) * u)
        assert ratio < LAPACK_RATIO, (name, ratio)
        # spanning: a square orthonormal matrix has full rank; check it numerically too
        if d:
            assert np.linalg.matrix_rank(V) == d, name


def test_complete_batched(rng, xp):
    U = np.stack([np.linalg.qr(rng.standard_normal((20, 5)))[0] for _ in range(3)])
    W = lpc.complete_basis(xp.asarray(U))
    assert tuple(W.shape) == (3, 20, 15)
    for i in range(3):
        V = np.concatenate([U[i], np64(W)[i]], axis=1)
        assert loss_1(V) / (20 * 2.0**-53) < LAPACK_RATIO


@pytest.mark.parametrize("lib", ["numpy", "torch"])
def test_complete_bf16_input(rng, lib):
    """A bf16-stored U is decoded exactly; W is fp32 and orthogonal to the decoded U."""
    U = np.linalg.qr(rng.standard_normal((64, 8)))[0].astype(np.float32)
    if lib == "torch":
        torch = pytest.importorskip("torch")
        Ux = torch.from_numpy(U)
    else:
        Ux = U
    Ub = to_storage(Ux, "bf16")
    W = lpc.complete_basis(Ub)
    assert B.format_of(W).name == "fp32"
    Ud = np64(Ub)
    assert np.abs(Ud.T @ np64(W)).max() < LAPACK_RATIO * 64 * unit_roundoff("fp32")
    assert loss_1(W) / (64 * unit_roundoff("fp32")) < LAPACK_RATIO


@settings(max_examples=40, deadline=None)
@given(d=st.integers(1, 40), frac=st.floats(0, 1), seed=st.integers(0, 2**31 - 1),
       method=st.sampled_from(["householder", "random"]))
def test_complete_property(d, frac, seed, method):
    g = np.random.default_rng(seed)
    k = int(round(frac * d))
    U = np.linalg.qr(g.standard_normal((d, k)))[0] if k else np.zeros((d, 0))
    W = lpc.complete_basis(U, method=method, rng=seed)
    V = np.concatenate([U, W], axis=1)
    assert V.shape == (d, d)
    assert loss_1(V) / (d * 2.0**-53) < LAPACK_RATIO


def test_complete_bad_input(rng):
    with pytest.raises(ValueError, match="k <= d"):
        lpc.complete_basis(rng.standard_normal((3, 5)))
    with pytest.raises(ValueError, match=r"U is not orthonormal.*measured loss.*= [0-9.e+-]+"):
        lpc.complete_basis(rng.standard_normal((10, 3)))
    U = np.linalg.qr(rng.standard_normal((10, 3)))[0]
    with pytest.raises(ValueError, match="method"):
        lpc.complete_basis(U, method="gram")
    bad = U.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="U has non-finite"):
        lpc.complete_basis(bad)
    with pytest.raises(ValueError, match="at least 2 dimensions"):
        lpc.complete_basis(np.ones(3))
    with pytest.raises(TypeError):
        lpc.complete_basis(np.eye(3, dtype=np.int64))
    # a slightly perturbed basis is accepted below the tolerance and rejected above it
    E = 1e-3 * rng.standard_normal((10, 3))
    lpc.complete_basis(U + E)
    with pytest.raises(ValueError, match="tolerance 1e-06"):
        lpc.complete_basis(U + E, orth_tol=1e-6)
