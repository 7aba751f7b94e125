"""Inverse-Hessian-vector products of a damped empirical Fisher (M-FAC) and rank-one inverse
updates (MKOR).

:class:`WoodburyInverse` represents F⁻¹ for F = λI + (1/m) Σᵢ gᵢgᵢᵀ (gradients gᵢ ∈ ℝᵈ as the
rows of G, k of them, m the normalization). M-FAC (Frantar, Kurtic & Alistarh, NeurIPS 2021)
applies Sherman–Morrison once per gradient:

    vᵢ = λ⁻¹gᵢ − Σ_{j<i} (vⱼᵀgᵢ / Dⱼ) vⱼ,   Dᵢ = m + gᵢᵀvᵢ,   F⁻¹x = λ⁻¹x − Σᵢ (vᵢᵀx / Dᵢ) vᵢ.

That recursion is exactly the LDLᵀ factorization of the k×k matrix T = mI + GGᵀ/λ
(Dᵢ are its pivots and V = λ⁻¹L⁻¹G with L unit lower triangular), i.e. the Woodbury identity
F⁻¹ = λ⁻¹I − λ⁻²Gᵀ T⁻¹ G. This class stores G, the Gram matrix GGᵀ and the Cholesky factor of
T, so that

* set-up costs one GEMM (d·k² flops) and a k×k Cholesky (k³/3);
* ``ihvp(x)`` costs 4·d·k + 2·k² flops (two passes over G), memory d·k;
* ``diagonal()`` costs d·k² flops;
* ``add``/``remove``/``slide`` (sliding window of gradients) cost d·k for the new Gram row plus
  k³/3 for the refactorization: O(dk + k³), never O(dk²).

Error bound: T ⪰ mI, so κ(T) <= 1 + ‖G‖²/(mλ) and the Cholesky solve is backward stable
(Higham, ASNA Thm 10.4); the computed product satisfies ‖ŷ − F⁻¹x‖ <= c·k·u·κ(T)·λ⁻¹‖x‖·
(1 + ‖G‖²/(mλ)) to first order.

:func:`sherman_morrison_update` updates an explicit inverse after a rank-one change
J → J + uvᵀ in O(d²) (MKOR, Mozaffari et al., 2023, uses u = v on Kronecker factors).

Examples
--------
>>> import numpy as np, linalg_pc as lpc
>>> rng = np.random.default_rng(0)
>>> G = rng.standard_normal((8, 100))
>>> W = lpc.WoodburyInverse(1e-2, G)
>>> F = 1e-2 * np.eye(100) + G.T @ G / 8
>>> x = rng.standard_normal(100)
>>> bool(np.allclose(F @ W.ihvp(x), x))
True
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from .._backend import (
    array_namespace,
    check_finite,
    cho_solve,
    cholesky,
    device_of,
    format_of,
    namespace_name,
    solve_triangular,
    to_numpy,
)
from .._operators import is_array
from .._policy import Precision

__all__ = ["WoodburyInverse", "sherman_morrison_update", "ShermanMorrisonResult",
           "SM_SINGULAR_FACTOR"]

# Sherman–Morrison is skipped (reported singular) when |1 + vᵀJ⁻¹u| <= this · u · (1 + |vᵀJ⁻¹u|)
SM_SINGULAR_FACTOR = 64.0


def _compute_dtype(xp, x, argname, compute=None):
    """The arithmetic dtype for input ``x`` by the precision policy (linalg_pc._policy): the
    caller's ``compute``, else x's own format, at least fp32 (16-bit in: fp32)."""
    fmt = format_of(x, argname=argname)  # raises for non-floating input, naming it
    return Precision(compute=compute).resolve(fmt).compute_dtype(xp)


class WoodburyInverse:
    """(λI + (1/m) Σᵢ gᵢgᵢᵀ)⁻¹ from k gradients, as in M-FAC (see the module docstring).

    Parameters
    ----------
    lam : float
        Damping λ > 0.
    G : array (k, d)
        Gradients as rows (any supported library).
    m : float, optional
        Normalization of the sum (default k). Kept fixed by :meth:`add` / :meth:`remove`, as in
        M-FAC's sliding window of m gradients.
    compute : None, "fp32" or "fp64"
        The arithmetic (and the dtype of every product), by the precision policy
        (linalg_pc._policy): default G's own format, at least fp32 (fp64 in: fp64; fp32 and
        16-bit in: fp32).

    Instances are immutable: ``add``, ``remove`` and ``slide`` return new objects.
    """

    def __init__(self, lam, G, *, m=None, compute=None):
        if isinstance(lam, bool) or not isinstance(lam, (int, float, np.integer, np.floating)):
            raise TypeError(f"lam must be a real number, got {type(lam).__name__}")
        if not (np.isfinite(lam) and lam > 0):
            raise ValueError(f"lam must be positive and finite, got {lam!r}")
        if not is_array(G):
            raise TypeError(f"G must be a (k, d) array of gradients as rows, got "
                            f"{type(G).__name__}")
        if G.ndim != 2:
            raise ValueError(f"G must be a (k, d) array of gradients as rows, got "
                             f"{tuple(G.shape)}")
        xp = array_namespace(G)
        check_finite(xp, G, "G")
        dt = _compute_dtype(xp, G, "G", compute)
        G = xp.astype(G, dt) if G.dtype != dt else G
        k = G.shape[0]
        if m is None and k == 0:
            raise ValueError("G holds no gradients (k = 0): pass m, the normalization of the "
                             "window that add() will fill")
        if m is None:
            m = k
        if isinstance(m, bool) or not isinstance(m, (int, float, np.integer, np.floating)) or not (
                np.isfinite(m) and m > 0):
            raise ValueError(f"m must be a positive number, got {m!r}")
        self._xp = xp
        self._lam = float(lam)
        self._m = float(m)
        self._G = G
        self._K = xp.matmul(G, xp.matrix_transpose(G))
        self._factor()

    @classmethod
    def _from_parts(cls, lam, m, G, K):
        obj = cls.__new__(cls)
        obj._xp = array_namespace(G)
        obj._lam, obj._m, obj._G, obj._K = lam, m, G, K
        obj._factor()
        return obj

    def _factor(self):
        xp = self._xp
        k = self._G.shape[0]
        eye = xp.eye(k, dtype=self._G.dtype, device=device_of(self._G))
        self._T = self._m * eye + self._K / self._lam
        if k:
            L, info = cholesky(self._T)
            if info != 0:  # T ⪰ mI: only reachable through overflow
                raise FloatingPointError("Cholesky of mI + GGᵀ/λ failed (overflow in G?)")
            self._L = L
        else:
            self._L = self._T

    # ------------------------------------------------------------------ properties
    @property
    def lam(self) -> float:
        return self._lam

    @property
    def m(self) -> float:
        return self._m

    @property
    def gradients(self):
        """The gradients (k, d), oldest first: a copy (writing into it never changes the
        instance, whose Gram matrix and factor are computed from them)."""
        return self._xp.asarray(self._G, copy=True)

    @property
    def size(self) -> int:
        return int(self._G.shape[0])

    @property
    def dim(self) -> int:
        return int(self._G.shape[1])

    @property
    def denominators(self):
        """M-FAC's Dᵢ = m + gᵢᵀvᵢ (the LDLᵀ pivots of mI + GGᵀ/λ), shape (k,)."""
        d = self._xp.linalg.diagonal(self._L)
        return d * d

    @property
    def vectors(self):
        """M-FAC's vᵢ as rows (k, d): V = λ⁻¹ L⁻¹ G with L the unit lower LDLᵀ factor."""
        xp = self._xp
        if self.size == 0:
            return self._G
        dg = xp.linalg.diagonal(self._L)
        Lu = self._L / dg[None, :]
        return solve_triangular(Lu, self._G, lower=True, unit_diagonal=True) / self._lam

    # ------------------------------------------------------------------ products
    def ihvp(self, x):
        """F⁻¹x for x (d,) or a batch of vectors as rows (..., d). Cost 4dk + 2k² per vector."""
        xp = self._xp
        if not hasattr(x, "shape") or x.shape[-1] != self.dim:
            raise ValueError(f"x must have last dimension d = {self.dim}, got "
                             f"{getattr(x, 'shape', type(x).__name__)}")
        self._same_library(x, "x")
        check_finite(xp, x, "x")
        xd = xp.astype(x, self._G.dtype) if x.dtype != self._G.dtype else x
        if self.size == 0:
            return xd / self._lam
        X = xp.reshape(xd, (int(np.prod(xd.shape[:-1])), self.dim))  # (-1, 0) is ambiguous
        GX = xp.matmul(self._G, xp.matrix_transpose(X))  # (k, s)
        W = cho_solve(self._L, GX)  # T⁻¹ G x
        Y = X / self._lam - xp.matrix_transpose(xp.matmul(xp.matrix_transpose(self._G), W)) / (
            self._lam * self._lam)
        return xp.reshape(Y, xd.shape)

    def _same_library(self, x, name):
        """x must be an array of the instance's library (G's): a clear TypeError otherwise."""
        try:
            lib = namespace_name(array_namespace(x))
        except TypeError:
            raise TypeError(f"{name} must be an array, got {type(x).__name__}") from None
        own = namespace_name(self._xp)
        if lib != own:
            raise TypeError(f"{name} is a {lib} array but this WoodburyInverse holds {own} "
                            f"arrays; pass {name} in {own}")

    def diagonal(self):
        """diag(F⁻¹) = λ⁻¹ − λ⁻² Σ_{a,b} G[a,i] (T⁻¹)[a,b] G[b,i]; cost d·k²."""
        xp = self._xp
        if self.size == 0:
            return xp.full((self.dim,), 1.0 / self._lam, dtype=self._G.dtype)
        W = cho_solve(self._L, self._G)
        return 1.0 / self._lam - xp.sum(W * self._G, axis=0) / (self._lam * self._lam)

    def dense(self):
        """The d×d inverse (for checks on small d)."""
        xp = self._xp
        eye = xp.eye(self.dim, dtype=self._G.dtype, device=device_of(self._G))
        return self.ihvp(eye)

    # ------------------------------------------------------------------ sliding window
    def add(self, g) -> WoodburyInverse:
        """A new inverse with gradient g (d,) appended (normalization m unchanged)."""
        xp = self._xp
        if not hasattr(g, "shape") or tuple(g.shape) != (self.dim,):
            raise ValueError(f"g must have shape ({self.dim},), got "
                             f"{getattr(g, 'shape', type(g).__name__)}")
        self._same_library(g, "g")
        check_finite(xp, g, "g")
        g = xp.astype(g, self._G.dtype) if g.dtype != self._G.dtype else g
        kg = xp.matmul(self._G, g)  # (k,)
        gg = xp.sum(g * g)
        top = xp.concat([self._K, kg[:, None]], axis=1)
        bot = xp.concat([kg, xp.reshape(gg, (1,))])[None, :]
        K = xp.concat([top, bot], axis=0)
        G = xp.concat([self._G, g[None, :]], axis=0)
        return WoodburyInverse._from_parts(self._lam, self._m, G, K)

    def remove(self, index: int = 0) -> WoodburyInverse:
        """A new inverse without gradient ``index`` (default the oldest)."""
        k = self.size
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)):
            raise TypeError(f"index must be an integer, got {type(index).__name__}")
        if not -k <= index < k:
            raise ValueError(f"index {index} out of range for {k} gradients")
        index = int(index) % k
        xp = self._xp
        keep = [i for i in range(k) if i != index]
        idx = xp.asarray(np.asarray(keep, dtype=np.int64), device=device_of(self._G))
        G = xp.take(self._G, idx, axis=0)
        K = xp.take(xp.take(self._K, idx, axis=0), idx, axis=1)
        return WoodburyInverse._from_parts(self._lam, self._m, G, K)

    def slide(self, g) -> WoodburyInverse:
        """Drop the oldest gradient and append g: one step of a sliding window."""
        return self.remove(0).add(g)

    def __repr__(self) -> str:
        return (f"WoodburyInverse(lam={self._lam:g}, m={self._m:g}, k={self.size}, "
                f"d={self.dim})")


