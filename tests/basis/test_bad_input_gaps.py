"""Bad input to the basis routines: a clear exception naming the argument, before any work."""

from __future__ import annotations

import numpy as np
import pytest

import linalg_pc as lpc
import linalg_pc._backend as B
from linalg_pc.basis import bjorck_step
from linalg_pc.basis import state as S


def test_k_batch_that_does_not_broadcast_to_q():
    Q = np.eye(4)
    with pytest.raises(ValueError, match=r"K has batch shape \(2,\).*Q's batch shape \(\)"):
        lpc.subspace_refresh(np.stack([np.eye(4)] * 2), Q, [0])


def test_callable_k_returning_another_library():
    torch = pytest.importorskip("torch")
    with pytest.raises(TypeError, match=r"K\(X\) must return an array of Q's library"):
        lpc.subspace_refresh(lambda X: torch.from_numpy(np.array(X)), np.eye(4), [0, 1])


def test_bjorck_step_rank_and_dtype():
    with pytest.raises(ValueError, match=r"V must have shape \(\.\.\., d, m\)"):
        bjorck_step(np.ones(3))
    with pytest.raises(TypeError, match="V must have a real floating dtype"):
        bjorck_step(np.eye(3) * (1 + 1j))
    with pytest.raises(TypeError, match="V must be an array"):
        bjorck_step([[1.0, 0.0], [0.0, 1.0]])


@pytest.mark.parametrize("tol", [-1, float("nan"), -0.5])
def test_orth_tol_must_be_nonnegative(tol):
    Q = np.eye(4)
    with pytest.raises(ValueError, match="orth_tol must be None or a number >= 0"):
        lpc.subspace_refresh(np.eye(4), Q, [0], orth_tol=tol)
    with pytest.raises(ValueError, match="orth_tol must be None or a number >= 0"):
        lpc.complete_basis(Q[:, :2], orth_tol=tol)
    with pytest.raises(ValueError, match="orth_tol must be None or a number >= 0"):
        lpc.StoredBasis(Q, "fp32", orth_tol=tol)
    with pytest.raises(ValueError, match="orth_tol must be None or a number >= 0"):
        S.update(S.init(Q), np.eye(4), [0], orth_tol=tol)


@pytest.mark.parametrize("every", [-1, 1.5, True])
def test_rebase_every_must_be_a_nonnegative_integer(every):
    with pytest.raises(ValueError, match="rebase_every must be None or an integer >= 0"):
        lpc.StoredBasis(np.eye(4), "block-rotation", block_size=2, rebase_every=every)


def test_topk_cyclic_rejects_nonfinite_estimates():
    with pytest.raises(ValueError, match="estimates .* non-finite"):
        lpc.select_columns("topk-cyclic", 2, step=0, estimates=[1.0, np.nan, 2.0, 3.0])


def test_eigenbasis_quality_blames_q_for_nan_in_q():
    Q = np.eye(4)
    Q[1, 2] = np.nan
    with pytest.raises(ValueError, match="Q has non-finite"):
        lpc.eigenbasis_quality(np.eye(4), Q)


@pytest.mark.parametrize("bad", [np.inf, -np.inf, np.nan])
@pytest.mark.parametrize("orth_tol", [0.1, None])
@pytest.mark.parametrize("method", ["rotate", "project"])
def test_nonfinite_q_outside_cols_raises_for_every_method(xp, method, orth_tol, bad):
    """Both methods check every column of Q (issue 12: inf outside cols raised for 'project'
    but passed for 'rotate'), stored fp32 or bf16, with or without the orthonormality check."""
    d = 8
    Q0 = np.linalg.qr(np.random.default_rng(4).standard_normal((d, d)))[0]
    Q = Q0.copy()
    Q[5, 6] = bad  # column 6, outside cols
    K = xp.asarray(np.diag(np.arange(1.0, d + 1)).astype(np.float32))
    stored = [xp.asarray(Q.astype(np.float32))]
    if B.has_dtype(xp, "bf16"):
        stored.append(lpc.to_storage(xp.asarray(Q), "bf16"))
    for Qs in stored:
        with pytest.raises(ValueError, match="Q has non-finite entries"):
            lpc.subspace_refresh(K, Qs, [0, 1, 2], method=method, orth_tol=orth_tol)
    # the finite basis is accepted by both
    lpc.subspace_refresh(K, xp.asarray(Q0.astype(np.float32)), [0, 1, 2], method=method,
                         orth_tol=orth_tol)
