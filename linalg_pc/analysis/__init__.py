"""Error analysis: metrics, test matrices, bounds, studies and plots.

- :mod:`.metrics`: accuracy of a factorization in float64 (loss of orthogonality, backward
  error, LAPACK's xQRT01 ratios, condition numbers).
- :mod:`.matrices`: seeded test-matrix generators in any storage format and library.
- :mod:`.bounds`: error bounds of the algorithms, with named calibrated constants.
- :mod:`.floor_study`, :mod:`.precision_study`, :mod:`.qr_study`, :mod:`.drift`,
  :mod:`.basis_study`: the studies, returning :class:`.records.Records`; :mod:`.plots` draws
  them; :mod:`.registry` registers them for ``linalg-pc study`` and :mod:`.report` runs them.

The sources cited across the package are listed in docs/references.md.
"""

from .basis_study import (
    DriftingFactor,
    basis_drift_study,
    basis_study,
    equal_compute_study,
)
from .bounds import qr_bound, qr_kappa_limit, storage_floor
from .drift import drift_study, rerounding_drift  # noqa: F401
from .floor_study import floor_prediction, rounding_floor_study
from .matrices import (  # noqa: F401 - the generators live in lpc.analysis
    SINGULAR_VALUE_MODES,
    TestMatrix,
    diagonal,
    graded,
    hilbert,
    kahan,
    lauchli,
    matrix_suite,
    randsvd,
    rank_deficient,
    scaled,
    triangular,
    zero,
)
from .metrics import (
    LAPACK_THRESHOLD,
    factorization_error,
    kappa,
    lapack_ratios,
    orthogonality_loss,
)
from .plots import plot_basis_drift, plot_drift, plot_qr_orthogonality, plot_rounding_floor
from .precision_study import precision_study
from .qr_study import qr_study, summarize_qr  # noqa: F401
from .records import Records

#: The public names, also re-exported at the top level of linalg_pc. The generators of individual
#: matrix types and the other studies stay under ``lpc.analysis`` (``lpc.analysis.kahan``,
#: ``lpc.analysis.rerounding_drift``, ...).
__all__ = [
    "LAPACK_THRESHOLD",
    "orthogonality_loss",
    "factorization_error",
    "lapack_ratios",
    "kappa",
    "TestMatrix",
    "randsvd",
    "matrix_suite",
    "qr_bound",
    "qr_kappa_limit",
    "storage_floor",
    "floor_prediction",
    "Records",
    "precision_study",
    "qr_study",
    "rounding_floor_study",
    "drift_study",
    "basis_drift_study",
    "equal_compute_study",
    "basis_study",
    "DriftingFactor",
    "plot_qr_orthogonality",
    "plot_rounding_floor",
    "plot_drift",
    "plot_basis_drift",
]
