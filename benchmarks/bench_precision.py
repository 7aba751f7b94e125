"""Suite ``precision``: bf16 conversions against ml_dtypes ``astype`` (16M values; 4M quick).

Cases: fp32->bf16 nearest-even (fresh output, and into a preallocated buffer as an optimizer's
state would be), fp32->bf16 stochastic (against ml_dtypes' nearest-even astype: stochastic
rounding should cost no more than the plain cast), bf16->fp32 decode (fresh output, and into a
preallocated compute buffer), and round_to emulation (fp32 in, fp32 out) against the astype
round trip.

Fresh-output cases return a new array each call, as ``astype`` does. Ours writes it into memory
recycled from the previous call's freed result (``lpc.set_buffer_cache``); the "no recycling"
rows turn that off, so the output pages are faulted in on every call, as they are for
``astype`` (on virtual machines that return freed memory to the host this first touch varies by
several times from run to run). The ``out=`` rows show the conversion itself.

PyTorch rows (when torch is installed): the same conversions of a CPU tensor, which run the same
Numba kernels on the tensor's memory, against ours on the NumPy array of the same data (the
target: speedup >= 0.67, within 1.5x) and against PyTorch's own ``.bfloat16()`` / ``.float()``
where it applies (the results are compared bit for bit; stochastic rows check the bits against
ours on NumPy with the same seed).
"""

from __future__ import annotations

import ml_dtypes
import numpy as np
from harness import Case

import linalg_pc as lpc

BF16 = np.dtype(ml_dtypes.bfloat16)


def _bits_equal(ours, base) -> dict:
    o = np.asarray(ours)
    b = np.asarray(base)
    view = np.uint16 if o.dtype.itemsize == 2 else np.uint32
    return {"mismatches": int(np.count_nonzero(o.view(view) != b.view(view)))}


def _neighbours(x):
    def check(ours, base) -> dict:
        o = np.asarray(ours).view(np.uint16).astype(np.uint32) << 16
        lo = x.view(np.uint32) & 0xFFFF0000
        ok = (o == lo) | (o == lo + 0x10000)
        return {"not_neighbour": int(np.count_nonzero(~ok))}

    return check


def _no_recycling(f):
    def g():
        old = lpc.set_buffer_cache(0)
        try:
            return f()
        finally:
            lpc.set_buffer_cache(old)
    return g


def _host(a) -> np.ndarray:
    """A NumPy view of a result of either library (a torch bf16 tensor as int16)."""
    if isinstance(a, np.ndarray):
        return a
    import torch

    return a.view(torch.int16).numpy() if a.dtype == torch.bfloat16 else a.numpy()


def _bits_equal_any(ours, base) -> dict:
    return _bits_equal(_host(ours), _host(base))


