"""The study registry: every study ``linalg-pc study`` runs is registered here, and only here.

A study is a function ``run(*, quick, seed, progress)`` returning a :class:`StudyOutput` (named
:class:`~.records.Records` tables, a paragraph of interpretation generated from the numbers, and
figure makers), registered under a name with :func:`register_study`. The command line
(:mod:`linalg_pc.cli`) lists :data:`STUDIES`; :func:`linalg_pc.analysis.report.run_studies` runs
them and writes the report. This module imports the study modules and nothing above them, so
the report and the CLI read one registry and no module imports its reader.

Each study function also works on its own in a notebook (``precision_study``, ``qr_study``,
``rounding_floor_study``, ``rerounding_drift``, ``drift_study``, ``basis_drift_study``,
``equal_compute_study``); the registered wrappers choose the default and quick configurations,
add the paragraph of interpretation and the figures.
"""

from __future__ import annotations

import pathlib
from collections.abc import Callable
from dataclasses import dataclass, field

from . import plots
from .basis_study import (
    QUICK,
    basis_drift_study,
    equal_compute_study,
    interpret_basis,
    summarize_basis,
)
from .drift import interpret_drift, rerounding_drift
from .floor_study import interpret_floor, rounding_floor_study
from .optimizer_study import run_registered as run_optimizer_study
from .precision_study import interpret_precision, precision_study
from .qr_study import interpret_qr, qr_study, summarize_qr
from .records import Records

__all__ = ["StudyOutput", "Study", "STUDIES", "register_study", "resolve_names"]


@dataclass
class StudyOutput:
    """What one study produced."""

    title: str
    tables: dict[str, Records]
    paragraph: str
    #: (file name, function(path) that writes the PNG)
    figures: list[tuple[str, Callable[[pathlib.Path], None]]] = field(default_factory=list)
    seconds: float = 0.0
    #: tables printed on the terminal (None: all); the others are in report.md only
    printed: tuple[str, ...] | None = None
    #: tables written as JSON only (raw per-step records), linked from report.md
    json_only: tuple[str, ...] = ()


@dataclass(frozen=True)
class Study:
    """A registered study: its name, a one-line description, the runner, default-suite flag."""

    name: str
    description: str
    run: Callable[..., StudyOutput]
    in_default: bool = True


#: The registered studies by name, in registration order (the order of the default report).
STUDIES: dict[str, Study] = {}


def register_study(name: str, description: str, *, in_default: bool = True):
    """Decorator registering ``run(quick: bool, seed: int, progress: Progress) -> StudyOutput``."""

    def deco(fn):
        STUDIES[name] = Study(name, description, fn, in_default)
        return fn

    return deco


def resolve_names(names: list[str]) -> list[str]:
    """Expand "all" and validate study names (ValueError listing the valid ones).

    "all" is every study of the default suite; the opt-in studies (``in_default=False``: the
    optimizer training study, which needs the ``study`` extra and runs for long) run only
    when named."""
    if not names:
        return [s.name for s in STUDIES.values() if s.in_default]
    out: list[str] = []
    for n in names:
        if n == "all":
            out += [s for s in STUDIES if s not in out and STUDIES[s].in_default]
        elif n in STUDIES:
            if n not in out:
                out.append(n)
        else:
            raise ValueError(f"unknown study {n!r}; valid: {sorted(STUDIES) + ['all']}")
    return out


# --------------------------------------------------------------------------- the built-in studies


@register_study("precision", "rounding error of each format and bf16 summation stagnation")
def _run_precision(*, quick: bool, seed: int, progress) -> StudyOutput:
    progress.update("precision", 0, 1)
    res = precision_study(quick=quick, rng=seed)
    progress.update("precision", 1, 1)
    return StudyOutput("Number formats: rounding error and accumulation", res,
                       interpret_precision(res))


@register_study("rounding", "one-rounding floor of orthogonal matrices vs size")
def _run_rounding(*, quick: bool, seed: int, progress) -> StudyOutput:
    sizes = (16, 32, 64, 128, 256) if quick else (16, 32, 64, 128, 256, 512, 1024)
    recs = rounding_floor_study(sizes, ("bf16", "fp16"), trials=2 if quick else 3, rng=seed,
                                progress=progress)
    return StudyOutput("One-rounding floor of an orthogonal matrix", {"floor": recs},
                       interpret_floor(recs),
                       [("rounding_floor.png", lambda p: plots.plot_rounding_floor(recs, p))])


