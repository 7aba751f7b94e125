"""linalg_pc._operators: one set of rules for the operators of pcg and of the basis routines,
and the column take/put primitives of _backend the basis refresh uses."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import scipy.sparse.linalg as spla

import linalg_pc as lpc
import linalg_pc._backend as B
from linalg_pc._operators import as_operator, host_or_device_ok, is_array


def _spd(n, rng):
    G = rng.standard_normal((n, n))
    return G @ G.T + n * np.eye(n)


class _MatmulOnly:
    """An object with @ only (no matmat, not callable)."""

    def __init__(self, A):
        self.A = A
        self.shape = A.shape

    def __matmul__(self, X):
        return self.A @ X


class _Matmat:
    """An object with matmat only (no matvec)."""

    def __init__(self, A):
        self.A = A
        self.shape = A.shape
        self.dtype = A.dtype

    def matmat(self, X):
        return self.A @ X


def test_kinds(rng):
    A = _spd(6, rng)
    xp = B.array_namespace(A)
    cases = {
        "dense": A,
        "batched": np.stack([A, A]),
        "scipy_sparse": sp.csr_matrix(A),
        "linop": spla.aslinearoperator(A),
        "callable": lambda X: A @ X,
        "matmul": _MatmulOnly(A),
    }
    X = rng.standard_normal((6, 2))
    for kind, obj in cases.items():
        op = as_operator(obj, argname="A", n=6, xp=xp)
        assert op.kind == kind
        if kind != "batched":
            np.testing.assert_allclose(np.asarray(op.matmat(X)), A @ X, rtol=1e-13)
            np.testing.assert_allclose(op.apply(xp, X, "cols"), A @ X, rtol=1e-13)
    assert as_operator(_Matmat(A), argname="A", n=6).kind == "linop"
    np.testing.assert_allclose(as_operator(_Matmat(A), argname="A").apply(xp, X[:, :1], "cols"),
                               A @ X[:, :1], rtol=1e-13)
    assert not is_array(sp.csr_matrix(A)) and not is_array(spla.aslinearoperator(A))
    assert is_array(A)


def test_one_rule_set_errors_name_the_argument(rng):
    A = _spd(4, rng)
    for argname in ("A", "M", "K"):
        with pytest.raises(ValueError, match=f"{argname} must be square"):
            as_operator(np.ones((4, 3)), argname=argname)
        with pytest.raises(ValueError, match=f"{argname} must be square"):
            as_operator(sp.csr_matrix(np.ones((4, 3))), argname=argname)
        with pytest.raises(ValueError, match=f"{argname} of shape .* does not match"):
            as_operator(A, argname=argname, n=5)
        with pytest.raises(ValueError, match=f"{argname} of shape .* does not match"):
            as_operator(spla.aslinearoperator(A), argname=argname, n=5)
        bad = A.copy()
        bad[1, 2] = np.nan
        with pytest.raises(ValueError, match=f"{argname} has non-finite"):
            as_operator(bad, argname=argname)
        with pytest.raises(ValueError, match=f"{argname} has non-finite"):
            as_operator(sp.csr_matrix(bad), argname=argname)
        assert as_operator(bad, argname=argname, check_entries=False).kind == "dense"
        with pytest.raises(TypeError, match=f"{argname} must be real"):
            as_operator(A.astype(complex), argname=argname)
        with pytest.raises(TypeError, match=f"{argname} must be an array"):
            as_operator("A", argname=argname)
    # batch rules: one batch axis by default (the solvers), any with max_batch_ndim=None
    A4 = np.broadcast_to(A, (2, 3, 4, 4))
    with pytest.raises(ValueError, match=r"batch \(N, n, n\)"):
        as_operator(A4, argname="A")
    assert as_operator(A4, argname="K", max_batch_ndim=None, batch=(3,)).kind == "batched"
    with pytest.raises(ValueError, match="batch shape .* does not broadcast with Q's"):
        as_operator(A4, argname="K", max_batch_ndim=None, batch=(5,), like="Q")
    # integers are accepted (computed in a float format by the caller)
    assert as_operator(np.eye(3, dtype=np.int64), argname="A").kind == "dense"


def test_namespace_and_host_device_rules(rng):
    torch = pytest.importorskip("torch")
    A = _spd(4, rng)
    txp = B.array_namespace(torch.zeros(1))
    with pytest.raises(TypeError, match="A is a numpy array but b is a torch array"):
        as_operator(A, argname="A", xp=txp)
    with pytest.raises(TypeError, match="K is a numpy array but Q is a torch array"):
        as_operator(A, argname="K", xp=txp, like="Q")
    for obj in (sp.csr_matrix(A), spla.aslinearoperator(A)):
        op = as_operator(obj, argname="M")
        with pytest.raises(TypeError, match="M is a SciPy object"):
            host_or_device_ok(txp, op, "M")
        host_or_device_ok(B.array_namespace(A), op, "M")
    with pytest.raises(TypeError, match="K is a SciPy object"):
        lpc.subspace_refresh(spla.aslinearoperator(A), torch.eye(4, dtype=torch.float64), [0])


def test_basis_and_pcg_accept_the_same_forms(rng):
    """Every form is accepted by both pcg and subspace_refresh, with the same result as the
    dense matrix."""
    n = 12
    A = _spd(n, rng)
    b = rng.standard_normal(n)
    Q = np.linalg.qr(rng.standard_normal((n, n)))[0]
    ref_x = lpc.pcg(A, b, rtol=1e-12).x
    ref_q = lpc.subspace_refresh(A, Q, [2, 3, 4]).Q
    for form in (sp.csr_matrix(A), spla.aslinearoperator(A), _MatmulOnly(A)):
        np.testing.assert_allclose(lpc.pcg(form, b, rtol=1e-12).x, ref_x, rtol=1e-8)
        np.testing.assert_allclose(lpc.subspace_refresh(form, Q, [2, 3, 4]).Q, ref_q,
                                   atol=1e-13)


# --------------------------------------------------------------------------- columns
@pytest.mark.parametrize("cols", [[3], [2, 3, 4], [0, 5, 6, 9], [9, 0, 1, 2],
                                  [0, 2, 4, 6, 8, 1, 3, 5, 7, 9]])
def test_take_put_columns_every_namespace(xp, rng, cols):
    """take_columns / put_columns equal the NumPy fancy-indexing expressions, bit for bit,
    batched, out of place (the input untouched) and in place."""
    Qh = rng.standard_normal((2, 5, 10)).astype(np.float32)
    new = rng.standard_normal((2, 5, len(cols))).astype(np.float32)
    c = np.asarray(cols, dtype=np.int64)
    Q = xp.asarray(Qh.copy())
    np.testing.assert_array_equal(B.to_numpy(B.take_columns(Q, c)), Qh[..., c])
    ref = Qh.copy()
    ref[..., c] = new
    out = B.put_columns(Q, c, xp.asarray(new))
    np.testing.assert_array_equal(B.to_numpy(out), ref)
    np.testing.assert_array_equal(B.to_numpy(Q), Qh)
    out = B.put_columns(Q, c, xp.asarray(new), inplace=True)
    np.testing.assert_array_equal(B.to_numpy(out), ref)
    V = rng.standard_normal((len(cols), len(cols))).astype(np.float32)
    ref2 = Qh.copy()
    ref2[..., c] = Qh[..., c] @ V
    got = B.matmul_into_columns(xp.asarray(Qh), c, xp.asarray(Qh[..., c]), xp.asarray(V))
    np.testing.assert_allclose(B.to_numpy(got), ref2, rtol=1e-6, atol=1e-6)
    keep = np.setdiff1d(np.arange(10), c)
    np.testing.assert_array_equal(B.to_numpy(got)[..., keep], Qh[..., keep])
