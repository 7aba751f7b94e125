"""Bad input to the public metrics and generators of linalg_pc.analysis, as one table: wrong
rank, wrong dtype (complex, bool), not an array, shapes that do not match, empty and
non-finite entries, read-only and mixed-library inputs. Errors name the argument; a metric of
non-finite input measures inf (an infinitely bad factorization), never NaN or a crash.
(DriftingFactor, Records and qr_bound argument checks: tests/analysis/test_validation.py.)"""

from __future__ import annotations

import math

import numpy as np
import pytest

import linalg_pc.analysis as A

RNG = np.random.default_rng(0)
Q, R = np.linalg.qr(RNG.standard_normal((6, 3)))
M = Q @ R

RAISES = [
    ("orthogonality_loss 1-D", lambda: A.orthogonality_loss(np.ones(4)), ValueError, "Q"),
    ("orthogonality_loss complex", lambda: A.orthogonality_loss(Q.astype(complex)), TypeError,
     "Q"),
    ("orthogonality_loss bool", lambda: A.orthogonality_loss(np.ones((4, 2), bool)), TypeError,
     "Q"),
    ("orthogonality_loss list", lambda: A.orthogonality_loss([[1.0, 0.0], [0.0, 1.0]]),
     TypeError, "Q"),
    ("factorization_error R shape", lambda: A.factorization_error(M, Q, R[:2]), ValueError, "R"),
    ("kappa 1-D", lambda: A.kappa(np.ones(3)), ValueError, "A"),
    ("kappa complex", lambda: A.kappa(np.eye(3, dtype=complex)), TypeError, "A"),
    ("kappa NaN", lambda: A.kappa(np.full((3, 3), np.nan)), ValueError, "A"),
    ("randsvd kappa < 1", lambda: A.randsvd(5, 3, 0.5), ValueError, "kappa"),
    ("randsvd kappa NaN", lambda: A.randsvd(5, 3, math.nan), ValueError, "kappa"),
    ("qr_bound unknown method", lambda: A.qr_bound("nope", 10, 5, 1e3, "fp32"), ValueError,
     "method"),
]


@pytest.mark.parametrize("call,exc,name", [c[1:] for c in RAISES], ids=[c[0] for c in RAISES])
def test_bad_input_raises_naming_the_argument(call, exc, name):
    with pytest.raises(exc, match=rf"\b{name}\b"):
        call()


def test_metrics_of_non_finite_input_are_inf():
    assert A.orthogonality_loss(np.full((4, 2), np.nan)) == math.inf
    assert A.factorization_error(np.full_like(M, np.nan), Q, R) == math.inf


def test_empty_inputs_have_the_neutral_value():
    assert A.orthogonality_loss(np.zeros((4, 0))) == 0.0
    assert A.kappa(np.zeros((0, 0))) == 1.0
    assert A.randsvd(0, 3, 10.0).A.shape == (0, 3)


def test_read_only_inputs_are_read_not_written():
    Qr, Mr, Rr = Q.copy(), M.copy(), R.copy()
    for a in (Qr, Mr, Rr):
        a.setflags(write=False)
    assert A.orthogonality_loss(Qr) == A.orthogonality_loss(Q)
    assert A.factorization_error(Mr, Qr, Rr) == A.factorization_error(M, Q, R)
    assert A.kappa(Mr) == A.kappa(M)
    np.testing.assert_array_equal(Qr, Q)


def test_mixed_libraries_are_measured_in_fp64_on_the_host():
    """The metrics measure in fp64 on the host: a torch factor with a NumPy matrix is the
    same measurement as two NumPy arrays."""
    torch = pytest.importorskip("torch")
    assert A.factorization_error(M, torch.from_numpy(Q), R) == A.factorization_error(M, Q, R)
    assert A.orthogonality_loss(torch.from_numpy(Q)) == A.orthogonality_loss(Q)
