"""``lpc.qr``: one entry point over every QR algorithm of the package.

``method="auto"`` picks, from the shape only (no extra pass over A):

- a stack of matrices of at most ``BATCHED_MAX_DIM`` rows and columns -> the batched kernel;
- a tall-skinny matrix (m >= 4n, m·n >= ``AUTO_TALL_MIN_SIZE``) -> CholeskyQR2, whose fallback
  chain (shifted CholeskyQR3 on Cholesky breakdown, Householder if that breaks down too) covers
  every condition number; ``info.fallbacks`` says which ran and why;
- anything else (square, wide, small, larger stacks) -> Householder through the vendor library.
"""

from __future__ import annotations

import math

import numpy as np

from .. import _backend as B
from .._backend.dask import dispatch
from ._common import METHODS, QRInfo, QRResult, finish, kappa_est, prepare
from .batched import BATCHED_MAX_DIM, KAPPA_EST_MAX_BATCH, batched_core, batched_qr
from .cholesky import cholqr, cholqr2, scholqr3
from .gram_schmidt import bcgs2, cgs2, mgs
from .householder import householder_core, householder_qr
from .randomized import rand_cholqr
from .tall_skinny import tsqr

__all__ = ["qr", "AUTO_TALL_MIN_SIZE", "AUTO_TALL_RATIO"]

#: ``auto`` uses CholeskyQR2 for m >= AUTO_TALL_RATIO·n ...
AUTO_TALL_RATIO = 4
#: ... and m·n at least this (below it LAPACK's call overhead is all there is to save).
AUTO_TALL_MIN_SIZE = 1 << 14

_FUNCS = {
    "householder": householder_qr,
    "cholqr": cholqr,
    "cholqr2": cholqr2,
    "scholqr3": scholqr3,
    "rand_cholqr": rand_cholqr,
    "cgs2": cgs2,
    "mgs": mgs,
    "bcgs2": bcgs2,
    "tsqr": tsqr,
    "batched": batched_qr,
}


#: The keyword options each method takes (``**options`` of :func:`qr`).
OPTIONS = {
    "householder": ("block_size", "vendor"),
    "bcgs2": ("block_size",),
    "scholqr3": ("shift",),
    "rand_cholqr": ("sketch", "sketch_size", "sketch_format"),
    "tsqr": ("leaf_rows",),
}


def _check_options(method: str, options: dict, requested: str, shape) -> None:
    """Raise TypeError naming an option ``method`` does not take (before any work)."""
    bad = sorted(set(options) - set(OPTIONS.get(method, ())))
    if not bad:
        return
    if "pivoting" in bad:
        raise TypeError("pivoting is not supported: lpc.qr has no column-pivoted QR (use "
                        "scipy.linalg.qr(A, pivoting=True) for a rank-revealing factorization)")
    takers = sorted(m for m, opts in OPTIONS.items() if set(bad) <= set(opts))
    where = (f"method 'auto' (which chose {method!r} for shape {tuple(shape)})"
             if requested == "auto" else f"method {method!r}")
    raise TypeError(f"unexpected option(s) {bad} for {where}; it takes "
                    f"{list(OPTIONS.get(method, ())) or 'no options'}"
                    + (f"; {bad} are options of {takers}" if takers else ""))


def _choose(A) -> str:
    m, n = A.shape[-2], A.shape[-1]
    if A.ndim > 2:
        return "batched" if max(m, n) <= BATCHED_MAX_DIM else "householder"
    if n >= 1 and m >= AUTO_TALL_RATIO * n and m * n >= AUTO_TALL_MIN_SIZE:
        return "cholqr2"
    return "householder"


