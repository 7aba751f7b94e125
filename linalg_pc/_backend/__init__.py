"""Array-library resolution and the linear-algebra primitives the array API standard lacks.

Every public function of linalg_pc resolves ``xp`` from its inputs with :func:`array_namespace`
and computes with it, so NumPy, CuPy, PyTorch and array_api_strict arrays all work and results
stay in the caller's library and on its device. NumPy arrays of ``ml_dtypes.bfloat16`` (whose
``dtype.kind`` is ``'V'``) and PyTorch bf16/fp16 tensors are accepted.

The primitives here delegate to the library that does them well (scipy.linalg / LAPACK for NumPy,
cupyx.scipy.linalg / cuSOLVER for CuPy, torch.linalg for PyTorch) and fall back to a pure
array-API implementation for any other namespace:

- :func:`solve_triangular` (left or right side, transposed, batched);
- :func:`cholesky`, which reports failure as a value (LAPACK's ``info``) instead of raising;
- :func:`cho_solve`;
- :func:`tri_cond_est`: a condition estimate of a triangular matrix (LAPACK ``xTRCON`` on NumPy);
- :func:`eigh`: symmetric eigendecomposition;
- :func:`countsketch`: a CountSketch product S·X (sparse on NumPy, a scatter-add on torch/CuPy);
- :func:`to_namespace` / :func:`to_numpy`: exchange through DLPack, bf16 included;
- :func:`uniform`: uniform draws from a NumPy, torch or CuPy generator;
- :func:`dtype_kind`, :func:`native_dtype`, :func:`host_blas`: dtype and capability queries.

Library-specific code lives only in the delegate modules (``numpy.py``, ``torch.py``,
``cupy.py``), registered with :func:`register` and looked up with :func:`delegate`; the
functions here hold the generic array-API implementations. Algorithms that have their own
array-API implementation of a primitive (Householder QR, the batched QR of small matrices) ask
:func:`delegate` for the library's native one (``"qr"``, ``"batched_qr"``) and run theirs when
it returns None.
"""

from __future__ import annotations

from ._core import (  # noqa: F401 - the backend's public functions
    _library_delegate,
    array_namespace,
    check_finite,
    delegate,
    device_of,
    dtype_kind,
    finite_flag,
    format_of,
    has_dtype,
    host_blas,
    is_cupy,
    is_numpy,
    is_strict,
    is_torch,
    memory_overlap,
    namespace_name,
    native_dtype,
    register,
    supported,
    to_namespace,
    to_numpy,
    uniform,
)
from .columns import (
    column_runs,
    column_sumsq,
    is_linear_operator,
    is_sparse,
    matmul_into_columns,
    object_library,
    put_columns,
    sparse_all_finite,
    take_along_axis,
    take_columns,
)
from .linalg import (
    _cholesky_fallback,  # noqa: F401 - the reference the Cholesky delegates are tested against
    cho_solve,
    cholesky,
    countsketch,
    diagonal,
    eigh,
    eps_of,
    gram,
    solve_triangular,
    to_float,
    tri_cond_est,
)

__all__ = [
    "array_namespace",
    "is_numpy",
    "is_torch",
    "is_cupy",
    "is_strict",
    "device_of",
    "format_of",
    "native_dtype",
    "has_dtype",
    "dtype_kind",
    "host_blas",
    "supported",
    "solve_triangular",
    "cholesky",
    "cho_solve",
    "tri_cond_est",
    "eigh",
    "gram",
    "diagonal",
    "to_float",
    "countsketch",
    "to_namespace",
    "to_numpy",
    "uniform",
    "check_finite",
    "finite_flag",
    "memory_overlap",
    "namespace_name",
    "register",
    "delegate",
    "eps_of",
    "object_library",
    "is_sparse",
    "is_linear_operator",
    "sparse_all_finite",
    "column_runs",
    "take_along_axis",
    "take_columns",
    "column_sumsq",
    "put_columns",
    "matmul_into_columns",
]