def _torch_cases(x, s, out16, out32, label) -> list[Case]:
    try:
        import torch
    except ImportError:
        return []
    t = torch.from_numpy(x)  # the same memory
    ts = torch.from_numpy(s.view(np.int16)).view(torch.bfloat16)
    t_out16 = torch.empty(t.shape, dtype=torch.bfloat16)
    t_out32 = torch.empty(t.shape, dtype=torch.float32)
    acc = _bits_equal_any
    return [
        Case(f"torch fp32->bf16 nearest {label}", lambda: lpc.to_storage(t, "bf16"),
             lambda: lpc.to_storage(x, "bf16"), "ours on NumPy", accuracy=acc),
        Case(f"torch fp32->bf16 nearest {label} vs torch", lambda: lpc.to_storage(t, "bf16"),
             lambda: t.bfloat16(), "torch .bfloat16()", accuracy=acc),
        Case(f"torch fp32->bf16 nearest {label} out=",
             lambda: lpc.to_storage(t, "bf16", out=t_out16),
             lambda: lpc.to_storage(x, "bf16", out=out16), "ours on NumPy out=", accuracy=acc),
        Case(f"torch fp32->bf16 stochastic {label}",
             lambda: lpc.to_storage(t, "bf16", mode="stochastic", rng=1),
             lambda: lpc.to_storage(x, "bf16", mode="stochastic", rng=1), "ours on NumPy",
             accuracy=acc),
        Case(f"torch fp32->bf16 stochastic {label} vs torch",
             lambda: lpc.to_storage(t, "bf16", mode="stochastic", rng=1),
             lambda: t.bfloat16(), "torch .bfloat16() (nearest)",
             accuracy=lambda o, b: _neighbours(x)(_host(o), None)),
        Case(f"torch bf16->fp32 {label}", lambda: lpc.from_storage(ts, "fp32"),
             lambda: lpc.from_storage(s, "fp32"), "ours on NumPy", accuracy=acc),
        Case(f"torch bf16->fp32 {label} vs torch", lambda: lpc.from_storage(ts, "fp32"),
             lambda: ts.float(), "torch .float()", accuracy=acc),
        Case(f"torch bf16->fp32 {label} out=", lambda: lpc.from_storage(ts, "fp32", out=t_out32),
             lambda: lpc.from_storage(s, "fp32", out=out32), "ours on NumPy out=",
             accuracy=acc),
        Case(f"torch round_to fp32 bf16 {label}", lambda: lpc.round_to(t, "bf16"),
             lambda: lpc.round_to(x, "bf16"), "ours on NumPy", accuracy=acc),
        Case(f"torch round_to fp32 bf16 {label} vs torch", lambda: lpc.round_to(t, "bf16"),
             lambda: t.bfloat16().float(), "torch .bfloat16().float()", accuracy=acc),
        Case(f"torch round_to fp32 bf16 stochastic {label}",
             lambda: lpc.round_to(t, "bf16", mode="stochastic", rng=1),
             lambda: lpc.round_to(x, "bf16", mode="stochastic", rng=1), "ours on NumPy",
             accuracy=acc),
    ]


def cases(quick: bool) -> list[Case]:
    n = (1 << 22) if quick else (1 << 24)
    rng = np.random.default_rng(0)
    x = rng.standard_normal(n).astype(np.float32)
    s = x.astype(BF16)
    out16 = np.empty(n, BF16)
    out32 = np.empty(n, np.float32)
    label = f"{n // (1 << 20)}M"
    return _numpy_cases(x, s, out16, out32, label) + _torch_cases(x, s, out16, out32, label)


def _numpy_cases(x, s, out16, out32, label) -> list[Case]:
    return [
        Case(f"fp32->bf16 nearest {label}", lambda: lpc.to_storage(x, "bf16"),
             lambda: x.astype(BF16), "ml_dtypes astype", accuracy=_bits_equal),
        Case(f"fp32->bf16 nearest {label} no recycling",
             _no_recycling(lambda: lpc.to_storage(x, "bf16")),
             lambda: x.astype(BF16), "ml_dtypes astype", accuracy=_bits_equal),
        Case(f"fp32->bf16 nearest {label} out=", lambda: lpc.to_storage(x, "bf16", out=out16),
             lambda: x.astype(BF16), "ml_dtypes astype", accuracy=_bits_equal),
        Case(f"fp32->bf16 stochastic {label}",
             lambda: lpc.to_storage(x, "bf16", mode="stochastic", rng=1),
             lambda: x.astype(BF16), "ml_dtypes astype (nearest)", accuracy=_neighbours(x)),
        Case(f"bf16->fp32 {label}", lambda: lpc.from_storage(s, "fp32"),
             lambda: s.astype(np.float32), "ml_dtypes astype", accuracy=_bits_equal),
        Case(f"bf16->fp32 {label} no recycling", _no_recycling(lambda: lpc.from_storage(s, "fp32")),
             lambda: s.astype(np.float32), "ml_dtypes astype", accuracy=_bits_equal),
        Case(f"bf16->fp32 {label} out=", lambda: lpc.from_storage(s, "fp32", out=out32),
             lambda: s.astype(np.float32), "ml_dtypes astype", accuracy=_bits_equal),
        Case(f"round_to fp32 bf16 {label}", lambda: lpc.round_to(x, "bf16"),
             lambda: x.astype(BF16).astype(np.float32), "ml_dtypes astype x2",
             accuracy=_bits_equal),
    ]
