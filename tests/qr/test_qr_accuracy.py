"""LAPACK-style accuracy tests of every QR method (xQRT01 ratios and the calibrated bounds).

Every method runs on the matrix types of ``analysis.matrices.matrix_suite`` at sizes drawn from
{0, 1, 2, 3, 5, 10, 50}; the loss of orthogonality ‖I − QᵀQ‖₂ and the residual
‖A − QR‖_F/‖A‖_F must stay below ``analysis.bounds.qr_bound`` for the κ of the stored matrix
(which includes every fallback the method is documented to take), and the methods that are
O(u) whatever κ (Householder, TSQR, the batched kernel, and the CholeskyQR family through its
fallback chain) must also pass LAPACK's ratio test (< 30).
"""

from __future__ import annotations

import math
from functools import cache

import numpy as np
import pytest

import linalg_pc as lpc
from linalg_pc._backend import to_numpy
from linalg_pc.analysis import (
    LAPACK_THRESHOLD,
    factorization_error,
    lapack_ratios,
    matrix_suite,
    orthogonality_loss,
    randsvd,
)
from linalg_pc.analysis.bounds import qr_bound, qr_kappa_limit

ALL = ("householder", "cholqr", "cholqr2", "scholqr3", "rand_cholqr", "cgs2", "mgs", "bcgs2",
       "tsqr", "batched", "auto")
ANY_SHAPE = ("householder", "batched", "auto")
# O(u) for every κ: by construction or through the documented fallback chain.
LAPACK_CLASS = ("householder", "tsqr", "batched", "auto", "cholqr2", "scholqr3")

SHAPES = [(0, 0), (0, 3), (3, 0), (1, 1), (2, 1), (3, 2), (3, 3), (5, 3), (10, 5), (10, 10),
          (50, 10), (50, 50), (2, 3), (5, 10), (10, 50)]


def _options(method):
    return {"leaf_rows": 8} if method == "tsqr" else {"rng": 0}


@cache
def _suite(m, n, dtype):
    u = lpc.unit_roundoff(dtype)
    return matrix_suite(m, n, dtype=dtype, rng=1000 * m + n,
                        kappas=(1.0, 1e2, math.sqrt(0.1 / u), 0.1 / u))


def _check(method, T, dtype, res):
    Q, R, info = res
    m, n = T.A.shape
    k = min(m, n)
    assert Q.shape == (m, k) and R.shape == (k, n)
    assert Q.dtype == T.A.dtype and R.dtype == T.A.dtype
    R64 = to_numpy(R).astype(np.float64)
    assert np.array_equal(R64, np.triu(R64)), "R is not upper triangular"
    kap = T.kappa_stored
    orth = orthogonality_loss(Q)
    resid = factorization_error(T.A, Q, R)
    b_orth = qr_bound(method, m, n, kap, dtype)
    b_res = qr_bound(method, m, n, kap, dtype, quantity="resid")
    where = f"{method} {dtype} {m}x{n} {T.name} (kappa {kap:.2g}) used {info.method}"
    assert resid <= b_res, f"residual {resid:.3g} > {b_res:.3g}: {where}"
    assert orth <= b_orth, f"orthogonality {orth:.3g} > {b_orth:.3g}: {where}"
    if method in LAPACK_CLASS and m and n:
        r = lapack_ratios(T.A, Q, R, dtype)
        assert r["resid"] < LAPACK_THRESHOLD and r["orth"] < LAPACK_THRESHOLD, (r, where)


@pytest.mark.parametrize("dtype", ["fp64", "fp32"])
@pytest.mark.parametrize("method", ALL)
def test_lapack_style_suite(method, dtype):
    for m, n in SHAPES:
        if m < n and method not in ANY_SHAPE:
            continue
        for T in _suite(m, n, dtype):
            _check(method, T, dtype, lpc.qr(T.A, method=method, **_options(method)))


@pytest.mark.parametrize("method", ALL)
def test_suite_other_namespaces(xp, method):
    """The same checks on every array library (array_api_strict: fp32/fp64 only)."""
    for m, n in [(5, 3), (30, 10)]:
        for T in matrix_suite(m, n, dtype="fp32", rng=7, kappas=(1.0, 1e3), xp=xp):
            res = lpc.qr(T.A, method=method, **_options(method))
            assert type(res.R) is type(T.A)
            _check(method, T, "fp32", res)


