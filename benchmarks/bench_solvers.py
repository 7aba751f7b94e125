"""Solvers suite: PCG on 3-D Poisson (one and eight right-hand sides) and batched DCReg.

Cases (full sizes; ``--quick`` shrinks them to finish in well under a minute):

* ``poisson3d_cg``: 7-point Dirichlet Poisson on 40³, 80³ and 100³ grids (the full run; 40³ only
  in the quick one) (64 000 to 10⁶ unknowns, CSR fp64), a fixed
  number of CG iterations (rtol tiny so neither solver stops early) against
  ``scipy.sparse.linalg.cg``. Reports time per iteration and the achieved memory bandwidth
  (bytes moved per iteration by each implementation's passes over the data: the matrix,
  12·nnz + 4n, plus 80·n of vectors in our three passes and 168·n in SciPy's; divided by the
  time per iteration) as a fraction of a copy bandwidth measured in the same run (the better
  of a serial and a 2-thread Numba copy of 2·128 MB, read + write counted) and of a read
  bandwidth (a 2-thread Numba sum over 256 MB; the passes mostly read, and a copy also reads
  each line it writes, so ``ours_bw_frac`` can exceed 1 while ``ours_read_frac`` cannot by
  much). The CG kernels run
  on all Numba threads when there are at least 2 of them (the "stream" policy), serially
  otherwise; the full run adds a case with the serial kernels forced.
* ``poisson3d_cg_s8``: the same matrix with 8 right-hand sides solved together against 8
  separate SciPy solves, same number of iterations each.
* ``dcreg_batch_vs_stacked``: ``solve_degenerate`` on 100 000 random 6×6 SPD systems (a third
  of them with a weak direction) against the best stacked-NumPy version written here
  (``np.linalg.solve``/``np.linalg.eigh``/``eigvalsh`` on the stacked blocks, vectorized
  assignment, vectorized masked PCG, ``np.linalg.solve`` fallback).
* ``dcreg_batch_vs_loop``: the same against a per-system Python loop over NumPy/SciPy
  (``np.linalg.eigh`` per block, ``scipy.sparse.linalg.cg`` with the preconditioner). The loop
  runs once (plus warm-up) in the full run: it takes tens of seconds.
"""

from __future__ import annotations

import itertools
import time

import numba
import numpy as np
import scipy.linalg as sla
import scipy.sparse as sp
import scipy.sparse.linalg as spl
from harness import Case

import linalg_pc as lpc
from linalg_pc._kernels import _twins
from linalg_pc._kernels import cpu_csr as K


def poisson3d(n: int) -> sp.csr_matrix:
    T = sp.diags([-np.ones(n - 1), 2 * np.ones(n), -np.ones(n - 1)], [-1, 0, 1], format="csr")
    eye = sp.identity(n, format="csr")
    A2 = sp.kron(T, eye, format="csr") + sp.kron(eye, T, format="csr")
    eye2 = sp.identity(n * n, format="csr")
    return (sp.kron(A2, eye, format="csr") + sp.kron(eye2, T, format="csr")).tocsr()


