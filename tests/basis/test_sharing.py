"""Sharing: nothing the caller holds aliases a basis's internal state, and nothing internal is
handed out writable (StoredBasis, basis.state, subspace_refresh with a callable K)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

import linalg_pc as lpc
from linalg_pc.basis import state as S

sys.path.insert(0, str(Path(__file__).parent))
from _helpers import np64, orthogonal  # noqa: E402


def _arr(lib, a):
    if lib == "torch":
        torch = pytest.importorskip("torch")
        return torch.from_numpy(np.array(a))
    return np.array(a)


LIBS = ["numpy", "torch"]


@pytest.mark.parametrize("lib", LIBS)
@pytest.mark.parametrize("scheme", ["fp32", "bf16", "block-rotation"])
def test_constructor_copies_the_callers_basis(rng, lib, scheme):
    Qh = orthogonal(8, rng, np.float32)
    Q = _arr(lib, Qh)
    sb = lpc.StoredBasis(Q, scheme, block_size=4)
    Q[0, 0] = 5.0
    assert np64(sb.materialize())[0, 0] != 5.0


@pytest.mark.parametrize("lib", LIBS)
@pytest.mark.parametrize("scheme", ["fp32", "bf16", "bf16-rectify", "block-rotation"])
def test_materialize_and_stored_are_not_the_internal_buffers(rng, lib, scheme):
    sb = lpc.StoredBasis(_arr(lib, orthogonal(8, rng, np.float32)), scheme, block_size=4)
    before = np64(sb.materialize())
    M = sb.materialize()
    M[1, 1] = 7.0
    for a in sb.stored.values():
        a[...] = 0
    np.testing.assert_array_equal(np64(sb.materialize()), before)


@pytest.mark.parametrize("lib", LIBS)
def test_state_materialize_is_a_copy(rng, lib):
    st = S.init(_arr(lib, orthogonal(6, rng)))  # "dense" fp64: no conversion on the way out
    M = S.materialize(st)
    M[0, 0] = 3.0
    assert np64(st.Q)[0, 0] != 3.0


@pytest.mark.parametrize("lib", LIBS)
@pytest.mark.parametrize("cols", [[0, 1, 2], [1, 4, 5]])
def test_callable_k_cannot_write_into_the_callers_basis(rng, lib, cols):
    Qh = orthogonal(8, rng, np.float32)
    Q = _arr(lib, Qh)

    def K(X):
        Y = 2.0 * X
        X[...] = 0  # a hostile operator
        return Y

    lpc.subspace_refresh(K, Q, cols)
    np.testing.assert_array_equal(np64(Q), Qh)
    sb = lpc.StoredBasis(Q, "fp32")
    sb.update(K, cols)
    assert np.isfinite(np64(sb.materialize())).all()
