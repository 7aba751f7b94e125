"""lpc.qr of row-chunked Dask arrays on a 2-worker LocalCluster against the local lpc.qr."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest
from _dask_cluster import client, da  # noqa: F401 - the fixture

import linalg_pc as lpc

pytestmark = pytest.mark.usefixtures("client")

U32 = 2.0**-24
U64 = 2.0**-53


def _orth(Q):
    Q = np.asarray(Q, dtype=np.float64)
    return np.linalg.norm(Q.T @ Q - np.eye(Q.shape[1]), 2)


def _matrix(m, n, kappa, dtype, seed=0):
    rng = np.random.default_rng(seed)
    U, _ = np.linalg.qr(rng.standard_normal((m, n)))
    V, _ = np.linalg.qr(rng.standard_normal((n, n)))
    return ((U * np.logspace(0, -np.log10(kappa), n)) @ V.T).astype(dtype)


@pytest.mark.parametrize("method", ["cholqr2", "scholqr3", "rand_cholqr", "tsqr", "auto"])
@pytest.mark.parametrize("dtype,u", [(np.float32, U32),
                                     pytest.param(np.float64, U64, marks=pytest.mark.slow)])
def test_qr_matches_local(method, dtype, u):
    m, n = 6000, 12
    A = _matrix(m, n, 1e2, dtype)
    dA = da.from_array(A, chunks=(700, n))  # uneven last chunk
    Q, R, info = lpc.qr(dA, method=method, rng=1)
    loc = lpc.qr(A, method=method, rng=1)
    assert isinstance(Q, da.Array) and Q.chunks == dA.chunks
    assert isinstance(R, np.ndarray) and R.dtype == dtype
    Qn = Q.compute()
    assert Qn.dtype == dtype
    # the O(u) bounds of the local methods (docs/error-analysis.md): c·(mn + n(n+1))·u
    bound = 6 * (m * n + n * (n + 1)) * u
    assert _orth(Qn) <= bound
    assert np.linalg.norm(Qn.astype(np.float64) @ R - A) <= 5 * n * n * u * np.linalg.norm(A, 2)
    # R is the local R up to row signs (Householder-based methods choose their own signs)
    s = np.sign(np.diag(R)) * np.sign(np.diag(loc.R))
    assert np.abs(s[:, None] * R - loc.R).max() <= 50 * n * u * np.abs(loc.R).max() * 1e2
    assert info.method == loc.info.method
    assert info.requested == method and info.backend == "dask"
    assert info.fallbacks == loc.info.fallbacks


def test_qr_r_mode_and_storage():
    A = _matrix(4000, 8, 10, np.float32)
    dA = da.from_array(A, chunks=(1000, 8))
    res = lpc.qr(dA, mode="r")
    assert res.Q is None and res.info.mode == "r"
    res = lpc.qr(dA, storage="bf16")
    assert res.Q.dtype == ml_dtypes.bfloat16 and res.R.dtype == ml_dtypes.bfloat16
    Qn = res.Q.compute()
    assert Qn.dtype == ml_dtypes.bfloat16
    assert _orth(Qn) <= 4 * 8 * 2.0**-8  # one bf16 rounding of an orthonormal Q: ~ sqrt(n)·u


def test_qr_bf16_chunks_decoded_per_chunk():
    A = _matrix(4000, 8, 10, np.float32).astype(ml_dtypes.bfloat16)
    dA = da.from_array(A, chunks=(500, 8))
    Q, R, info = lpc.qr(dA)
    loc = lpc.qr(A)
    assert info.compute == "fp32" and info.storage == "bf16" == loc.info.storage
    assert Q.dtype == ml_dtypes.bfloat16
    # the decoded data are the same fp32 numbers: R agrees to the fp32 level before its bf16
    # rounding, so within two bf16 ulps
    Rd = R.astype(np.float32)
    Rl = loc.R.astype(np.float32)
    assert np.abs(Rd - Rl).max() <= 2 * 2.0**-8 * np.abs(Rl).max()


def test_ill_conditioned_takes_the_local_fallback():
    A = _matrix(5000, 10, 1e7, np.float32)  # past u^(-1/2) in fp32: CholQR2 breaks down
    dA = da.from_array(A, chunks=(1000, 10))
    Q, R, info = lpc.qr(dA)
    loc = lpc.qr(A)
    assert info.method == loc.info.method != "cholqr2"
    assert [f.split(":")[0] for f in info.fallbacks] == [f.split(":")[0]
                                                         for f in loc.info.fallbacks]
    assert _orth(Q.compute()) <= 6 * (5000 * 10 + 110) * U32


def test_rank_deficient_takes_the_local_fallback():
    A = _matrix(3000, 6, 10, np.float64)
    A[:, 5] = A[:, 0]  # exactly rank deficient
    dA = da.from_array(A, chunks=(800, 6))
    Q, R, info = lpc.qr(dA)
    loc = lpc.qr(A)
    assert info.method == loc.info.method
    assert [f.split(":")[0] for f in info.fallbacks] == [f.split(":")[0]
                                                         for f in loc.info.fallbacks]
    assert np.linalg.norm(Q.compute() @ R - A) <= 1e3 * U64 * np.linalg.norm(A)


def test_stack_is_mapped_over_batch_chunks_bit_for_bit():
    rng = np.random.default_rng(3)
    S = rng.standard_normal((50, 8, 5))
    dS = da.from_array(S, chunks=(16, 8, 5))
    Q, R, info = lpc.qr(dS)
    loc = lpc.qr(S)
    assert Q.chunks[0] == dS.chunks[0]
    np.testing.assert_array_equal(Q.compute(), loc.Q)
    np.testing.assert_array_equal(R.compute(), loc.R)
    assert info.method == loc.info.method


@pytest.mark.parametrize("kappa", [1e2, 1e6])
def test_persisted_input_matches_local(client, kappa):  # noqa: F811 - the fixture
    """A held by the workers (the benchmark's setting): Q, R, the passes and the fallbacks are
    those of the local run to O(u)."""
    m, n = 6000, 12
    A = _matrix(m, n, kappa, np.float32, seed=4)
    dA = client.persist(da.from_array(A, chunks=(700, n)))
    Q, R, info = lpc.qr(dA)
    loc = lpc.qr(A)
    assert info.method == loc.info.method and info.passes == loc.info.passes
    assert [f.split(":")[0] for f in info.fallbacks] == [f.split(":")[0]
                                                         for f in loc.info.fallbacks]
    Qn = Q.compute()
    assert Qn.dtype == np.float32 and Q.chunks == dA.chunks
    assert _orth(Qn) <= 6 * (m * n + n * (n + 1)) * U32
    assert np.linalg.norm(Qn.astype(np.float64) @ R - A) <= 5 * n * n * U32 * np.linalg.norm(A, 2)


@pytest.mark.parametrize("fin,fs", [("fp32", "fp32"), ("bf16", "bf16"), ("fp16", "fp32"),
                                    ("fp32", "bf16")])
def test_chunk_tasks_stream_like_the_whole_block_formula(fin, fs):
    """The chunk tasks (streamed row passes: blocks decoded into a scratch, solves fused with
    the Gram product) against the whole block decoded and solved in fp64."""
    from linalg_pc._formats import get_format
    from linalg_pc.distributed import qr as dq

    rng = np.random.default_rng(5)
    m, n = 9000, 16
    dt = {"fp32": np.float32, "bf16": ml_dtypes.bfloat16, "fp16": np.float16}[fin]
    Ab = (rng.standard_normal((m, n)) * 3).astype(dt)
    A64 = Ab.astype(np.float64)
    fc = get_format("fp32")
    assert dq._passes(Ab, fc) is not None  # the streamed path runs for these blocks
    R1 = np.linalg.qr(A64, mode="r")
    R1 = (R1 * np.sign(np.diag(R1))[:, None]).astype(np.float32)
    R2 = np.triu(np.eye(n) + 1e-3 * rng.standard_normal((n, n))).astype(np.float32)
    X = A64 * 2.0**-3
    for R in (R1, R2):
        X = np.linalg.solve(R.astype(np.float64).T, X.T).T
    G = dq._gram_task(Ab, get_format(fin), fc, -3, [R1, R2])
    assert G.dtype == np.float32
    tol = 40 * n * U32 * np.linalg.norm(X, 2) ** 2
    assert np.abs(G - X.T @ X).max() <= tol
    Q = dq._q_task(Ab, get_format(fin), fc, -3, [R1, R2], get_format(fs))
    assert Q.shape == (m, n) and Q.dtype == (ml_dtypes.bfloat16 if fs == "bf16" else np.float32)
    u_out = 2.0**-8 if fs == "bf16" else U32
    err = np.abs(Q.astype(np.float64) - X).max()
    assert err <= (u_out + 20 * n * U32) * np.abs(X).max()