@register_study("qr", "QR methods: orthogonality vs condition number, fp32 / bf16 / emulated")
def _run_qr(*, quick: bool, seed: int, progress) -> StudyOutput:
    kappas = (1e0, 1e2, 1e4, 1e6) if quick else (1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7)
    # fp32 arithmetic and bf16 storage at the calibration shape of the constants in bounds.py
    # (2000×50, docs/error-analysis.md); the emulated bf16 algorithms (Python-level loops over
    # columns) on a smaller shape, which shows the same breakdown of the Cholesky-based methods
    # at κ ≈ 100 (Cholesky of a Gram matrix needs κ² ≲ u⁻¹; Yamamoto et al., ETNA 44, 2015).
    shape = (500, 20) if quick else (2000, 50)
    recs = qr_study(kappas=kappas, formats=("fp32", "bf16"), shape=shape, trials=1, rng=seed,
                    progress=progress)
    recs += qr_study(kappas=kappas, formats=("emulate-bf16",),
                     shape=(200, 10) if quick else (500, 20), trials=1, rng=seed + 1,
                     progress=progress)
    recs.title = "QR: loss of orthogonality vs κ (shape per row)"
    return StudyOutput("QR: loss of orthogonality against the bounds",
                       {"summary": summarize_qr(recs), "qr": recs}, interpret_qr(recs),
                       [("qr_orthogonality.png", lambda p: plots.plot_qr_orthogonality(recs, p))],
                       printed=("summary",))


@register_study("drift", "bf16 basis re-rounded under partial updates vs an fp32 master")
def _run_drift(*, quick: bool, seed: int, progress) -> StudyOutput:
    recs = rerounding_drift(d=256 if quick else 512, k=32 if quick else 64,
                            steps=80 if quick else 200, record_every=8 if quick else 10,
                            rng=seed, progress=progress)
    return StudyOutput("Drift of a bf16-stored basis under partial updates", {"drift": recs},
                       interpret_drift(recs),
                       [("drift.png", lambda p: plots.plot_drift(recs, p))])


@register_study("basis", "basis storage schemes on a drifting factor, and equal-compute refreshes")
def _run_basis(*, quick: bool, seed: int, progress) -> StudyOutput:
    if quick:
        cfg = dict(QUICK)
    else:
        # The default report: d = 128, k = d/8, 200 updates, two policies (a minute on 2 cores).
        # The configuration of the paper's experiments (d in {256, 1024}, 1000 steps; Milligan
        # et al., arXiv 2605.26327) is ``lpc.basis_study(quick=False)`` and takes many minutes.
        cfg = {"d": 128, "k": 16, "steps": 200, "record_every": 20}
    policies = ("cyclic", "topk-cyclic")
    progress.update("basis", 0, 2)
    drift = basis_drift_study(cfg["d"], cfg["k"], cfg["steps"], rng=seed, policies=policies,
                              record_every=cfg["record_every"])
    progress.update("basis", 1, 2)
    eq = equal_compute_study(cfg["d"], cfg["k"], cfg["steps"], rng=seed,
                             record_every=max(1, cfg["record_every"] // 2))
    progress.update("basis", 2, 2)
    recs = Records(drift + eq, title=f"Basis schemes, d={cfg['d']}, k={cfg['k']}")
    return StudyOutput("Subspace basis updates and bf16 basis storage",
                       {"summary": summarize_basis(recs), "records": recs},
                       interpret_basis(recs),
                       [("basis_drift.png",
                         lambda p: plots.plot_basis_drift(recs, p, policy="cyclic"))],
                       json_only=("records",))


@register_study("optimizer", "training study: SOAP / KL-SOAP / KL-Shampoo, fp32 / bf16, full / "
                "subspace refreshes, vs AdamW and pytorch_optimizer.SOAP (needs torch, "
                "scikit-learn)", in_default=False)
def _run_optimizer(*, quick: bool, seed: int, progress) -> StudyOutput:
    tables, paragraph, figures, _ = run_optimizer_study(quick=quick, seed=seed,
                                                        progress=progress)
    return StudyOutput("Optimizers: bf16 storage and subspace basis updates in training",
                       tables, paragraph, figures, printed=("targets", "summary", "timing"),
                       json_only=("runs", "curves", "data_files", "env"))
