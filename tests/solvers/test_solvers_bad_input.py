"""Bad input to every public function of ``linalg_pc.solvers`` (its ``__all__``): a clear
exception naming the argument before any work, or a correct result. NaN/inf, empty, wrong
rank, dtype and library, read-only and aliased inputs (issue 12). The solver-specific cases
(operators returning bad values, tolerances, x0="Mb", ...) stay in test_pcg.py,
test_pcg_robustness.py and test_schur.py.

The results that must work are compared with the same call on fresh copies (aliasing,
read-only) or with NumPy's dense solves in fp64 at c·κ·u tolerances.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

import linalg_pc as lpc
import linalg_pc._backend as B

N = 8
_rng = np.random.default_rng(3)
_G = _rng.standard_normal((N, N))
A = _G @ _G.T + N * np.eye(N)  # SPD, κ ≈ 5
b = _rng.standard_normal(N)
Gw = _rng.standard_normal((4, N))
W = lpc.WoodburyInverse(1e-1, Gw)
Jinv = np.linalg.inv(A)
u = _rng.standard_normal(N)
v = _rng.standard_normal(N)
_Hg = _rng.standard_normal((12, 6))
H = _Hg.T @ _Hg  # a 6×6 SPD Hessian (split 3)
bh = _rng.standard_normal(6)
U64 = 2.0**-53


def _ro(a):
    a = np.array(a, copy=True)
    a.flags.writeable = False
    return a


def _with(a, idx, val):
    a = np.array(a, copy=True, dtype=np.float64)
    a[idx] = val
    return a


def _t(a):
    return pytest.importorskip("torch").from_numpy(np.array(a, copy=True))


def _cases():
    """(label, call, expected exception, match)."""
    sm = lpc.sherman_morrison_update
    deg = lpc.solve_degenerate
    return [
        # pcg(A, b, M=, x0=)
        ("A nan", lambda: lpc.pcg(_with(A, (1, 1), np.nan), b), ValueError, r"A has non-finite"),
        ("b inf", lambda: lpc.pcg(A, _with(b, 2, np.inf)), ValueError, r"b has non-finite"),
        ("x0 nan", lambda: lpc.pcg(A, b, x0=_with(b, 0, np.nan)), ValueError, r"x0 has non-fin"),
        ("M nan", lambda: lpc.pcg(A, b, M=_with(np.eye(N), (0, 0), np.nan)), ValueError,
         r"M has non-finite"),
        ("b empty", lambda: lpc.pcg(np.zeros((0, 0)), np.zeros(0)), ValueError,
         r"b is empty \(shape \(0,\)\)"),
        ("b no columns", lambda: lpc.pcg(A, np.zeros((N, 0))), ValueError, r"b is empty"),
        ("A 1-D", lambda: lpc.pcg(A[0], b), ValueError, r"A must be square"),
        ("A not square", lambda: lpc.pcg(A[:, :-1], b), ValueError, r"A must be square"),
        ("b rows", lambda: lpc.pcg(A, np.ones(N + 1)), ValueError, r"b has 9 rows but A is 8"),
        ("b 3-D", lambda: lpc.pcg(A, np.ones((N, 1, 1))), ValueError, r"b must be \(n,\)"),
        ("x0 shape", lambda: lpc.pcg(A, b, x0=np.ones(N + 1)), ValueError,
         r"x0 must have the shape of b"),
        ("M shape", lambda: lpc.pcg(A, b, M=np.eye(N + 1)), ValueError, r"M of shape"),
        ("A complex", lambda: lpc.pcg(A.astype(complex), b), TypeError, r"A must be real"),
        ("b complex", lambda: lpc.pcg(A, b.astype(complex)), TypeError, r"b must be real"),
        ("A list", lambda: lpc.pcg(A.tolist(), b), TypeError, r"A must be an array, a callable"),
        ("b list", lambda: lpc.pcg(A, b.tolist()), TypeError, r"b must be an array, got list"),
        ("x0 list", lambda: lpc.pcg(A, b, x0=b.tolist()), TypeError, r"x0 must be None, an ar"),
        ("A torch, b numpy", lambda: lpc.pcg(_t(A), b), TypeError, r"A is a torch array but b"),
        ("b torch, A numpy", lambda: lpc.pcg(A, _t(b)), TypeError, r"A is a numpy array but b"),
        ("M torch", lambda: lpc.pcg(A, b, M=_t(np.eye(N))), TypeError, r"M is a torch array"),
        ("x0 torch", lambda: lpc.pcg(A, b, x0=_t(b)), TypeError,
         r"x0 is a torch array but b is a numpy array"),
        # schur_complements / block_degeneracy / targeted_preconditioner / solve_degenerate
        ("H nan", lambda: lpc.schur_complements(_with(H, (0, 0), np.nan), 3), ValueError,
         r"H has non-finite"),
        ("H 1-D", lambda: lpc.block_degeneracy(H[0]), ValueError, r"H must be square"),
        ("H empty", lambda: lpc.block_degeneracy(np.zeros((0, 0))), ValueError,
         r"split must satisfy 1 <= split < n = 0"),
        ("H complex", lambda: lpc.schur_complements(H.astype(complex), 3), TypeError,
         r"H must have a real floating dtype"),
        ("H int", lambda: lpc.block_degeneracy(np.eye(6, dtype=int)), TypeError, r"H must have"),
        ("H bool", lambda: lpc.solve_degenerate(np.eye(6, dtype=bool), bh), TypeError,
         r"H must have a real"),
        ("H list", lambda: lpc.schur_complements(H.tolist(), 3), TypeError, r"H must be an arr"),
        ("split float", lambda: lpc.schur_complements(H, 2.5), TypeError, r"split must be an i"),
        ("split bool", lambda: lpc.schur_complements(H, True), TypeError, r"split must be an i"),
        ("b nan", lambda: deg(H, _with(bh, 1, np.nan)), ValueError, r"b has non-finite"),
        ("b shape", lambda: deg(H, np.ones(7)), ValueError, r"b must have shape \(6,\)"),
        ("b int", lambda: deg(H, np.arange(6)), TypeError, r"b must have a real floating"),
        ("H torch, b numpy", lambda: deg(_t(H), bh), TypeError, r"same library"),
        ("report", lambda: lpc.targeted_preconditioner(H), TypeError,
         r"report must be a DegeneracyReport"),
        ("kappa nan", lambda: lpc.targeted_preconditioner(lpc.block_degeneracy(H),
                                                          kappa_target=float("nan")),
         ValueError, r"kappa_target must be finite and >= 1"),
        ("engine", lambda: deg(H, bh, engine="gpu"), ValueError, r"engine must be"),
        # WoodburyInverse(lam, G) and its methods
        ("G nan", lambda: lpc.WoodburyInverse(0.1, _with(Gw, (0, 0), np.nan)), ValueError,
         r"G has non-finite"),
        ("G 1-D", lambda: lpc.WoodburyInverse(0.1, Gw[0]), ValueError, r"G must be a \(k, d\)"),
        ("G list", lambda: lpc.WoodburyInverse(0.1, Gw.tolist()), TypeError,
         r"G must be a \(k, d\) array of gradients as rows, got list"),
        ("G complex", lambda: lpc.WoodburyInverse(0.1, Gw.astype(complex)), TypeError,
         r"G must have a real"),
        ("G int", lambda: lpc.WoodburyInverse(0.1, np.ones((2, N), int)), TypeError, r"G must"),
        ("G empty, m missing", lambda: lpc.WoodburyInverse(0.1, np.zeros((0, N))), ValueError,
         r"G holds no gradients \(k = 0\): pass m"),
        ("lam nan", lambda: lpc.WoodburyInverse(float("nan"), Gw), ValueError,
         r"lam must be positive and finite"),
        ("lam array", lambda: lpc.WoodburyInverse(np.array(0.1), Gw), TypeError,
         r"lam must be a real number"),
        ("m 0", lambda: lpc.WoodburyInverse(0.1, Gw, m=0), ValueError, r"m must be a positive"),
        ("x nan", lambda: W.ihvp(_with(b, 0, np.nan)), ValueError, r"x has non-finite"),
        ("x d", lambda: W.ihvp(np.ones(N + 1)), ValueError, r"x must have last dimension d = 8"),
        ("x complex", lambda: W.ihvp(b.astype(complex)), TypeError, r"x must have a real"),
        ("x torch", lambda: W.ihvp(_t(b)), TypeError, r"x is a torch array but this Woodbury"),
        ("g inf", lambda: W.add(_with(b, 0, np.inf)), ValueError, r"g has non-finite"),
        ("g shape", lambda: W.add(np.ones((2, N))), ValueError, r"g must have shape \(8,\)"),
        ("g torch", lambda: W.add(_t(b)), TypeError, r"g is a torch array"),
        ("index", lambda: W.remove(10), ValueError, r"index 10 out of range for 4"),
        ("index float", lambda: W.remove(1.0), TypeError, r"index must be an integer"),
        # sherman_morrison_update(Jinv, u, v)
        ("Jinv nan", lambda: sm(_with(Jinv, (0, 0), np.nan), u, v), ValueError,
         r"Jinv has non-finite"),
        ("u nan", lambda: sm(Jinv, _with(u, 3, np.nan), v), ValueError, r"u has non-finite"),
        ("v inf", lambda: sm(Jinv, u, _with(v, 3, -np.inf)), ValueError, r"v has non-finite"),
        ("Jinv 1-D", lambda: sm(Jinv[0], u), ValueError, r"Jinv must be square"),
        ("Jinv not square", lambda: sm(Jinv[:, :-1], u), ValueError, r"Jinv must be square"),
        ("u shape", lambda: sm(Jinv, np.ones(N + 1)), ValueError, r"u must have shape \(8,\)"),
        ("v column", lambda: sm(Jinv, u, v[:, None]), ValueError, r"v must have shape \(8,\)"),
        ("Jinv complex", lambda: sm(Jinv.astype(complex), u), TypeError, r"Jinv must have a rea"),
        ("u int", lambda: sm(Jinv, np.arange(N), v), TypeError, r"u must have a real floating"),
        ("u bool", lambda: sm(Jinv, np.ones(N, bool)), TypeError, r"u must have a real"),
        ("Jinv list", lambda: sm(Jinv.tolist(), u), TypeError, r"Jinv must be an array"),
        ("u list", lambda: sm(Jinv, u.tolist()), TypeError, r"u must be an array, got list"),
        ("Jinv torch", lambda: sm(_t(Jinv), u), TypeError,
         r"u is a numpy array but Jinv is a torch array"),
        ("v torch", lambda: sm(Jinv, u, _t(v)), TypeError, r"v is a torch array but Jinv"),
    ]


CASES = _cases()


@pytest.mark.parametrize("label,call,exc,match", CASES, ids=[c[0] for c in CASES])
def test_bad_input_raises_naming_the_argument(label, call, exc, match):
    with pytest.raises(exc, match=match):
        call()


# ----------------------------------------------------------------------------- what works
def _solve_err(x, A_, b_):
    return np.linalg.norm(np.asarray(x, np.float64) - np.linalg.solve(A_, b_)) / np.linalg.norm(
        np.linalg.solve(A_, b_))


@pytest.mark.parametrize("dtype", [np.int64, bool])
def test_pcg_integer_and_boolean_systems_are_cast(dtype):
    Ai = np.rint(A).astype(np.int64) if dtype is not bool else np.eye(N, dtype=bool)
    bi = np.arange(1, N + 1).astype(dtype) if dtype is not bool else np.ones(N, bool)
    res = lpc.pcg(Ai, bi, rtol=1e-10)
    assert res.converged and B.format_of(res.x).name == "fp64"
    assert _solve_err(res.x, Ai.astype(float), bi.astype(float)) < 1e-8


def test_woodbury_and_sherman_morrison_empty():
    """No gradients (with m) is λ⁻¹I, and gradients can be added; d = 0 is a no-op update."""
    W0 = lpc.WoodburyInverse(0.5, np.zeros((0, N)), m=3)
    np.testing.assert_array_equal(W0.ihvp(b), b / 0.5)
    W1 = W0.add(u)
    F = 0.5 * np.eye(N) + np.outer(u, u) / 3
    assert np.linalg.norm(F @ W1.ihvp(b) - b) <= 1e3 * U64 * np.linalg.norm(b)
    res = lpc.sherman_morrison_update(np.zeros((0, 0)), np.zeros(0))
    assert res.inverse.shape == (0, 0) and res.denominator == 1.0 and not res.singular
    Wd = lpc.WoodburyInverse(0.5, np.zeros((3, 0)))
    assert Wd.ihvp(np.zeros(0)).shape == (0,)


# ----------------------------------------------------------------------------- read-only
def test_read_only_inputs_work_and_are_not_written():
    Ar, br = _ro(A), _ro(b)
    r1 = lpc.pcg(Ar, br, x0=_ro(np.zeros(N)), M=_ro(np.eye(N)))
    r2 = lpc.pcg(A.copy(), b.copy(), x0=np.zeros(N), M=np.eye(N))
    np.testing.assert_array_equal(r1.x, r2.x)
    Ab = np.stack([A, 2 * A, A + np.eye(N)])  # the batched small-system kernel
    bb = np.stack([b, -b, 2 * b])
    np.testing.assert_array_equal(lpc.pcg(_ro(Ab), _ro(bb)).x, lpc.pcg(Ab.copy(), bb.copy()).x)
    S = sp.csr_matrix(A)
    for arr in (S.data, S.indices, S.indptr):
        arr.flags.writeable = False
    np.testing.assert_array_equal(lpc.pcg(S, br).x, lpc.pcg(sp.csr_matrix(A), b.copy()).x)
    for engine in ("numba", "array_api"):
        d1 = lpc.solve_degenerate(_ro(H), _ro(bh), engine=engine)
        d2 = lpc.solve_degenerate(H.copy(), bh.copy(), engine=engine)
        np.testing.assert_array_equal(d1.x, d2.x)
        r1 = lpc.block_degeneracy(_ro(np.stack([H, H])), engine=engine)
        r2 = lpc.block_degeneracy(np.stack([H, H]), engine=engine)
        np.testing.assert_array_equal(r1.eigvals_t, r2.eigvals_t)
    np.testing.assert_array_equal(lpc.schur_complements(_ro(H), 3).S_t,
                                  lpc.schur_complements(H.copy(), 3).S_t)
    Wr = lpc.WoodburyInverse(0.1, _ro(Gw))
    np.testing.assert_array_equal(Wr.ihvp(br), W.ihvp(b.copy()))
    np.testing.assert_array_equal(Wr.add(_ro(u)).ihvp(b), W.add(u.copy()).ihvp(b))
    np.testing.assert_array_equal(lpc.sherman_morrison_update(_ro(Jinv), _ro(u), _ro(v)).inverse,
                                  lpc.sherman_morrison_update(Jinv.copy(), u.copy(), v.copy())
                                  .inverse)


# ----------------------------------------------------------------------------- aliasing
def test_pcg_aliased_arguments():
    """b and x0 columns of A itself, M the same array as A: the solve equals the one on
    copies, and nothing is written."""
    Ac = A.copy()
    r1 = lpc.pcg(Ac, Ac[:, 0], x0=Ac[:, 1], M=Ac)
    r2 = lpc.pcg(A.copy(), A[:, 0].copy(), x0=A[:, 1].copy(), M=A.copy())
    np.testing.assert_array_equal(r1.x, r2.x)
    np.testing.assert_array_equal(Ac, A)
    bc = b.copy()
    r3 = lpc.pcg(A, bc, x0=bc)  # x0 is b itself
    np.testing.assert_array_equal(r3.x, lpc.pcg(A, b.copy(), x0=b.copy()).x)
    np.testing.assert_array_equal(bc, b)


def test_solve_degenerate_b_a_view_of_h():
    Hc = H.copy()
    r1 = lpc.solve_degenerate(Hc, Hc[:, 0])
    r2 = lpc.solve_degenerate(H.copy(), H[:, 0].copy())
    np.testing.assert_array_equal(r1.x, r2.x)
    np.testing.assert_array_equal(Hc, H)


def test_sherman_morrison_aliased_vectors():
    """u and v the same array, and u a column of Jinv itself: correct, inputs unchanged."""
    Jc = Jinv.copy()
    uc = u.copy()
    r = lpc.sherman_morrison_update(Jc, uc, uc)
    ref = np.linalg.inv(A + np.outer(u, u))
    assert np.abs(r.inverse - ref).max() <= 1e3 * U64 * np.abs(ref).max()
    col = Jc[:, 2]
    r = lpc.sherman_morrison_update(Jc, col, col)
    ref = np.linalg.inv(A + np.outer(Jinv[:, 2], Jinv[:, 2]))
    assert np.abs(r.inverse - ref).max() <= 1e3 * U64 * np.abs(ref).max()
    np.testing.assert_array_equal(Jc, Jinv)
    np.testing.assert_array_equal(uc, u)


def test_woodbury_gradients_are_not_its_state():
    """Before: ``gradients`` returned the internal G; writing into it changed the products'
    G but not the Gram matrix and factor computed from it (an inconsistent inverse)."""
    Wc = lpc.WoodburyInverse(0.1, Gw.copy())
    ref = Wc.ihvp(b)
    g = Wc.gradients
    g[...] = 0.0
    np.testing.assert_array_equal(Wc.ihvp(b), ref)
    np.testing.assert_array_equal(Wc.gradients, Gw)
    # adding one of its own gradients (a copy now) is the same as adding a fresh array
    np.testing.assert_array_equal(Wc.add(Wc.gradients[0]).ihvp(b), Wc.add(Gw[0].copy()).ihvp(b))
