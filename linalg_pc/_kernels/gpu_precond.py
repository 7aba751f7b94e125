"""CuPy elementwise kernels: the fused passes of a Kronecker-preconditioner step on the GPU.

The GPU counterparts of :mod:`linalg_pc._kernels.cpu_precond`, for moments and factors stored
in the compute format (float32 or float64). On a device the finite-gradient flag is never read
by the host, so the decay rates arrive as 0-d device arrays already gated by it
(``where(ok, β, 1)``, ``where(ok, 1−β, 0)``) and the update is multiplied by the flag, exactly as
the array expressions of :mod:`linalg_pc.precond` do; each kernel is one launch instead of
their five to eight. Every product, sum, quotient and square root is written with the
round-to-nearest intrinsics (``__fmul_rn``, ``__dadd_rn``, ...), which the compiler never
contracts into a fused multiply-add, so the results equal the array expressions bit for bit
(NVRTC contracts ``a*b + c`` by default).

Built lazily on first use (importing linalg_pc never needs CuPy).
"""

from __future__ import annotations

from functools import cache

__all__ = ["takes", "adam_moments", "ema", "assemble"]

_PREAMBLE = r"""
__device__ __forceinline__ float lpc_mul(float a, float b) { return __fmul_rn(a, b); }
__device__ __forceinline__ double lpc_mul(double a, double b) { return __dmul_rn(a, b); }
__device__ __forceinline__ float lpc_add(float a, float b) { return __fadd_rn(a, b); }
__device__ __forceinline__ double lpc_add(double a, double b) { return __dadd_rn(a, b); }
__device__ __forceinline__ float lpc_sub(float a, float b) { return __fsub_rn(a, b); }
__device__ __forceinline__ double lpc_sub(double a, double b) { return __dsub_rn(a, b); }
__device__ __forceinline__ float lpc_div(float a, float b) { return __fdiv_rn(a, b); }
__device__ __forceinline__ double lpc_div(double a, double b) { return __ddiv_rn(a, b); }
__device__ __forceinline__ float lpc_sqrt(float a) { return __fsqrt_rn(a); }
__device__ __forceinline__ double lpc_sqrt(double a) { return __dsqrt_rn(a); }
"""

_ADAM = r"""
T gi = g;
T mi = lpc_add(lpc_mul(m, b1[0]), lpc_mul(c1[0], gi));
T vi = lpc_add(lpc_mul(v, b2[0]), lpc_mul(c2[0], lpc_mul(gi, gi)));
m = mi;
v = vi;
out = lpc_div(mi, lpc_add(lpc_sqrt(vi), eps));
"""

_EMA = "K = lpc_add(lpc_mul(K, b[0]), lpc_mul(c[0], S));"

_ASSEMBLE = r"""
T u = lpc_mul(-s[0], D);
if (wd) {
    u = lpc_sub(u, lpc_mul(lam, lpc_add(P, u)));
}
out = lpc_mul(u, okf[0]);
"""


@cache
def _kernels():
    import cupy

    adam = cupy.ElementwiseKernel(
        "T g, raw T b1, raw T c1, raw T b2, raw T c2, T eps", "T m, T v, T out", _ADAM,
        "lpc_precond_adam", preamble=_PREAMBLE)
    ema = cupy.ElementwiseKernel("T S, raw T b, raw T c", "T K", _EMA, "lpc_precond_ema",
                                 preamble=_PREAMBLE)
    assemble = cupy.ElementwiseKernel(
        "T D, T P, raw T s, T lam, raw T okf, bool wd", "T out", _ASSEMBLE,
        "lpc_precond_assemble", preamble=_PREAMBLE)
    return adam, ema, assemble


def takes(comp: str, *arrays) -> bool:
    """Whether the kernels take these arrays: C-contiguous CuPy arrays of the compute dtype
    (``comp`` "fp32" or "fp64"); None entries are skipped."""
    want = {"fp32": "float32", "fp64": "float64"}.get(comp)
    for a in arrays:
        if a is None:
            continue
        if type(a).__module__.split(".")[0] != "cupy" or str(a.dtype) != want:
            return False
        if not a.flags.c_contiguous:
            return False
    return True


def _one(x, like):
    """A 0-d device array (or Python float) as a 1-element array of ``like``'s dtype."""
    import cupy

    return cupy.asarray(x, dtype=like.dtype).reshape(1)


def adam_moments(g, m, v, b1, c1, b2, c2, eps: float):
    """m ← b1·m + c1·g, v ← b2·v + c2·g² in place; returns m/(√v + ε) (a new array).

    ``b1, c1, b2, c2``: 0-d device arrays of g's dtype (the gated decay rates); ``m``, ``v``:
    contiguous arrays of g's dtype and size. One launch: 3 reads, 3 writes per entry.
    """
    import cupy

    adam, _, _ = _kernels()
    out = cupy.empty_like(g)
    adam(g, _one(b1, g), _one(c1, g), _one(b2, g), _one(c2, g), g.dtype.type(eps), m, v, out)
    return out


def ema(K, S, b, c):
    """K ← b·K + c·S in place (b, c: 0-d device arrays of S's dtype). One launch."""
    _, kern, _ = _kernels()
    kern(S, _one(b, S), _one(c, S), K)
    return K


def assemble(D, P, s, lam: float, okf):
    """(−s·D − λ(P − s·D)) · okf as the array expressions form it (P None: no weight decay);
    ``s``: the step size (0-d device array or Python float), ``okf``: the finite flag as 0 or 1
    of D's dtype. One launch: 2 reads, 1 write per entry."""
    import cupy

    _, _, kern = _kernels()
    out = cupy.empty_like(D)
    kern(D, D if P is None else P, _one(s, D), D.dtype.type(lam), _one(okf, D), P is not None,
         out)
    return out
