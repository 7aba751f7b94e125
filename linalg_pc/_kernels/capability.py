"""What the CPU solver kernels can take: the one place the solvers ask which engine to use.

The solvers never test which library an array belongs to; they ask :func:`cpu_solver_kernels`
whether the Numba kernels (:mod:`linalg_pc._kernels.cpu_csr`, ``cpu_pcg_small``, ``cpu_dcreg``,
``cpu_dense_small``) accept arrays of a namespace and dtype, and run the generic array-API code
otherwise.
"""

from __future__ import annotations

import numpy as np

from .._backend import is_numpy

__all__ = ["cpu_solver_kernels"]


def cpu_solver_kernels(xp, *dtypes) -> bool:
    """True when the Numba CPU kernels take arrays of namespace ``xp`` with these dtypes: host
    NumPy arrays of float32 or float64 (the kernels' arithmetic formats)."""
    if not is_numpy(xp):
        return False
    try:
        return all(np.dtype(dt) in (np.float32, np.float64) for dt in dtypes)
    except TypeError:
        return False
