"""Reading and writing state arrays in their storage formats (shared by the transforms and
the subspace refresh)."""

from __future__ import annotations

from .. import _backend as B
from .._backend.convert import DECODE, STORE, convert
from ..precision import get_format

__all__ = ["load", "store_into", "ema_into"]


def load(x, comp: str):
    """A stored array in the compute format (the array itself when already in it)."""
    f = B.format_of(x)
    return x if f.name == comp else convert(x, f, get_format(comp), op=DECODE)


def store_into(dst, value):
    """Write the compute-format ``value`` into the stored array ``dst`` (rounding to nearest
    when ``dst`` is narrower). Returns ``dst``."""
    fd, fv = B.format_of(dst), B.format_of(value)
    if fd == fv:
        dst[...] = value
        return dst
    return convert(value, fv, fd, op=STORE, out=dst)


def ema_into(dst, new, b, c, comp: str):
    """dst ← b·dst + c·new in place (b, c: 0-d device arrays of the compute dtype)."""
    if B.format_of(dst).name == comp:
        dst *= b
        dst += c * new
        return dst
    return store_into(dst, b * load(dst, comp) + c * new)
