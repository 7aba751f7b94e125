"""Shared plumbing of the QR methods: the result record, input checks, formats and BLAS helpers.

Every QR function of this package goes through the same three steps:

1. :func:`prepare` checks the input (before any work), resolves the array namespace and the
   three formats (``compute``: the arithmetic, ``storage``: what Q and R are returned in,
   ``emulate``: the format every stored intermediate is rounded to, or None) and decodes ``A``
   into the compute dtype (16-bit inputs are decoded exactly by ``_backend.convert``);
2. the algorithm runs in the compute dtype, calling ``ctx.em(x)`` on everything it stores;
3. :func:`finish` casts Q and R to the storage format and freezes the :class:`QRInfo`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, NamedTuple

import numpy as np

from .. import _backend as B
from .._backend.convert import DECODE, EMULATE, STORE, convert
from .._backend.linalg import diagonal, to_float
from .._formats import Format
from .._operators import is_array
from .._policy import Precision, ResolvedPrecision

__all__ = ["QRResult", "QRInfo", "METHODS", "MODES", "TALL_ONLY"]

METHODS = ("auto", "householder", "cholqr", "cholqr2", "scholqr3", "rand_cholqr", "cgs2", "mgs",
           "bcgs2", "tsqr", "batched")
MODES = ("reduced", "complete", "r")
# Methods that need m >= n (they produce a Q with n orthonormal columns).
TALL_ONLY = ("cholqr", "cholqr2", "scholqr3", "rand_cholqr", "cgs2", "mgs", "bcgs2", "tsqr")


@dataclass(frozen=True)
class QRInfo:
    """What a QR factorization did, as plain values.

    Attributes
    ----------
    method : str
        The algorithm that produced the returned factors (after any fallback).
    requested : str
        The method the caller asked for.
    fallbacks : tuple of str
        One line per fallback taken, ``"<from> -> <to>: <why>"`` (Cholesky breakdown with the
        leading minor, non-finite values, loss of rank).
    shifts : tuple of float
        Diagonal shifts added to Gram matrices (shifted CholeskyQR), in the order tried.
    passes : int
        Number of passes over A (CholeskyQR passes, reorthogonalizations); 1 for Householder.
    kappa_est : float
        Cheap estimate of κ(A) from R (LAPACK ``trcon`` 1-norm estimate for NumPy, ‖R‖₁‖R⁻¹‖₁
        otherwise; the largest over a batch); ``inf`` for a singular R, ``nan`` when not formed.
    compute, storage : str
        Arithmetic and returned formats. ``emulate``: the emulated format or None.
    mode : str
        "reduced", "complete" or "r".
    backend : str
        Who did the heavy lifting: "lapack" (scipy/numpy), "torch", "cusolver", "blas" (our
        algorithm on the library's matmul), "reference" (our array-API code), "numba", "cuda".
    notes : tuple of str
        Anything else worth knowing (sketch type and size, extra passes, rescaling).
    r_overflow : bool
        True when entries of R exceed the largest finite value of the storage format (or of the
        compute format): those entries are returned as ±inf, and ``notes`` says so and names a
        format or scaling that holds R. Q is finite and orthonormal all the same (it does not
        depend on A's scale); A·2^e = Q·(R·2^e) for the power of two the note gives.
    """

    method: str
    requested: str
    fallbacks: tuple = ()
    shifts: tuple = ()
    passes: int = 1
    kappa_est: float = float("nan")
    compute: str = "fp64"
    storage: str = "fp64"
    emulate: str | None = None
    mode: str = "reduced"
    backend: str = "reference"
    notes: tuple = ()
    r_overflow: bool = False

    def as_dict(self) -> dict:
        """The info as a plain dict."""
        return asdict(self)


class QRResult(NamedTuple):
    """``Q`` (None for ``mode="r"``), ``R`` and :class:`QRInfo`.

    ``Q`` and ``R`` live in A's library, on A's device, in the storage format.
    """

    Q: Any
    R: Any
    info: QRInfo


@dataclass
class Trace:
    """Mutable record an algorithm fills while it runs (frozen into QRInfo by ``finish``)."""

    method: str
    requested: str
    fallbacks: list = field(default_factory=list)
    shifts: list = field(default_factory=list)
    passes: int = 1
    kappa_est: float = float("nan")
    backend: str = "reference"
    notes: list = field(default_factory=list)
    #: R as computed is the true R·2^-r_exp (an int, or one exponent per matrix of a stack):
    #: the scaling back is left to :func:`finish` when it overflows the compute format.
    r_exp: Any = 0


@dataclass
class Ctx:
    """Namespace, resolved formats (:class:`~linalg_pc._policy.ResolvedPrecision`) and trace of
    one factorization."""

    xp: Any
    prec: ResolvedPrecision
    mode: str
    trace: Trace
    #: False for an inner factorization (:meth:`sub`), whose R its caller uses as a value.
    top: bool = True

    @property
    def input_format(self) -> Format:
        return self.prec.input

    @property
    def compute(self) -> Format:
        return self.prec.compute

    @property
    def storage(self) -> Format:
        return self.prec.storage

    @property
    def emulate(self) -> Format | None:
        return self.prec.emulate

    @property
    def dtype(self):
        return self.prec.compute_dtype(self.xp)

    @property
    def u(self) -> float:
        """Unit roundoff of the arithmetic that accumulates (the compute format)."""
        return self.prec.u

    @property
    def u_work(self) -> float:
        """Unit roundoff of the stored intermediates (emulated format when emulating)."""
        return self.prec.u_work

    def em(self, x):
        """Round a stored intermediate to the emulated format (identity when not emulating)."""
        if self.emulate is None or x is None:
            return x
        if isinstance(x, np.generic):  # NumPy turns 0-d results into scalars (np.float64 is a
            x = np.asarray(x)  # float, not an array)
            return convert(x, B.format_of(x), self.emulate, op=EMULATE, xp=np)[()]
        return convert(x, B.format_of(x), self.emulate, op=EMULATE, xp=self.xp)

    def sub(self, mode: str, method: str = "householder") -> Ctx:
        """A context for an inner factorization of compute-format data (same arithmetic and
        emulation, results kept in the compute format) with its own trace."""
        p = self.prec
        prec = ResolvedPrecision(input=p.compute, storage=p.compute, compute=p.compute,
                                 emulate=p.emulate)
        return Ctx(xp=self.xp, prec=prec, mode=mode, trace=Trace(method, method), top=False)

    @property
    def name(self) -> str:
        return B.namespace_name(self.xp)


def prepare(A, *, method: str, mode: str = "reduced", storage=None, compute=None, emulate=None,
            tall_only: bool = False, check: bool = True, batch_ok: bool = True,
            decode: bool = True):
    """Check ``A`` and the options, and decode A into the compute dtype.

    The formats are resolved by the precision policy, ``Precision(storage, compute,
    emulate).resolve(A)`` (:mod:`linalg_pc._policy`): compute defaults to A's format, at least
    fp32; storage to A's format. Returns ``(ctx, Ac)`` with ``Ac`` of shape A.shape in the
    compute dtype (A itself when no conversion is needed: algorithms must not write into it);
    with ``decode=False``, A as checked (detached, integers cast), for :func:`decode_input` or a
    method that reads A in its own format.
    Raises before any work: TypeError for a non-array, ValueError for ndim < 2, non-finite
    entries (naming ``A``), an unknown mode or format, m < n for a tall-only method;
    NotImplementedError for complex input. Integer and boolean inputs are cast to fp64, as NumPy
    does.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if not is_array(A):  # a NumPy scalar too (array_namespace would refuse it unnamed)
        raise TypeError(f"A must be an array, got {type(A).__name__}")
    xp = B.array_namespace(A)
    detach = B.delegate(xp, "detach")  # no autograd: read a tensor that requires grad detached
    if detach is not None:
        A = detach(A)
    if A.ndim < 2:
        raise ValueError(f"A must have at least 2 dimensions (..., m, n), got shape "
                         f"{tuple(A.shape)}")
    if not batch_ok and A.ndim > 2:
        raise ValueError(f"method {method!r} takes a single matrix; got A of shape "
                         f"{tuple(A.shape)} (use lpc.qr, which loops over the batch)")
    kind = B.dtype_kind(A)
    if kind == "complex":
        raise NotImplementedError("complex A is not supported yet; factor the real and "
                                  "imaginary parts as a real problem or use the library's QR")
    if kind in ("int", "bool"):
        A = xp.astype(A, xp.float64)
    elif kind != "float":
        raise TypeError(f"A must have a real floating or integer dtype, got {A.dtype}")
    B.format_of(A, argname="A")
    m, n = A.shape[-2], A.shape[-1]
    if tall_only and m < n:
        raise ValueError(f"method {method!r} needs m >= n (a tall or square A); got A of shape "
                         f"{tuple(A.shape)}. Use method='householder' (or 'auto') for wide "
                         f"matrices")
    prec = Precision(storage=storage, compute=compute, emulate=emulate).resolve(A)
    if not B.has_dtype(xp, prec.storage):
        raise ValueError(f"storage {prec.storage.name!r} has no dtype in "
                         f"{B.namespace_name(xp)}")
    if check:
        B.check_finite(xp, A, "A")
    ctx = Ctx(xp=xp, prec=prec, mode=mode, trace=Trace(method=method, requested=method))
    return ctx, (decode_input(ctx, A) if decode else A)


def decode_input(ctx: Ctx, A):
    """A (as :func:`prepare` returned it with ``decode=False``) in the compute dtype: A itself
    when it has it, else an exact decode (a fresh array); rounded to the emulated format when
    emulating."""
    fin, fc = ctx.prec.input, ctx.prec.compute
    Ac = A if fin == fc else convert(A, fin, fc, op=DECODE, xp=ctx.xp)
    return ctx.em(Ac) if ctx.emulate is not None else Ac


def cast_out(ctx: Ctx, X):
    """X (compute dtype) in the storage format."""
    if X is None:
        return None
    src = B.format_of(X)
    return X if src == ctx.storage else convert(X, src, ctx.storage, op=STORE, xp=ctx.xp)


def finish(ctx: Ctx, Q, R) -> QRResult:
    """Scale R back (a deferred ``trace.r_exp``), cast to storage, freeze the trace.

    R's entries beyond the largest finite value of the compute or storage format become ±inf
    (IEEE overflow), and ``info.r_overflow`` and a note say so. The check reads R (O(kn)) only
    when R was scaled back here or the storage format is narrower than the compute format.
    """
    t = ctx.trace
    r_exp = t.r_exp
    scaled = not (isinstance(r_exp, int) and r_exp == 0)
    if scaled:
        R = _scale_back(ctx.xp, R, r_exp)
    Qs, Rs = (None if ctx.mode == "r" else cast_out(ctx, Q)), cast_out(ctx, R)
    r_overflow = False
    if (scaled or ctx.storage.max < ctx.compute.max) and not all_finite(ctx.xp, Rs):
        r_overflow = True
        fmt = ctx.storage if ctx.storage.max < ctx.compute.max else ctx.compute
        emax = int(np.max(r_exp)) if scaled else 0
        hint = ("compute='fp64', storage='fp64' hold it" if fmt.max < 1e300
                else "A scaled by a power of two has a finite R")
        t.notes.append(f"R overflows {fmt.name}: its entries beyond {fmt.max:.4g} are returned "
                       f"as inf (Q is finite and orthonormal); "
                       + (f"R*2^-{emax} is the R of A*2^-{emax}; " if emax else "") + hint)
    info = QRInfo(method=t.method, requested=t.requested, fallbacks=tuple(t.fallbacks),
                  shifts=tuple(float(s) for s in t.shifts), passes=int(t.passes),
                  kappa_est=float(t.kappa_est), compute=ctx.compute.name,
                  storage=ctx.storage.name,
                  emulate=None if ctx.emulate is None else ctx.emulate.name, mode=ctx.mode,
                  backend=t.backend, notes=tuple(t.notes), r_overflow=r_overflow)
    return QRResult(Qs, Rs, info)


# --------------------------------------------------------------------------- small helpers
def mT(xp, X):
    return xp.matrix_transpose(X) if hasattr(xp, "matrix_transpose") else X.mT


def eye(xp, n, m=None, *, like):
    return xp.eye(n, m if m is not None else n, dtype=like.dtype, device=B.device_of(like))


def zeros(xp, shape, *, like):
    return xp.zeros(tuple(shape), dtype=like.dtype, device=B.device_of(like))


def triu(xp, X):
    return xp.triu(X) if hasattr(xp, "triu") else X * _triu_mask(xp, X)


def _triu_mask(xp, X):
    m, n = X.shape[-2], X.shape[-1]
    dev = B.device_of(X)
    i = xp.arange(m, device=dev)[:, None]
    j = xp.arange(n, device=dev)[None, :]
    return xp.astype(j >= i, X.dtype)


def pow2_exponent(xp, X) -> int:
    """The e with max|X|·2^e in [0.5, 1) (0 for an empty, zero or non-finite X)."""
    if X.shape[-1] == 0 or X.shape[-2] == 0:
        return 0
    amax = to_float(xp.max(xp.abs(X)))
    if amax == 0 or not math.isfinite(amax):
        return 0
    return -math.frexp(amax)[1]


def scale_pow2(X, e: int):
    """X·2^e in two multiplications, so neither factor overflows X's format.

    Scaling a subnormal matrix up to 1 needs 2^149 in fp32 (2^1074 in fp64), beyond the largest
    finite value (and beyond a Python float); each half of the exponent is representable
    whenever the smallest subnormal is at least 1/max², which holds for every IEEE format we
    use. Exact unless the result is subnormal (then one rounding, in the second step).
    """
    if e == 0:
        return X
    h = e // 2
    return (X * 2.0 ** h) * 2.0 ** (e - h)


#: Gram-Schmidt, rand_cholqr and kappa_est rescale by a power of two when the largest entry
#: leaves [2^-POW2_SAFE, 2^POW2_SAFE]: subnormal columns lose relative accuracy, norms and Gram
#: matrices overflow, and LAPACK's trcon forms 1/‖R‖.
POW2_SAFE = 32


def pow2_rescaling(ctx: Ctx, A, what: str) -> int:
    """The e of the scaling A·2^e a method applies before it starts (0 when max|A| lies in
    [2^-POW2_SAFE, 2^POW2_SAFE]); a non-zero e is recorded in the trace's notes."""
    e = pow2_exponent(ctx.xp, A)
    if abs(e) <= POW2_SAFE:
        return 0
    ctx.trace.notes.append(f"A scaled by 2^{e} to keep {what} in range")
    return e


def kappa_est(xp, R) -> float:
    """Cheap estimate of κ(R) for upper-triangular R (k×n, k <= n uses the leading k×k).

    R is first rescaled by a power of two when its scale is out of range (κ is scale
    invariant), then :func:`linalg_pc._backend.tri_cond_est` estimates κ₁: LAPACK ``xtrcon``
    (O(n²)) on NumPy, ‖R‖₁‖R⁻¹‖₁ from a triangular solve (n³/3 flops) for n <= 2048 on other
    libraries, the ratio of the extreme diagonal entries (a lower bound) beyond. Returns ``inf``
    for a singular or non-finite R; 1.0 for an empty R; the largest over a stack.
    """
    k = min(R.shape[-2], R.shape[-1])
    if k == 0:
        return 1.0
    if R.ndim > 2:
        Rn = B.to_numpy(R).reshape((-1,) + tuple(R.shape[-2:]))
        return max((_kappa_host(Rn[i, :k, :k]) for i in range(Rn.shape[0])), default=1.0)
    Rk = R[:k, :k]
    dmax = to_float(xp.max(xp.abs(diagonal(xp, Rk))))  # a first look at the scale, in O(k)
    if not (dmax > 0 and math.isfinite(dmax) and abs(math.frexp(dmax)[1]) <= POW2_SAFE):
        e = pow2_exponent(xp, Rk)  # the scale of the largest entry, which must not overflow
        if abs(e) > POW2_SAFE:
            Rk = scale_pow2(Rk, e)  # κ is scale invariant
    return B.tri_cond_est(Rk)


def _kappa_host(Rk: np.ndarray) -> float:
    """:func:`kappa_est` of one square NumPy matrix of a stack, by NumPy calls (a stack's
    members are estimated one by one on the host: no namespace dispatch per member)."""
    d = np.abs(np.diagonal(Rk))
    dmax = float(d.max())
    if not (dmax > 0 and math.isfinite(dmax) and abs(math.frexp(dmax)[1]) <= POW2_SAFE):
        amax = float(np.max(np.abs(Rk)))
        if amax > 0 and math.isfinite(amax) and abs(math.frexp(amax)[1]) > POW2_SAFE:
            Rk = scale_pow2(Rk, -math.frexp(amax)[1])
    return B.tri_cond_est(Rk)


# --------------------------------------------------------------------------- overflow
def all_finite(xp, X) -> bool:
    """No NaN or inf in X (the backend's ``all_finite`` delegate when the library has one)."""
    impl = B.delegate(xp, "all_finite")
    return bool(impl(X)) if impl is not None else bool(xp.all(xp.isfinite(X)))


def _exponents_each(xp, X):
    """Per matrix of a stack, the e with max|X_i|·2^e in [0.5, 1) (0 for a zero matrix), as an
    int NumPy array of the batch shape."""
    amax = B.to_numpy(xp.max(xp.abs(X), axis=(-2, -1))).astype(np.float64)
    e = -np.frexp(amax)[1]
    return np.where((amax > 0) & np.isfinite(amax), e, 0).astype(np.int64)


def _scale_each(xp, X, e):
    """X_i·2^(e_i) per matrix of a stack, in two exact multiplications (see scale_pow2)."""
    h = e // 2
    dev = B.device_of(X)
    f1 = xp.asarray(np.ldexp(1.0, h)[..., None, None], dtype=X.dtype, device=dev)
    f2 = xp.asarray(np.ldexp(1.0, e - h)[..., None, None], dtype=X.dtype, device=dev)
    return (X * f1) * f2


def _scale_back(xp, R, e):
    """R·2^e (an int e, or one per matrix); entries past the format's range become ±inf."""
    with np.errstate(over="ignore", invalid="ignore"):
        if isinstance(e, np.ndarray):
            return _scale_each(xp, R, e)
        return scale_pow2(R, e)


def unscale_r(ctx: Ctx, R, e):
    """R·2^e for an R computed from A·2^-e (e an int, or one per matrix of a stack).

    Scaling down (e <= 0) is done at once. Scaling up is done at once where R·2^e fits the
    compute format; where it does not, R is returned scaled and ``e`` is recorded in
    ``ctx.trace.r_exp`` for :func:`finish` (so the κ estimate and the fallbacks' tests read a
    finite R, and the overflow is reported once). An inner factorization (``ctx.top`` False)
    scales at once, with ±inf where R does not fit.
    """
    xp = ctx.xp
    if not isinstance(e, np.ndarray):
        if e <= 0 or not ctx.top or R.shape[-1] == 0 or R.shape[-2] == 0:
            return _scale_back(xp, R, e)
        amax = to_float(xp.max(xp.abs(R)))
        maxexp = math.frexp(ctx.compute.max)[1]
        if amax == 0 or math.frexp(amax)[1] + e <= maxexp:
            return scale_pow2(R, e)
        ctx.trace.r_exp = e
        return R
    if not ctx.top:
        return _scale_back(xp, R, e)
    amax = B.to_numpy(xp.max(xp.abs(R), axis=(-2, -1))).astype(np.float64)
    fits = (e <= 0) | (np.frexp(amax)[1] + e <= math.frexp(ctx.compute.max)[1])
    now = np.where(fits, e, 0)
    R = _scale_each(xp, R, now) if np.any(now) else R
    later = np.where(fits, 0, e)
    if np.any(later):
        ctx.trace.r_exp = later
    return R


def guard_overflow(ctx: Ctx, A, factor):
    """``factor(A) -> (Q, R)``, run again on A scaled by a power of two when R came back with a
    non-finite entry (A is finite: a norm, β or an update overflowed, and Q is then NaN too).

    Each matrix whose largest entry is at least 2^(maxexp − ``POW2_SAFE``) is scaled to a
    largest entry in [0.5, 1) (exact), the others are left as they are; R is scaled back by
    :func:`unscale_r`. The check reads R once (O(kn) per matrix).
    """
    xp = ctx.xp
    Q, R = factor(A)
    if R.shape[-1] == 0 or R.shape[-2] == 0 or all_finite(xp, R):
        return Q, R
    work = ctx.emulate or ctx.compute  # emulated intermediates overflow at the emulated max
    big = min(-(math.frexp(work.max)[1] - POW2_SAFE), -1)
    if A.ndim > 2:
        e = _exponents_each(xp, A)
        e = np.where(e < big, e, 0)
        if not np.any(e):
            return Q, R
        Q, R = factor(_scale_each(xp, A, e))
        ctx.trace.notes.append(f"{int(np.count_nonzero(e))} matrices of the stack scaled by "
                               f"powers of two (down to 2^{int(np.min(e))}) to keep R's "
                               f"computation in range")
        return Q, unscale_r(ctx, R, -e)
    e = pow2_exponent(xp, A)
    if not e < big:
        return Q, R
    Q, R = factor(scale_pow2(A, e))
    ctx.trace.notes.append(f"A scaled by 2^{e} to keep R's computation in range")
    return Q, unscale_r(ctx, R, -e)
