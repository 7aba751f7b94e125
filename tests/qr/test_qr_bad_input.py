"""Bad input to every public function of ``linalg_pc.qr_methods`` (its ``__all__``): a clear
exception naming the argument before any work, or a correct result. NaN/inf, empty, wrong
rank, dtype and library, read-only and aliased inputs (issue 12).

References: NumPy's (LAPACK's) QR of the same matrix in fp64 for the results that must work;
the tolerances are c·u of the arithmetic format (Householder QR: ‖A − QR‖ ≤ c·m·n·u·‖A‖).
"""

from __future__ import annotations

import numpy as np
import pytest

import linalg_pc._backend as B
from linalg_pc import qr_methods as QM

#: Every factorization of the subpackage, as a callable of A.
FACTORIZATIONS = {
    "qr": QM.qr, "householder_qr": QM.householder_qr, "cholqr": QM.cholqr,
    "cholqr2": QM.cholqr2, "scholqr3": QM.scholqr3,
    "rand_cholqr": lambda A, **kw: QM.rand_cholqr(A, rng=0, **kw),
    "mgs": QM.mgs, "cgs2": QM.cgs2, "bcgs2": QM.bcgs2, "tsqr": QM.tsqr,
    "batched_qr": QM.batched_qr,
}
#: Those that take one matrix only (lpc.qr loops them over a batch).
SINGLE = ("cholqr", "cholqr2", "scholqr3", "rand_cholqr", "mgs", "cgs2", "bcgs2", "tsqr")
#: Those that need m >= n.
TALL = SINGLE
ALL = {**FACTORIZATIONS, "householder_factor": QM.householder_factor}

A = np.random.default_rng(0).standard_normal((12, 4))
U64 = 2.0**-53
C_QR = 50.0  # ‖A − QR‖ / (m·n·u·‖A‖) and ‖QᵀQ − I‖ / (m·n·u) for these small matrices


def _ro(a):
    a = np.array(a, copy=True)
    a.flags.writeable = False
    return a


def _with(a, idx, val):
    a = np.array(a, copy=True)
    a[idx] = val
    return a


def _check_qr(res, A64, u=U64):
    Q, R = np.asarray(B.to_numpy(res.Q), np.float64), np.asarray(B.to_numpy(res.R), np.float64)
    m, n = A64.shape
    scale = max(1.0, float(np.linalg.norm(A64)))
    assert np.linalg.norm(A64 - Q @ R) <= C_QR * m * n * u * scale
    assert np.linalg.norm(Q.T @ Q - np.eye(Q.shape[1])) <= C_QR * m * n * u
    np.testing.assert_array_equal(R, np.triu(R))


# ----------------------------------------------------------------------------- the table
def _cases():
    """(function names, A, expected exception, match)."""
    return [
        (ALL, A.tolist(), TypeError, r"A must be an array, got list"),
        (ALL, np.float64(2.0), TypeError, r"A must be an array, got float64"),
        (ALL, None, TypeError, r"A must be an array"),
        (ALL, A[:, 0], ValueError, r"A must have at least 2 dimensions"),
        (ALL, np.array(3.0), ValueError, r"at least 2 dimensions"),
        (ALL, _with(A, (3, 1), np.nan), ValueError, r"A has non-finite entries"),
        (ALL, _with(A, (0, 0), np.inf), ValueError, r"A has non-finite entries"),
        (ALL, _with(A, (11, 3), -np.inf), ValueError, r"A has non-finite entries"),
        (FACTORIZATIONS, A.astype(np.complex128), NotImplementedError, r"complex A"),
        (["householder_factor"], A.astype(np.complex128), TypeError, r"A must have a real"),
        (["householder_factor"], A.astype(np.int64), TypeError, r"A must have a real"),
        (["householder_factor"], A > 0, TypeError, r"A must have a real"),
        (["householder_factor"], A.astype(np.float16), TypeError, r"A must be fp32 or fp64"),
        (SINGLE, np.stack([A, A]), ValueError, r"takes a single matrix"),
        (TALL, A.T, ValueError, r"needs m >= n"),
        (TALL, np.zeros((0, 4)), ValueError, r"needs m >= n"),
    ]


@pytest.mark.parametrize("names,a,exc,match", _cases(),
                         ids=[f"{i}-{c[3][:24]}" for i, c in enumerate(_cases())])
def test_bad_input_raises_naming_the_argument(names, a, exc, match):
    for name in names:
        with pytest.raises(exc, match=match):
            ALL[name](a)


@pytest.mark.parametrize("kwargs,exc,match", [
    ({"mode": "economic"}, ValueError, r"mode must be one of"),
    ({"compute": "bf16"}, ValueError, r"compute"),
    ({"storage": "fp8"}, ValueError, r"unknown number format"),
    ({"emulate": "int8"}, ValueError, r"unknown number format"),
])
def test_bad_options_every_factorization(kwargs, exc, match):
    for f in FACTORIZATIONS.values():
        with pytest.raises(exc, match=match):
            f(A, **kwargs)
    with pytest.raises(ValueError, match=r"block_size must be"):
        QM.householder_factor(A, block_size=0)
    with pytest.raises(TypeError, match=r"em must be None or a callable"):
        QM.householder_factor(A, em=3)


