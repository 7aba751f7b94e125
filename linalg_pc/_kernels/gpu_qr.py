"""CuPy kernel: Householder QR of a stack of small matrices, one CUDA thread per matrix.

The same algorithm as ``cpu_qr.py`` (LAPACK ``xGEQR2`` + ``xORG2R`` conventions, norms scaled by
max|x|), compiled per (m, n, mode, dtype) with the sizes as compile-time constants so the work
array lives in registers/local memory. cuSOLVER's and torch's batched QR loop over the batch
(PyTorch issue 143281: 270,000 3×3 QRs take 8.1 s in torch on an H100); one thread per matrix
does the whole stack in one launch. Built lazily: importing linalg_pc never needs CuPy.
"""

from __future__ import annotations

from functools import cache

__all__ = ["batched_householder_gpu", "MAX_DIM"]

#: Largest m or n the per-thread kernel accepts (local memory grows as m·n).
MAX_DIM = 32

_SRC = r"""
extern "C" __global__ void lpc_batched_qr(const T* __restrict__ A, T* __restrict__ Q,
                                          T* __restrict__ R, long long nb) {
    long long b = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (b >= nb) return;
    T W[M * N];
    T tau[K > 0 ? K : 1];
    const T* a = A + b * (M * N);
    for (int i = 0; i < M * N; ++i) W[i] = a[i];
    for (int j = 0; j < K; ++j) {
        T alpha = W[j * N + j];
        T s = 0;
        for (int i = j + 1; i < M; ++i) { T v = fabs(W[i * N + j]); if (v > s) s = v; }
        if (s == 0) { tau[j] = 0; continue; }
        T ss = 0;
        for (int i = j + 1; i < M; ++i) { T t = W[i * N + j] / s; ss += t * t; }
        T tn = s * sqrt(ss);
        T big = fabs(alpha) > tn ? fabs(alpha) : tn;
        T as_ = alpha / big, ts_ = tn / big;
        T nrm = big * sqrt(as_ * as_ + ts_ * ts_);
        T beta = alpha >= 0 ? -nrm : nrm;
        T tj = (beta - alpha) / beta;
        double scal = 1.0 / ((double)alpha - (double)beta);  /* fp32 overflows when subnormal */
        for (int i = j + 1; i < M; ++i) W[i * N + j] = (T)((double)W[i * N + j] * scal);
        W[j * N + j] = beta;
        tau[j] = tj;
        for (int c = j + 1; c < N; ++c) {
            T acc = W[j * N + c];
            for (int i = j + 1; i < M; ++i) acc += W[i * N + j] * W[i * N + c];
            acc *= tj;
            W[j * N + c] -= acc;
            for (int i = j + 1; i < M; ++i) W[i * N + c] -= acc * W[i * N + j];
        }
    }
    T* r = R + b * (RROWS * N);
    for (int i = 0; i < RROWS; ++i)
        for (int j = 0; j < N; ++j)
            r[i * N + j] = (i <= j && i < K) ? W[i * N + j] : T(0);
    if (!WANTQ) return;
    T* q = Q + b * (M * NCOLS);
    for (int i = 0; i < M; ++i)
        for (int j = 0; j < NCOLS; ++j) q[i * NCOLS + j] = (i == j) ? T(1) : T(0);
    for (int j = K - 1; j >= 0; --j) {
        T tj = tau[j];
        if (tj == 0) continue;
        for (int c = j; c < NCOLS; ++c) {
            T acc = q[j * NCOLS + c];
            for (int i = j + 1; i < M; ++i) acc += W[i * N + j] * q[i * NCOLS + c];
            acc *= tj;
            q[j * NCOLS + c] -= acc;
            for (int i = j + 1; i < M; ++i) q[i * NCOLS + c] -= acc * W[i * N + j];
        }
    }
}
"""


@cache
def _kernel(m: int, n: int, mode: str, dtype_name: str):
    import cupy

    k = min(m, n)
    ncols = m if mode == "complete" else k
    rrows = m if mode == "complete" else k
    ctype = {"float32": "float", "float64": "double"}[dtype_name]
    defs = (f"#define T {ctype}\n#define M {m}\n#define N {n}\n#define K {k}\n"
            f"#define NCOLS {ncols}\n#define RROWS {rrows}\n"
            f"#define WANTQ {0 if mode == 'r' else 1}\n")
    return cupy.RawKernel(defs + _SRC, "lpc_batched_qr"), ncols, rrows


def batched_householder_gpu(A, mode: str = "reduced"):
    """Householder QR of each matrix of a CuPy array A (batch, m, n), float32/float64.

    Returns (Q or None, R) with the shapes of ``cpu_qr.batched_householder``.
    """
    import cupy

    if A.ndim != 3 or A.dtype not in (cupy.float32, cupy.float64):
        raise TypeError("A must be a 3-D float32/float64 CuPy array")
    nb, m, n = A.shape
    if max(m, n) > MAX_DIM:
        raise ValueError(f"matrices up to {MAX_DIM}x{MAX_DIM}; got {m}x{n}")
    kern, ncols, rrows = _kernel(m, n, mode, A.dtype.name)
    A = cupy.ascontiguousarray(A)
    R = cupy.empty((nb, rrows, n), dtype=A.dtype)
    Q = cupy.empty((nb, m, ncols) if mode != "r" else (1,), dtype=A.dtype)
    if nb:
        threads = 128
        blocks = (nb + threads - 1) // threads
        kern((blocks,), (threads,), (A, Q, R, cupy.int64(nb)))
    return (None if mode == "r" else Q), R
