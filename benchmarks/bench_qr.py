"""QR benchmarks: ``lpc.qr`` against the QR a user would otherwise call, with the speed targets.

Cases (medians of alternating runs; ``speedup`` = baseline / ours):

- tall-skinny fp32 200000×64 and 1000000×128: ``lpc.qr(A)`` (auto -> CholeskyQR2) vs
  ``scipy.linalg.qr(A, mode="economic")``; target >= 4×, with ‖I − QᵀQ‖₂ <= max(10× scipy's, 1e-6)
  and ‖A − QR‖_F/‖A‖_F <= 1e-6;
- bf16 200000×64 (ml_dtypes): ``lpc.qr(A)`` vs upcast to fp32 + scipy QR + cast back; target
  >= 4×, at equal or better orthogonality of the returned bf16 Q;
- the tall cases also report ``peak_MB``, the peak of the allocations of one ``lpc.qr`` call
  (tracemalloc, buffer recycling off, Q included) beside ``q_MB``, Q's size: the passes stream
  over row blocks of A, so the difference is O(block·n + n²) (no compute-format copy of A);
- batched fp32 100000×8×8 and 270000×3×3: ``lpc.qr`` (Numba kernel) vs ``numpy.linalg.qr`` on the
  stack (target >= 5×), and vs ``torch.linalg.qr`` on CPU when torch is installed;
- square 2048×2048 fp32, method="auto": vs ``scipy.linalg.qr``; target within 1.1× (it is scipy);
- on a CUDA device (CuPy): batched 100000×8×8 vs ``cupy.linalg.qr``, tall 200000×64 vs
  ``cupy.linalg.qr``.

``--quick`` runs the same cases at smaller sizes (50000×64, 100000×128, bf16 50000×64,
20000×8×8, 50000×3×3, 512²) with 2-3 repeats, to finish in under a minute on 2 cores; the
targets are stated for the full sizes.
"""

from __future__ import annotations

import importlib.util
import tracemalloc

import ml_dtypes
import numpy as np
import scipy.linalg as sla
from harness import Case

import linalg_pc as lpc
from linalg_pc.analysis.metrics import factorization_error, orthogonality_loss


def _peak_mb(f):
    """Peak of the allocations of one call of ``f`` (MB; recycled buffers off)."""
    prev = lpc.set_buffer_cache(0)
    try:
        tracemalloc.start()
        out = f()
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    finally:
        lpc.set_buffer_cache(prev)
    del out
    return peak / 1e6


def _tall_accuracy(A):
    def acc(ours, base):
        Qo, Ro, info = ours
        Qb, Rb = base
        lo = orthogonality_loss(Qo)
        lb = orthogonality_loss(Qb)
        return {"method": info.method, "orth_ours": lo, "orth_scipy": lb,
                "fact_ours": factorization_error(A, Qo, Ro),
                "orth_ok": bool(lo <= max(10 * lb, 1e-6)),
                "peak_MB": _peak_mb(lambda: lpc.qr(A)), "q_MB": Qo.nbytes / 1e6}
    return acc


def _tall_case(m, n, repeats):
    A = np.random.default_rng(0).standard_normal((m, n)).astype(np.float32)
    return Case(name=f"tall fp32 {m}x{n}", ours=lambda: lpc.qr(A),
                baseline=lambda: sla.qr(A, mode="economic", check_finite=False),
                baseline_name="scipy.linalg.qr economic", accuracy=_tall_accuracy(A),
                repeats=repeats)


def _bf16_case(m, n, repeats):
    A = np.random.default_rng(1).standard_normal((m, n)).astype(ml_dtypes.bfloat16)

    def baseline():
        Q, R = sla.qr(A.astype(np.float32), mode="economic", check_finite=False)
        return Q.astype(ml_dtypes.bfloat16), R.astype(ml_dtypes.bfloat16)

    def acc(ours, base):
        Qo, Ro, info = ours
        lo = orthogonality_loss(Qo)
        lb = orthogonality_loss(base[0])
        return {"method": info.method, "orth_ours": lo, "orth_scipy": lb,
                "fact_ours": factorization_error(A, Qo, Ro),
                "orth_ok": bool(lo <= lb * 1.05),
                "peak_MB": _peak_mb(lambda: lpc.qr(A)), "q_MB": Qo.nbytes / 1e6}

    return Case(name=f"tall bf16 {m}x{n}", ours=lambda: lpc.qr(A), baseline=baseline,
                baseline_name="astype fp32 + scipy qr + astype bf16", accuracy=acc,
                repeats=repeats)


