"""lpc.qr: input checking, modes, formats, emulation, fallbacks, batches, info, properties."""

from __future__ import annotations

import math

import ml_dtypes
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import linalg_pc as lpc
import linalg_pc._backend as B
from linalg_pc._backend import to_numpy
from linalg_pc.analysis import factorization_error, kappa, orthogonality_loss, randsvd
from linalg_pc.analysis.bounds import (
    qr_bound,
    storage_floor,
    storage_resid_floor,
    underflow_resid_floor,
)
from linalg_pc.qr_methods import apply_q, apply_qt, householder_factor

TALL = ("cholqr", "cholqr2", "scholqr3", "rand_cholqr", "cgs2", "mgs", "bcgs2", "tsqr")
ALL = ("householder", "batched", "auto") + TALL
#: Safety factor on the one-rounding storage floor (the floor is a typical value, not a max).
STORAGE_FLOOR_SAFETY = 4.0


def _rand(m, n, seed=0, dtype=np.float64):
    return np.random.default_rng(seed).standard_normal((m, n)).astype(dtype)


# ----------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("method", ALL)
def test_non_finite_raises_naming_A(method, bad):
    A = _rand(20, 4)
    A[3, 2] = bad
    with pytest.raises(ValueError, match=r"\bA\b"):
        lpc.qr(A, method=method)


@pytest.mark.parametrize("dtype", [np.float32, ml_dtypes.bfloat16])
def test_non_finite_16bit_and_batched(dtype):
    A = _rand(20, 4).astype(dtype)
    A[0, 0] = np.inf
    with pytest.raises(ValueError, match=r"\bA\b"):
        lpc.qr(A)
    S = np.random.default_rng(0).standard_normal((50, 3, 3))
    S[49, 1, 1] = np.nan
    with pytest.raises(ValueError, match=r"\bA\b"):
        lpc.qr(S)
    with pytest.raises(ValueError, match=r"\bA\b"):
        lpc.qr(S, method="cholqr2")


@pytest.mark.parametrize("shape", [(), (5,)])
def test_ndim_below_two(shape):
    with pytest.raises(ValueError, match="at least 2 dimensions"):
        lpc.qr(np.ones(shape))


@pytest.mark.parametrize("method", TALL)
def test_wide_input_for_tall_only_method(method):
    with pytest.raises(ValueError, match=rf"{method}.*householder"):
        lpc.qr(_rand(3, 5), method=method)


def test_unknown_method_lists_valid_ones():
    with pytest.raises(ValueError, match="cholqr2.*householder|householder.*cholqr2"):
        lpc.qr(_rand(5, 3), method="givens")


def test_unknown_mode_and_formats():
    with pytest.raises(ValueError, match="mode"):
        lpc.qr(_rand(5, 3), mode="economic")
    with pytest.raises(ValueError, match="compute"):
        lpc.qr(_rand(5, 3), compute="bf16")
    with pytest.raises(ValueError):
        lpc.qr(_rand(5, 3), storage="fp8")
    with pytest.raises(ValueError, match="emulate"):
        lpc.qr(_rand(5, 3, dtype=np.float32), emulate="fp64")


@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.float16, ml_dtypes.bfloat16,
                                   np.int32])
@pytest.mark.parametrize("opts", [{}, {"compute": "fp64"}, {"storage": "bf16"},
                                  {"compute": "fp32", "emulate": "bf16"}, {"storage": "fp16"}])
def test_formats_follow_the_precision_policy(dtype, opts):
    """QR resolves storage/compute/emulate with Precision(...).resolve(A), for every method."""
    from linalg_pc._policy import Precision
    from linalg_pc.qr_methods._common import prepare

    A = _rand(12, 4, 30).astype(dtype)
    p = Precision(**opts).resolve(A)
    ctx, Ac = prepare(A, method="householder", **opts)
    assert ctx.prec == p and ctx.compute == p.compute and ctx.storage == p.storage
    assert ctx.emulate == p.emulate and ctx.u_work == p.u_work
    assert B.format_of(Ac) == p.compute
    for method in ("householder", "cholqr2", "mgs"):
        info = lpc.qr(A, method=method, **opts).info
        assert (info.compute, info.storage) == (p.compute.name, p.storage.name)
        assert info.emulate == (None if p.emulate is None else p.emulate.name)


def test_auto_note_on_stacks_appears_once():
    notes = lpc.qr(np.random.default_rng(31).standard_normal((20, 8, 8))).info.notes
    assert notes.count("auto chose batched for shape (20, 8, 8)") == 1


