"""lpc.qr's options: checked against the method before any work, the same on every shape; no
autograd (a tensor that requires grad is read detached)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import linalg_pc as lpc
from linalg_pc.analysis import factorization_error, orthogonality_loss
from linalg_pc.analysis.bounds import qr_bound

TALL = np.random.default_rng(0).standard_normal((20000, 8))  # auto -> cholqr2 without options
SQUARE = TALL[:8]


@pytest.mark.parametrize("A", [TALL, SQUARE], ids=["tall", "square"])
@pytest.mark.parametrize("opts", [{"block_size": 4}, {"vendor": False},
                                  {"block_size": 2, "vendor": False}])
def test_auto_with_householder_options_works_on_every_shape(A, opts):
    """auto + a Householder option: worked on square input, raised TypeError on tall input."""
    Q, R, info = lpc.qr(A, **opts)
    assert info.requested == "auto" and info.method == "householder"
    m, n = A.shape
    assert orthogonality_loss(Q) <= qr_bound("householder", m, n, 1.0, "fp64")
    assert factorization_error(A, Q, R) <= qr_bound("householder", m, n, 1.0, "fp64",
                                                    quantity="resid")


def test_pivoting_is_refused_by_name_before_any_work(monkeypatch):
    from linalg_pc.qr_methods import dispatch

    def boom(*a, **k):  # any work would call a method's function
        raise AssertionError("work started")

    monkeypatch.setattr(dispatch, "_FUNCS", {k: boom for k in dispatch._FUNCS})
    for method in ("auto", "householder", "cholqr2"):
        with pytest.raises(TypeError, match="pivoting"):
            lpc.qr(TALL, method=method, pivoting=True)


@pytest.mark.parametrize("method,opts,name", [("cholqr2", {"block_size": 4}, "block_size"),
                                               ("mgs", {"leaf_rows": 8}, "leaf_rows"),
                                               ("auto", {"leaf_rows": 8}, "leaf_rows"),
                                               ("batched", {"vendor": False}, "vendor"),
                                               ("householder", {"shift": 1.0}, "shift")])
def test_an_option_the_method_does_not_take_is_named(method, opts, name):
    with pytest.raises(TypeError, match=name):
        lpc.qr(TALL, method=method, **opts)


@pytest.mark.parametrize("method", ["auto", "householder", "cholqr", "cholqr2", "scholqr3",
                                    "rand_cholqr", "mgs", "cgs2", "bcgs2", "tsqr", "batched"])
def test_torch_requires_grad_is_read_detached(method):
    """The rule (lpc.qr docstring, docs/qr.md): no autograd. Q and R do not require grad, no
    warning is raised, and the result equals that of the detached tensor."""
    torch = pytest.importorskip("torch")
    A = torch.randn(60, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(0),
                    requires_grad=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Q, R, info = lpc.qr(A, method=method, rng=0)
    assert not Q.requires_grad and not R.requires_grad
    Qd, Rd, _ = lpc.qr(A.detach(), method=method, rng=0)
    assert torch.equal(Q, Qd) and torch.equal(R, Rd)
    assert A.requires_grad and A.grad is None
