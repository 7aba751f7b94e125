"""Timing script (not a test, not a harness suite): the cost of the input check of a full BF16
refresh and of the "topk-cyclic" column choice (issue 12, "Cost of checks").

Run ``python benchmarks/time_refresh_check.py [--repeats N]``. For d = 1024 and d = 128 it
times, on NumPy and (if installed) PyTorch CPU arrays:

- ``refresh``: one :func:`linalg_pc.subspace_refresh` of all k = d columns of a BF16 basis
  whose cheap loss bound min(‖E‖_F, ‖E‖_∞) exceeds the tolerance 0.1 while its loss
  ‖QᵀQ − I‖₂ does not (a drifted BF16 basis: the band where the check has to look closer);
- ``refresh, orth_tol=None``: the same refresh without the check (the floor);
- ``check``: the orthonormality check alone (``_common.check_orthonormal`` on the decoded
  columns), Gram product included;
- ``select topk-cyclic K,Q`` / ``select topk-cyclic estimates``: the column choice from K and
  Q (a full K·Q) and from tracked estimates.

Fastest and median of ``--repeats`` calls after two warm-up calls, in milliseconds (the
fastest is the steadier number on a shared machine).
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

import linalg_pc as lpc
from linalg_pc import _backend as B
from linalg_pc.basis._common import check_orthonormal, decode


def _times_ms(fn, repeats: int) -> tuple[float, float]:
    """(fastest, median) of ``repeats`` calls after two warm-up calls, in ms."""
    fn()
    fn()
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return 1e3 * min(ts), 1e3 * statistics.median(ts)


def _data(d: int, rng):
    G = rng.standard_normal((d, d // 2)).astype(np.float32)
    K = G @ G.T / d + 0.01 * np.eye(d, dtype=np.float32)
    K = 0.5 * (K + K.T)
    Q = np.linalg.qr(rng.standard_normal((d, d)))[0]
    # a drifted BF16 basis: five roundings' worth of error, so that the cheap bound exceeds 0.1
    err = lpc.from_storage(lpc.to_storage(Q, "bf16"), "fp64") - Q
    Qd = lpc.to_storage(Q + 5.0 * err, "bf16")
    return K, Qd


def _loss(Q) -> float:
    q = np.asarray(B.to_numpy(lpc.from_storage(Q, "fp64")))
    return float(np.max(np.abs(np.linalg.eigvalsh(q.T @ q - np.eye(q.shape[1])))))


def _rows(Kx, Qx, estx, d: int) -> dict:
    cols = np.arange(d)
    xp = B.array_namespace(Qx)
    QJ = decode(Qx, "fp32")
    return {
        "refresh": lambda: lpc.subspace_refresh(Kx, Qx, cols),
        "refresh, orth_tol=None": lambda: lpc.subspace_refresh(Kx, Qx, cols, orth_tol=None),
        "check": lambda: check_orthonormal(xp, QJ, argname="Q", tol=0.1),
        "select topk-cyclic K,Q": lambda: lpc.select_columns("topk-cyclic", d // 8, step=3,
                                                             K=Kx, Q=Qx),
        "select topk-cyclic estimates": lambda: lpc.select_columns("topk-cyclic", d // 8,
                                                                   step=3, estimates=estx),
    }


def run(repeats: int) -> None:
    rng = np.random.default_rng(0)
    libs = ["numpy"]
    try:
        import torch

        libs.append("torch")
    except ImportError:  # pragma: no cover - optional
        torch = None
    for d in (1024, 128):
        K, Q = _data(d, rng)
        q64 = np.asarray(B.to_numpy(lpc.from_storage(Q, "fp64")))
        E = q64.T @ q64 - np.eye(d)
        fro, inf = float(np.linalg.norm(E)), float(np.abs(E).sum(axis=1).max())
        print(f"d = {d}: loss {_loss(Q):.3g}, cheap bound {min(fro, inf):.3g}")
        est = np.einsum("ij,ij->j", q64, K.astype(np.float64) @ q64)
        for lib in libs:
            if lib == "torch":
                Kx = torch.from_numpy(K)
                Qx = lpc.to_storage(torch.from_numpy(np.asarray(Q.astype(np.float32))), "bf16")
                estx = torch.from_numpy(est.astype(np.float32))
            else:
                Kx, Qx, estx = K, Q, est.astype(np.float32)
            rows = _rows(Kx, Qx, estx, d)
            for name, fn in rows.items():
                fast, med = _times_ms(fn, repeats)
                print(f"  {lib:6s} {name:30s} min {fast:9.2f} ms   median {med:9.2f} ms")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=9)
    run(ap.parse_args().repeats)
