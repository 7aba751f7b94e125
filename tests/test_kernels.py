"""Kernel layer: Numba CPU kernels vs the sequential variants, and the CuPy kernels (GPU only)."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest

from linalg_pc._kernels import _twins, cpu

BF16 = np.dtype(ml_dtypes.bfloat16)


def _probe():
    hi = np.arange(1 << 16, dtype=np.uint32) << 16
    return np.concatenate([hi, hi | 0x8000, hi | 0x7FFF, hi | 0x8001]).view(np.float32)


def test_parallel_and_sequential_agree_including_stochastic():
    n = _twins.POLICIES["convert"][0] * 3
    x = np.random.default_rng(5).standard_normal(n).astype(np.float32)
    src = x.view(np.uint32)
    for seed in (None, 12345):
        par = cpu.f32_to_bf16_bits(x, seed=seed)
        seq = np.empty_like(par)
        if seed is None:
            cpu._f32_to_bf16_rne_seq(src, seq)
        else:
            cpu._f32_to_bf16_sr_seq(src, seq, np.uint32(seed))
        np.testing.assert_array_equal(par, seq)
        fused = cpu.f32_round_bf16(x, seed=seed)
        np.testing.assert_array_equal(fused.view(np.uint32), par.astype(np.uint32) << 16)


def test_stochastic_kernel_only_neighbours():
    x = _probe()
    finite = np.isfinite(x)
    lo = x.view(np.uint32) & 0xFFFF0000
    sr = cpu.f32_to_bf16_bits(x, seed=99).astype(np.uint32) << 16
    ok = (sr == lo) | (sr == lo + 0x10000)
    assert np.all(ok[finite])
    assert np.all(np.isnan(sr.view(np.float32)[np.isnan(x)]))


def test_multidimensional_and_noncontiguous():
    x = np.random.default_rng(6).standard_normal((40, 30)).astype(np.float32)[:, ::3]
    ref = x.astype(BF16).view(np.uint16)
    np.testing.assert_array_equal(cpu.f32_to_bf16_bits(x), ref)
    np.testing.assert_array_equal(cpu.bf16_bits_to_f32(ref), x.astype(BF16).astype(np.float32))


@pytest.mark.gpu
def test_cupy_kernels_match_ml_dtypes():
    from conftest import HAS_CUPY

    if not HAS_CUPY:
        pytest.skip("no usable CUDA device for CuPy")
    import cupy

    from linalg_pc._kernels import gpu

    x = _probe()
    with np.errstate(invalid="ignore"):
        ref = x.astype(BF16).view(np.uint16)
    got = cupy.asnumpy(gpu.f32_to_bf16_bits(cupy.asarray(x)))
    np.testing.assert_array_equal(got, ref)
    dec = cupy.asnumpy(gpu.bf16_bits_to_f32(cupy.asarray(ref)))
    np.testing.assert_array_equal(dec.view(np.uint32), ref.astype(np.uint32) << 16)
    sr = cupy.asnumpy(gpu.f32_to_bf16_bits(cupy.asarray(x), seed=7)).astype(np.uint32) << 16
    lo = x.view(np.uint32) & 0xFFFF0000
    fin = np.isfinite(x)
    assert np.all(((sr == lo) | (sr == lo + 0x10000))[fin])


# --------------------------------------------------------------------------- column kernels
@pytest.mark.parametrize("dtype", [np.float32, np.float64, BF16, np.float16])
@pytest.mark.parametrize("shape", [(37, 29), (3, 21, 17), (2, 2, 9, 12)])
def test_column_kernels_bit_exact_against_numpy(dtype, shape):
    from linalg_pc._kernels import cpu_columns

    rng = np.random.default_rng(7)
    Q = (rng.standard_normal(shape) * 1e3).astype(dtype)
    Q.reshape(-1)[::5] = np.asarray(np.nan, dtype=dtype)  # NaN payloads, -0 copied as bits
    Q.reshape(-1)[1::7] = np.asarray(-0.0, dtype=dtype)
    m = shape[-1]
    for cols in (np.arange(m), np.array([0]), np.array([m - 1, 2, 5, 3]),
                 np.sort(rng.choice(m, m // 2, replace=False))):
        g = cpu_columns.gather_columns(Q, cols)
        assert g.flags.c_contiguous and g.dtype == Q.dtype
        np.testing.assert_array_equal(_ubits(g), _ubits(Q[..., cols]))
        new = (rng.standard_normal((*shape[:-1], cols.size))).astype(dtype)
        ref = Q.copy()
        ref[..., cols] = new
        out = cpu_columns.scatter_columns(Q, cols, new)
        assert out.flags.c_contiguous and not np.shares_memory(out, Q)
        np.testing.assert_array_equal(_ubits(out), _ubits(ref))


def test_column_kernels_strided_inputs_broadcast_and_parallel(monkeypatch):
    from linalg_pc._kernels import cpu_columns

    rng = np.random.default_rng(8)
    Q = rng.standard_normal((2, 60, 80)).astype(np.float32)[:, ::2, 1::2]  # not contiguous
    cols = np.array([1, 4, 5, 6, 30, 39])
    new = rng.standard_normal((30, 6)).astype(np.float32)  # broadcast over the batch
    ref = Q.copy()
    ref[..., cols] = new
    serial = cpu_columns.scatter_columns(Q, cols, new)
    np.testing.assert_array_equal(serial, ref)
    np.testing.assert_array_equal(cpu_columns.gather_columns(Q, cols), Q[..., cols])
    monkeypatch.setitem(_twins.POLICIES, "columns", (0, 1))
    np.testing.assert_array_equal(cpu_columns.scatter_columns(Q, cols, new), ref)
    np.testing.assert_array_equal(cpu_columns.gather_columns(Q, cols), Q[..., cols])
    with pytest.raises(TypeError):
        cpu_columns.scatter_columns(Q, cols, new.astype(np.float64))


def _ubits(a):
    return a.view({2: np.uint16, 4: np.uint32, 8: np.uint64}[a.dtype.itemsize])


@pytest.mark.parametrize("kernel", ["par", "seq"])
@pytest.mark.parametrize("n", [8, 9, 4093, (1 << 20) + 5])
def test_nontemporal_decode_bit_exact_at_every_alignment(kernel, n, monkeypatch):
    """The non-temporal bf16 -> fp32 kernel: ordinary head up to the first 32-byte aligned
    element, 8-lane stores, ordinary tail; every start offset of the output, both twins."""
    monkeypatch.setattr(cpu, "NT_MIN_BYTES", 0)  # take the non-temporal path at every size
    if kernel == "seq":
        monkeypatch.setitem(_twins.POLICIES, "convert", (1 << 62, 1))
    src = np.random.default_rng(n).integers(0, 1 << 16, n, dtype=np.uint16)
    want = src.astype(np.uint32) << 16
    for off in range(8):
        buf = np.full(n + 16, 0xDEADBEEF, dtype=np.uint32)
        dst = buf[off:off + n]
        cpu.decode_bf16_into(src, dst)
        np.testing.assert_array_equal(dst, want)
        assert np.all(buf[:off] == 0xDEADBEEF) and np.all(buf[off + n:] == 0xDEADBEEF)


def test_decode_into_an_unaligned_output(monkeypatch):
    monkeypatch.setattr(cpu, "NT_MIN_BYTES", 0)
    n = 1000
    src = np.random.default_rng(3).integers(0, 1 << 16, n, dtype=np.uint16)
    dst = np.zeros(4 * n + 1, np.uint8)[1:].view(np.uint32)  # not 4-byte aligned
    assert not dst.flags.aligned
    cpu.decode_bf16_into(src, dst)
    np.testing.assert_array_equal(dst, src.astype(np.uint32) << 16)


def test_large_decode_uses_nontemporal_path_and_matches_ml_dtypes():
    import linalg_pc as lpc

    n = cpu.NT_MIN_BYTES // 4 + 3
    x = np.random.default_rng(1).integers(0, 1 << 16, n, dtype=np.uint16).view(ml_dtypes.bfloat16)
    want = x.astype(np.float32)
    got = lpc.from_storage(x)
    np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32))  # NaNs included
    out = np.empty(n, np.float32)
    lpc.from_storage(x, out=out)
    np.testing.assert_array_equal(out.view(np.uint32), want.view(np.uint32))

