"""Finite input near the format's largest value: every method returns a finite, orthonormal Q;
an R that the format can hold comes back finite and backward stable; an R that it cannot hold
is reported (``info.r_overflow`` and a note), never a silent inf or NaN."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest

import linalg_pc as lpc
from linalg_pc.analysis import orthogonality_loss
from linalg_pc.analysis.bounds import qr_bound, storage_floor, storage_resid_floor

METHODS = ("householder", "cholqr", "cholqr2", "scholqr3", "rand_cholqr", "cgs2", "mgs", "bcgs2",
           "tsqr", "batched", "auto")
#: Safety factor on the typical one-rounding storage floor (as in test_qr_accuracy).
STORAGE_FLOOR_SAFETY = 4.0
M, N = 60, 8
FORMATS = {"fp32": np.float32, "fp64": np.float64, "bf16": ml_dtypes.bfloat16}


def _base(seed=0):
    return np.random.default_rng(seed).standard_normal((M, N))


def _near_max(fmt, *, col_norm: float | None = None, entry: float | None = None):
    """A in ``fmt`` with its largest column norm (or largest entry) that fraction of the max."""
    X = _base()
    top = float(ml_dtypes.finfo(FORMATS[fmt]).max)
    if col_norm is not None:
        X = X / np.linalg.norm(X, axis=0).max() * (col_norm * top)
    else:
        X = X / np.abs(X).max() * (entry * top)
    return X.astype(FORMATS[fmt])


def _resid(A, Q, R):
    """‖A − QR‖_F/‖A‖_F in fp64 after scaling A and R by the same power of two (exact)."""
    A64, Q64, R64 = (np.asarray(x, dtype=np.float64) for x in (A, Q, R))
    e = -int(np.frexp(np.max(np.abs(A64)))[1])
    A64, R64 = np.ldexp(A64, e), np.ldexp(R64, e)
    return np.linalg.norm(A64 - Q64 @ R64) / np.linalg.norm(A64)


def _bounds(fmt, storage):
    arith = "fp64" if fmt == "fp64" else "fp32"
    orth = qr_bound("householder", M, N, 1.0, arith)
    res = qr_bound("householder", M, N, 1.0, arith, quantity="resid")
    if storage in ("bf16", "fp16"):
        orth += STORAGE_FLOOR_SAFETY * storage_floor(M, N, storage)
        res += storage_resid_floor(M, N, storage)
    return orth, res


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("fmt,storage", [("fp32", None), ("fp64", None), ("bf16", None),
                                         ("bf16", "fp32")])
def test_representable_r_near_overflow_is_finite_and_accurate(method, fmt, storage):
    """Column norms at 0.9 of the format's max: R fits, so Q and R are finite, O(u)."""
    A = _near_max(fmt, col_norm=0.9)
    with np.errstate(over="raise", invalid="raise"):
        Q, R, info = lpc.qr(A, method=method, storage=storage, rng=0)
    Q64, R64 = np.asarray(Q, np.float64), np.asarray(R, np.float64)
    assert np.all(np.isfinite(Q64)) and np.all(np.isfinite(R64)), info
    assert not info.r_overflow
    b_orth, b_res = _bounds(fmt, storage or fmt)
    assert orthogonality_loss(Q64) <= b_orth, info
    assert _resid(A, Q64, R64) <= b_res, info


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("fmt,storage", [("fp32", None), ("fp64", None), ("bf16", None),
                                         ("bf16", "fp32")])