def test_complex_not_implemented():
    with pytest.raises(NotImplementedError, match="complex"):
        lpc.qr(np.ones((4, 2), dtype=np.complex128))


@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.bool_])
def test_integer_input_cast_to_fp64(dtype):
    A = (np.arange(12).reshape(6, 2) % 5).astype(dtype)
    Q, R, info = lpc.qr(A)
    assert Q.dtype == np.float64 and R.dtype == np.float64
    assert factorization_error(A.astype(np.float64), Q, R) < 1e-15


def test_non_array():
    with pytest.raises(TypeError):
        lpc.qr([[1.0, 2.0], [3.0, 4.0]])


def test_method_options_checked():
    A = _rand(50, 5)
    with pytest.raises(ValueError, match="shift"):
        lpc.qr(A, method="scholqr3", shift="sometimes")
    with pytest.raises(ValueError, match="sketch"):
        lpc.qr(A, method="rand_cholqr", sketch="srht")
    with pytest.raises(ValueError, match="block_size"):
        lpc.qr(A, method="bcgs2", block_size=0)


# ----------------------------------------------------------------------------- modes
@pytest.mark.parametrize("method", ALL)
@pytest.mark.parametrize("shape", [(12, 5), (5, 5), (1, 1)])
def test_modes(method, shape):
    m, n = shape
    A = _rand(m, n, 3)
    opts = {"leaf_rows": 4} if method == "tsqr" else {}
    Qr, Rr, _ = lpc.qr(A, method=method, rng=0, **opts)
    Qc, Rc, _ = lpc.qr(A, method=method, mode="complete", rng=0, **opts)
    none, Ro, _ = lpc.qr(A, method=method, mode="r", rng=0, **opts)
    assert none is None
    assert Qc.shape == (m, m) and Rc.shape == (m, n) and Ro.shape == Rr.shape
    assert orthogonality_loss(Qc) <= qr_bound(method, m, n, kappa(A), "fp64")
    assert factorization_error(A, Qc, Rc) < 1e-14
    np.testing.assert_allclose(np.abs(Ro), np.abs(Rr), atol=1e-12 * np.abs(Rr).max())
    np.testing.assert_allclose(Qc[:, :n], Qr, atol=1e-12)


def test_wide_householder_modes():
    A = _rand(3, 7, 4)
    for mode in ("reduced", "complete"):
        Q, R, info = lpc.qr(A, mode=mode)
        assert Q.shape == (3, 3) and R.shape == (3, 7) and info.method == "householder"
        assert factorization_error(A, Q, R) < 1e-15


# ----------------------------------------------------------------------------- formats
@pytest.mark.parametrize("fmt", ["bf16", "fp16"])
@pytest.mark.parametrize("method", ALL)
def test_16bit_input_numpy(method, fmt):
    T = randsvd(300, 12, 10.0, dtype=fmt, rng=5)
    Q, R, info = lpc.qr(T.A, method=method, rng=0) if method == "rand_cholqr" else \
        lpc.qr(T.A, method=method)
    assert Q.dtype == T.A.dtype and R.dtype == T.A.dtype
    assert info.compute == "fp32" and info.storage == fmt
    b = qr_bound(method, 300, 12, T.kappa_stored, "fp32")
    assert orthogonality_loss(Q) <= b + STORAGE_FLOOR_SAFETY * storage_floor(300, 12, fmt)
    assert factorization_error(T.A, Q, R) <= (qr_bound(method, 300, 12, T.kappa_stored, "fp32",
                                                        quantity="resid")
                                              + storage_resid_floor(300, 12, fmt))


@pytest.mark.parametrize("method", ["auto", "cholqr2", "householder", "batched"])
def test_16bit_input_torch(method):
    torch = pytest.importorskip("torch")
    T = randsvd(200, 8, 10.0, dtype="bf16", rng=6, xp=lpc._backend.array_namespace(
        torch.zeros(1)))
    Q, R, info = lpc.qr(T.A, method=method)
    assert Q.dtype == torch.bfloat16 and R.dtype == torch.bfloat16
    assert orthogonality_loss(Q) <= 1e-5 + STORAGE_FLOOR_SAFETY * storage_floor(200, 8, "bf16")


def test_storage_and_compute_arguments():
    A = _rand(400, 10, 7, np.float32)
    Q, R, info = lpc.qr(A, storage="bf16", compute="fp64")
    assert Q.dtype == ml_dtypes.bfloat16 and info.compute == "fp64"
    Q, R, info = lpc.qr(A.astype(ml_dtypes.bfloat16), storage="fp32")
    assert Q.dtype == np.float32
    # bf16 input, fp32 result: the decoded bf16 matrix is factored to fp32 accuracy
    assert factorization_error(A.astype(ml_dtypes.bfloat16), Q, R) < 1e-6
    assert orthogonality_loss(Q) < 1e-6


