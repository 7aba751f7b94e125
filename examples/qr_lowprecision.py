"""Low-precision QR with linalg_pc: bf16 storage, fp32 compute, emulation and fallbacks.

Run: ``python examples/qr_lowprecision.py`` (a few seconds on a laptop).

1. Factor a bf16 matrix directly (no framework QR accepts bf16) and compare with the usual
   upcast-to-fp32 + LAPACK + cast-back path.
2. Sweep the condition number and show each method's loss of orthogonality in fp32 beside its
   bound, and what a fully bf16 algorithm would do (``emulate="bf16"``).
3. Ask CholeskyQR2 for a matrix it cannot handle and read the fallback from ``info``.
4. Factor a stack of 50,000 small matrices at once.
"""

from __future__ import annotations

import time

import ml_dtypes
import numpy as np
import scipy.linalg as sla

import linalg_pc as lpc
from linalg_pc.analysis import orthogonality_loss, randsvd
from linalg_pc.analysis.bounds import qr_bound


def main() -> None:
    rng = np.random.default_rng(0)

    print("1. bf16 input, 50000 x 32")
    A = rng.standard_normal((50000, 32)).astype(ml_dtypes.bfloat16)
    lpc.qr(A[:1000])  # first call: compile the bf16 conversion kernels
    t0 = time.perf_counter()
    Q, R, info = lpc.qr(A)
    t_ours = time.perf_counter() - t0
    t0 = time.perf_counter()
    Qs, _ = sla.qr(A.astype(np.float32), mode="economic")
    Qs = Qs.astype(ml_dtypes.bfloat16)
    t_base = time.perf_counter() - t0
    print(f"   lpc.qr: {info.method} ({info.compute} compute, {info.storage} storage), "
          f"{t_ours * 1e3:.1f} ms, ||I - Q^T Q||_2 = {orthogonality_loss(Q):.2e}")
    print(f"   upcast + scipy + cast back: {t_base * 1e3:.1f} ms, "
          f"||I - Q^T Q||_2 = {orthogonality_loss(Qs):.2e}")

    print("\n2. loss of orthogonality vs kappa (1000 x 20, fp32; emulated bf16 in brackets)")
    methods = ["householder", "cholqr", "cholqr2", "mgs", "cgs2"]
    print("   kappa   " + "".join(f"{m:>24s}" for m in methods))
    for kap in (1e1, 1e3, 1e5):
        T = randsvd(1000, 20, kap, dtype="fp32", rng=1)
        row = []
        for m in methods:
            res = lpc.qr(T.A, method=m)
            emu = lpc.qr(T.A, method=m, emulate="bf16")
            b = qr_bound(m, 1000, 20, T.kappa_stored, "fp32")
            tag = "*" if res.info.fallbacks else " "
            row.append(f"{orthogonality_loss(res.Q):8.1e}{tag}<{b:7.1e} "
                       f"[{orthogonality_loss(emu.Q):5.0e}]")
        print(f"   {kap:7.0e} " + "".join(f"{c:>24s}" for c in row))
    print("   (* = the method broke down and its documented fallback ran)")

    print("\n3. CholeskyQR2 on a fp32 matrix with kappa = 1e6")
    T = randsvd(2000, 40, 1e6, dtype="fp32", rng=2)
    Q, R, info = lpc.qr(T.A, method="cholqr2")
    print(f"   method used: {info.method}, passes: {info.passes}, shifts: "
          f"{[f'{s:.1e}' for s in info.shifts]}")
    for line in info.fallbacks:
        print(f"   fallback: {line}")
    print(f"   ||I - Q^T Q||_2 = {orthogonality_loss(Q):.2e}")

    print("\n4. 50000 matrices 8 x 8 (fp32)")
    S = rng.standard_normal((50000, 8, 8)).astype(np.float32)
    lpc.qr(S[:10])  # compile the kernel
    t0 = time.perf_counter()
    Q, R, info = lpc.qr(S)
    t_ours = time.perf_counter() - t0
    t0 = time.perf_counter()
    np.linalg.qr(S)
    t_np = time.perf_counter() - t0
    print(f"   lpc.qr ({info.method}, {info.backend}): {t_ours * 1e3:.0f} ms; "
          f"numpy.linalg.qr: {t_np * 1e3:.0f} ms; "
          f"max ||I - Q^T Q||_2 = {np.max(orthogonality_loss(Q)):.1e}")


if __name__ == "__main__":
    main()