class ShermanMorrisonResult(NamedTuple):
    """Result of :func:`sherman_morrison_update`.

    Attributes
    ----------
    inverse : array
        The updated inverse (J + uvᵀ)⁻¹, or Jinv unchanged where ``singular``.
    denominator : array
        1 + vᵀJ⁻¹u (per matrix); ±inf where it exceeds the working format (the update is then
        computed from scaled u and v and is still exact to working precision).
    singular : bool or array of bool (for batches)
        The update was skipped because the denominator is zero to working precision (J + uvᵀ
        singular or nearly so) or because the updated inverse is not representable in the
        working format (it would overflow).
    """

    inverse: Any
    denominator: Any
    singular: Any


def sherman_morrison_update(Jinv, u, v=None, *, compute=None) -> ShermanMorrisonResult:
    """Inverse of J + uvᵀ from Jinv = J⁻¹ in O(d²): J⁻¹ − (J⁻¹u)(vᵀJ⁻¹) / (1 + vᵀJ⁻¹u).

    Parameters
    ----------
    Jinv : array (..., d, d)
    u : array (..., d)
    v : array (..., d), optional
        Default u (the symmetric update MKOR uses: J̃ − J̃uuᵀJ̃ / (1 + uᵀJ̃u)).
    compute : None, "fp32" or "fp64"
        The arithmetic and the dtype of the result (linalg_pc._policy): default Jinv's own
        format, at least fp32.

    Returns
    -------
    ShermanMorrisonResult
        ``(inverse, denominator, singular)``; where the denominator satisfies
        |1 + vᵀJ⁻¹u| <= SM_SINGULAR_FACTOR·u·(1 + |vᵀJ⁻¹u|), or where the updated inverse
        overflows, the update is skipped and ``singular`` is True.

    Notes
    -----
    u and v are scaled by powers of two to max-norm in [1, 2) first (exact), and the update is
    formed as (J⁻¹u')(v'ᵀJ⁻¹)/(2^(e_u+e_v) + v'ᵀJ⁻¹u'): u·1e200 no longer overflows
    vᵀJ⁻¹u into a NaN inverse reported as a success.
    Cost 4d² flops per matrix. The error of the update is governed by the denominator: a
    relative perturbation ε in J⁻¹ is amplified by about (1 + |vᵀJ⁻¹u|)/|1 + vᵀJ⁻¹u|
    (Hager, SIAM Review 31, 1989).

    Examples
    --------
    >>> import numpy as np, linalg_pc as lpc
    >>> J = np.diag([2.0, 4.0]); u = np.array([1.0, 1.0])
    >>> res = lpc.sherman_morrison_update(np.linalg.inv(J), u)
    >>> bool(np.allclose(res.inverse, np.linalg.inv(J + np.outer(u, u))))
    True
    """
    if not is_array(Jinv):
        raise TypeError(f"Jinv must be an array, got {type(Jinv).__name__}")
    if Jinv.ndim < 2 or Jinv.shape[-1] != Jinv.shape[-2]:
        raise ValueError(f"Jinv must be square (..., d, d), got {tuple(Jinv.shape)}")
    xp = array_namespace(Jinv)
    v = u if v is None else v
    for name, a in (("u", u), ("v", v)):
        if not is_array(a):
            raise TypeError(f"{name} must be an array, got {type(a).__name__}")
        if namespace_name(array_namespace(a)) != namespace_name(xp):
            raise TypeError(f"{name} is a {namespace_name(array_namespace(a))} array but Jinv "
                            f"is a {namespace_name(xp)} array; pass arrays of one library")
        if tuple(a.shape) != tuple(Jinv.shape[:-1]):
            raise ValueError(f"{name} must have shape {tuple(Jinv.shape[:-1])}, got "
                             f"{getattr(a, 'shape', type(a).__name__)}")
    check_finite(xp, Jinv, "Jinv")
    check_finite(xp, u, "u")
    check_finite(xp, v, "v")
    dt = _compute_dtype(xp, Jinv, "Jinv", compute)
    Jinv, u, v = (xp.astype(a, dt) if a.dtype != dt else a for a in (Jinv, u, v))
    fmt = format_of(Jinv)
    # u' = 2^eu·u, v' = 2^ev·v with max-norms in [1, 2) (exact); s = vᵀJ⁻¹u = 2^-(eu+ev)·s'
    eu, ev = _pow2_exponents(xp, u, fmt), _pow2_exponents(xp, v, fmt)
    u = u * _as_coef(xp, np.exp2(eu), u)[..., None]
    v = v * _as_coef(xp, np.exp2(ev), v)[..., None]
    Ju = xp.matmul(Jinv, u[..., None])[..., 0]  # J⁻¹u'
    vJ = xp.matmul(v[..., None, :], Jinv)[..., 0, :]  # v'ᵀJ⁻¹
    sp_ = xp.sum(v * Ju, axis=-1)  # s'
    with np.errstate(over="ignore"):  # "1" of the scaled denominator 2^(eu+ev)·(1 + s)
        one = np.exp2(eu + ev)
    one_x = _as_coef(xp, one, sp_)
    den_s = one_x + sp_
    uf = fmt.unit_roundoff
    tiny_uv = one > fmt.max  # u, v so small that 1 + s = 1 in the format
    sing = xp.abs(den_s) <= SM_SINGULAR_FACTOR * uf * (one_x + xp.abs(sp_))
    sing = sing & ~_as_coef(xp, tiny_uv, sp_)  # u, v negligible: den = 1
    safe = xp.where(sing, xp.ones_like(den_s), den_s)
    with np.errstate(over="ignore", invalid="ignore"):  # detected below, and reported
        upd = Jinv - Ju[..., :, None] * (vJ / safe[..., None])[..., None, :]
    over = ~xp.all(xp.isfinite(upd), axis=(-2, -1))  # the update is not representable
    sing = sing | over
    out = xp.where(sing[..., None, None], Jinv, upd)
    # 1 + s = 2^-(eu+ev)·(one + s'), in two halves (±inf where it exceeds the format)
    h = np.floor(-(eu + ev) / 2)
    with np.errstate(over="ignore"):
        den = den_s * _as_coef(xp, np.exp2(h), den_s)
        den = den * _as_coef(xp, np.exp2(-(eu + ev) - h), den)
    den = xp.where(_as_coef(xp, tiny_uv, den), xp.ones_like(den), den)
    if sing.ndim == 0:
        return ShermanMorrisonResult(out, float(den), bool(sing))
    return ShermanMorrisonResult(out, den, sing)


def _pow2_exponents(xp, a, fmt) -> np.ndarray:
    """Integer e per vector of a (..., d) with 2^e·max|a| in [1, 2), clipped to ±(emax − 1) of
    the format so that 2^e is representable; 0 for a zero vector (NumPy, float64)."""
    if a.shape[-1] == 0:  # d = 0: nothing to scale
        return np.zeros(tuple(a.shape[:-1]), dtype=np.float64)
    amax = np.asarray(to_numpy(xp.max(xp.abs(a), axis=-1, keepdims=True)),
                      dtype=np.float64)[..., 0]
    e = -np.floor(np.log2(np.where(amax > 0, amax, 1.0)))
    return np.clip(e, -(fmt.emax - 1), fmt.emax - 1)


def _as_coef(xp, c, like):
    """NumPy values c (shape of like's batch) as an array of like's library, dtype, device."""
    dev = device_of(like)
    c = np.asarray(c)
    if c.dtype == bool:
        return xp.asarray(c, device=dev)
    with np.errstate(over="ignore"):
        return xp.astype(xp.asarray(c.astype(np.float64), device=dev), like.dtype)
