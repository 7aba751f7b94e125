"""The built-in studies of ``linalg-pc study``, registered with the report runner.

Each study function also works on its own in a notebook; the registered wrappers add the summary
paragraph and the figures.
"""

from __future__ import annotations

from .precision_study import interpret_precision, precision_study
from .report import StudyOutput, register_study

__all__ = ["precision_study"]


@register_study("precision", "rounding error of each format and bf16 summation stagnation")
def _run_precision(*, quick: bool, seed: int, progress) -> StudyOutput:
    progress.update("precision", 0, 1)
    res = precision_study(quick=quick, rng=seed)
    progress.update("precision", 1, 1)
    return StudyOutput("Number formats: rounding error and accumulation", res,
                       interpret_precision(res))
