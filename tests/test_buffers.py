"""Recycled output memory: reuse only what nothing can reach, limits, the switch, and the
conversion results it carries."""

import gc

import ml_dtypes
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import linalg_pc as lpc
from linalg_pc import _buffers

BIG = 1 << 19  # fp32 entries: 2 MiB, above MIN_BYTES


@pytest.fixture(autouse=True)
def fresh_cache(buffer_cache):
    """Every test here starts from an empty cache at its default size."""
    yield


def _ptr(a):
    return a.__array_interface__["data"][0]


def test_empty_is_an_ordinary_array():
    a = _buffers.empty((512, 1024), np.float32)
    assert a.shape == (512, 1024) and a.dtype == np.float32
    assert a.flags.c_contiguous and a.flags.writeable
    a[...] = 3.0
    assert float(a.sum()) == 3.0 * a.size
    b = _buffers.empty(BIG, ml_dtypes.bfloat16)
    assert b.dtype == ml_dtypes.bfloat16 and b.shape == (BIG,)
    small = _buffers.empty(10, np.float32)
    assert small.flags.owndata  # below MIN_BYTES: numpy.empty


def test_freed_block_is_handed_out_again():
    a = _buffers.empty(BIG, np.float32)
    p = _ptr(a)
    del a
    gc.collect()
    assert lpc.buffer_cache_info()["idle_blocks"] == 1
    hits = lpc.buffer_cache_info()["hits"]
    b = _buffers.empty((BIG // 2, 2), np.float32)  # same byte size, other shape
    assert _ptr(b) == p
    assert lpc.buffer_cache_info()["hits"] == hits + 1


def test_a_live_view_keeps_its_block():
    a = _buffers.empty(BIG, np.float32)
    a[...] = 7.0
    v = a[::2].view(np.uint32)  # a view of a view
    t = a.reshape(2, -1).T
    del a
    gc.collect()
    assert lpc.buffer_cache_info()["idle_blocks"] == 0
    b = _buffers.empty(BIG, np.float32)
    b[...] = -1.0
    assert not np.shares_memory(b, v) and not np.shares_memory(b, t)
    assert np.all(v == np.float32(7.0).view(np.uint32)) and np.all(t == 7.0)
    del v
    gc.collect()
    assert lpc.buffer_cache_info()["idle_blocks"] == 0  # t still holds it
    del t
    gc.collect()
    assert lpc.buffer_cache_info()["idle_blocks"] == 1


def test_torch_tensor_keeps_its_block():
    torch = pytest.importorskip("torch")
    a = _buffers.empty(BIG, np.float32)
    a[...] = 2.0
    t = torch.from_numpy(a)
    del a
    gc.collect()
    b = _buffers.empty(BIG, np.float32)
    b[...] = 0.0
    assert float(t.sum()) == 2.0 * BIG


def test_limits_and_switch():
    arrays = [_buffers.empty(BIG, np.float32) for _ in range(_buffers.MAX_PER_SIZE + 2)]
    del arrays
    gc.collect()
    assert lpc.buffer_cache_info()["idle_blocks"] == _buffers.MAX_PER_SIZE
    lpc.set_buffer_cache(3 * BIG)  # bytes: room for 0 blocks of 4·BIG bytes
    assert lpc.buffer_cache_info()["idle_bytes"] <= 3 * BIG
    assert lpc.set_buffer_cache(0) == 3 * BIG
    assert lpc.buffer_cache_info()["idle_blocks"] == 0
    a = _buffers.empty(BIG, np.float32)
    assert a.flags.owndata  # off: numpy.empty
    for bad in (-1, 1.5, True, "1"):
        with pytest.raises(ValueError, match="max_bytes"):
            lpc.set_buffer_cache(bad)


@pytest.mark.parametrize("recycle", [True, False])
def test_conversions_are_bit_identical_with_and_without_recycling(recycle):
    lpc.set_buffer_cache(_buffers.DEFAULT_MAX_BYTES if recycle else 0)
    x = np.random.default_rng(0).standard_normal(BIG).astype(np.float32)
    want = x.astype(ml_dtypes.bfloat16)
    for _ in range(3):  # the second and third results live in recycled memory
        b = lpc.to_storage(x, "bf16")
        np.testing.assert_array_equal(b.view(np.uint16), want.view(np.uint16))
        f = lpc.from_storage(b)
        np.testing.assert_array_equal(f, want.astype(np.float32))
        r = lpc.round_to(x, "bf16")
        np.testing.assert_array_equal(r, want.astype(np.float32))
        del b, f, r


@settings(max_examples=30, deadline=None)
@given(ops=st.lists(st.tuples(st.sampled_from(["alloc", "view", "free"]), st.integers(0, 7),
                              st.sampled_from([1, 2])), min_size=1, max_size=40))
def test_no_two_live_arrays_share_a_block(ops):
    live = []
    for op, i, size in ops:
        if op == "alloc":
            live.append(_buffers.empty(size * BIG // 4, np.float32))
        elif op == "view" and live:
            live.append(live[i % len(live)][1:])
        elif op == "free" and live:
            live.pop(i % len(live))
            gc.collect()
    owners = {}
    for k, a in enumerate(live):
        owner = a
        while isinstance(owner.base, np.ndarray):
            owner = owner.base
        owners.setdefault(id(owner.base if owner.base is not None else owner), []).append(k)
    groups = list(owners.values())
    for g1 in range(len(groups)):
        for g2 in range(g1 + 1, len(groups)):
            a, b = live[groups[g1][0]], live[groups[g2][0]]
            assert not np.shares_memory(a, b)
