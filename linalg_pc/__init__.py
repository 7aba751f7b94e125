"""linalg_pc: low-precision numerical linear algebra for preconditioners and solvers.

The public API is flat: ``import linalg_pc as lpc``; ``lpc.round_to``, ``lpc.to_storage``,
``lpc.unit_roundoff``, ... Every function accepts NumPy (ml_dtypes bf16 included), CuPy, PyTorch
and array_api_strict arrays and returns results in the caller's library and on its device.
"""

from . import analysis, basis, distributed, integrations, precond, qr_methods, solvers
from ._kernels._twins import load_threading_layer
from ._policy import Precision, ResolvedPrecision
from ._version import __version__
from .analysis import *  # noqa: F403
from .basis import *  # noqa: F403
from .precision import (
    FORMATS,
    ROUNDING_MODES,
    Format,
    buffer_cache_info,
    from_storage,
    get_format,
    representable,
    round_to,
    set_buffer_cache,
    to_storage,
    unit_roundoff,
)
from .qr_methods import *  # noqa: F403
from .solvers import *  # noqa: F403

__all__ = [
    "__version__",
    "distributed",
    "integrations",
    "precond",
    "FORMATS",
    "ROUNDING_MODES",
    "Format",
    "Precision",
    "ResolvedPrecision",
    "buffer_cache_info",
    "from_storage",
    "get_format",
    "representable",
    "round_to",
    "set_buffer_cache",
    "to_storage",
    "unit_roundoff",
    *analysis.__all__,
    *basis.__all__,
    *qr_methods.__all__,
    *solvers.__all__,
]

# Numba's OpenMP layer is loaded now, with sleeping workers, before another library can load GNU
# OpenMP with spinning ones; no thread starts here (see linalg_pc._kernels._twins)
load_threading_layer()
