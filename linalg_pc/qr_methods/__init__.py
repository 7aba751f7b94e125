"""QR factorizations for low-precision inputs on any array library.

``qr`` dispatches over Householder (blocked compact WY, or the vendor library), the CholeskyQR
family (CholQR, CholQR2, shifted CholQR3), sketch-preconditioned CholeskyQR, Gram-Schmidt
(MGS, CGS2, BCGS2), TSQR and a batched kernel for stacks of small matrices. Every function takes
``storage``, ``compute`` and ``emulate`` formats and returns a :class:`QRResult`.
"""

from ._common import METHODS, MODES, QRInfo, QRResult
from .batched import batched_qr
from .cholesky import cholqr, cholqr2, scholqr3
from .dispatch import orthonormal_basis, qr
from .gram_schmidt import bcgs2, cgs2, mgs
from .householder import HouseholderFactors, apply_q, apply_qt, householder_factor, householder_qr
from .randomized import rand_cholqr
from .tall_skinny import tsqr

__all__ = [
    "qr",
    "orthonormal_basis",
    "QRResult",
    "QRInfo",
    "QR_METHODS",
    "QR_MODES",
    "householder_qr",
    "householder_factor",
    "apply_q",
    "apply_qt",
    "HouseholderFactors",
    "cholqr",
    "cholqr2",
    "scholqr3",
    "rand_cholqr",
    "mgs",
    "cgs2",
    "bcgs2",
    "tsqr",
    "batched_qr",
]

QR_METHODS = METHODS
QR_MODES = MODES