def _best_time(fn, repeats: int) -> float:
    """Shortest of ``repeats`` timed calls of ``fn`` after one untimed call."""
    fn()
    best = np.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def copy_bandwidth(nbytes: int = 128 << 20, repeats: int = 5) -> float:
    """Bytes per second of a Numba copy loop (read + write counted), the better of the serial
    and the 2-thread kernel."""
    src = np.ones(nbytes // 8)
    dst = np.empty_like(src)
    best = min(_best_time(lambda k=kern: k(src, dst), repeats)
               for kern in (K.copy_kernel, _twins.pick(K.copy_kernel, 0)))
    return 2 * src.nbytes / best


@numba.njit(parallel=True, cache=True)
def _sum_kernel(x):
    acc = 0.0
    for i in numba.prange(x.shape[0]):
        acc += x[i]
    return acc


def read_bandwidth(nbytes: int = 256 << 20, repeats: int = 5) -> float:
    """Bytes per second of a 2-thread Numba sum over ``nbytes`` (reads only). The CG passes
    mostly read (the matrix stream and most vectors), so this is the bandwidth they can reach;
    the copy bandwidth counts read + write but moves a third more (the written lines are read
    first), which is why a read-dominated kernel can exceed 100% of it."""
    x = np.ones(nbytes // 8)
    return x.nbytes / _best_time(lambda: _sum_kernel(x), repeats)


def _per_iteration(iters: int, bw: float, ours_bytes: int, scipy_bytes: int | None = None,
                   read_bw: float | None = None):
    """``Case.derived``: time per iteration and achieved bandwidth from the harness's medians.

    ``scipy_bytes`` None: the baseline is not one CG run (no per-iteration baseline fields).
    """
    def derive(rec: dict) -> dict:
        t_o = rec["ours_s"] / iters
        out = {"iters": iters, "ms_per_iter_ours": t_o * 1e3,
               "ours_GBps": ours_bytes / t_o / 1e9, "ours_bw_frac": ours_bytes / t_o / bw}
        if read_bw is not None:
            out["ours_read_frac"] = ours_bytes / t_o / read_bw
        if scipy_bytes is not None:
            t_b = rec["baseline_s"] / iters
            out.update(ms_per_iter_scipy=t_b * 1e3, scipy_GBps=scipy_bytes / t_b / 1e9,
                       scipy_bw_frac=scipy_bytes / t_b / bw)
            if read_bw is not None:
                out["scipy_read_frac"] = scipy_bytes / t_b / read_bw
        return out
    return derive


def ours_bytes(A) -> int:
    """Bytes per one-right-hand-side iteration of our CSR passes (fp64): the matrix stream
    (values, column indices, row pointers) and 80 n of vectors: the p update reads x, p, z and
    writes x, p (40 n), the SpMV reads p and writes q (16 n), the r update reads r, q and
    writes r (24 n)."""
    N = A.shape[0]
    return A.nnz * (8 + A.indices.itemsize) + (N + 1) * A.indptr.itemsize + 80 * N


def _rel_diff_x(o, s) -> dict:
    """‖x_ours − x_scipy‖/‖x_scipy‖ (one solve, or a list of per-column SciPy solutions)."""
    X = np.stack(s, axis=1) if isinstance(s, list) else s[0]
    return {"rel_diff_x": float(np.linalg.norm(o.x - X) / np.linalg.norm(X))}


# --------------------------------------------------------------------------- Poisson cases
def _moderate_cases(bw: float, rbw: float) -> list[Case]:
    """One right-hand side at 40³ and 80³ (60 iterations): where the per-call and
    per-iteration fixed costs (setup checks, allocation, thread wake-ups, the loop's Python)
    weigh most against SciPy."""
    out = []
    for n in (40, 80):
        A = poisson3d(n)
        N = A.shape[0]
        b = np.random.default_rng(n).standard_normal(N)
        mat = A.nnz * (8 + A.indices.dtype.itemsize) + (N + 1) * A.indptr.dtype.itemsize
        out.append(Case(f"poisson3d_cg n={n}^3", lambda A=A, b=b: lpc.pcg(A, b, rtol=1e-30,
                                                                          maxiter=60),
                        lambda A=A, b=b: spl.cg(A, b, rtol=1e-30, maxiter=60),
                        "scipy.sparse.linalg.cg", accuracy=_rel_diff_x, repeats=7,
                        extra={"unknowns": N},
                        derived=_per_iteration(60, bw, ours_bytes(A), mat + 168 * N, rbw)))
    return out


def poisson_cases(quick: bool) -> list[Case]:
    n = 40 if quick else 100
    iters = 20 if quick else 60
    A = poisson3d(n)
    N = A.shape[0]
    rng = np.random.default_rng(0)
    b = rng.standard_normal(N)
    B = rng.standard_normal((N, 8))
    bw = copy_bandwidth()
    rbw = read_bandwidth()
    nnz = A.nnz
    idx = A.indices.dtype.itemsize
    # bytes per iteration: matrix stream (values + column indices + row pointers) plus the
    # vector passes of each implementation (ours: see ours_bytes)
    mat = nnz * (8 + idx) + (N + 1) * A.indptr.dtype.itemsize
    ours1 = ours_bytes(A)
    scipy_bytes = mat + 168 * N

    def ours():
        return lpc.pcg(A, b, rtol=1e-30, maxiter=iters)

    def base():
        return spl.cg(A, b, rtol=1e-30, maxiter=iters)

    nthreads = numba.get_num_threads()
    threads = nthreads if nthreads >= _twins.POLICIES["stream"][1] else 1
    cases = [] if quick else _moderate_cases(bw, rbw)
    cases += [Case(f"poisson3d_cg n={n}^3", ours, base, "scipy.sparse.linalg.cg",
                  accuracy=_rel_diff_x, repeats=5, extra={"unknowns": N, "threads": threads,
                                                          "copy_GBps": bw / 1e9,
                                                          "read_GBps": rbw / 1e9},
                  derived=_per_iteration(iters, bw, ours1, scipy_bytes, rbw))]

    # the same with the serial kernels forced (the "stream" policy of _kernels._twins)
    def ours_serial():
        saved = _twins.POLICIES["stream"]
        _twins.POLICIES["stream"] = (saved[0], 10**6)
        try:
            return ours()
        finally:
            _twins.POLICIES["stream"] = saved

    if not quick and threads > 1:
        cases.append(Case(f"poisson3d_cg n={n}^3 1thr", ours_serial, base,
                          "scipy.sparse.linalg.cg", accuracy=_rel_diff_x, repeats=3,
                          extra={"unknowns": N, "threads": 1},
                          derived=_per_iteration(iters, bw, ours1, scipy_bytes, rbw)))

    def ours_multi():
        return lpc.pcg(A, B, rtol=1e-30, maxiter=iters)

    def base_multi():
        return [spl.cg(A, B[:, j], rtol=1e-30, maxiter=iters)[0] for j in range(8)]

    cases.append(Case(f"poisson3d_cg_s8 n={n}^3", ours_multi, base_multi, "8 x scipy cg",
                      accuracy=_rel_diff_x, repeats=2 if quick else 3,
                      extra={"unknowns": N, "rhs": 8},
                      derived=_per_iteration(iters, bw, mat + 8 * 80 * N, read_bw=rbw)))
    return cases


# --------------------------------------------------------------------------- DCReg baselines
PERMS = np.array(list(itertools.permutations(range(3))))
_SEL = np.zeros((9, 6))
_QMATS = np.zeros((6, 3, 3))
for _p, _perm in enumerate(PERMS):
    for _i, _j in enumerate(_perm):
        _SEL[_i * 3 + _j, _p] = 1.0
        _QMATS[_p, _j, _i] = 1.0


def _align_stacked(lam, V):
    N = V.shape[0]
    scores = (V * V).reshape(N, 9) @ _SEL
    Q = _QMATS[np.argmax(scores, axis=1)]
    V = V @ Q
    lam = np.einsum("nj,nji->ni", lam, Q)
    d = np.diagonal(V, axis1=1, axis2=2)
    V = V * np.where(d >= 0, 1.0, -1.0)[:, None, :]
    return lam, V


def dcreg_stacked(H, b, threshold=10.0, kappa=10.0, rtol=1e-6, maxiter=60):
    """The DCReg pipeline on stacked arrays with NumPy only (the strongest baseline we know)."""
    N = H.shape[0]
    HRR, HRt, HtR, Htt = H[:, :3, :3], H[:, :3, 3:], H[:, 3:, :3], H[:, 3:, 3:]
    S_R = HRR - HRt @ np.linalg.solve(Htt, HtR)
    S_t = Htt - HtR @ np.linalg.solve(HRR, HRt)
    lR, VR = _align_stacked(*np.linalg.eigh(S_R))
    lt, Vt = _align_stacked(*np.linalg.eigh(S_t))
    P = np.zeros_like(H)
    out = {}
    for off, lam, V, key in ((0, lR, VR, "R"), (3, lt, Vt, "t")):
        lmax = lam.max(axis=1, keepdims=True)
        deg = (lam <= 0) | (lmax > threshold * lam)
        lmin = lam.min(axis=1)
        out["cond_" + key] = np.where(lmin > 0, lmax[:, 0] / np.where(lmin > 0, lmin, 1), np.inf)
        out["deg_" + key] = deg
        lt_ = np.where(deg, np.maximum(lam, lmax / kappa), lam)
        P[:, off:off + 3, off:off + 3] = (V / lt_[:, None, :]) @ V.transpose(0, 2, 1)
    ev = np.linalg.eigvalsh(H)
    out["cond_H"] = ev[:, -1] / ev[:, 0]
    # masked PCG over the batch
    tol = rtol * np.maximum(1.0, np.linalg.norm(b, axis=1))
    x = np.zeros_like(b)
    r = b.copy()
    p = np.zeros_like(b)
    rho_prev = np.ones(N)
    active = np.linalg.norm(r, axis=1) >= tol
    for k in range(maxiter):
        if not active.any():
            break
        z = (P @ r[:, :, None])[:, :, 0]
        rho = np.einsum("ni,ni->n", r, z)
        beta = rho / rho_prev if k else np.zeros(N)
        p = np.where(active[:, None], z + beta[:, None] * p, p)
        q = (H @ p[:, :, None])[:, :, 0]
        pq = np.einsum("ni,ni->n", p, q)
        alpha = np.where(active, rho / np.where(active, pq, 1.0), 0.0)
        x += alpha[:, None] * p
        r -= alpha[:, None] * q
        rho_prev = np.where(active, rho, rho_prev)
        active &= np.linalg.norm(r, axis=1) >= tol
    if active.any():
        x[active] = np.linalg.solve(H[active], b[active][:, :, None])[:, :, 0]
    out["x"] = x
    return out


def dcreg_loop(H, b, threshold=10.0, kappa=10.0, rtol=1e-6, maxiter=60):
    """One system at a time, as a NumPy/SciPy user would write DCReg."""
    xs = np.empty_like(b)
    for s in range(H.shape[0]):
        Hs, bs = H[s], b[s]
        S_R = Hs[:3, :3] - Hs[:3, 3:] @ np.linalg.solve(Hs[3:, 3:], Hs[3:, :3])
        S_t = Hs[3:, 3:] - Hs[3:, :3] @ np.linalg.solve(Hs[:3, :3], Hs[:3, 3:])
        P = np.zeros((6, 6))
        for off, S in ((0, S_R), (3, S_t)):
            lam, V = np.linalg.eigh(S)
            best = max(PERMS, key=lambda pm, V=V: sum(V[i, pm[i]] ** 2 for i in range(3)))
            V = V[:, best] * np.where(np.diagonal(V[:, best]) >= 0, 1.0, -1.0)
            lam = lam[best]
            deg = (lam <= 0) | (lam.max() > threshold * lam)
            lt_ = np.where(deg, np.maximum(lam, lam.max() / kappa), lam)
            P[off:off + 3, off:off + 3] = (V / lt_) @ V.T
        np.linalg.eigvalsh(Hs)  # κ(H) for the report
        tol = rtol * max(1.0, np.linalg.norm(bs))
        x, info = spl.cg(Hs, bs, rtol=0.0, atol=tol, maxiter=maxiter, M=P)
        if info != 0:
            x = sla.solve(Hs, bs, assume_a="pos")
        xs[s] = x
    return xs


def dcreg_problem(N: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    J = rng.standard_normal((N, 20, 6))
    weak = rng.integers(0, 6, N)
    sel = rng.random(N) < 1 / 3
    J[np.nonzero(sel)[0], :, weak[sel]] *= 1e-3
    H = J.transpose(0, 2, 1) @ J
    b = rng.standard_normal((N, 6))
    return H, b


def dcreg_cases(quick: bool) -> list[Case]:
    N = 10_000 if quick else 100_000
    H, b = dcreg_problem(N)

    def ours():
        return lpc.solve_degenerate(H, b)

    def stacked():
        return dcreg_stacked(H, b)

    xs = np.linalg.solve(H, b[:, :, None])[:, :, 0]

    def acc(o, s):
        x, rep, res = o
        e_o = np.linalg.norm(x - xs, axis=1) / np.linalg.norm(xs, axis=1)
        e_s = np.linalg.norm(s["x"] - xs, axis=1) / np.linalg.norm(xs, axis=1)
        return {"systems": N, "median_relerr_ours": float(np.median(e_o)),
                "median_relerr_base": float(np.median(e_s)),
                "flag_agree": float(np.mean(np.concatenate([rep.degenerate_R == s["deg_R"],
                                                            rep.degenerate_t == s["deg_t"]],
                                                           axis=1))),
                "mean_iters": float(np.mean(res.iterations)),
                "fallbacks": int(np.sum(res.fallback))}

    cases = [Case(f"dcreg_batch_vs_stacked N={N}", ours, stacked, "stacked NumPy (eigh)",
                  accuracy=acc, repeats=3 if quick else 5)]
    Nl = 1_000 if quick else N
    Hl, bl = H[:Nl], b[:Nl]

    def ours_l():
        return lpc.solve_degenerate(Hl, bl)

    def loop():
        return dcreg_loop(Hl, bl)

    def acc_l(o, s):
        return {"systems": Nl, "max_diff_vs_loop": float(np.max(np.abs(o[0] - s)))}

    cases.append(Case(f"dcreg_batch_vs_loop N={Nl}", ours_l, loop,
                      "per-system loop NumPy/SciPy", accuracy=acc_l, repeats=1 if not quick
                      else 2))
    return cases


def cases(quick: bool) -> list[Case]:
    return poisson_cases(quick) + dcreg_cases(quick)