# ----------------------------------------------------------------------------- κ sweeps
def _sweep(method, dtype, m, n, kappas, seed=0):
    for i, kap in enumerate(kappas):
        T = randsvd(m, n, kap, dtype=dtype, rng=seed + i)
        res = lpc.qr(T.A, method=method, **_options(method))
        _check(method, T, dtype, res)
        if kap <= qr_kappa_limit(method, dtype) and method in ("cholqr", "cholqr2", "mgs",
                                                                "cgs2", "bcgs2"):
            assert not res.info.fallbacks, (method, kap, res.info.fallbacks)


@pytest.mark.parametrize("dtype", ["fp64", "fp32"])
@pytest.mark.parametrize("method", ALL)
def test_kappa_sweep(method, dtype):
    u = lpc.unit_roundoff(dtype)
    top = min(qr_kappa_limit(method, dtype), 0.1 / u) if method != "auto" else 0.1 / u
    kappas = np.logspace(0, math.log10(top), 6)
    _sweep(method, dtype, 200, 20, kappas)


@pytest.mark.slow
@pytest.mark.parametrize("dtype", ["fp64", "fp32"])
@pytest.mark.parametrize("method", ALL)
def test_kappa_sweep_large(method, dtype):
    u = lpc.unit_roundoff(dtype)
    kappas = np.logspace(0, math.log10(0.1 / u), 10)
    _sweep(method, dtype, 2000, 50, kappas, seed=100)


def test_reference_calibration_fp32():
    """Measured calibration (fp32, 2000×50; docs/error-analysis.md): CholQR ≈ uκ², CholQR2 O(u) to
    κ = 1e4 (Yamamoto et al., ETNA 44, 2015)."""
    u = lpc.unit_roundoff("fp32")
    T = randsvd(2000, 50, 1e3, dtype="fp32", rng=3)
    one = orthogonality_loss(lpc.qr(T.A, method="cholqr").Q)
    two = orthogonality_loss(lpc.qr(T.A, method="cholqr2").Q)
    assert 1e-3 * u * 1e6 < one < 4 * u * 1e6
    assert two < 100 * u
    T = randsvd(2000, 50, 1e4, dtype="fp32", rng=4)
    res = lpc.qr(T.A, method="cholqr2")
    assert orthogonality_loss(res.Q) < 100 * u and not res.info.fallbacks


#: Safety factor on the typical one-rounding storage floor (it is a typical value, not a max).
STORAGE_FLOOR_SAFETY = 4.0


@pytest.mark.parametrize("fmt", ["bf16", "fp16"])
@pytest.mark.parametrize("method", ALL)
def test_suite_16bit_storage(method, fmt):
    """16-bit A, fp32 arithmetic, 16-bit Q and R: bound in fp32 plus one rounding to storage."""
    from linalg_pc.analysis.bounds import storage_floor, storage_resid_floor

    for m, n in [(0, 2), (1, 1), (5, 3), (10, 10), (50, 10), (5, 10)]:
        if m < n and method not in ANY_SHAPE:
            continue
        for T in matrix_suite(m, n, dtype=fmt, rng=11, kappas=(1.0, 10.0, 100.0)):
            Q, R, info = lpc.qr(T.A, method=method, **_options(method))
            assert Q.dtype == T.A.dtype and R.dtype == T.A.dtype and info.compute == "fp32"
            kap = T.kappa_stored
            b_orth = (qr_bound(method, m, n, kap, "fp32")
                      + STORAGE_FLOOR_SAFETY * storage_floor(m, n, fmt))
            b_res = (qr_bound(method, m, n, kap, "fp32", quantity="resid")
                     + storage_resid_floor(m, n, fmt))
            where = f"{method} {fmt} {m}x{n} {T.name} (kappa {kap:.2g}) used {info.method}"
            assert orthogonality_loss(Q) <= b_orth, where
            assert factorization_error(T.A, Q, R) <= b_res, where