def qr(A, *, method: str = "auto", mode: str = "reduced", storage=None, compute=None,
       emulate=None, rng=None, **options) -> QRResult:
    """QR factorization A = QR of a matrix or a stack of matrices, in any format and library.

    Parameters
    ----------
    A : array (..., m, n)
        NumPy (ml_dtypes bf16 included), CuPy, PyTorch or array_api_strict; any real floating
        format. Integer input is cast to fp64; complex input raises NotImplementedError.
    method : str
        "auto" (default), "householder", "cholqr", "cholqr2", "scholqr3", "rand_cholqr",
        "cgs2", "mgs", "bcgs2", "tsqr", or "batched". The tall-only methods (all but
        householder, batched, auto) need m >= n.
    mode : {"reduced", "complete", "r"}
        Q m×k and R k×n (k = min(m, n)); Q m×m and R m×n; or R only (Q is None).
    storage : format, optional
        Format of the returned Q and R (default: A's; integer A: fp64).
    compute : {"fp32", "fp64"}, optional
        Arithmetic format (default fp32 for 16-bit A, else A's). Gram matrices and inner
        products accumulate in it.
    emulate : format, optional
        Round every stored intermediate to this format (e.g. "bf16") to study what the algorithm
        would do in it; runs our own implementations (no vendor QR).
    rng : optional
        Randomness for ``rand_cholqr``'s sketch.
    **options
        Passed to the method's function (:data:`OPTIONS`): ``block_size`` (householder, bcgs2),
        ``shift`` (scholqr3), ``sketch``, ``sketch_size``, ``sketch_format`` (rand_cholqr),
        ``leaf_rows`` (tsqr), ``vendor`` (householder). With ``method="auto"``, Householder's
        options (``block_size``, ``vendor``) select Householder on every shape; an option the
        chosen method does not take raises TypeError naming it, before any work.

    Returns
    -------
    QRResult
        ``(Q, R, info)``; Q and R in A's library and device, in the storage format; ``info`` a
        :class:`QRInfo` (method used, fallbacks and why, shifts, passes, κ estimate).

    Raises
    ------
    ValueError
        Unknown method or mode, A with fewer than 2 dimensions, NaN/inf in A, m < n for a
        tall-only method (the message names a method that works).
    TypeError
        An option the method does not take (named in the message); ``pivoting`` (no
        column-pivoted QR is offered).
    NotImplementedError
        Complex A.

    Notes
    -----
    No autograd: a PyTorch tensor that requires grad is read detached, and Q and R never
    require grad (use ``torch.linalg.qr`` to differentiate through a QR). The result does not
    depend on ``requires_grad``.

    Examples
    --------
    >>> import numpy as np, ml_dtypes
    >>> A = np.random.default_rng(0).standard_normal((4000, 16)).astype(ml_dtypes.bfloat16)
    >>> Q, R, info = qr(A)
    >>> Q.dtype.name, info.method, info.compute
    ('bfloat16', 'cholqr2', 'fp32')
    """
    if (dist := dispatch("qr", A)) is not None:  # a Dask array: linalg_pc.distributed
        return dist(A, method=method, mode=mode, storage=storage, compute=compute,
                    emulate=emulate, rng=rng, **options)
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; valid methods are {list(METHODS)}")
    requested = method
    if method == "auto" and getattr(A, "ndim", 0) >= 2:
        method = _choose(A)
        if options and not set(options) <= set(OPTIONS.get(method, ())) and set(options) <= set(
                OPTIONS["householder"]):
            method = "householder"  # Householder's options ask for Householder, on any shape
    if hasattr(A, "shape"):
        _check_options(method, options, requested, A.shape)
    direct = method != "batched" and (getattr(A, "ndim", 0) == 2
                                      or (method == "householder" and bool(options)))
    kwargs = dict(mode=mode, storage=storage, compute=compute, emulate=emulate, **options)
    if method == "rand_cholqr":
        kwargs["rng"] = rng
    notes: tuple = ()
    if direct:
        # A single matrix goes to the method's function as it came: the function checks and
        # decodes it itself, so a decoded bf16/fp16 copy is a private work array it may overwrite
        # (CholeskyQR on NumPy also reads finiteness off the Gram matrix's diagonal).
        if requested == "auto":
            notes = (f"auto chose {method} for shape {tuple(A.shape)}",)
        res = _FUNCS[method](A, **kwargs)
        info = res.info
        return QRResult(res.Q, res.R, _replace(info, requested=requested,
                                               notes=notes + tuple(info.notes)))
    ctx, Ac = prepare(A, method=method, mode=mode, storage=storage, compute=compute,
                      emulate=emulate, tall_only=method not in ("auto", "householder", "batched"))
    if requested == "auto":
        ctx.trace.notes.append(f"auto chose {method} for shape {tuple(Ac.shape)}")
    kwargs.update(storage=ctx.storage, compute=ctx.compute, emulate=ctx.emulate)
    if Ac.ndim > 2 and method not in ("householder", "batched"):
        res = _loop(Ac, method, kwargs)
    elif (method == "batched" or (method == "householder" and Ac.ndim > 2)) and not options:
        ctx.trace.method = method
        Q, R = (batched_core if method == "batched" else householder_core)(ctx, Ac)
        if math.prod(Ac.shape[:-2]) <= KAPPA_EST_MAX_BATCH:
            ctx.trace.kappa_est = kappa_est(ctx.xp, R)
        res = finish(ctx, Q, R)  # its info already holds ctx's notes
        return QRResult(res.Q, res.R, _replace(res.info, requested=requested))
    else:
        res = _FUNCS[method](Ac, **kwargs)
    info = res.info
    notes = tuple(ctx.trace.notes) + tuple(info.notes)
    return QRResult(res.Q, res.R, _replace(info, requested=requested, notes=notes))


