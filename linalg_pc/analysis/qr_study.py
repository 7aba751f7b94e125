"""The QR study: every method × condition number × format, measured beside its bound.

Configurations (``formats``): a storage format name ("fp64", "fp32", "fp16", "bf16": A is stored
in it, Q and R are returned in it, arithmetic runs in the default compute format, fp32 for 16-bit
inputs), or ``"emulate-<fmt>"`` (A in fp32, every stored intermediate of the algorithm rounded to
<fmt>: what a true low-precision implementation would do).

Facts it reproduces: in fp32, Householder is flat at O(u) for every κ (Higham, ASNA Thm 19.4);
CholQR grows like u·κ² and breaks down near κ ≈ u^(−1/2); CholQR2 is O(u) up to that threshold
(Yamamoto et al., ETNA 44, 2015); MGS grows like u·κ (Björck & Paige, SIMAX 13, 1992); CGS2 is
flat (Giraud, Langou, Rozložník, 2005). With bf16 storage every stable method lands at the bf16
one-rounding floor; with a bf16 Gram matrix (emulate-bf16) CholQR breaks down already around
κ = 100. The measurements are in docs/error-analysis.md and the sources in docs/references.md.
"""

from __future__ import annotations

import math
import time

import numpy as np

from .._formats import get_format
from ..qr_methods._common import METHODS as _QR_METHODS
from ..qr_methods.dispatch import qr as _qr
from .floor_study import floor_prediction
from .records import Records

DEFAULT_METHODS = ("householder", "cholqr", "cholqr2", "scholqr3", "mgs", "cgs2")

#: Safety factor on the one-rounding floor of the storage format when Q is returned in 16 bits:
#: the stored Q carries that floor plus the algorithm's own error (measured ≤ 1.6× the floor).
STORAGE_FLOOR_FACTOR = 3.0


def _config(cfg: str) -> tuple[str, str | None]:
    """(storage format name, emulated format name or None) of a configuration string."""
    if cfg.startswith("emulate-"):
        return "fp32", get_format(cfg[len("emulate-"):], argname="formats").name
    return get_format(cfg, argname="formats").name, None


def study_bound(method: str, m: int, n: int, kappa: float, cfg: str) -> float:
    """The bound a measured loss of orthogonality is checked against.

    The algorithm's bound (``bounds.qr_bound`` in the compute format, or in the emulated format)
    and, when Q is stored in a 16-bit format, the one-rounding floor of that format times
    :data:`STORAGE_FLOOR_FACTOR`; the larger of the two.
    """
    from . import bounds

    storage, emulated = _config(cfg)
    compute = emulated or ("fp32" if get_format(storage).bits == 16 else storage)
    b = float(bounds.qr_bound(method, m, n, kappa, compute, kind="algorithm"))
    if get_format(storage).bits == 16:
        b = max(b, STORAGE_FLOOR_FACTOR * floor_prediction(m, n, storage))
    return b


def qr_study(methods=DEFAULT_METHODS, kappas=(1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7),
             formats=("fp32", "bf16", "emulate-bf16"), shape=(2000, 50), trials: int = 2,
             rng=None, progress=None) -> Records:
    """Measure each method × κ × format configuration on randsvd matrices.

    Parameters
    ----------
    methods : sequence of lpc.qr method names
    kappas : sequence of floats >= 1 (non-empty)
    formats : sequence of configuration strings (see the module docstring)
    shape : (m, n), positive
    trials : matrices per κ (the worst trial is recorded)
    rng : seed or numpy Generator

    Returns
    -------
    Records with fields method, method_used, format, m, n, kappa (requested), kappa_stored,
    orth_loss (‖I − QᵀQ‖₂), fact_error (‖A − QR‖_F/‖A‖_F against the stored A), lapack_resid,
    lapack_orth (xQRT01 ratios), breakdown (a fallback was taken or Q is not finite), fallback
    (the reasons), bound (:func:`study_bound` at ``kappa_stored``, the κ of the matrix that was
    factored), within_bound, seconds (median over trials).
    """
    from .matrices import randsvd
    from .metrics import factorization_error, lapack_ratios, orthogonality_loss

    valid = tuple(_QR_METHODS)
    for m in methods:
        if m not in valid:
            raise ValueError(f"methods: unknown QR method {m!r}; valid: {valid}")
    if len(kappas) == 0:
        raise ValueError("kappas must not be empty")
    if any(not (k >= 1) for k in kappas):
        raise ValueError(f"kappas must be >= 1, got {list(kappas)}")
    m_rows, n_cols = (int(s) for s in shape)
    if m_rows <= 0 or n_cols <= 0:
        raise ValueError(f"shape must be positive, got {tuple(shape)}")
    if trials <= 0:
        raise ValueError(f"trials must be positive, got {trials}")
    configs = [(cfg, *_config(cfg)) for cfg in formats]
    gen = np.random.default_rng(rng)
    rows = []
    total = len(configs) * len(kappas)
    done = 0
    for cfg, storage, emulated in configs:
        for kappa in kappas:
            mats = [randsvd(m_rows, n_cols, kappa, dtype=storage, rng=gen)
                    for _ in range(trials)]
            for method in methods:
                worst = None
                times = []
                for tm in mats:
                    t0 = time.perf_counter()
                    res = _qr(tm.A, method=method, emulate=emulated, rng=gen)
                    times.append(time.perf_counter() - t0)
                    rec = _measure(res, tm, storage, orthogonality_loss, factorization_error,
                                   lapack_ratios)
                    if worst is None or _worse(rec, worst):
                        worst = rec
                # the bound at the κ of the matrix that was factored (the stored one)
                bound = study_bound(method, m_rows, n_cols, worst["kappa_stored"], cfg)
                worst.update({
                    "method": method, "format": cfg, "m": m_rows, "n": n_cols,
                    "kappa": float(kappa), "bound": bound,
                    "within_bound": bool(worst["orth_loss"] <= bound) if not
                    worst["breakdown"] else None,
                    "seconds": float(np.median(times)),
                })
                rows.append(worst)
            done += 1
            if progress is not None:
                progress.update("qr study", done, total)
    order = ["method", "method_used", "format", "m", "n", "kappa", "kappa_stored", "orth_loss",
             "bound", "within_bound", "fact_error", "lapack_resid", "lapack_orth", "breakdown",
             "fallback", "seconds"]
    return Records([{k: r.get(k) for k in order} for r in rows],
                   title=f"QR: loss of orthogonality vs κ, {m_rows}×{n_cols}")


