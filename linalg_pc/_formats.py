"""Floating-point number formats: parameters and name/dtype resolution.

A :class:`Format` describes a binary floating-point format by its stored mantissa bits and
exponent range; every other constant (unit roundoff, machine epsilon, largest finite value,
smallest normal and subnormal) is derived from those, so the table below cannot drift out of
agreement with itself.

References
----------
N. J. Higham, *Accuracy and Stability of Numerical Algorithms*, 2nd ed., SIAM 2002, §2.1.
IEEE Std 754-2019. bfloat16: Google Brain / Intel BF16 specification. tf32: NVIDIA A100
whitepaper (10 stored mantissa bits, fp32 exponent range; a matmul input format).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Format", "FORMATS", "get_format", "unit_roundoff", "format_of_dtype"]


@dataclass(frozen=True)
class Format:
    """A binary floating-point format.

    Attributes
    ----------
    name : str
        Canonical short name ("bf16", "fp16", "tf32", "fp32", "fp64").
    mantissa_bits : int
        Stored fraction bits p; the precision is t = p + 1 bits.
    emin, emax : int
        Smallest and largest exponent of a normal number.
    bits : int
        Storage width in bits (tf32 is stored in 32-bit words).
    """

    name: str
    mantissa_bits: int
    emin: int
    emax: int
    bits: int

    @property
    def precision(self) -> int:
        """Significand precision t = p + 1 (bits, the implicit bit included)."""
        return self.mantissa_bits + 1

    @property
    def unit_roundoff(self) -> float:
        """u = 2^-t: the largest relative error of round-to-nearest."""
        return 2.0 ** (-self.precision)

    @property
    def eps(self) -> float:
        """Machine epsilon 2^-p: the gap between 1 and the next larger number."""
        return 2.0 ** (-self.mantissa_bits)

    @property
    def max(self) -> float:
        """Largest finite value (2 - 2^-p) * 2^emax."""
        return (2.0 - 2.0 ** (-self.mantissa_bits)) * 2.0**self.emax

    @property
    def tiny(self) -> float:
        """Smallest positive normal value 2^emin."""
        return 2.0**self.emin

    @property
    def smallest_subnormal(self) -> float:
        """Smallest positive subnormal value 2^(emin - p)."""
        return 2.0 ** (self.emin - self.mantissa_bits)

    def __str__(self) -> str:
        return self.name


FORMATS: dict[str, Format] = {
    "bf16": Format("bf16", 7, -126, 127, 16),
    "fp16": Format("fp16", 10, -14, 15, 16),
    "tf32": Format("tf32", 10, -126, 127, 32),
    "fp32": Format("fp32", 23, -126, 127, 32),
    "fp64": Format("fp64", 52, -1022, 1023, 64),
}

_ALIASES = {
    "bf16": "bf16",
    "bfloat16": "bf16",
    "fp16": "fp16",
    "f16": "fp16",
    "float16": "fp16",
    "half": "fp16",
    "tf32": "tf32",
    "tensorfloat32": "tf32",
    "fp32": "fp32",
    "f32": "fp32",
    "float32": "fp32",
    "single": "fp32",
    "fp64": "fp64",
    "f64": "fp64",
    "float64": "fp64",
    "double": "fp64",
}


def _dtype_name(dtype) -> str | None:
    """Lower-case name of a dtype of NumPy, ml_dtypes, CuPy, PyTorch or array_api_strict."""
    name = getattr(dtype, "name", None)
    if not isinstance(name, str):
        name = str(dtype)
    name = name.lower().removeprefix("<class '").removesuffix("'>")
    name = name.rsplit(".", 1)[-1]
    return name.strip("'\"()")


def format_of_dtype(dtype, *, argname: str = "x") -> Format:
    """The :class:`Format` of a real floating dtype of any supported library.

    Raises
    ------
    TypeError
        For integer, boolean, complex or other non-real-floating dtypes.
    """
    name = _dtype_name(dtype)
    key = _ALIASES.get(name)
    if key is None or key == "tf32":
        raise TypeError(
            f"{argname} must have a real floating dtype (bfloat16, float16, float32 or "
            f"float64); got dtype {name!r}"
        )
    return FORMATS[key]


def get_format(fmt, *, argname: str = "fmt") -> Format:
    """Resolve a format given as a :class:`Format`, a name or a dtype.

    Parameters
    ----------
    fmt : Format, str or dtype
        "bf16"/"bfloat16", "fp16"/"float16"/"half", "tf32", "fp32"/"float32"/"single",
        "fp64"/"float64"/"double", or a floating dtype of NumPy (ml_dtypes.bfloat16 included),
        CuPy, PyTorch or array_api_strict.

    Examples
    --------
    >>> get_format("bfloat16").unit_roundoff
    0.00390625
    """
    if isinstance(fmt, Format):
        return fmt
    if isinstance(fmt, str):
        key = _ALIASES.get(fmt.lower().replace("-", "").replace("_", ""))
        if key is None:
            raise ValueError(
                f"{argname}: unknown number format {fmt!r}; valid names are "
                f"{sorted(set(_ALIASES))}"
            )
        return FORMATS[key]
    if fmt is None:
        raise TypeError(f"{argname} must be a format name or a floating dtype, not None")
    try:
        return format_of_dtype(fmt, argname=argname)
    except TypeError:
        if isinstance(fmt, type) and issubclass(fmt, float):
            return FORMATS["fp64"]
        raise


def unit_roundoff(fmt) -> float:
    """Unit roundoff u = 2^-t of a format (name, dtype or :class:`Format`).

    Examples
    --------
    >>> unit_roundoff("bf16") == 2.0**-8
    True
    """
    return get_format(fmt).unit_roundoff
