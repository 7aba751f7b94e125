"""Kernel layer: Numba CPU kernels vs the sequential variants, and the CuPy kernels (GPU only)."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest

from linalg_pc._kernels import cpu

BF16 = np.dtype(ml_dtypes.bfloat16)


def _probe():
    hi = np.arange(1 << 16, dtype=np.uint32) << 16
    return np.concatenate([hi, hi | 0x8000, hi | 0x7FFF, hi | 0x8001]).view(np.float32)


def test_parallel_and_sequential_agree_including_stochastic():
    x = np.random.default_rng(5).standard_normal(cpu.PARALLEL_THRESHOLD * 3).astype(np.float32)
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
