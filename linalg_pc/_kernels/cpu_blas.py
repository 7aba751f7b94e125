"""Direct CBLAS calls into NumPy's own BLAS library, for the routines NumPy does not expose.

NumPy ships (in its wheels) an OpenBLAS whose C interface includes TRSM, but ``numpy.linalg``
has no triangular solve; SciPy's ``solve_triangular`` and ``scipy.linalg.blas`` call SciPy's
*separate* copy of OpenBLAS. Mixing the two libraries in one algorithm costs speed: each keeps a
pool of threads that spin for a while after a call, and the other library's next call runs
beside them on the same cores (CholeskyQR2 at 200000×64 fp32 measured 125 ms alternating SciPy's
TRMM with NumPy's SYRK, 84 ms with NumPy alone). So the CholeskyQR family calls TRSM from the
library NumPy itself loaded, through ctypes:

- :func:`trsm_right_upper` solves X ← X·R⁻¹ in place (row-major X m×n, upper-triangular R):
  m·n² flops, half those of the GEMM with an explicit R⁻¹, and backward stable.

The library is found where NumPy's wheels put it (``numpy.libs/`` on Linux and Windows,
``numpy/.dylibs/`` on macOS), under the symbol names of the scipy-openblas builds NumPy links
(``scipy_cblas_strsm64_`` with 64-bit integers, ``scipy_cblas_strsm`` with 32-bit ones). Before
the first use a 3×2 solve is checked against NumPy; anything else (a NumPy linked to MKL or a
system BLAS, a missing symbol, a wrong answer) makes :func:`available` return False and the
callers keep their NumPy-only path. Setting the environment variable
``LINALG_PC_DIRECT_BLAS=0`` turns the direct calls off.
"""

from __future__ import annotations

import ctypes
import functools
import os
from pathlib import Path

import numpy as np

__all__ = ["available", "trsm_right_upper", "library_name"]

# CBLAS enum values (cblas.h)
_ROW_MAJOR, _RIGHT, _UPPER, _NO_TRANS, _NON_UNIT = 101, 142, 121, 111, 131

#: (symbol template, integer type) in the order tried; {t} is "s" or "d".
_SYMBOLS = (("scipy_cblas_{t}trsm64_", ctypes.c_int64), ("scipy_cblas_{t}trsm", ctypes.c_int))


def _library_files() -> list[Path]:
    root = Path(np.__file__).resolve().parent
    out = []
    for d in (root.parent / "numpy.libs", root / ".dylibs"):
        if d.is_dir():
            out += sorted(p for p in d.iterdir() if "openblas" in p.name.lower())
    return out


def _bind(lib, template: str, int_t, scalar_t):
    f = getattr(lib, template.format(t="s" if scalar_t is ctypes.c_float else "d"))
    f.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_int,
                  int_t, int_t, scalar_t, ctypes.c_void_p, int_t, ctypes.c_void_p, int_t]
    f.restype = None
    return f


@functools.cache
def _trsm_library():
    """({np.float32: f, np.float64: f}, file name) from NumPy's BLAS, or ({}, None)."""
    if os.environ.get("LINALG_PC_DIRECT_BLAS", "1").strip().lower() in ("0", "false", "no", "off"):
        return {}, None
    for path in _library_files():
        try:
            lib = ctypes.CDLL(str(path))
        except OSError:
            continue
        for template, int_t in _SYMBOLS:
            try:
                funcs = {np.dtype(np.float32): _bind(lib, template, int_t, ctypes.c_float),
                         np.dtype(np.float64): _bind(lib, template, int_t, ctypes.c_double)}
            except AttributeError:
                continue
            if all(_self_check(f, dt) for dt, f in funcs.items()):
                return funcs, path.name
    return {}, None


def _trsm_funcs() -> dict:
    return _trsm_library()[0]


def _call(f, X: np.ndarray, R: np.ndarray) -> None:
    m, n = X.shape
    f(_ROW_MAJOR, _RIGHT, _UPPER, _NO_TRANS, _NON_UNIT, m, n, 1.0, R.ctypes.data, n,
      X.ctypes.data, n)


def _self_check(f, dtype) -> bool:
    R = np.array([[2.0, 1.0], [0.0, 4.0]], dtype=dtype)
    X = np.array([[2.0, 3.0], [4.0, 6.0], [-2.0, 1.5]], dtype=dtype)
    want = X @ np.linalg.inv(R.astype(np.float64))
    _call(f, X, R)
    return bool(np.allclose(X, want, rtol=1e-6, atol=0))


def available(dtype) -> bool:
    """Whether :func:`trsm_right_upper` runs for arrays of ``dtype`` (fp32 or fp64)."""
    return np.dtype(dtype) in _trsm_funcs()


def library_name() -> str | None:
    """File name of the BLAS library the direct calls go to (None when unavailable)."""
    return _trsm_library()[1]


def trsm_right_upper(X: np.ndarray, R: np.ndarray) -> np.ndarray:
    """X ← X·R⁻¹ in place, R upper triangular (its strict lower part is not read).

    Parameters
    ----------
    X : ndarray (m, n), C-contiguous, writeable, float32 or float64
    R : ndarray (n, n), same dtype

    Returns
    -------
    X, overwritten. Cost m·n² flops (BLAS-3 TRSM). Backward stable: the computed Y satisfies
    Y(R + ΔR) = X with |ΔR| ≤ c·n·u·|R| (Higham, ASNA 2nd ed., Thm 8.5).

    Raises
    ------
    RuntimeError when :func:`available` is False for X's dtype; ValueError on shapes, dtypes or
    a non-contiguous X (the callers check, this guards the raw pointer call).
    """
    f = _trsm_funcs().get(X.dtype)
    if f is None:
        raise RuntimeError(f"no direct TRSM for dtype {X.dtype} (see cpu_blas.available)")
    if X.ndim != 2 or R.shape != (X.shape[1], X.shape[1]) or R.dtype != X.dtype:
        raise ValueError(f"X must be (m, n) and R (n, n) of X's dtype; got {X.shape} {X.dtype} "
                         f"and {R.shape} {R.dtype}")
    if not (X.flags.c_contiguous and X.flags.writeable):
        raise ValueError("X must be C-contiguous and writeable")
    R = np.ascontiguousarray(R)
    if X.size:
        _call(f, X, R)
    return X