def test_bf16_beats_upcast_path_orthogonality():
    """Same orthogonality as the path users write today (upcast, scipy, cast back)."""
    import scipy.linalg as sla

    A = _rand(4000, 64, 8).astype(ml_dtypes.bfloat16)
    Q, R, info = lpc.qr(A)
    Qs, _ = sla.qr(A.astype(np.float32), mode="economic")
    ours = orthogonality_loss(Q)
    theirs = orthogonality_loss(Qs.astype(ml_dtypes.bfloat16))
    assert info.method == "cholqr2"
    assert ours <= 1.1 * theirs


# ----------------------------------------------------------------------------- emulation
@pytest.mark.parametrize("method", ["householder", "cholqr2", "mgs", "cgs2", "bcgs2", "tsqr",
                                    "batched", "rand_cholqr", "scholqr3"])
def test_emulate_bf16(method):
    T = randsvd(60, 6, 1.2, dtype="fp32", rng=9)
    opts = {"leaf_rows": 16} if method == "tsqr" else {"rng": 0} if method == "rand_cholqr" \
        else {}
    Q, R, info = lpc.qr(T.A, method=method, emulate="bf16", **opts)
    assert info.emulate == "bf16" and Q.dtype == np.float32
    assert info.backend not in ("lapack", "numba")
    exact = orthogonality_loss(lpc.qr(T.A, method=method, **opts).Q)
    lo = orthogonality_loss(Q)
    assert lo <= qr_bound(method, 60, 6, T.kappa_stored, "bf16")
    assert lo > 10 * exact  # the rounding really happened
    if method in ("householder", "cholqr2", "mgs", "cgs2"):
        assert lpc.representable(Q, "bf16") and lpc.representable(R, "bf16")


def test_emulated_gram_in_bf16_breaks_cholqr_early():
    """A bf16 Gram matrix makes Cholesky fail already at κ = 100 (κ² ≳ u_bf16⁻¹: Yamamoto et al.,
    ETNA 44, 2015; measured in docs/error-analysis.md)."""
    T = randsvd(500, 20, 1e3, dtype="fp32", rng=10)
    res = lpc.qr(T.A, method="cholqr2", emulate="bf16")
    assert res.info.fallbacks
    assert not lpc.qr(T.A, method="cholqr2").info.fallbacks


# ----------------------------------------------------------------------------- fallbacks
def test_cholqr2_fp32_kappa_1e6_falls_back_with_O_u():
    T = randsvd(2000, 50, 1e6, dtype="fp32", rng=11)
    Q, R, info = lpc.qr(T.A, method="cholqr2")
    u = lpc.unit_roundoff("fp32")
    assert info.requested == "cholqr2" and info.method in ("scholqr3", "householder")
    assert info.fallbacks and "Cholesky breakdown" in info.fallbacks[0]
    assert orthogonality_loss(Q) < 100 * u
    assert factorization_error(T.A, Q, R) < 100 * u
    auto = lpc.qr(T.A)
    assert auto.info.requested == "auto" and auto.info.fallbacks
    assert orthogonality_loss(auto.Q) < 100 * u


@pytest.mark.parametrize("method", ["cholqr", "cholqr2", "scholqr3", "rand_cholqr", "mgs",
                                    "cgs2", "bcgs2"])
def test_rank_deficient_falls_back_to_householder(method):
    A = _rand(40, 6, 12)
    A[:, 3] = A[:, 1] * 2.0
    A[:, 5] = 0.0
    Q, R, info = lpc.qr(A, method=method, rng=0) if method == "rand_cholqr" else \
        lpc.qr(A, method=method)
    assert orthogonality_loss(Q) < 1e-14
    assert factorization_error(A, Q, R) < 1e-14
    if method != "bcgs2":  # Householder panels absorb exact rank loss inside a block
        assert info.method == "householder" and info.fallbacks


def test_zero_matrix_every_method():
    for method in ALL:
        Q, R, info = lpc.qr(np.zeros((8, 3)), method=method)
        assert orthogonality_loss(Q) < 1e-15 and not np.any(R)


