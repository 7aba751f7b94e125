"""CholeskyQR streamed over row blocks of A (NumPy): accuracy against fp64 LAPACK, the fallback
chain, memory, threads, and the block kernels against the conversion path."""

import tracemalloc

import ml_dtypes
import numpy as np
import pytest

import linalg_pc as lpc
from linalg_pc.analysis import orthogonality_loss, randsvd
from linalg_pc.analysis.bounds import qr_bound, storage_floor, storage_resid_floor
from linalg_pc.qr_methods._operands import STREAM_MIN_ENTRIES

cpu_rowpass = pytest.importorskip("linalg_pc._kernels.cpu_rowpass")
pytestmark = pytest.mark.skipif(not cpu_rowpass.available(np.float32),
                                reason="NumPy's BLAS is not reachable for the row passes")

U32 = lpc.unit_roundoff("fp32")
DTYPES = {"bf16": ml_dtypes.bfloat16, "fp16": np.float16, "fp32": np.float32}


def _matrix(m, n, kappa, dtype, seed=0):
    """A randsvd matrix stored in ``dtype``; returns it and its exact fp64 value."""
    A = randsvd(m, n, kappa, dtype="fp64", rng=seed).A.astype(DTYPES[dtype])
    return A, A.astype(np.float32).astype(np.float64)


def _lapack_r(A64):
    R = np.linalg.qr(A64, mode="r")
    return R * np.sign(np.diagonal(R))[:, None]


def _resid(A64, Q, R):
    return np.linalg.norm(A64 - Q.astype(np.float64) @ R.astype(np.float64)) / np.linalg.norm(A64)


@pytest.mark.parametrize("dtype", ["bf16", "fp16", "fp32"])
@pytest.mark.parametrize("m,n,kappa", [(20001, 8, 1.0), (6000, 24, 1e2), (40000, 5, 3e3)])
def test_streamed_cholqr2_against_fp64_lapack(dtype, m, n, kappa):
    """fp32 Q and R of the streamed passes: O(u) orthogonality and residual (the CholeskyQR2
    bounds), R within u·κ of fp64 LAPACK's (positive diagonal)."""
    assert m * n >= STREAM_MIN_ENTRIES  # the streamed path runs
    A, A64 = _matrix(m, n, kappa, dtype)
    Q, R, info = lpc.qr(A, storage="fp32")
    assert info.method == "cholqr2" and info.backend == "lapack" and not info.fallbacks
    assert Q.dtype == np.float32 and R.dtype == np.float32
    assert orthogonality_loss(Q) <= qr_bound("cholqr2", m, n, kappa, "fp32")
    assert _resid(A64, Q, R) <= qr_bound("cholqr2", m, n, kappa, "fp32", quantity="resid")
    Rl = _lapack_r(A64)
    err = np.linalg.norm(R * np.sign(np.diagonal(R))[:, None] - Rl) / np.linalg.norm(Rl)
    kappa = float(np.linalg.cond(A64))  # of the stored matrix (rounding moves it)
    assert err <= kappa * qr_bound("cholqr2", m, n, kappa, "fp32", quantity="resid")


@pytest.mark.parametrize("dtype", ["bf16", "fp16"])
def test_16bit_q_is_the_rounding_of_the_fp32_q(dtype):
    """Q returned in A's 16-bit format (written block by block) is the rounding of the fp32 Q of
    the same passes to within one rounding, and its orthogonality is at the storage floor."""
    m, n = 20000, 16
    A, A64 = _matrix(m, n, 10.0, dtype, seed=1)
    Q16, R16, info = lpc.qr(A)
    Q32, R32, _ = lpc.qr(A, storage="fp32")
    assert Q16.dtype == A.dtype and R16.dtype == A.dtype and info.method == "cholqr2"
    u16 = lpc.unit_roundoff(dtype)
    half_sub = float(ml_dtypes.finfo(A.dtype).smallest_subnormal) / 2  # subnormal Q entries
    d = np.abs(Q16.astype(np.float64) - Q32)
    assert np.all(d <= (u16 + 2 * U32) * np.abs(Q32) + half_sub)
    assert orthogonality_loss(Q16) <= storage_floor(m, n, dtype) * 4 + qr_bound(
        "cholqr2", m, n, 10.0, "fp32")
    assert _resid(A64, Q16, R16) <= storage_resid_floor(m, n, dtype) + qr_bound(
        "cholqr2", m, n, 10.0, "fp32", quantity="resid")


def test_mode_r_gives_the_r_of_the_reduced_factorization():
    A, _ = _matrix(30000, 16, 50.0, "bf16", seed=2)
    R = lpc.qr(A, mode="r").R
    Rq = lpc.qr(A).R
    np.testing.assert_allclose(R.astype(np.float64), Rq.astype(np.float64), rtol=0,
                               atol=4 * lpc.unit_roundoff("bf16") * float(np.abs(Rq).max()))
    assert lpc.qr(A, mode="r").Q is None


