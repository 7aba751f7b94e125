"""The cheap path of the "topk" policies: Rayleigh quotients tracked from the refreshes choose
the same columns as the full K·Q product (issue 12, "Cost of checks"); the basis modules'
docstring examples run."""

from __future__ import annotations

import doctest
import sys
from pathlib import Path

import numpy as np
import pytest

import linalg_pc as lpc
from linalg_pc.basis import completion, selection, state, storage, subspace

sys.path.insert(0, str(Path(__file__).parent))
from _helpers import orthogonal, spd_with_spectrum  # noqa: E402


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_tracked_estimates_equal_rayleigh_quotients_and_choose_the_same(rng, dtype):
    d, k = 24, 6
    # distinct, well separated eigenvalues: no near-ties between Rayleigh quotients
    K = spd_with_spectrum(np.geomspace(1.0, 50.0, d), rng).astype(dtype)
    Q = orthogonal(d, rng, dtype)
    est = np.einsum("ij,ij->j", Q, K @ Q)
    u = np.finfo(dtype).eps / 2
    for step in range(12):
        cols = lpc.select_columns("topk-cyclic", k, step=step, estimates=est)
        full = lpc.select_columns("topk-cyclic", k, step=step, K=K, Q=Q)
        np.testing.assert_array_equal(cols, full)
        res = lpc.subspace_refresh(K, Q, cols)
        Q, est = res.Q, est[np.asarray(res.permutation)]
        est[cols] = res.eigenvalues
        ref = np.einsum("ij,ij->j", Q.astype(np.float64), K.astype(np.float64) @ Q)
        # Rayleigh quotients of an O(u)-orthonormal basis: ‖K‖₂·c·d·u
        np.testing.assert_allclose(est, ref, rtol=0, atol=50.0 * 4 * d * u)


def test_estimates_from_another_library(rng):
    torch = pytest.importorskip("torch")
    est = rng.standard_normal(16)
    a = lpc.select_columns("topk-cyclic", 6, step=5, estimates=est)
    b = lpc.select_columns("topk-cyclic", 6, step=5, estimates=torch.from_numpy(est))
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("module", [selection, subspace, completion, state, storage])
def test_docstring_examples_run(module):
    res = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert res.failed == 0
