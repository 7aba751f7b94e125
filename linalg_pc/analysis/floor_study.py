"""The one-rounding floor: loss of orthogonality of an exactly orthogonal matrix rounded once.

Model (derived here, reproduced by :func:`rounding_floor_study`): rounding Q (m×n, orthonormal
columns, entries ~ N(0, 1/m) for a Haar matrix) gives Q̂ = Q + ΔQ with independent relative errors
δ of mean square c·u², where c = E[δ²]/u². For significands distributed logarithmically in
[1, 2) (Benford, as for Gaussian data) and round to nearest,
c = (1/3)·E[1/x²] = (1/3)·(3/8)/ln 2 ≈ 0.180. Then QᵀΔQ has entries of variance c·u²/m, and
S = Q̂ᵀQ̂ − I ≈ QᵀΔQ + ΔQᵀQ is a symmetric random matrix with off-diagonal variance 2c·u²/m, whose
spectral edge (semicircle law) and Frobenius norm are

    ‖S‖₂ ≈ 2·u·√(2c·n/m),    ‖S‖_F ≈ u·n·√(2c/m).

For a square d×d orthogonal matrix: ‖S‖₂ ≈ 2√(2c)·u ≈ 1.20·u, flat in d, and
‖S‖_F ≈ √(2c·d)·u ≈ 0.60·u·√d (bf16: 4.7e-3 and 2.35e-3·√d, as measured in docs/error-analysis.md).
"""

from __future__ import annotations

import math

import numpy as np

from .._formats import get_format
from ..precision import round_to
from .bounds import FLOOR_C, floor_prediction
from .records import Records

__all__ = ["FLOOR_C", "floor_prediction", "haar_orthonormal", "rounding_floor_study"]


def haar_orthonormal(m: int, n: int, rng) -> np.ndarray:
    """An m×n matrix with Haar-distributed orthonormal columns (fp64; Mezzadri's sign fix)."""
    gen = np.random.default_rng(rng)
    Z = gen.standard_normal((m, n))
    Q, R = np.linalg.qr(Z)
    return Q * np.sign(np.diag(R))


def _loss(Q: np.ndarray) -> tuple[float, float]:
    S = Q.T @ Q - np.eye(Q.shape[1])
    return float(np.max(np.abs(np.linalg.eigvalsh(S)))), float(np.linalg.norm(S))


def rounding_floor_study(sizes=(16, 32, 64, 128, 256, 512, 1024), formats=("bf16", "fp16"), *,
                         tall=((4000, 64),), trials: int = 3, rng=None, progress=None) -> Records:
    """‖QᵀQ − I‖ (2-norm and Frobenius) of exactly orthogonal matrices after one rounding.

    For each format: square d×d Haar matrices for d in ``sizes`` and the tall shapes in ``tall``;
    the mean over ``trials`` of both norms, beside the model of this module's docstring.
    """
    if not sizes and not tall:
        raise ValueError("sizes: give at least one size")
    for d in sizes:
        if int(d) <= 0:
            raise ValueError(f"sizes must be positive, got {d}")
    gen = np.random.default_rng(rng)
    shapes = [(int(d), int(d)) for d in sizes] + [(int(m), int(n)) for m, n in tall]
    rows = []
    total = len(shapes)
    for i, (m, n) in enumerate(shapes):
        mats = [haar_orthonormal(m, n, gen) for _ in range(trials)]
        for name in formats:
            f = get_format(name)
            l2, lf = zip(*(_loss(round_to(Q, f)) for Q in mats))
            rows.append({
                "format": f.name, "m": m, "n": n,
                "loss_2": float(np.mean(l2)), "loss_fro": float(np.mean(lf)),
                "loss_2/u": float(np.mean(l2)) / f.unit_roundoff,
                "model_2": floor_prediction(m, n, f, "2"),
                "model_fro": floor_prediction(m, n, f, "fro"),
            })
        if progress is not None:
            progress.update("rounding floor", i + 1, total)
    return Records(rows, title="One rounding of an exactly orthogonal matrix")


def interpret_floor(recs: Records) -> str:
    """A paragraph generated from the floor records."""
    parts = []
    for fmt in sorted({r["format"] for r in recs}):
        sq = [r for r in recs.where(format=fmt) if r["m"] == r["n"] and r["m"] >= 128]
        if sq:
            ratios = [r["loss_2/u"] for r in sq]
            fro = [r["loss_fro"] / math.sqrt(r["m"]) for r in sq]
            parts.append(
                f"{fmt}: for d ≥ 128 the 2-norm loss is {min(ratios):.2f}–{max(ratios):.2f}·u, "
                f"flat in d (model {2 * math.sqrt(2 * FLOOR_C):.2f}·u), and the Frobenius "
                f"loss grows like √d ({np.mean(fro):.2e}·√d)")
        tall = [r for r in recs.where(format=fmt) if r["m"] > r["n"]]
        for r in tall:
            parts.append(f"{fmt} {r['m']}×{r['n']}: {r['loss_2']:.1e} "
                         f"(model {r['model_2']:.1e})")
    return ("After one rounding, an exactly orthogonal matrix keeps a loss of orthogonality "
            "set by the format alone. " + "; ".join(parts) + ". This floor is what any "
            "algorithm that stores Q in that format can reach at best.")
