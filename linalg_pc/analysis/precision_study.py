"""The precision study: measured rounding error of each format against its unit roundoff, and
the stagnation of a long sum accumulated in bf16.

Facts it reproduces (IEEE 754; Higham, ASNA §2.1): round to nearest has relative error at most u;
stochastic rounding is unbiased (E[fl(x)] = x) with error below 2u; a sum of n terms accumulated in
bf16 stagnates (10000 ones sum to 256), while the same sum accumulated in fp32 or rounded
stochastically to bf16 stays within the probabilistic bound λ·√n·u (Higham & Mary, SISC 41, 2019;
Connolly, Higham & Mary, SISC 43, 2021).
"""

from __future__ import annotations

import math

import numpy as np

from .._formats import FORMATS
from .._kernels import cpu
from ..precision import round_to
from .records import Records

#: λ of the probabilistic bound λ·√n·u; it fails with probability at most 2·exp(-λ²/2) ≈ 2.2e-5.
LAMBDA_PROB = 4.5


def gamma(n: int, u: float) -> float:
    """Deterministic constant γ_n = n·u / (1 − n·u) (Higham, ASNA Lemma 3.1); inf when n·u ≥ 1."""
    return n * u / (1 - n * u) if n * u < 1 else math.inf


def rounding_error_records(formats=("bf16", "fp16", "tf32", "fp32"), *, samples: int = 200_000,
                           repeats: int = 64, rng=None) -> Records:
    """Relative rounding error of fp64 data rounded once to each format and mode.

    Data: |x| log-uniform over [2^-10, 2^10] with random signs (normal range of every format).
    Columns: max and mean |fl(x) − x|/|x| in units of u, the mean of (fl(x) − x)/x in units
    of u (bias) with its standard error, and the bound (u for nearest, 2u otherwise). The bias of
    stochastic rounding is measured on ``repeats`` roundings of the same values.
    """
    gen = np.random.default_rng(rng)
    x = np.exp2(gen.uniform(-10, 10, samples)) * gen.choice([-1.0, 1.0], samples)
    rows = []
    for name in formats:
        u = FORMATS[name].unit_roundoff
        for mode in ("nearest", "stochastic", "zero"):
            if mode == "stochastic":
                xs = np.broadcast_to(x[: samples // 16], (repeats, samples // 16))
                r = round_to(np.ascontiguousarray(xs), name, mode=mode, rng=gen)
                rel = (r - xs) / xs
                per_value_bias = rel.mean(axis=0)  # mean over repeats of each value
                bias = float(per_value_bias.mean())
                se = float(rel.std() / math.sqrt(rel.size))
                rel = rel.ravel()
            else:
                r = round_to(x, name, mode=mode)
                rel = (r - x) / x
                bias = float(rel.mean())
                se = float(rel.std() / math.sqrt(rel.size))
            abs_rel = np.abs(rel)
            bound = u if mode == "nearest" else 2 * u
            rows.append({
                "format": name,
                "mode": mode,
                "u": u,
                "max_rel_err/u": float(abs_rel.max() / u),
                "mean_rel_err/u": float(abs_rel.mean() / u),
                "bias/u": bias / u,
                "bias_se/u": se / u,
                "bound/u": bound / u,
                "within_bound": bool(abs_rel.max() <= bound),
            })
    return Records(rows, title="Rounding error of one rounding, in units of u")


def summation_records(ns=(100, 1000, 10_000, 100_000), *, trials: int = 8, rng=None) -> Records:
    """Recursive summation of n values drawn from U(0, 1): bf16 vs fp32 accumulation.

    For each n: relative error of the sum accumulated in bf16 with round to nearest (stagnates),
    in bf16 with stochastic rounding, and in fp32, against the exact sum (math.fsum in fp64 of
    the same fp32 data); beside the deterministic bound γ_{n−1} (inf once n·u ≥ 1) and the
    probabilistic bound λ·√n·u, both for bf16 and fp32. Also the sum of n ones in bf16.
    """
    gen = np.random.default_rng(rng)
    rows = []
    u16 = FORMATS["bf16"].unit_roundoff
    u32 = FORMATS["fp32"].unit_roundoff
    for n in ns:
        errs = {"bf16_nearest": [], "bf16_stochastic": [], "fp32": []}
        for t in range(trials):
            v = gen.random(n).astype(np.float32)
            v = round_to(v, "bf16")  # data representable in bf16: only the accumulation errs
            exact = math.fsum(v.astype(np.float64))
            for key, s in (("bf16_nearest", cpu.recursive_sum_bf16(v, -1)),
                           ("bf16_stochastic", cpu.recursive_sum_bf16(v, 1000 + t)),
                           ("fp32", cpu.recursive_sum_f32(v))):
                errs[key].append(abs(float(s) - exact) / exact)
        ones = float(cpu.recursive_sum_bf16(np.ones(n, np.float32), -1))
        rows.append({
            "n": n,
            "bf16_nearest_rel_err": float(np.max(errs["bf16_nearest"])),
            "bf16_stochastic_rel_err": float(np.max(errs["bf16_stochastic"])),
            "fp32_rel_err": float(np.max(errs["fp32"])),
            "bf16_gamma_bound": gamma(n - 1, u16),
            "bf16_prob_bound": LAMBDA_PROB * math.sqrt(n) * u16,
            "fp32_prob_bound": LAMBDA_PROB * math.sqrt(n) * u32,
            "sum_of_ones_bf16": ones,
        })
    return Records(rows, title="Recursive summation of n U(0,1) values (max over trials)")


def precision_study(*, quick: bool = False, rng=None) -> dict[str, Records]:
    """Run both parts of the precision study; returns {"rounding": ..., "summation": ...}."""
    gen = np.random.default_rng(rng)
    samples = 50_000 if quick else 400_000
    ns = (100, 1000, 10_000) if quick else (100, 1000, 10_000, 100_000)
    return {
        "rounding": rounding_error_records(samples=samples, rng=gen),
        "summation": summation_records(ns, trials=4 if quick else 8, rng=gen),
    }


def interpret_precision(results: dict[str, Records]) -> str:
    """One paragraph of interpretation generated from the measured numbers."""
    rnd = results["rounding"]
    near = rnd.where(mode="nearest")
    worst = max(r["max_rel_err/u"] for r in near)
    sr = rnd.where(mode="stochastic")
    worst_bias = max(abs(r["bias/u"]) / max(r["bias_se/u"], 1e-300) for r in sr)
    zero = rnd.where(mode="zero")
    zero_bias = min(r["bias/u"] for r in zero)
    s = results["summation"]
    last = s[-1]
    text = (
        f"Round to nearest stayed within u in every format (largest error {worst:.3f}·u). "
        f"Stochastic rounding showed no detectable bias (largest |bias| {worst_bias:.1f} "
        f"standard errors), while rounding toward zero is biased by {zero_bias:.2f}·u. "
        f"Accumulating n = {last['n']} values in bf16 with round to nearest gave a relative "
        f"error of {last['bf16_nearest_rel_err']:.2e} (a sum of n ones stagnates at "
        f"{last['sum_of_ones_bf16']:.0f}); stochastic rounding in bf16 gave "
        f"{last['bf16_stochastic_rel_err']:.2e} against its probabilistic bound "
        f"{last['bf16_prob_bound']:.2e}, and fp32 accumulation {last['fp32_rel_err']:.2e}. "
        "Reductions over bf16 data must accumulate in fp32."
    )
    return text
