"""Status codes and the stopping constants of every solver (one definition, here).

A solver's ``status`` is one of :data:`STATUS_NAMES`; internally, and in the Numba kernels, the
integer code at the same index. The kernels do not define these: the solvers pass
:data:`KERNEL_CODES` and :data:`STOP_RULE` to them as arguments.

- ``"converged"``: the *true* residual passed the stopping test;
- ``"maxiter"``: the iteration limit was reached first;
- ``"breakdown"``: stagnation at the attainable accuracy of the working precision (the stall
  rule below);
- ``"indefinite"``: ``pᵀAp <= 0`` or ``rᵀz <= 0`` (A or M not positive definite on the Krylov
  space);
- ``"nonfinite"``: a NaN/inf coefficient or residual.

The stall rule (:class:`StopRule`): at a true-residual check, the check counts as stalled when
the true residual is not below ``improve`` (one half) of the best true residual seen at earlier
checks while the drift between the recursive and the true residual is at least ``gap_ratio`` of
the true residual (the iteration works at the rounding-error level; van der Vorst & Ye, SISC 22,
2000); ``stall_limit`` consecutive stalled checks end the solve with ``"breakdown"``.

The replacement rule (van der Vorst & Ye, SISC 22, 2000, §3: the recursive residual is replaced
only once it has drifted from the true one): at a periodic check the recursive residual r is
replaced by the true residual b − A x only where the drift ‖r − (b − A x)‖ exceeds both
``u**replace_power · ‖r‖`` (u the unit roundoff of the working format; ``replace_power`` = ½ is
their ε̂ = √ε) and ``gap_ratio`` times the absolute tolerance (below that the drift cannot stop
the true residual from passing once ‖r‖ < (1 − gap_ratio)·tol). Replacing an r that has not
drifted only perturbs the Krylov recurrence and costs iterations (fp64, rtol 1e-8, dense SPD
n = 100 at κ = 1e2…1e6: 2531 iterations in all against SciPy's 2246 when every check replaced,
and ``maxiter`` at κ = 1e8). Where the recursive residual passed the stopping test and the
true one did not, r is always replaced. See docs/solvers.md.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

__all__ = ["CONVERGED", "MAXITER", "BREAKDOWN", "INDEFINITE", "NONFINITE", "STATUS_NAMES",
           "KERNEL_CODES", "StopRule", "STOP_RULE", "STALL_LIMIT", "GAP_RATIO", "status_names"]

STATUS_NAMES = ("converged", "maxiter", "breakdown", "indefinite", "nonfinite")
CONVERGED, MAXITER, BREAKDOWN, INDEFINITE, NONFINITE = range(len(STATUS_NAMES))
#: the codes in the order the Numba kernels take them
KERNEL_CODES = (CONVERGED, MAXITER, BREAKDOWN, INDEFINITE, NONFINITE)


class StopRule(NamedTuple):
    """The stall and replacement rules of the PCG loop (see the module docstring); a plain
    tuple for kernels."""

    stall_limit: int = 3
    gap_ratio: float = 0.1
    improve: float = 0.5
    replace_power: float = 0.5

    def replace_threshold(self, u: float) -> float:
        """The relative drift ‖r − (b − A x)‖ / ‖r‖ above which r is replaced: u^replace_power
        for unit roundoff ``u`` of the working format."""
        return float(u) ** self.replace_power


STOP_RULE = StopRule()
STALL_LIMIT = STOP_RULE.stall_limit
GAP_RATIO = STOP_RULE.gap_ratio


def status_names(codes) -> np.ndarray:
    """The status names of an array of codes."""
    return np.array(STATUS_NAMES)[np.asarray(codes, dtype=np.int64)]
