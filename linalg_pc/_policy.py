"""One precision policy for every layer: which formats a computation stores, computes and emulates.

Every public routine of linalg_pc that takes ``storage=``, ``compute=`` or ``emulate=`` resolves
them here, against its input, with one rule (stated once, in docs/precision.md):

- **compute** (the arithmetic): the caller's choice, "fp32" or "fp64"; by default the input's own
  format, at least fp32. fp64 in means fp64 arithmetic; bf16, fp16 and fp32 in mean fp32
  arithmetic (16-bit formats are storage formats: there is no 16-bit arithmetic on the CPU, and
  reductions over 16-bit data must accumulate in fp32). Integer and boolean inputs compute in
  fp64, as NumPy does.
- **storage** (what results are kept in): by default the input's format.
- **emulate** (a format every stored intermediate is rounded to, for error studies): None by
  default; it may not be more precise than the arithmetic.

A :class:`Precision` holds the caller's choices (None: "use the default"); :meth:`Precision.resolve`
turns it into a :class:`ResolvedPrecision` of concrete :class:`~linalg_pc.Format` values for one
input. Formats are resolved once per call; conversions then take the resolved formats.
"""

from __future__ import annotations

from dataclasses import dataclass

from ._formats import Format, format_of_dtype, get_format

__all__ = ["Precision", "ResolvedPrecision", "default_compute", "COMPUTE_FORMATS"]

#: The formats arithmetic runs in (16-bit formats are storage formats only; tf32 is modelled by
#: ``emulate="tf32"``).
COMPUTE_FORMATS = ("fp32", "fp64")


def default_compute(input_format: Format | str) -> Format:
    """The default arithmetic for an input of ``input_format``: its own format, at least fp32.

    >>> default_compute("bf16").name, default_compute("fp32").name, default_compute("fp64").name
    ('fp32', 'fp32', 'fp64')
    """
    f = get_format(input_format)
    return get_format("fp64") if f.name == "fp64" else get_format("fp32")


def _opt_format(value, argname: str) -> Format | None:
    return None if value is None else get_format(value, argname=argname)


@dataclass(frozen=True)
class ResolvedPrecision:
    """Concrete formats of one computation (see :class:`Precision`).

    Attributes
    ----------
    input : Format
        The format of the input the policy was resolved against.
    storage : Format
        What results are stored in.
    compute : Format
        The arithmetic ("fp32" or "fp64").
    emulate : Format or None
        The format stored intermediates are rounded to, or None.
    """

    input: Format
    storage: Format
    compute: Format
    emulate: Format | None = None

    @property
    def u(self) -> float:
        """Unit roundoff of the arithmetic."""
        return self.compute.unit_roundoff

    @property
    def u_work(self) -> float:
        """Unit roundoff of the stored intermediates (the emulated format when emulating)."""
        if self.emulate is None:
            return self.compute.unit_roundoff
        return max(self.emulate.unit_roundoff, self.compute.unit_roundoff)

    def compute_dtype(self, xp):
        """The dtype of namespace ``xp`` that holds the arithmetic format."""
        from ._backend import native_dtype

        return native_dtype(xp, self.compute)

    def storage_dtype(self, xp):
        """The dtype of namespace ``xp`` that holds the storage format."""
        from ._backend import native_dtype

        return native_dtype(xp, self.storage)


@dataclass(frozen=True)
class Precision:
    """The caller's storage / compute / emulate choices (None: the default of the rule above).

    Parameters
    ----------
    storage : str, dtype, Format or None
        Format results are kept in; default the input's format. tf32 has no storage dtype.
    compute : str, dtype, Format or None
        Arithmetic format, "fp32" or "fp64"; default the input's format, at least fp32.
    emulate : str, dtype, Format or None
        Round stored intermediates to this format (no more precise than ``compute``).

    Raises
    ------
    ValueError
        At construction, naming the argument: an unknown format, ``compute`` outside
        {"fp32", "fp64"}, ``storage="tf32"``. :meth:`resolve` raises when ``emulate`` is more
        precise than the resolved compute format.

    Examples
    --------
    >>> import numpy as np
    >>> p = Precision().resolve(np.zeros(3, np.float64))
    >>> p.compute.name, p.storage.name
    ('fp64', 'fp64')
    >>> Precision(storage="bf16").resolve("fp32").storage.name
    'bf16'
    """

    storage: Format | str | None = None
    compute: Format | str | None = None
    emulate: Format | str | None = None

    def __post_init__(self):
        fs = _opt_format(self.storage, "storage")
        fc = _opt_format(self.compute, "compute")
        fe = _opt_format(self.emulate, "emulate")
        if fc is not None and fc.name not in COMPUTE_FORMATS:
            raise ValueError(f"compute must be 'fp32' or 'fp64' (the arithmetic formats), got "
                             f"{fc.name!r}; to see what {fc.name} arithmetic would do, pass "
                             f"emulate={fc.name!r}")
        if fs is not None and fs.name == "tf32":
            raise ValueError("storage cannot be 'tf32' (it has no storage dtype); use 'fp32'")
        object.__setattr__(self, "storage", fs)
        object.__setattr__(self, "compute", fc)
        object.__setattr__(self, "emulate", fe)

    def resolve(self, x) -> ResolvedPrecision:
        """Concrete formats for input ``x`` (an array, a dtype, a format name or a Format).

        Integer and boolean inputs resolve as fp64.
        """
        fin = _input_format(x)
        fc = self.compute if self.compute is not None else default_compute(fin)
        fs = self.storage if self.storage is not None else fin
        fe = self.emulate
        if fe is not None and fe.unit_roundoff < fc.unit_roundoff:
            raise ValueError(f"emulate={fe.name!r} is more precise than compute={fc.name!r}; "
                             f"emulate a format at most as precise as the arithmetic")
        return ResolvedPrecision(input=fin, storage=fs, compute=fc, emulate=fe)


def _input_format(x) -> Format:
    if isinstance(x, Format):
        return x
    if isinstance(x, str):
        return get_format(x)
    dtype = getattr(x, "dtype", x)
    try:
        return format_of_dtype(dtype)
    except TypeError:
        name = str(dtype).lower()
        if any(k in name for k in ("int", "bool")):
            return get_format("fp64")
        raise