@pytest.mark.parametrize("kappa,dtype", [(3e5, "fp32"), (3e5, "bf16"), (1e9, "fp32")])
def test_fallback_chain_streamed(kappa, dtype):
    """Past CholeskyQR2's range (κ > u^(-1/2)) the chain runs on the streamed operand: a third
    pass, shifted CholeskyQR3 (more passes over A) or Householder on the decoded A; O(u)."""
    m, n = 20000, 16
    A, A64 = _matrix(m, n, kappa, dtype, seed=3)
    if dtype == "bf16":  # rounding to bf16 would perturb κ down to ~1/u_bf16: make it exact
        bits = A.view(np.uint16)
        bits[:, -1] = bits[:, 0]
        i = int(np.argmin(np.abs(A64[:, 0]) + (A64[:, 0] == 0)))
        bits[i, -1] += 1  # the last column is the first but for one ulp of its smallest entry
        A64 = A.astype(np.float64)
        kappa = float(np.linalg.cond(A64))
        assert kappa > 1e6
    A0 = A.copy()
    Q, R, info = lpc.qr(A, storage="fp32")
    # a fallback, or (where the rounded Gram matrix still has a Cholesky factor) a third pass
    assert (info.fallbacks and info.fallbacks[0].startswith("cholqr2 -> ")) or info.passes > 2
    np.testing.assert_array_equal(A.view(np.uint8), A0.view(np.uint8))
    assert orthogonality_loss(Q) <= qr_bound(info.method, m, n, kappa, "fp32")
    assert _resid(A64, Q, R) <= qr_bound(info.method, m, n, kappa, "fp32", quantity="resid")


@pytest.mark.parametrize("method", ["cholqr", "scholqr3"])
def test_other_cholesky_methods_streamed(method):
    m, n = 20000, 12
    A, A64 = _matrix(m, n, 20.0, "bf16", seed=4)
    Q, R, info = lpc.qr(A, method=method, storage="fp32")
    assert info.method == method
    assert orthogonality_loss(Q) <= qr_bound(method, m, n, 20.0, "fp32")
    assert _resid(A64, Q, R) <= qr_bound(method, m, n, 20.0, "fp32", quantity="resid")


@pytest.mark.parametrize("e", [100, -100])
def test_power_of_two_scaling_streamed(e):
    """A·2^e with e past the Gram matrix's range: the passes scale the decoded blocks (exact),
    Q is that of A, R is 2^e·R(A)."""
    A, _ = _matrix(20000, 8, 10.0, "fp32", seed=5)
    As = (A.astype(np.float64) * 2.0 ** e).astype(np.float32)
    Q, R, info = lpc.qr(As, storage="fp64" if e > 0 else "fp32")
    Q1, R1, _ = lpc.qr(A)
    assert any("scaled by 2^" in note for note in info.notes)
    np.testing.assert_allclose(Q, Q1, rtol=0, atol=8 * U32)
    np.testing.assert_allclose(R / 2.0 ** e, R1, rtol=16 * U32, atol=16 * U32 * abs(R1).max())


@pytest.mark.parametrize("bad", [np.nan, np.inf])
@pytest.mark.parametrize("dtype", ["bf16", "fp32"])
def test_non_finite_input_raises(bad, dtype):
    A, _ = _matrix(20000, 8, 1.0, dtype)
    A[12345, 3] = bad
    with pytest.raises(ValueError, match="A"):
        lpc.qr(A)


def test_non_contiguous_input():
    A, A64 = _matrix(20000, 16, 10.0, "bf16", seed=6)
    F = np.asfortranarray(A)
    S = np.repeat(A, 2, axis=1)[:, ::2]
    for X in (F, S):
        Q, R, info = lpc.qr(X, storage="fp32")
        assert orthogonality_loss(Q) <= qr_bound("cholqr2", 20000, 16, 10.0, "fp32")
        assert _resid(A64, Q, R) <= qr_bound("cholqr2", 20000, 16, 10.0, "fp32", "algorithm",
                                             quantity="resid")


@pytest.mark.parametrize("dtype,out_bytes", [("bf16", 2), ("fp32", 4)])
def test_peak_memory_is_q_plus_blocks(dtype, out_bytes):
    """No compute-dtype copy of A: the peak of the call's allocations is Q, R and O(block·n +
    n²) (the old path allocated a decoded fp32 copy of A, twice a bf16 Q, on top of Q)."""
    m, n = 100000, 16
    A = np.random.default_rng(7).standard_normal((m, n)).astype(DTYPES[dtype])
    lpc.qr(A)  # warm-up: compilation, thread pool
    lpc.set_buffer_cache(0)
    try:
        tracemalloc.start()
        Q, R, info = lpc.qr(A)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    finally:
        lpc.set_buffer_cache(256 << 20)
    threads = 4
    blocks = threads * cpu_rowpass.BLOCK_BYTES + (cpu_rowpass.SEGMENTS + 8) * n * n * 8
    assert Q.nbytes == m * n * out_bytes
    assert peak <= Q.nbytes + blocks + (1 << 20), (peak, Q.nbytes, blocks)