def test_scholqr3_shift_policies():
    T = randsvd(1000, 20, 1e5, dtype="fp32", rng=13)
    u = lpc.unit_roundoff("fp32")
    always = lpc.qr(T.A, method="scholqr3")
    assert always.info.shifts and always.info.passes >= 3
    lazy = lpc.qr(T.A, method="scholqr3", shift="breakdown")
    assert lazy.info.shifts  # κ = 1e5 > u^(-1/2): the unshifted Cholesky breaks down
    fixed = lpc.qr(T.A, method="scholqr3", shift=1e-3)
    assert fixed.info.shifts[0] == 1e-3
    for r in (always, lazy, fixed):
        assert orthogonality_loss(r.Q) < 100 * u
    easy = lpc.qr(randsvd(1000, 20, 10.0, dtype="fp32", rng=14).A, method="scholqr3",
                  shift="breakdown")
    assert easy.info.shifts == () and easy.info.passes == 2


def test_scaled_near_overflow_and_underflow_cholqr():
    A = _rand(100, 5, 15, np.float32)
    for s in (np.float32(1e30), np.float32(1e-30)):
        Q, R, info = lpc.qr(A * s, method="cholqr2")
        assert not info.fallbacks and any("scaled" in n for n in info.notes)
        assert orthogonality_loss(Q) < 1e-6
        assert factorization_error(A * s, Q, R) < 1e-6


# ----------------------------------------------------------------------------- info
def test_info_is_plain_values():
    T = randsvd(2000, 10, 100.0, rng=16)
    Q, R, info = lpc.qr(T.A)
    d = info.as_dict()
    assert d["method"] == "cholqr2" and d["requested"] == "auto" and d["passes"] == 2
    assert all(isinstance(v, (str, int, float, tuple, type(None))) for v in d.values())
    assert T.kappa / 10 <= info.kappa_est <= 10 * 10 * T.kappa  # 1-norm estimate within n
    with pytest.raises(AttributeError):
        info.method = "x"


def test_auto_choices():
    assert lpc.qr(_rand(2048, 16)).info.method == "cholqr2"
    assert lpc.qr(_rand(64, 64)).info.method == "householder"
    assert lpc.qr(_rand(16, 64)).info.method == "householder"
    assert lpc.qr(np.zeros((10, 4, 4))).info.method == "batched"
    assert lpc.qr(_rand(40, 40)[None].repeat(2, 0)).info.method == "householder"


# ----------------------------------------------------------------------------- batches
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(8, 8), (3, 3), (7, 4), (4, 7)])
def test_batched_equals_per_matrix(dtype, shape):
    S = np.random.default_rng(17).standard_normal((2, 150) + shape).astype(dtype)
    Q, R, info = lpc.qr(S)
    assert info.method == "batched" and Q.shape[:2] == (2, 150)
    u = lpc.unit_roundoff(dtype)
    for idx in [(0, 0), (0, 77), (1, 149)]:
        q, r, _ = lpc.qr(S[idx], method="householder")
        kap = kappa(S[idx].astype(np.float64))
        tol = 20 * u * kap * max(shape)
        np.testing.assert_allclose(Q[idx], q, atol=tol)
        np.testing.assert_allclose(R[idx], r, atol=tol * np.abs(r).max())


@pytest.mark.parametrize("method", ["cholqr2", "mgs", "tsqr"])
def test_looped_methods_equal_per_matrix(method):
    S = np.random.default_rng(18).standard_normal((3, 40, 4))
    Q, R, info = lpc.qr(S, method=method)
    for i in range(3):
        q, r, _ = lpc.qr(S[i], method=method)
        np.testing.assert_array_equal(Q[i], q)
        np.testing.assert_array_equal(R[i], r)


def test_batched_other_namespaces(xp):
    S = np.random.default_rng(19).standard_normal((20, 5, 3))
    Q, R, info = lpc.qr(xp.asarray(S))
    Qn, Rn = to_numpy(Q), to_numpy(R)
    q, r = np.linalg.qr(S)
    np.testing.assert_allclose(Qn, q, atol=1e-12)
    np.testing.assert_allclose(Rn, r, atol=1e-12)


def test_batched_empty_and_modes():
    Q, R, _ = lpc.qr(np.zeros((0, 4, 4)))
    assert Q.shape == (0, 4, 4) and R.shape == (0, 4, 4)
    S = np.random.default_rng(20).standard_normal((30, 6, 4))
    Qc, Rc, _ = lpc.qr(S, mode="complete")
    qc, rc = np.linalg.qr(S, mode="complete")
    np.testing.assert_allclose(Qc, qc, atol=1e-12)
    np.testing.assert_allclose(Rc, rc, atol=1e-12)
    none, Rr, _ = lpc.qr(S, mode="r")
    assert none is None and Rr.shape == (30, 4, 4)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_numba_kernel_matches_reference_implementation(dtype):
    """The fused kernel against the array-API reference Householder on the same stack."""
    from linalg_pc._kernels.cpu_qr import batched_householder

    S = np.random.default_rng(27).standard_normal((64, 7, 5)).astype(dtype)
    F = householder_factor(S, block_size=2)
    Q, R = batched_householder(S)
    tol = 1e3 * lpc.unit_roundoff(dtype)
    np.testing.assert_allclose(R, F.R, atol=tol * np.abs(F.R).max())
    np.testing.assert_allclose(Q, apply_q(F, np.broadcast_to(np.eye(7, 5, dtype=dtype),
                                                             S.shape)), atol=tol)