def orthonormal_basis(A, *, compute):
    """Q of the reduced QR of a finite stack A (..., m, n), in the compute format.

    The factorization :func:`qr` runs on ``qr(A, compute=compute, storage=compute)`` (the same
    method choice and kernels, so the same Q bit for bit), without what an iteration that needs
    only Q does not use: the finiteness check of A (the caller guarantees it, e.g. by replacing
    non-finite members), the κ estimate of R (a host loop of LAPACK ``xtrcon`` over the
    members) and the result record. The preconditioners' basis refresh calls it once per factor
    stack. A single matrix goes through :func:`qr` itself.

    Parameters
    ----------
    A : array (..., m, n)
        Finite entries, any supported library; m >= n for the reduced Q to have n columns.
    compute : {"fp32", "fp64"} or a format
        The arithmetic and the format of the returned Q.

    Returns
    -------
    array (..., m, min(m, n))
        Q, with orthonormal columns to ‖I − QᵀQ‖ ≤ γ̃_{mn} (Householder; Higham, ASNA,
        Thm 19.4). Cost: that of the QR, 4mn² − 4n³/3 flops per matrix.
    """
    if getattr(A, "ndim", 0) <= 2:
        return qr(A, compute=compute, storage=compute).Q
    ctx, Ac = prepare(A, method="auto", mode="reduced", storage=compute, compute=compute,
                      check=False)
    core = batched_core if _choose(Ac) == "batched" else householder_core
    Q, _ = core(ctx, Ac)
    return Q


def _replace(info: QRInfo, **kw) -> QRInfo:
    d = info.as_dict()
    d.update(kw)
    return QRInfo(**d)


def _loop(Ac, method: str, kwargs) -> QRResult:
    """Per-matrix loop for methods without a batched implementation."""
    xp = B.array_namespace(Ac)
    batch = tuple(Ac.shape[:-2])
    m, n = Ac.shape[-2], Ac.shape[-1]
    nb = math.prod(batch)
    flat = xp.reshape(Ac, (nb, m, n))
    if nb == 0:
        ctx, _ = prepare(Ac, method=method, mode=kwargs["mode"], storage=kwargs["storage"],
                         compute=kwargs["compute"], emulate=kwargs["emulate"])
        Q, R = householder_core(ctx, Ac)
        return finish(ctx, Q, R)
    Qs, Rs, infos = [], [], []
    for i in range(nb):
        res = _FUNCS[method](flat[i, ...], **kwargs)
        Qs.append(res.Q)
        Rs.append(res.R)
        infos.append(res.info)
    R = xp.reshape(xp.stack(Rs, axis=0), batch + tuple(Rs[0].shape))
    Q = None if Qs[0] is None else xp.reshape(xp.stack(Qs, axis=0), batch + tuple(Qs[0].shape))
    used = sorted({i.method for i in infos})
    fallbacks = tuple(f"[{i}] {f}" for i, inf in enumerate(infos) for f in inf.fallbacks)
    shifts = tuple(s for inf in infos for s in inf.shifts)
    kap = max((inf.kappa_est for inf in infos), default=float("nan"))
    info = _replace(infos[0], method=used[0] if len(used) == 1 else "+".join(used),
                    fallbacks=fallbacks, shifts=shifts,
                    passes=max(inf.passes for inf in infos), kappa_est=float(np.float64(kap)),
                    notes=(f"looped over {nb} matrices",) + tuple(
                        f"[{i}] {note}" for i, inf in enumerate(infos) if inf.r_overflow
                        for note in inf.notes if note.startswith("R overflows")),
                    r_overflow=any(inf.r_overflow for inf in infos))
    return QRResult(Q, R, info)
