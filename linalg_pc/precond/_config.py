"""Hyperparameter checks, storage formats and the tensor layout of a preconditioned parameter.

Everything here runs before any array work: a bad hyperparameter or format raises a clear
error naming the argument when the transform is built, and the layout (which axes of a
parameter get a Kronecker factor) is decided once, at ``init``.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

from ..precision import get_format

__all__ = ["STATE_KINDS", "Layout", "check_real", "check_beta", "check_betas", "check_nonneg",
           "check_positive", "check_int", "parse_storage", "parse_compute", "make_layout",
           "merge_shape"]

#: The kinds of optimizer state whose storage format is chosen separately.
STATE_KINDS = ("factors", "basis", "moments")

_STORAGE_FORMATS = ("fp32", "bf16", "fp16", "fp64")


def check_real(value, name: str) -> float:
    """A finite real number (not a bool)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    v = float(value)
    if not math.isfinite(v):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return v


def check_beta(value, name: str) -> float:
    """A decay rate in [0, 1)."""
    v = check_real(value, name)
    if not 0.0 <= v < 1.0:
        raise ValueError(f"{name} must be in [0, 1), got {value!r}")
    return v


def check_betas(betas, name: str = "betas") -> tuple[float, float]:
    """A pair (β₁, β₂) of decay rates in [0, 1)."""
    if isinstance(betas, (str, bytes)) or not hasattr(betas, "__len__") or len(betas) != 2:
        raise ValueError(f"{name} must be a pair (beta1, beta2), got {betas!r}")
    return check_beta(betas[0], f"{name}[0]"), check_beta(betas[1], f"{name}[1]")


def check_nonneg(value, name: str) -> float:
    """A finite real ≥ 0."""
    v = check_real(value, name)
    if v < 0:
        raise ValueError(f"{name} must be >= 0, got {value!r}")
    return v


def check_positive(value, name: str) -> float:
    """A finite real > 0."""
    v = check_real(value, name)
    if v <= 0:
        raise ValueError(f"{name} must be > 0, got {value!r}")
    return v


def check_int(value, name: str, minimum: int = 1) -> int:
    """An integer ≥ ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")
    return int(value)


def parse_compute(compute) -> str:
    """The arithmetic format: "fp32" (default) or "fp64" (never TF32 or a 16-bit format)."""
    try:
        name = get_format(compute).name if compute is not None else "fp32"
    except (TypeError, ValueError) as exc:
        raise ValueError(f"compute must be 'fp32' or 'fp64', got {compute!r} ({exc})") from None
    if name not in ("fp32", "fp64"):
        raise ValueError(f"compute must be 'fp32' or 'fp64', got {compute!r}")
    return name


def parse_storage(storage, compute: str) -> dict[str, str]:
    """Storage format per kind of state (:data:`STATE_KINDS`).

    ``storage`` is None (every kind in the compute format), one format for every kind, or a
    mapping from some kinds to formats (the others in the compute format). Formats: "fp32",
    "bf16", "fp16" (the basis only: factors and second moments hold squared gradients, which
    leave fp16's range), "fp64" (needs ``compute="fp64"``: storing more digits than the
    arithmetic produces wastes memory).
    """
    if storage is None:
        out = dict.fromkeys(STATE_KINDS, compute)
    elif isinstance(storage, dict):
        bad = set(storage) - set(STATE_KINDS)
        if bad:
            raise ValueError(f"storage has unknown kinds {sorted(bad)}; the kinds are "
                             f"{STATE_KINDS}")
        out = dict.fromkeys(STATE_KINDS, compute)
        out.update({k: _storage_name(v, f"storage[{k!r}]") for k, v in storage.items()})
    else:
        out = dict.fromkeys(STATE_KINDS, _storage_name(storage, "storage"))
    for kind, fmt in out.items():
        if fmt == "fp16" and kind != "basis":
            raise ValueError(f"storage of {kind} cannot be fp16: squared gradients leave "
                             f"fp16's range (normal numbers 6.1e-5 to 65504); use bf16")
        if fmt == "fp64" and compute != "fp64":
            raise ValueError(f"storage of {kind} is fp64 but compute is {compute}: fp64 "
                             f"storage needs compute='fp64'")
    return out


def _storage_name(fmt, name: str) -> str:
    try:
        f = get_format(fmt).name
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name}: {exc}") from None
    if f not in _STORAGE_FORMATS:
        raise ValueError(f"{name} must be one of {_STORAGE_FORMATS}, got {fmt!r}")
    return f


def merge_shape(shape, max_dim: int) -> tuple[int, ...]:
    """Merge consecutive axes while their product stays ≤ ``max_dim`` (left to right).

    The reshape of the SOAP reference code (nikhilvyas/SOAP ``merge_dims``), which it applies
    to convolution kernels so that small axes share one factor: an axis that does not fit the
    running product closes it (or, when the running product is 1, stands alone), and unit axes
    left over at the end are dropped. ``(1, 2, 512, 1, 2048, 1, 3, 4)`` with ``max_dim=1024``
    gives ``(1024, 2048, 12)``; ``(7, 1)`` with 6 gives ``(7,)``; all-unit shapes give ``(1,)``.
    """
    merged: list[int] = []
    prod = 1
    for d in shape:
        if prod * d <= max_dim:
            prod *= d
        elif prod > 1:
            merged.append(prod)
            prod = d
        else:
            merged.append(d)
    if prod > 1 or not merged:
        merged.append(prod)
    return tuple(merged)


@dataclass(frozen=True)
class Layout:
    """How a parameter is seen by the preconditioner.

    Attributes
    ----------
    shape : tuple
        The parameter's shape (without the batch axes).
    batch : tuple
        Leading batch shape of a stack of parameters (``()`` for one parameter).
    work_shape : tuple
        The shape the statistics are kept in (``shape`` with axes merged when
        ``merge_dims``; a 0-d parameter is seen as 1-D of size 1).
    factored : tuple of bool
        Whether axis a of ``work_shape`` has a Kronecker factor (size ≤ max_precond_dim, and
        the parameter is at least 2-D after merging unless ``precondition_1d``).
    """

    shape: tuple
    batch: tuple
    work_shape: tuple
    factored: tuple

    @property
    def order(self) -> int:
        """Number of axes of ``work_shape``."""
        return len(self.work_shape)

    @property
    def nb(self) -> int:
        """Number of batch axes."""
        return len(self.batch)

    @property
    def size(self) -> int:
        """Elements of one parameter."""
        return math.prod(self.work_shape)


def make_layout(shape, batch, *, max_precond_dim: int, merge_dims: bool,
                precondition_1d: bool) -> Layout:
    """The :class:`Layout` of a parameter of ``shape`` (batch axes ``batch``)."""
    shape = tuple(int(s) for s in shape)
    work = shape if shape else (1,)
    if merge_dims and len(work) > 1:
        work = merge_shape(work, max_precond_dim)
    one_d = len(work) == 1
    factored = tuple(d <= max_precond_dim and (precondition_1d or not one_d) for d in work)
    return Layout(shape, tuple(int(b) for b in batch), tuple(work), factored)