def test_batched_info():
    info = lpc.qr(np.random.default_rng(28).standard_normal((10, 4, 4))).info
    assert info.method == "batched" and info.backend == "numba" and info.kappa_est >= 1


@pytest.mark.parametrize("dtype", ["float32", "float64", "bfloat16"])
@pytest.mark.parametrize("mode", ["reduced", "complete", "r"])
def test_batched_torch_cpu_stacks_take_the_kernel(dtype, mode):
    """CPU torch stacks reach the Numba kernel on the tensor's memory (not the array-API
    reference), stay tensors, and match fp64 LAPACK to the NumPy path's O(u) tolerance (and the
    NumPy path itself, bit for bit: the same kernel on the same numbers)."""
    torch = pytest.importorskip("torch")
    S = np.random.default_rng(29).standard_normal((2, 150, 7, 5))
    T = torch.from_numpy(S).to(getattr(torch, dtype))
    Q, R, info = lpc.qr(T, mode=mode)
    assert info.method == "batched" and info.backend == "numba"
    assert isinstance(R, torch.Tensor) and R.dtype == T.dtype
    assert (Q is None) == (mode == "r") and (Q is None or Q.dtype == T.dtype)
    Sn = to_numpy(T)
    q, r, ninfo = lpc.qr(Sn, mode=mode)
    assert ninfo.backend == "numba"
    np.testing.assert_array_equal(to_numpy(R).view(np.uint8), r.view(np.uint8))
    if Q is not None:
        np.testing.assert_array_equal(to_numpy(Q).view(np.uint8), q.view(np.uint8))
    S64 = np.asarray(Sn, dtype=np.float64)
    u = lpc.unit_roundoff("fp64" if dtype == "float64" else "fp32")
    u_store = lpc.unit_roundoff({"float32": "fp32", "float64": "fp64", "bfloat16": "bf16"}[dtype])
    for idx in [(0, 0), (0, 77), (1, 149)]:
        ql, rl = np.linalg.qr(S64[idx], mode="complete" if mode == "complete" else "reduced")
        tol = 20 * u * kappa(S64[idx]) * 7 + 2 * u_store  # the NumPy path's, + storage rounding
        Rt = to_numpy(R[idx]).astype(np.float64)
        np.testing.assert_allclose(Rt, rl, atol=tol * np.abs(rl).max())
        if Q is not None:
            np.testing.assert_allclose(to_numpy(Q[idx]).astype(np.float64), ql, atol=tol)


def test_batched_torch_gradient_tensor_and_emulation():
    """A tensor that requires grad is read through a detached view, a strided view like its
    contiguous copy; emulation keeps the reference implementation (every stored intermediate
    rounded)."""
    torch = pytest.importorskip("torch")
    T = torch.randn(40, 4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(3),
                    requires_grad=True)
    Q, R, info = lpc.qr(T)
    assert info.backend == "numba"
    np.testing.assert_allclose(to_numpy(Q @ R), to_numpy(T), atol=1e-13)
    assert lpc.qr(T.detach(), emulate="bf16").info.backend == "reference"
    V = T.detach().transpose(0, 1)[:, :3]  # a strided view: factored like its contiguous copy
    Qv, Rv, info = lpc.qr(V)
    Qc, Rc, _ = lpc.qr(V.contiguous())
    assert info.backend == "numba" and torch.equal(Qv, Qc) and torch.equal(Rv, Rc)


def test_batched_bf16_storage():
    S = np.random.default_rng(21).standard_normal((1000, 4, 4)).astype(ml_dtypes.bfloat16)
    Q, R, info = lpc.qr(S)
    assert Q.dtype == ml_dtypes.bfloat16 and info.backend == "numba"
    assert np.max(orthogonality_loss(Q)) < 4 * lpc.unit_roundoff("bf16")


