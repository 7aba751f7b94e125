"""Drift over repeated updates: a generic driver and the bf16 re-rounding experiment.

:func:`drift_study` applies an update function repeatedly and records metrics of the state over
time; the basis-storage schemes plug in here. :func:`rerounding_drift` is the experiment behind the
bf16 storage schemes (Milligan et al., arXiv 2605.26327; docs/basis.md): rotate k of d columns of
an orthogonal basis per step and store the basis in bf16; re-rounding the stored basis at every
update lets the loss of orthogonality grow like 1.2·u·√(roundings per column), while keeping an
fp32 master and rounding a copy stays at the one-rounding floor. Measured values:
docs/error-analysis.md; sources: docs/references.md.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import numpy as np

from .._formats import get_format
from ..precision import round_to
from .floor_study import floor_prediction, haar_orthonormal
from .records import Records


def drift_study(update: Callable, state, steps: int, *, metrics: dict[str, Callable],
                record_every: int = 1, label: str = "", progress=None) -> Records:
    """Apply ``state = update(state, step)`` for step = 1..steps and record metrics.

    Parameters
    ----------
    update : callable(state, step) -> state
    state : the initial state
    steps : int, > 0
    metrics : dict name -> callable(state) -> float, evaluated every ``record_every`` steps
        (and at step 0 and the last step).
    label : str stored in every record (e.g. the scheme name).

    Returns
    -------
    Records with fields step, label, seconds (time of that update) and one field per metric.
    """
    if steps <= 0:
        raise ValueError(f"steps must be positive, got {steps}")
    if record_every <= 0:
        raise ValueError(f"record_every must be positive, got {record_every}")
    rows = [{"step": 0, "label": label, "seconds": 0.0,
             **{k: float(fn(state)) for k, fn in metrics.items()}}]
    for step in range(1, steps + 1):
        t0 = time.perf_counter()
        state = update(state, step)
        dt = time.perf_counter() - t0
        if step % record_every == 0 or step == steps:
            rows.append({"step": step, "label": label, "seconds": dt,
                         **{k: float(fn(state)) for k, fn in metrics.items()}})
        if progress is not None:
            progress.update(label or "drift", step, steps)
    return Records(rows, title=f"Drift: {label}" if label else "Drift")


def _orth_loss(Q) -> float:
    Q = np.asarray(Q, dtype=np.float64)
    S = Q.T @ Q - np.eye(Q.shape[1])
    return float(np.max(np.abs(np.linalg.eigvalsh(S))))


def _random_rotation(k: int, gen) -> np.ndarray:
    return haar_orthonormal(k, k, gen).astype(np.float32)


def rerounding_drift(d: int = 512, k: int = 64, steps: int = 200, *, fmt="bf16",
                     record_every: int = 10, rng=None, progress=None) -> Records:
    """Loss of orthogonality when k columns of a stored basis are rotated per step.

    Two schemes on the same sequence of random k×k rotations applied to cyclic column blocks:
    "re-round" keeps only the ``fmt`` copy and rounds after every update; "fp32 master" updates
    an fp32 basis and rounds a fresh copy each step (what a full fp32 refresh then bf16 storage
    does). Records carry the loss, the number of roundings per column and the √-growth model
    floor·√(roundings per column), floor ≈ 1.2·u the one-rounding floor of ``floor_study``.
    """
    if not 0 < k <= d:
        raise ValueError(f"k must satisfy 0 < k <= d, got k={k}, d={d}")
    f = get_format(fmt)
    gen = np.random.default_rng(rng)
    Q0 = haar_orthonormal(d, d, gen).astype(np.float32)
    rotations = [_random_rotation(k, gen) for _ in range(min(steps, 64))]
    nblocks = d // k

    def rotate(Q, step):
        b = (step - 1) % nblocks
        cols = slice(b * k, (b + 1) * k)
        Q = Q.copy()
        Q[:, cols] = Q[:, cols] @ rotations[(step - 1) % len(rotations)]
        return Q

    def upd_reround(Q, step):
        return round_to(rotate(Q, step), f)

    def upd_master(state, step):
        master, _ = state
        master = rotate(master, step)
        return master, round_to(master, f)

    rec = drift_study(upd_reround, round_to(Q0, f), steps,
                      metrics={"orth_loss": _orth_loss}, record_every=record_every,
                      label="re-round", progress=progress)
    rec2 = drift_study(upd_master, (Q0, round_to(Q0, f)), steps,
                       metrics={"orth_loss": lambda s: _orth_loss(s[1])},
                       record_every=record_every, label="fp32 master", progress=progress)
    rows = []
    for r in list(rec) + list(rec2):
        per_col = 1 + r["step"] // nblocks if r["label"] == "re-round" else 1
        rows.append({**r, "format": f.name, "d": d, "k": k,
                     "roundings_per_column": per_col,
                     "model": floor_prediction(d, d, f) * math.sqrt(per_col)})
    return Records(rows, title=f"Stored-basis drift, d={d}, k={k}, {f.name}")


def interpret_drift(recs: Records) -> str:
    """A paragraph generated from :func:`rerounding_drift` records."""
    rr = recs.where(label="re-round")
    ms = recs.where(label="fp32 master")
    first, last = rr[0], rr[-1]
    growth = last["orth_loss"] / first["orth_loss"]
    return (
        f"Rotating {first['k']} of {first['d']} columns per step and re-rounding the stored "
        f"{first['format']} basis every time, the loss of orthogonality grew from "
        f"{first['orth_loss']:.2e} to {last['orth_loss']:.2e} after {last['step']} steps "
        f"(×{growth:.1f}; the √-model predicts {last['model']:.2e} for "
        f"{last['roundings_per_column']} roundings per column). An fp32 master rounded once per "
        f"use stayed at {max(r['orth_loss'] for r in ms):.2e}, the one-rounding floor."
    )
