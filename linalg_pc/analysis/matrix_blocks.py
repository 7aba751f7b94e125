"""The building blocks of the test-matrix generators of :mod:`linalg_pc.analysis.matrices`:
the :class:`TestMatrix` record, argument validation, Haar factors, prescribed singular values
and the one rounding into the storage format (see that module for the references)."""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, ClassVar

import numpy as np

from .. import _backend as B
from .._formats import Format, get_format
from ..precision import round_to, to_storage
from .metrics import kappa as _kappa

#: Singular-value distributions of :func:`randsvd` (LAPACK ``xLATMS`` MODE 3, 4, 2, 1, 5).
SINGULAR_VALUE_MODES = ("geometric", "arithmetic", "one_small", "one_large", "random")

#: LAPACK's ``dlatb4`` SHRINK factor: the "scaled" types sit at ``SHRINK·tiny/eps`` and its
#: reciprocal, i.e. a factor ``1/(4·eps)`` inside the normal range of the storage format.
SHRINK = 0.25

#: Condition number LAPACK's ``dlatb4`` gives the diagonal, triangular and scaled QR types.
SUITE_TYPE_KAPPA = 2.0


@dataclass(frozen=True, eq=False)
class TestMatrix:
    """A generated test matrix and what is known about it.

    Attributes
    ----------
    A : array
        The matrix in the requested library and storage format.
    name : str
        A short label, unique within a :func:`matrix_suite` (e.g. ``"randsvd(kappa=100)"``).
    kappa : float
        2-norm condition number of the float64 matrix before rounding (float64 SVD).
    kappa_stored : float
        2-norm condition number of the stored, rounded matrix (float64 SVD of its values).
    params : dict
        The generator and its parameters (JSON-serialisable plain values).
    """

    __test__: ClassVar[bool] = False  # not a pytest test class

    A: Any
    name: str
    kappa: float
    kappa_stored: float
    params: dict = field(default_factory=dict)

    @property
    def shape(self) -> tuple:
        return tuple(self.A.shape)

    def __repr__(self) -> str:
        lib = B.namespace_name(B.array_namespace(self.A))
        fmt = B.format_of(self.A).name
        return (f"TestMatrix(name={self.name!r}, shape={self.shape}, {lib} {fmt}, "
                f"kappa={self.kappa:.3g}, kappa_stored={self.kappa_stored:.3g})")


# --------------------------------------------------------------------------- validation
def _size(value, argname: str) -> int:
    if isinstance(value, bool):
        raise TypeError(f"{argname} must be a non-negative integer, got {value!r}")
    try:
        v = operator.index(value)
    except TypeError:
        raise TypeError(f"{argname} must be a non-negative integer, got "
                        f"{type(value).__name__}") from None
    if v < 0:
        raise ValueError(f"{argname} must be a non-negative integer, got {v}")
    return v


def _real(value, argname: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{argname} must be a real number, got {type(value).__name__}")
    return float(value)


def _kappa_arg(value, argname: str = "kappa") -> float:
    k = _real(value, argname)
    if not (math.isfinite(k) and k >= 1.0):
        raise ValueError(f"{argname} must be a finite number >= 1, got {value!r}")
    return k


def _mode_arg(mode) -> str:
    if mode not in SINGULAR_VALUE_MODES:
        raise ValueError(f"mode must be one of {SINGULAR_VALUE_MODES}, got {mode!r}")
    return mode


def _target(dtype, xp):
    """Validate the storage format and target namespace before any work."""
    f = get_format(dtype, argname="dtype")
    if xp is None:
        xp = B.array_namespace(np.zeros(0))
    if not isinstance(xp, ModuleType):
        raise TypeError(f"xp must be an array namespace (module), got {type(xp).__name__}")
    store = "fp32" if f.name == "tf32" else f.name
    if B.supported(xp) and not B.has_dtype(xp, store):
        raise TypeError(f"dtype: {B.namespace_name(xp)} cannot store {f.name} arrays")
    return f, xp


def _generator(rng) -> np.random.Generator:
    if isinstance(rng, np.random.Generator):
        return rng
    if rng is None or (isinstance(rng, (int, np.integer)) and not isinstance(rng, bool)):
        return np.random.default_rng(rng)
    raise TypeError(f"rng must be None, an int seed or a numpy.random.Generator, got "
                    f"{type(rng).__name__}")


# --------------------------------------------------------------------------- building blocks
def _haar(gen: np.random.Generator, m: int, k: int) -> np.ndarray:
    """m×k with orthonormal columns, the first k columns of a Haar-distributed orthogonal matrix.

    QR of a Gaussian matrix with R's diagonal made positive (Stewart 1980; Mezzadri 2007): without
    the sign fix the distribution is not Haar.
    """
    if m == 0 or k == 0:
        return np.zeros((m, k))
    Q, R = np.linalg.qr(gen.standard_normal((m, k)))
    d = np.sign(np.diagonal(R))
    d[d == 0] = 1.0
    return Q * d


def _singular_values(k: int, kappa: float, mode: str, gen: np.random.Generator) -> np.ndarray:
    """k singular values in [1/kappa, 1], descending, σ_1 = 1 (xLATMS/xLATM1 modes)."""
    if k == 0:
        return np.zeros(0)
    if k == 1:
        return np.ones(1)
    i = np.arange(k, dtype=np.float64)
    small = 1.0 / kappa
    if mode == "geometric":
        s = kappa ** (-i / (k - 1))
    elif mode == "arithmetic":
        s = 1.0 - (i / (k - 1)) * (1.0 - small)
    elif mode == "one_small":
        s = np.ones(k)
    elif mode == "one_large":
        s = np.full(k, small)
    else:  # random: log-uniform in [1/kappa, 1]
        s = np.sort(np.exp(gen.uniform(math.log(small), 0.0, size=k)))[::-1].copy()
    s[0] = 1.0
    s[-1] = small
    return s


def _randsvd64(m, n, kappa, mode, gen, sigma_max=1.0):
    k = min(m, n)
    s = _singular_values(k, kappa, mode, gen) * sigma_max
    U = _haar(gen, m, k)
    V = _haar(gen, n, k)
    return (U * s) @ V.T


def _store(A64: np.ndarray, f: Format, xp, name: str, params: dict) -> TestMatrix:
    """Round the float64 matrix once to ``f``, move it to ``xp``, attach the condition numbers."""
    A64 = np.ascontiguousarray(A64, dtype=np.float64)
    k64 = _kappa(A64)
    if f.name == "fp64":
        host = A64
        k_st = k64
    else:
        if f.name == "tf32":
            host = round_to(A64, f).astype(np.float32)
        else:
            host = to_storage(A64, f)
        k_st = _kappa(host)
    out = B.to_namespace(host, xp)  # host itself for NumPy
    p = {"generator": name.split("(")[0], "m": int(A64.shape[0]), "n": int(A64.shape[1]),
         "dtype": f.name, **params}
    return TestMatrix(A=out, name=name, kappa=float(k64), kappa_stored=float(k_st), params=p)


def _fmt_kappa(k: float) -> str:
    return f"{k:.3g}"