@pytest.mark.gpu
def test_gpu_batched_kernel_matches_cpu():
    cupy = pytest.importorskip("cupy")
    if cupy.cuda.runtime.getDeviceCount() == 0:
        pytest.skip("no CUDA device")
    S = np.random.default_rng(22).standard_normal((5000, 8, 6)).astype(np.float32)
    for mode in ("reduced", "complete", "r"):
        Q, R, info = lpc.qr(cupy.asarray(S), mode=mode)
        assert info.backend == "cuda"
        q, r, _ = lpc.qr(S, mode=mode)
        np.testing.assert_allclose(cupy.asnumpy(R), r, atol=1e-4)
        if q is not None:
            np.testing.assert_allclose(cupy.asnumpy(Q), q, atol=1e-4)


# ----------------------------------------------------------------------------- Householder WY
@pytest.mark.parametrize("block_size", [1, 3, 32])
def test_apply_q_and_qt_without_forming_q(block_size):
    A = _rand(30, 12, 23)
    F = householder_factor(A, block_size=block_size)
    C = _rand(30, 4, 24)
    Q, _ = np.linalg.qr(A, mode="complete")
    np.testing.assert_allclose(apply_q(F, C), Q @ C, atol=1e-13)
    np.testing.assert_allclose(apply_qt(F, C), Q.T @ C, atol=1e-13)
    np.testing.assert_allclose(apply_q(F, apply_qt(F, C)), C, atol=1e-13)
    np.testing.assert_allclose(F.R, np.linalg.qr(A)[1], atol=1e-13)


def test_reference_householder_matches_lapack_in_all_namespaces(xp):
    A = _rand(9, 6, 25)
    Q, R, info = lpc.qr(xp.asarray(A), method="householder", vendor=False, block_size=4)
    assert info.backend == "reference"
    q, r = np.linalg.qr(A)
    np.testing.assert_allclose(to_numpy(Q), q, atol=1e-13)
    np.testing.assert_allclose(to_numpy(R), r, atol=1e-13)


# ----------------------------------------------------------------------------- randomized
@pytest.mark.parametrize("sketch", ["gaussian", "countsketch"])
@pytest.mark.parametrize("sketch_format", [None, "fp16", "bf16"])
def test_rand_cholqr_sketches(sketch, sketch_format):
    T = randsvd(3000, 20, 1e4 if sketch_format else 1e12, dtype="fp64", rng=26)
    res = lpc.qr(T.A, method="rand_cholqr", sketch=sketch, sketch_format=sketch_format, rng=1)
    assert sketch in res.info.notes[-1] or any(sketch in n for n in res.info.notes)
    assert orthogonality_loss(res.Q) < 1e-13
    assert factorization_error(T.A, res.Q, res.R) < 1e-14
    again = lpc.qr(T.A, method="rand_cholqr", sketch=sketch, sketch_format=sketch_format,
                   rng=1)
    np.testing.assert_array_equal(res.Q, again.Q)


# ----------------------------------------------------------------------------- properties
@st.composite
def _matrices(draw):
    m = draw(st.integers(1, 12))
    n = draw(st.integers(1, m))
    batch = draw(st.sampled_from([(), (3,)]))
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    elems = st.floats(-1e3, 1e3, allow_nan=False, allow_infinity=False, width=32)
    A = draw(hnp.arrays(dtype, batch + (m, n), elements=elems))
    return A


@settings(max_examples=50, deadline=None)
@given(A=_matrices(), method=st.sampled_from(["auto", "householder", "batched", "cholqr2",
                                              "scholqr3", "cgs2", "bcgs2", "tsqr"]))
def test_property_orthonormal_triangular_and_factorizes(A, method):
    m, n = A.shape[-2:]
    Q, R, info = lpc.qr(A, method=method)
    fmt = "fp32" if A.dtype == np.float32 else "fp64"
    R64 = R.astype(np.float64)
    assert np.array_equal(R64, np.triu(R64))
    assert np.all(orthogonality_loss(Q) <= qr_bound("householder", m, n, 1.0, fmt))
    nrm = np.linalg.norm(A.astype(np.float64), axis=(-2, -1))
    err = np.linalg.norm(A - Q.astype(np.float64) @ R64, axis=(-2, -1))
    assert np.all(err <= qr_bound(method, m, n, 1.0, fmt, quantity="resid") * nrm
                  + underflow_resid_floor(m, n, fmt))
    assert math.isfinite(info.passes)


_ALL_METHODS = ["auto", "householder", "batched", "cholqr", "cholqr2", "scholqr3", "rand_cholqr",
                "cgs2", "mgs", "bcgs2", "tsqr"]


#: The 4×2 pattern the scale tests multiply by a power of two (small integers: exact at any scale).
_PATTERN = np.array([[1.0, 1.0], [1.0, 0.0], [1.0, 2.0], [0.0, 1.0]])