def test_result_does_not_depend_on_the_thread_count():
    threadpoolctl = pytest.importorskip("threadpoolctl")
    A, _ = _matrix(50001, 16, 100.0, "bf16", seed=8)
    Q, R, _ = lpc.qr(A)
    before = threadpoolctl.threadpool_info()
    with threadpoolctl.threadpool_limits(1, "blas"):
        Q1, R1, _ = lpc.qr(A)
    assert threadpoolctl.threadpool_info() == before  # the passes restore the BLAS threads
    np.testing.assert_array_equal(Q.view(np.uint16), Q1.view(np.uint16))
    np.testing.assert_array_equal(R.view(np.uint16), R1.view(np.uint16))


def test_concurrent_calls_restore_the_blas_threads():
    """Passes running at once in several threads restore NumPy's BLAS thread count once, when
    the last ends, and each gets the result it gets alone."""
    threadpoolctl = pytest.importorskip("threadpoolctl")
    from concurrent.futures import ThreadPoolExecutor

    mats = [_matrix(30000, 12, 10.0, "bf16", seed=s)[0] for s in range(4)]
    alone = [lpc.qr(A).R.view(np.uint16) for A in mats]
    before = threadpoolctl.threadpool_info()
    with ThreadPoolExecutor(4) as ex:
        together = list(ex.map(lambda A: lpc.qr(A).R.view(np.uint16), mats * 2))
    assert threadpoolctl.threadpool_info() == before
    for i, R in enumerate(together):
        np.testing.assert_array_equal(R, alone[i % 4])


def test_block_blas_calls_are_single_threaded_in_every_pass():
    """Every segment of a pass runs its BLAS calls on one BLAS thread, a one-block pass (one
    segment, run by the calling thread alone) included, and the count is restored after."""
    blas = cpu_rowpass._blas()
    if blas is None:
        pytest.skip("the row-block passes are not available with this BLAS")
    before = int(blas.get_threads())
    for m in (1000, 200000):  # one block, and several segments
        rp = cpu_rowpass.RowPasses(np.ones((m, 8), dtype=np.float32), np.float32)
        seen = []
        rp._run(lambda s, scratch, addr, seen=seen: seen.append(int(blas.get_threads())))
        assert len(seen) == rp.nseg and set(seen) == {1}
        assert int(blas.get_threads()) == before


# --------------------------------------------------------------------------- the pass object
def test_row_passes_gram_and_fill_against_fp64():
    """Uneven blocks and segments: the Gram matrix of the chain's X and X itself, encoded."""
    rng = np.random.default_rng(9)
    m, n = 5003, 7
    A = rng.standard_normal((m, n)).astype(ml_dtypes.bfloat16)
    A64 = A.astype(np.float64)
    R1 = np.triu(rng.standard_normal((n, n))) + 4 * np.eye(n)
    R1 = R1.astype(np.float32)
    rp = cpu_rowpass.RowPasses(A, np.float32, block_rows=97)
    assert rp.nseg == cpu_rowpass.SEGMENTS
    X64 = A64 @ np.linalg.inv(R1.astype(np.float64))
    tol = 4 * m * U32 * np.abs(X64).T @ np.abs(X64)
    assert np.all(np.abs(rp.gram([R1]) - X64.T @ X64) <= tol)
    assert np.all(np.abs(rp.gram() - A64.T @ A64) <= 4 * m * U32 * np.abs(A64).T @ np.abs(A64))
    out = np.empty((m, n), ml_dtypes.bfloat16)
    rp.fill(out, [R1])
    W = np.empty((m, n), np.float32)
    G = rp.gram([R1], write=W)  # materialized into W
    np.testing.assert_array_equal(G, rp.gram([R1]))
    np.testing.assert_array_equal(out.view(np.uint16), lpc.to_storage(W, "bf16").view(np.uint16))
    assert np.abs(W - X64).max() <= 8 * n * U32 * np.abs(X64).max() * np.linalg.cond(R1)


def test_block_kernels_match_the_conversion_path():
    """bf16 decode and encode of the passes, bit for bit those of to_storage / from_storage,
    specials and ties included."""
    rng = np.random.default_rng(10)
    bits = rng.integers(0, 1 << 32, size=(300, 33), dtype=np.uint64).astype(np.uint32)
    bits[0, :8] = [0x7F800000, 0xFF800000, 0x7FC00001, 0xFFA00000, 0x00000001, 0x3F808000,
                   0x3F818000, 0x7F7FFFFF]
    x = bits.view(np.float32)
    enc = np.empty(x.shape, np.uint16)
    cpu_rowpass._encode_bf16(bits, enc)
    np.testing.assert_array_equal(enc, lpc.to_storage(x, "bf16").view(np.uint16))
    dec = np.empty(x.shape, np.uint32)
    cpu_rowpass._decode_bf16(enc[:, ::2], dec[:, :17])
    want = lpc.from_storage(enc[:, ::2].view(ml_dtypes.bfloat16), "fp32")
    np.testing.assert_array_equal(dec[:, :17], want.view(np.uint32))
