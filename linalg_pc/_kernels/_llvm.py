"""LLVM-level helpers for the Numba kernels: what plain Numba code cannot say.

- :func:`decode8_nt` decodes 8 bf16 bit patterns to fp32 bit patterns (``uint32(b) << 16``) as one
  vector and writes them with a *non-temporal* store (``!nontemporal`` metadata: ``vmovntdq`` on
  x86, ``stnp`` on AArch64). A non-temporal store does not read the destination cache line
  first, so a large output costs its size in memory traffic once instead of twice (the
  read-for-ownership of an ordinary store). The destination must be 32-byte aligned.
- :func:`store_fence` orders those stores before anything that follows (``fence seq_cst``: an
  ``mfence`` on x86); each thread calls it after its last non-temporal store.

Non-temporal stores bypass the cache, so they only pay for outputs larger than the last-level
cache that are not read again at once; the callers use them above a size threshold.
"""

from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.extending import intrinsic

__all__ = ["decode8_nt", "store_fence", "NT_ALIGN"]

#: Byte alignment of the destination of a non-temporal vector store.
NT_ALIGN = 32


@intrinsic
def decode8_nt(typingctx, src, dst, i):
    """``dst[i:i+8] = uint32(src[i:i+8]) << 16`` with a non-temporal 32-byte store.

    ``src``: 1-D C-contiguous uint16 array; ``dst``: 1-D C-contiguous uint32 array with
    ``dst[i]`` 32-byte aligned; no bounds checks (the caller guarantees i + 8 <= size).
    """
    if not (isinstance(src, types.Array) and src.dtype == types.uint16 and src.ndim == 1
            and isinstance(dst, types.Array) and dst.dtype == types.uint32 and dst.ndim == 1):
        return None
    sig = types.void(src, dst, i)

    def codegen(context, builder, sig, args):
        sa = context.make_array(sig.args[0])(context, builder, args[0])
        da = context.make_array(sig.args[1])(context, builder, args[1])
        idx = context.cast(builder, args[2], sig.args[2], types.intp)
        v16 = ir.VectorType(ir.IntType(16), 8)
        v32 = ir.VectorType(ir.IntType(32), 8)
        sp = builder.bitcast(builder.gep(sa.data, [idx]), v16.as_pointer())
        dp = builder.bitcast(builder.gep(da.data, [idx]), v32.as_pointer())
        x = builder.load(sp, align=2)
        y = builder.shl(builder.zext(x, v32), ir.Constant(v32, [16] * 8))
        _nontemporal(builder, builder.store(y, dp, align=NT_ALIGN))
        return context.get_dummy_value()

    return sig, codegen


def _nontemporal(builder, store):
    store.set_metadata("nontemporal",
                       builder.module.add_metadata([ir.Constant(ir.IntType(32), 1)]))


@intrinsic
def store_fence(typingctx):
    """A sequentially consistent fence: non-temporal stores before it are globally visible."""
    sig = types.void()

    def codegen(context, builder, sig, args):
        builder.fence("seq_cst")
        return context.get_dummy_value()

    return sig, codegen