def _assert_resid_within_underflow(A, Q, R, fmt, c=1.0):
    """‖A − QR‖_F <= c·bound·‖A‖_F + underflow_resid_floor, for each matrix of a stack. Both
    sides are evaluated times 2^e (exact), e from max|A|, so neither under- nor overflows."""
    A64 = np.asarray(A, dtype=np.float64)
    m, n = A64.shape[-2:]
    e = -int(np.frexp(np.max(np.abs(A64)))[1])
    QR = np.asarray(Q, dtype=np.float64) @ np.asarray(R, dtype=np.float64)
    err = np.linalg.norm(np.ldexp(A64 - QR, e), axis=(-2, -1))
    nrm = np.linalg.norm(np.ldexp(A64, e), axis=(-2, -1))
    assert np.all(err <= c * qr_bound("householder", m, n, 1.0, fmt, quantity="resid") * nrm
                  + np.ldexp(underflow_resid_floor(m, n, fmt), e))


@pytest.mark.parametrize("method", _ALL_METHODS)
@pytest.mark.parametrize("dtype,v", [(np.float32, 2.0 ** -149), (np.float32, 2.0 ** -133),
                                     (np.float64, 2.0 ** -1074), (np.float64, 2.0 ** -1030),
                                     (np.float32, 2.0 ** 120), (np.float64, 2.0 ** 1015)])
def test_subnormal_and_huge_columns(method, dtype, v):
    """Columns of subnormal or near-overflow size: each method rescales by a power of two
    (Gram-based and Gram-Schmidt methods) or forms its reflectors as xLARFG does (the batched
    kernel), so Q stays orthonormal and no operation overflows; R's error is the absolute
    underflow term (a subnormal R cannot be stored to relative accuracy)."""
    A = (_PATTERN * v).astype(dtype)
    fmt = "fp32" if dtype == np.float32 else "fp64"
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        Q, R, info = lpc.qr(A, method=method, rng=0)
    assert np.all(np.isfinite(Q)) and np.all(np.isfinite(R))
    orth_method = "rand_cholqr" if info.method == "rand_cholqr" else "householder"
    assert orthogonality_loss(Q) <= qr_bound(orth_method, 4, 2, 1.0, fmt)
    _assert_resid_within_underflow(A, Q, R, fmt)
    if method not in ("auto", "householder", "tsqr", "batched"):
        assert info.method == method  # rescaled, not a fallback


@pytest.mark.parametrize("method", ["auto", "householder", "batched", "cholqr2", "cgs2", "tsqr"])
def test_smallest_subnormals_every_namespace(xp, method):
    """Entries of one and two smallest subnormals: the array-API Householder (torch, strict,
    and every emulation) forms τ and v from scaled ratios, so Q stays orthonormal there too."""
    for dtype, v in [(np.float32, 2.0 ** -149), (np.float64, 2.0 ** -1074)]:
        A0 = (_PATTERN * v).astype(dtype)
        fmt = "fp32" if dtype == np.float32 else "fp64"
        # emulating the input's own format runs the array-API reference code on NumPy too
        opts = {"emulate": fmt} if B.is_numpy(xp) and method != "auto" else {}
        Q, R, info = lpc.qr(xp.asarray(A0), method=method, **opts)
        Qn, Rn = to_numpy(Q), to_numpy(R)
        assert np.all(np.isfinite(Qn)) and np.all(np.isfinite(Rn))
        assert orthogonality_loss(Qn) <= qr_bound("householder", 4, 2, 1.0, fmt)
        _assert_resid_within_underflow(A0, Qn, Rn, fmt)


def test_batched_kernel_mixes_subnormal_and_normal_lanes():
    """One SIMD lane group holding fp64 matrices of subnormal size beside ordinary ones: the
    rescaled reflectors of some lanes leave the others bit-identical to an unmixed batch."""
    rng = np.random.default_rng(5)
    base = rng.standard_normal((40, 6, 4))
    scales = np.where(np.arange(40) % 3 == 0, 2.0 ** -1050, 1.0)
    A = base * scales[:, None, None]
    Q, R, info = lpc.qr(A, method="batched")
    assert info.method == "batched"
    normal = scales == 1.0
    Qn, Rn, _ = lpc.qr(np.ascontiguousarray(A[normal]), method="batched")
    np.testing.assert_array_equal(Q[normal], Qn)
    np.testing.assert_array_equal(R[normal], Rn)
    assert np.max(orthogonality_loss(Q)) <= qr_bound("householder", 6, 4, 1.0, "fp64")
    _assert_resid_within_underflow(A[~normal], Q[~normal], R[~normal], "fp64")