# ----------------------------------------------------------------------------- what works
@pytest.mark.parametrize("name", FACTORIZATIONS)
@pytest.mark.parametrize("dtype", [np.int64, np.int8, bool])
def test_integer_and_boolean_input_is_cast_to_fp64(name, dtype):
    Ai = (A * 4).astype(dtype) if dtype is not bool else A > 0
    res = FACTORIZATIONS[name](Ai)
    assert B.format_of(res.Q).name == "fp64"
    A64 = Ai.astype(np.float64)
    if np.linalg.matrix_rank(A64) == A64.shape[1]:
        _check_qr(res, A64)


@pytest.mark.parametrize("name", FACTORIZATIONS)
@pytest.mark.parametrize("shape", [(5, 0), (0, 0)])
def test_empty(name, shape):
    res = FACTORIZATIONS[name](np.zeros(shape))
    assert tuple(res.Q.shape) == shape and tuple(res.R.shape) == (0, 0)


@pytest.mark.parametrize("name", ["qr", "householder_qr", "batched_qr"])
def test_empty_wide_and_batches(name):
    res = FACTORIZATIONS[name](np.zeros((0, 4)))
    assert tuple(res.Q.shape) == (0, 0) and tuple(res.R.shape) == (0, 4)
    res = FACTORIZATIONS[name](np.zeros((0, 6, 3)))
    assert tuple(res.Q.shape) == (0, 6, 3) and tuple(res.R.shape) == (0, 3, 3)
    F = QM.householder_factor(np.zeros((0, 4)))
    assert tuple(F.R.shape) == (0, 4)


@pytest.mark.parametrize("name", FACTORIZATIONS)
def test_read_only_input_works_and_is_not_written(name):
    Ar = _ro(A)
    got = FACTORIZATIONS[name](Ar)
    ref = FACTORIZATIONS[name](A.copy())
    np.testing.assert_array_equal(got.Q, ref.Q)
    np.testing.assert_array_equal(got.R, ref.R)
    np.testing.assert_array_equal(Ar, A)
    F = QM.householder_factor(Ar)
    np.testing.assert_array_equal(QM.apply_q(F, _ro(F.R)), QM.apply_q(F, F.R))


@pytest.mark.parametrize("name", FACTORIZATIONS)
def test_torch_input_is_not_written(name):
    torch = pytest.importorskip("torch")
    At = torch.from_numpy(A.copy())
    res = FACTORIZATIONS[name](At)
    assert torch.equal(At, torch.from_numpy(A))
    _check_qr(res, A)


# ----------------------------------------------------------------------------- apply_q / apply_qt
F = QM.householder_factor(A)


@pytest.mark.parametrize("fn", [QM.apply_q, QM.apply_qt])
def test_apply_bad_input(fn):
    cases = [
        ((1, 2), np.ones((12, 2)), TypeError, r"F must be HouseholderFactors"),
        (F, [[1.0]] * 12, TypeError, r"C must be an array, got list"),
        (F, np.ones((12, 2), np.complex128), TypeError, r"C must have a real floating, integ"),
        (F, np.ones((11, 2)), ValueError, r"C must have shape \(\.\.\., 12"),
        (F, np.ones(12), ValueError, r"C must have shape"),
    ]
    torch = pytest.importorskip("torch")
    cases.append((F, torch.ones((12, 2), dtype=torch.float64), TypeError,
                  r"C must come from the factors' library \(numpy\)"))
    for f, c, exc, match in cases:
        with pytest.raises(exc, match=match):
            fn(f, c)


@pytest.mark.parametrize("dtype", [np.int64, bool, np.float32])
def test_apply_integer_boolean_and_narrower_C(dtype):
    """Before: an integer C was copied and the products written into it, truncating Q C to
    integers (all zeros for C = I). Now C is cast to the factors' dtype."""
    C = np.eye(12, 3, dtype=dtype)
    QC = QM.apply_q(F, C)
    QtC = QM.apply_qt(F, C)
    assert B.format_of(QC).name == "fp64" and B.format_of(QtC).name == "fp64"
    Qf = QM.apply_q(F, np.eye(12))  # the full Q of the factors, formed in fp64
    np.testing.assert_allclose(QC, Qf @ C.astype(np.float64), atol=C_QR * 12 * U64)
    np.testing.assert_allclose(QtC, Qf.T @ C.astype(np.float64), atol=C_QR * 12 * U64)


def test_apply_nan_propagates_to_the_touched_columns():
    C = np.ones((12, 3))
    C[4, 1] = np.nan
    for fn in (QM.apply_q, QM.apply_qt):
        out = fn(F, C)
        assert np.isnan(out[:, 1]).all()
        assert np.isfinite(out[:, [0, 2]]).all()


def test_apply_aliased_factors_are_not_written():
    """C aliasing the factors (R, the reflectors Y) works and leaves F unchanged."""
    Y0, R0 = np.array(F.Y, copy=True), np.array(F.R, copy=True)
    np.testing.assert_allclose(QM.apply_q(F, F.R), A, atol=C_QR * 48 * U64 * np.linalg.norm(A))
    QM.apply_qt(F, F.Y)
    QM.apply_q(F, F.Y)
    np.testing.assert_array_equal(F.Y, Y0)
    np.testing.assert_array_equal(F.R, R0)