def test_r_beyond_the_format_is_reported_and_q_stays_orthonormal(method, fmt, storage):
    """Entries at 0.9 of the max (the issue's 3e38 in fp32): column norms exceed the format, so
    R cannot be stored. Q is finite and orthonormal, the overflow is in ``info``, and R's
    finite entries are those of the factorization computed in fp64 from A scaled by 2^-e."""
    A = _near_max(fmt, entry=0.9)
    Q, R, info = lpc.qr(A, method=method, storage=storage, rng=0)
    Q64, R64 = np.asarray(Q, np.float64), np.asarray(R, np.float64)
    assert np.all(np.isfinite(Q64)), info
    assert info.r_overflow and any(n.startswith("R overflows") for n in info.notes), info
    assert not np.all(np.isfinite(R64))  # the inf entries are the reported ones
    b_orth, _ = _bounds(fmt, storage or fmt)
    assert orthogonality_loss(Q64) <= b_orth, info
    if fmt != "fp64":  # in fp64 arithmetic and storage, the same A has a finite, accurate R
        Q2, R2, info2 = lpc.qr(A, method=method, compute="fp64", storage="fp64", rng=0)
        assert np.all(np.isfinite(R2)) and not info2.r_overflow
        assert _resid(A, Q2, R2) <= qr_bound("householder", M, N, 1.0, "fp32", quantity="resid")


@pytest.mark.parametrize("method", ["batched", "householder", "cholqr2", "auto"])
@pytest.mark.parametrize("fmt", ["fp32", "fp64", "bf16"])
def test_stacks_rescale_each_matrix_on_its_own(method, fmt):
    """A stack mixing matrices near the max with ordinary and tiny ones: each matrix is scaled
    by its own power of two (one scale for the stack would flush the tiny ones), so every Q is
    orthonormal; the stack's R is finite when every matrix's R fits."""
    dt = FORMATS[fmt]
    top = float(ml_dtypes.finfo(dt).max)
    rng = np.random.default_rng(1)
    X = rng.standard_normal((6, 10, 4))
    X /= np.linalg.norm(X, axis=-2, keepdims=True).max(axis=(-2, -1), keepdims=True)
    scales = np.array([0.9 * top, 1.0, 2.0 ** -60, 0.5 * top, 1e-3, 0.9 * top])
    A = (X * scales[:, None, None]).astype(dt)
    storage = "fp32" if fmt == "bf16" else None
    Q, R, info = lpc.qr(A, method=method, storage=storage)
    Q64, R64 = np.asarray(Q, np.float64), np.asarray(R, np.float64)
    assert np.all(np.isfinite(Q64)) and np.all(np.isfinite(R64)), info
    assert not info.r_overflow
    arith = "fp64" if fmt == "fp64" else "fp32"
    for i in range(A.shape[0]):
        assert orthogonality_loss(Q64[i]) <= qr_bound("householder", 10, 4, 1.0, arith), i
        assert _resid(A[i], Q64[i], R64[i]) <= qr_bound("householder", 10, 4, 1.0, arith,
                                                        quantity="resid"), i


def test_stack_with_one_unrepresentable_r_reports_it():
    big = np.sign(_base(3)[:10, :4]) * (0.9 * float(np.finfo(np.float32).max))  # norms 2.8·max
    A = np.stack([big, _base(2)[:10, :4]]).astype(np.float32)
    Q, R, info = lpc.qr(A, method="batched")
    assert np.all(np.isfinite(Q)) and info.r_overflow
    assert np.all(np.isfinite(R[1]))
    assert orthogonality_loss(np.asarray(Q[0], np.float64)) <= qr_bound(
        "householder", 10, 4, 1.0, "fp32")


def test_fp16_storage_overflow_is_reported():
    """fp16 storage holds up to 65504: an fp32 A whose R exceeds it is reported, not silent."""
    A = (_base() * 3e4).astype(np.float32)
    Q, R, info = lpc.qr(A, storage="fp16")
    assert np.all(np.isfinite(np.asarray(Q, np.float64)))
    assert info.r_overflow and any("fp16" in n for n in info.notes)
    Q, R, info = lpc.qr(A / 1e3, storage="fp16")
    assert not info.r_overflow


def test_torch_near_overflow():
    torch = pytest.importorskip("torch")
    A = _near_max("fp32", col_norm=0.9)
    for method in ("householder", "cholqr2", "batched"):
        Q, R, info = lpc.qr(torch.from_numpy(A.copy()), method=method)
        Q64, R64 = Q.double().numpy(), R.double().numpy()
        assert np.all(np.isfinite(Q64)) and np.all(np.isfinite(R64)), (method, info)
        assert orthogonality_loss(Q64) <= qr_bound("householder", M, N, 1.0, "fp32")