@st.composite
def _scaled_matrices(draw):
    """Entries of a few significant bits times 2^e, e anywhere from the subnormal range to just
    below overflow, for the whole matrix or per column (so the algorithms' rescaling, not the
    data, is what is tested)."""
    m = draw(st.integers(1, 10))
    n = draw(st.integers(1, m))
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    fi = np.finfo(dtype)
    exponents = st.integers(int(np.log2(fi.smallest_subnormal)) + 2, fi.maxexp - 6)
    if draw(st.booleans()):  # one scale for the whole matrix
        e = np.full(n, draw(exponents))
    else:  # graded: each column its own scale (κ up to 2^±2000)
        e = draw(hnp.arrays(np.int64, (n,), elements=exponents))
    M = draw(hnp.arrays(np.int8, (m, n), elements=st.integers(-15, 15)))
    return np.ldexp(M.astype(np.float64), e[None, :] - 4).astype(dtype)


def _in_library(A: np.ndarray, lib: str):
    if lib == "torch":
        import torch

        return torch.from_numpy(A.copy())
    if lib == "array_api_strict":
        import array_api_strict

        return array_api_strict.asarray(A)
    return A


def _check_any_exponent(A, method, lib):
    m, n = A.shape
    fmt = "fp32" if A.dtype == np.float32 else "fp64"
    X = _in_library(A, lib)
    # NumPy-backed libraries raise on any inf or NaN produced inside (torch has no such switch;
    # there the finiteness of the results is what is checked)
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        Q, R, info = lpc.qr(X, method=method, rng=0)
    Q, R64 = to_numpy(Q), to_numpy(R).astype(np.float64)
    assert np.all(np.isfinite(R64)) and np.all(np.isfinite(Q))
    A64 = A.astype(np.float64)
    e = -int(np.frexp(np.max(np.abs(A64)))[1])  # A64·2^e has max in [0.5, 1): exact
    kappa = np.linalg.cond(np.ldexp(A64, e)) if np.any(A64) else 1.0
    # the one-pass methods' bounds grow with κ (uκ², uκ); a fallback is held to Householder's
    orth_method = method if info.method == method and method in ("cholqr", "mgs", "rand_cholqr") \
        else "householder"
    assert orthogonality_loss(Q) <= qr_bound(orth_method, m, n, kappa, fmt)
    _assert_resid_within_underflow(A64, Q, R64, fmt, c=4.0)


@settings(max_examples=60, deadline=None)
@given(A=_scaled_matrices(), method=st.sampled_from(_ALL_METHODS))
def test_property_any_exponent_range(A, method):
    """From subnormal to near-overflow entries: orthonormal Q and a backward-stable R (up to the
    absolute underflow term), never a non-finite value or an exception."""
    _check_any_exponent(A, method, "numpy")


@pytest.mark.parametrize("lib", ["array_api_strict", "torch"])
@settings(max_examples=25, deadline=None)
@given(A=_scaled_matrices(), method=st.sampled_from(_ALL_METHODS))
def test_property_any_exponent_range_other_libraries(lib, A, method):
    """The same through the array-API code paths (our Householder, Cholesky, triangular solves)."""
    if lib == "torch":
        pytest.importorskip("torch")
    _check_any_exponent(A, method, lib)


# ----------------------------------------------------------------------------- Q only
@pytest.mark.parametrize("shape", [(3, 12, 12), (2, 40, 40), (50, 6)])
@pytest.mark.parametrize("comp", ["fp32", "fp64"])
def test_orthonormal_basis_is_the_q_of_qr(xp, shape, comp):
    """orthonormal_basis returns the Q that lpc.qr computes, bit for bit (batched kernel for
    small stacks, Householder beyond, a single matrix through qr), and it is orthonormal."""
    from linalg_pc.qr_methods import orthonormal_basis

    A = xp.asarray(np.random.default_rng(11).standard_normal(shape).astype(
        np.float32 if comp == "fp32" else np.float64))
    Q = orthonormal_basis(A, compute=comp)
    ref = lpc.qr(A, compute=comp, storage=comp).Q
    np.testing.assert_array_equal(to_numpy(Q), to_numpy(ref))
    Qh = to_numpy(Q).astype(np.float64)
    n = shape[-1]
    u = np.finfo(np.float32 if comp == "fp32" else np.float64).eps / 2
    err = np.abs(np.swapaxes(Qh, -1, -2) @ Qh - np.eye(n)).max()
    assert err <= 10 * shape[-2] * u