def _batched_accuracy(A):
    def acc(ours, base):
        Qo, Ro, info = ours
        Rb = base[1]
        d = np.abs(Qo.astype(np.float64) @ Ro - A).max()
        return {"method": info.method, "backend": info.backend, "max_abs_resid": float(d),
                "max_R_diff_vs_base": float(np.abs(np.abs(Ro) - np.abs(np.asarray(Rb))).max())}
    return acc


def _batched_cases(nb, d, repeats):
    A = np.random.default_rng(2).standard_normal((nb, d, d)).astype(np.float32)
    out = [Case(name=f"batched fp32 {nb}x{d}x{d}", ours=lambda: lpc.qr(A),
                baseline=lambda: np.linalg.qr(A), baseline_name="numpy.linalg.qr (stack)",
                accuracy=_batched_accuracy(A), repeats=repeats)]
    if importlib.util.find_spec("torch") is not None:
        import torch

        At = torch.from_numpy(A)

        def tq():
            Q, R = torch.linalg.qr(At)
            return Q.numpy(), R.numpy()

        out.append(Case(name=f"batched fp32 {nb}x{d}x{d} (torch)", ours=lambda: lpc.qr(A),
                        baseline=tq, baseline_name="torch.linalg.qr CPU (stack)",
                        accuracy=_batched_accuracy(A), repeats=repeats))
    return out


def _square_case(n, repeats):
    A = np.random.default_rng(3).standard_normal((n, n)).astype(np.float32)

    def acc(ours, base):
        return {"method": ours.info.method, "orth_ours": orthogonality_loss(ours.Q),
                "orth_scipy": orthogonality_loss(base[0])}

    return Case(name=f"square fp32 {n}x{n} auto", ours=lambda: lpc.qr(A, method="auto"),
                baseline=lambda: sla.qr(A, mode="economic", check_finite=False),
                baseline_name="scipy.linalg.qr", accuracy=acc, repeats=repeats)


def _gpu_cases(quick):
    try:
        import cupy

        if cupy.cuda.runtime.getDeviceCount() == 0:
            return []
    except Exception:  # noqa: BLE001 - no CuPy or no device
        return []

    def sync(f):
        def g():
            out = f()
            cupy.cuda.Device().synchronize()
            return out
        return g

    rng = np.random.default_rng(4)
    Ab = cupy.asarray(rng.standard_normal((100000, 8, 8)).astype(np.float32))
    At = cupy.asarray(rng.standard_normal((200000, 64)).astype(np.float32))
    return [
        Case(name="gpu batched fp32 100000x8x8", ours=sync(lambda: lpc.qr(Ab)),
             baseline=sync(lambda: cupy.linalg.qr(Ab)), baseline_name="cupy.linalg.qr (stack)",
             repeats=3 if quick else 7),
        Case(name="gpu tall fp32 200000x64", ours=sync(lambda: lpc.qr(At)),
             baseline=sync(lambda: cupy.linalg.qr(At)), baseline_name="cupy.linalg.qr",
             repeats=3 if quick else 7),
    ]


def cases(quick: bool) -> list[Case]:
    if quick:
        out = [_tall_case(50000, 64, 3), _tall_case(100000, 128, 2), _bf16_case(50000, 64, 3)]
        out += _batched_cases(20000, 8, 3)
        out += _batched_cases(50000, 3, 3)
        out.append(_square_case(512, 3))
    else:
        out = [_tall_case(200000, 64, 7), _tall_case(1000000, 128, 5),
               _bf16_case(200000, 64, 7)]
        out += _batched_cases(100000, 8, 7)
        out += _batched_cases(270000, 3, 7)
        out.append(_square_case(2048, 5))
    out += _gpu_cases(quick)
    return out