def _worse(a: dict, b: dict) -> bool:
    return (a["breakdown"], a["orth_loss"]) > (b["breakdown"], b["orth_loss"])


def _measure(res, tm, storage, orthogonality_loss, factorization_error, lapack_ratios) -> dict:
    Q, R, info = res
    fallbacks = list(getattr(info, "fallbacks", ()))
    try:
        loss = float(orthogonality_loss(Q))
        ferr = float(factorization_error(tm.A, Q, R))
        lr = lapack_ratios(tm.A, Q, R, storage)
        finite = math.isfinite(loss) and math.isfinite(ferr)
    except (ValueError, np.linalg.LinAlgError):
        loss, ferr, lr, finite = math.inf, math.inf, {"resid": math.inf, "orth": math.inf}, False
    return {
        "method_used": getattr(info, "method", "?"),
        "kappa_stored": float(tm.kappa_stored),
        "orth_loss": loss if finite else math.inf,
        "fact_error": ferr if finite else math.inf,
        "lapack_resid": float(lr["resid"]),
        "lapack_orth": float(lr["orth"]),
        "breakdown": bool(fallbacks) or not finite,
        "fallback": "; ".join(fallbacks),
    }


def summarize_qr(recs: Records) -> Records:
    """One row per method × format: the loss at the smallest and largest κ, and the κ at which
    the method first broke down (fell back), if any."""
    rows = []
    for cfg in dict.fromkeys(r["format"] for r in recs):
        for method in dict.fromkeys(r["method"] for r in recs):
            rs = sorted(recs.where(format=cfg, method=method), key=lambda r: r["kappa"])
            if not rs:
                continue
            ok = [r for r in rs if not r["breakdown"]]
            br = [r for r in rs if r["breakdown"]]
            viol = [r for r in rs if r["within_bound"] is False]
            rows.append({
                "method": method, "format": cfg,
                "loss_at_min_kappa": ok[0]["orth_loss"] if ok else math.inf,
                "loss_at_max_ok_kappa": ok[-1]["orth_loss"] if ok else math.inf,
                "max_ok_kappa": ok[-1]["kappa"] if ok else math.nan,
                "first_breakdown_kappa": br[0]["kappa"] if br else None,
                "bound_violations": len(viol),
            })
    return Records(rows, title="QR summary per method and format")


def interpret_qr(recs: Records) -> str:
    """A paragraph generated from the QR records."""
    summ = summarize_qr(recs)
    parts = []
    for s in summ:
        br = (f", first breakdown at κ = {s['first_breakdown_kappa']:.0e}"
              if s["first_breakdown_kappa"] else ", no breakdown")
        parts.append(f"{s['method']} ({s['format']}): {s['loss_at_min_kappa']:.1e} → "
                     f"{s['loss_at_max_ok_kappa']:.1e} up to κ = {s['max_ok_kappa']:.0e}{br}")
    viol = [r for r in recs if r["within_bound"] is False]
    flag = ("Every measured loss of orthogonality is at or below its bound." if not viol else
            f"**{len(viol)} measurements exceed their bound**: " + ", ".join(
                f"{r['method']}/{r['format']} at κ = {r['kappa']:.0e} "
                f"({r['orth_loss']:.1e} > {r['bound']:.1e})" for r in viol[:8]) + ".")
    return ("Loss of orthogonality ‖I − QᵀQ‖₂ from the smallest to the largest κ each method "
            "handled without breakdown: " + "; ".join(parts) + ". " + flag)
