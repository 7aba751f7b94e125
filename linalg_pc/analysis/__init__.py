"""Error analysis: metrics, test matrices, bounds, studies and plots.

- :mod:`.metrics`: accuracy of a factorization in float64 (loss of orthogonality, backward
  error, LAPACK's xQRT01 ratios, condition numbers).
- :mod:`.matrices`: seeded test-matrix generators in any storage format and library.
"""

from .matrices import (
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

__all__ = [
    "LAPACK_THRESHOLD",
    "orthogonality_loss",
    "factorization_error",
    "lapack_ratios",
    "kappa",
    "SINGULAR_VALUE_MODES",
    "TestMatrix",
    "randsvd",
    "kahan",
    "graded",
    "lauchli",
    "hilbert",
    "rank_deficient",
    "scaled",
    "zero",
    "diagonal",
    "triangular",
    "matrix_suite",
]
