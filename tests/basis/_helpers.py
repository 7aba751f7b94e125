"""Shared helpers of the basis tests (not a test module)."""

from __future__ import annotations

import numpy as np

import linalg_pc._backend as B

#: LAPACK's xQRT01 passes a loss-of-orthogonality ratio ‖I − QᵀQ‖₁ / (n·u) below 30.
LAPACK_RATIO = 30.0


def np64(a) -> np.ndarray:
    """Host fp64 copy of any array (bf16 decoded exactly)."""
    h = B.to_numpy(a)
    return np.asarray(h.astype(np.float32) if h.dtype.kind == "V" else h, dtype=np.float64)


def loss_1(Q) -> float:
    """‖QᵀQ − I‖₁ in fp64 (max over a batch)."""
    q = np64(Q)
    E = np.swapaxes(q, -1, -2) @ q - np.eye(q.shape[-1])
    if E.size == 0:
        return 0.0
    return float(np.max(np.abs(E).sum(axis=-2)))


def loss_2(Q) -> float:
    """‖QᵀQ − I‖₂ in fp64 (2-D)."""
    q = np64(Q)
    E = q.T @ q - np.eye(q.shape[1])
    return float(np.max(np.abs(np.linalg.eigvalsh(E)))) if E.size else 0.0


def orthogonal(n: int, rng, dtype=np.float64) -> np.ndarray:
    return np.linalg.qr(rng.standard_normal((n, n)))[0].astype(dtype)


def spd_with_spectrum(w, rng) -> np.ndarray:
    V = orthogonal(len(w), rng)
    K = (V * np.asarray(w, dtype=np.float64)) @ V.T
    return 0.5 * (K + K.T)


def factor_types(d: int, rng) -> dict[str, np.ndarray]:
    """Symmetric test factors in the spirit of LAPACK's matrix types (fp64)."""
    u32 = 2.0**-24
    return {
        "zero": np.zeros((d, d)),
        "identity": np.eye(d),
        "diagonal": np.diag(rng.uniform(0.5, 2.0, d)),
        "random_spd": spd_with_spectrum(rng.uniform(0.1, 1.0, d), rng),
        "geometric_k=sqrt(0.1/u)": spd_with_spectrum(np.geomspace(1, np.sqrt(u32 / 0.1), d), rng),
        "geometric_k=0.1/u": spd_with_spectrum(np.geomspace(1, u32 / 0.1, d), rng),
        "low_rank": spd_with_spectrum(np.r_[np.ones(max(1, d // 4)), np.zeros(d - max(1, d // 4))],
                                      rng),
        "indefinite": spd_with_spectrum(rng.uniform(-1.0, 1.0, d), rng),
        "scaled_small": 1e-30 * spd_with_spectrum(rng.uniform(0.1, 1.0, d), rng),
        "scaled_large": 1e30 * spd_with_spectrum(rng.uniform(0.1, 1.0, d), rng),
    }
