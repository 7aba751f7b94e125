"""Bad hyperparameters and bad inputs of the Kronecker-factored transforms (SOAP, Shampoo,
KL-Shampoo, KL-SOAP): each raises before any work, with the exception type of its kind and a
message that names the argument; a rejected update leaves the state as it was."""

from __future__ import annotations

import importlib
import importlib.util
import re

import numpy as np
import pytest

import linalg_pc as lpc
import linalg_pc._backend as B

METHODS = ("soap", "shampoo", "kl_shampoo", "kl_soap")
P = lpc.precond


def snap(state) -> dict:
    return {k: np.array(B.to_numpy(v), copy=True) for k, v in state.arrays().items()}


def host_fields(state) -> tuple:
    return (state.initialized, state.hint, state.last_refresh, state.refresh_failures,
            state.fallbacks, state.consecutive, state.last_status)


def assert_untouched(state, before: dict, fields: tuple):
    after = snap(state)
    assert set(after) == set(before)
    for k in before:
        assert after[k].dtype == before[k].dtype and np.array_equal(after[k], before[k]), k
    assert host_fields(state) == fields


# ------------------------------------------------------------------------ hyperparameters
BAD_HYPER = [
    # (factory, kwargs, exception, the argument named in the message)
    (P.soap, dict(betas=(1.0, 0.9)), ValueError, "betas[0]"),
    (P.soap, dict(betas=(0.9, -0.1)), ValueError, "betas[1]"),
    (P.kl_soap, dict(betas=(0.9, 1.5)), ValueError, "betas[1]"),
    (P.soap, dict(betas=(0.9,)), ValueError, "betas"),
    (P.soap, dict(betas=(float("nan"), 0.9)), ValueError, "betas[0]"),
    (P.shampoo, dict(shampoo_beta=1.0), ValueError, "shampoo_beta"),
    (P.kl_shampoo, dict(shampoo_beta=-0.5), ValueError, "shampoo_beta"),
    (P.soap, dict(lr=-1e-3), ValueError, "lr"),
    (P.shampoo, dict(lr=float("inf")), ValueError, "lr"),
    (P.soap, dict(lr=True), TypeError, "lr"),
    (P.soap, dict(eps=-1e-8), ValueError, "eps"),
    (P.soap, dict(eps=0.0), ValueError, "eps"),
    (P.kl_soap, dict(eps=0.0), ValueError, "eps"),
    (P.kl_shampoo, dict(eps=-1e-8), ValueError, "eps"),
    (P.soap, dict(weight_decay=-0.01), ValueError, "weight_decay"),
    (P.kl_soap, dict(weight_decay=-1.0), ValueError, "weight_decay"),
    (P.soap, dict(precondition_frequency=0), ValueError, "precondition_frequency"),
    (P.shampoo, dict(precondition_frequency=-3), ValueError, "precondition_frequency"),
    (P.soap, dict(precondition_frequency=2.0), TypeError, "precondition_frequency"),
    (P.kl_soap, dict(precondition_frequency=True), TypeError, "precondition_frequency"),
    (P.soap, dict(precondition_frequency="10"), TypeError, "precondition_frequency"),
    (P.soap, dict(max_precond_dim=0), ValueError, "max_precond_dim"),
    (P.soap, dict(max_failures=0), ValueError, "max_failures"),
    (P.soap, dict(refresh_tol=-0.1), ValueError, "refresh_tol"),
    (P.soap, dict(merge_dims=1), TypeError, "merge_dims"),
    (P.kl_shampoo, dict(normalize_grads="yes"), TypeError, "normalize_grads"),
    (P.soap, dict(storage="int8"), ValueError, "storage"),
    (P.soap, dict(storage="tf32"), ValueError, "storage"),
    (P.soap, dict(storage="fp64"), ValueError, "storage"),  # fp64 storage with fp32 compute
    (P.soap, dict(storage=3), ValueError, "storage"),
    (P.soap, dict(storage={"grads": "bf16"}), ValueError, "storage"),
    (P.soap, dict(storage={"factors": "int8"}), ValueError, "storage['factors']"),
    (P.soap, dict(storage={"moments": "fp64"}), ValueError, "storage of moments"),
    # squared gradients leave fp16's range: fp16 only for the basis
    (P.soap, dict(storage="fp16"), ValueError, "storage of factors"),
    (P.kl_soap, dict(storage={"moments": "fp16"}), ValueError, "storage of moments"),
    (P.soap, dict(compute="bf16"), ValueError, "compute"),
    (P.soap, dict(compute="tf32"), ValueError, "compute"),
    (P.kl_soap, dict(compute="fp16"), ValueError, "compute"),
    (P.shampoo, dict(grafting="sgd"), ValueError, "grafting"),
    (P.shampoo, dict(refresh="lanczos"), ValueError, "refresh"),
    (P.shampoo, dict(exponent=0.0), ValueError, "exponent"),
    (P.shampoo, dict(exponent=0.25), ValueError, "exponent"),
    (P.shampoo, dict(exponent="-0.25"), TypeError, "exponent"),
    (P.shampoo, dict(matrix_eps=-1e-12), ValueError, "matrix_eps"),
    (P.kl_shampoo, dict(init_factor=0.0), ValueError, "init_factor"),
    (P.kl_soap, dict(init_factor=-0.1), ValueError, "init_factor"),
    (P.kl_shampoo, dict(max_clamp=0.0), ValueError, "max_clamp"),
]


@pytest.mark.parametrize("factory,kwargs,exc,arg", BAD_HYPER,
                         ids=[f"{f.__name__}-{next(iter(k))}-{i}"
                              for i, (f, k, _, _) in enumerate(BAD_HYPER)])
def test_bad_hyperparameter_raises_naming_it(factory, kwargs, exc, arg):
    with pytest.raises(exc, match=re.escape(arg)):
        factory(**kwargs)


@pytest.mark.parametrize("compute", ["junk", 3])
def test_unknown_compute_names_compute(compute):
    """An unknown compute format is rejected with a message naming ``compute``."""
    with pytest.raises((ValueError, TypeError), match="compute"):
        P.soap(compute=compute)


def test_valid_boundaries_are_accepted():
    """The ends of the valid ranges build: β = 0, lr = 0, wd = 0, T = 1, KL-Shampoo's eps = 0,
    compute fp64 with fp64 storage."""
    P.soap(betas=(0.0, 0.0), lr=0.0, weight_decay=0.0, precondition_frequency=1)
    P.kl_shampoo(eps=0.0)
    P.soap(compute="fp64", storage="fp64")
    P.shampoo(grafting=None, refresh="qr", exponent=-0.5, matrix_eps=0.0)


# ---------------------------------------------------------------------------- init inputs
@pytest.mark.parametrize("method", METHODS)
def test_init_rejects_bad_params(xp, method):
    tx = getattr(P, method)()
    shape = (4, 3)
    with pytest.raises(TypeError, match="param must be real"):
        tx.init(xp.asarray(np.zeros(shape, np.complex64)))
    with pytest.raises(TypeError, match="param must be a floating array"):
        tx.init(xp.asarray(np.zeros(shape, np.int32)))
    with pytest.raises(TypeError, match="param must be a floating array"):
        tx.init(xp.asarray(np.zeros(shape, bool)))
    with pytest.raises(TypeError, match="param must be an array"):
        tx.init([[0.0] * 3] * 4)
    with pytest.raises(TypeError, match="param must be an array"):
        tx.init(1.0)
    with pytest.raises(ValueError, match="batched"):
        tx.init(xp.asarray(np.zeros((), np.float32)), batched=True)
    with pytest.raises(TypeError, match="batched"):
        tx.init(xp.asarray(np.zeros(shape, np.float32)), batched=1)


# -------------------------------------------------------------------------- update inputs
def _stepped(tx, xp, shape=(4, 3), steps=3):
    rng = np.random.default_rng(7)
    p = xp.asarray(rng.standard_normal(shape).astype(np.float32))
    state = tx.init(p)
    for _ in range(steps):
        _, state = tx.update(xp.asarray(rng.standard_normal(shape).astype(np.float32)), state, p)
    return p, state


@pytest.mark.parametrize("method", METHODS)
def test_update_rejects_bad_inputs_before_any_work(xp, method):
    """Each bad grad/param/state raises naming the argument and leaves the state (arrays,
    counters and host fields) as it was: the checks run before any array work."""
    tx = getattr(P, method)(precondition_frequency=2)
    p, state = _stepped(tx, xp)
    g = xp.asarray(np.ones((4, 3), np.float32))
    before, fields = snap(state), host_fields(state)
    bad = [
        (xp.asarray(np.ones((4, 3), np.complex64)), p, TypeError, "grad must be real"),
        (xp.asarray(np.ones((4, 3), np.int32)), p, TypeError, "grad must be a floating"),
        (xp.asarray(np.ones((4, 3), bool)), p, TypeError, "grad must be a floating"),
        ([[1.0] * 3] * 4, p, TypeError, "grad must be an array"),
        (xp.asarray(np.ones((3, 4), np.float32)), p, ValueError, r"grad has shape \(3, 4\)"),
        (xp.asarray(np.ones((12,), np.float32)), p, ValueError, "grad has shape"),
        (xp.asarray(np.ones((1, 4, 3), np.float32)), p, ValueError, "grad has shape"),
        (xp.asarray(np.ones((4, 3), np.float64)), p, TypeError, "grad has format fp64"),
        (g, xp.asarray(np.ones((4, 3), np.float64)), TypeError, "param has format fp64"),
        (g, xp.asarray(np.ones((3, 4), np.float32)), ValueError, "param has shape"),
        (g, xp.asarray(np.ones((4, 3), np.complex64)), TypeError, "param must be real"),
        (g, xp.asarray(np.ones((4, 3), np.int64)), TypeError, "param must be a floating"),
    ]
    for grad, param, exc, match in bad:
        with pytest.raises(exc, match=match):
            tx.update(grad, state, param)
        assert_untouched(state, before, fields)
    with pytest.raises(TypeError, match="state must be a PrecondState"):
        tx.update(g, {"count": 0}, p)
    with pytest.raises(TypeError, match="state must be a PrecondState"):
        tx.update(g, None, p)
    other = "kl_soap" if method != "kl_soap" else "soap"
    with pytest.raises(ValueError, match=f"state belongs to '{other}'"):
        tx.update(g, getattr(P, other)().init(p), p)
    # the transform still works on the untouched state
    u, state = tx.update(g, state, p)
    assert tuple(u.shape) == (4, 3)


@pytest.mark.parametrize("method", METHODS)
def test_weight_decay_needs_param(xp, method):
    tx = getattr(P, method)(weight_decay=0.1)
    p, state = _stepped(tx, xp)
    before, fields = snap(state), host_fields(state)
    with pytest.raises(ValueError, match="param is required when weight_decay > 0"):
        tx.update(xp.asarray(np.ones((4, 3), np.float32)), state)
    assert_untouched(state, before, fields)
    # without weight decay param may be omitted
    tx0 = getattr(P, method)(weight_decay=0.0)
    _, s0 = _stepped(tx0, xp)
    u, _ = tx0.update(xp.asarray(np.ones((4, 3), np.float32)), s0)
    assert tuple(u.shape) == (4, 3)


def _libraries():
    libs = ["numpy", "array_api_strict"]
    if importlib.util.find_spec("torch") is not None:
        libs.append("torch")
    return libs


def _array(lib, a: np.ndarray):
    """``a`` as an array of library ``lib``."""
    return importlib.import_module(lib).asarray(a)


@pytest.mark.parametrize("method", ["soap", "kl_shampoo"])
@pytest.mark.parametrize("other", _libraries())
def test_update_rejects_another_library(xp, method, other):
    """grad or param from another array library than the state's: TypeError naming it."""
    mine = B.namespace_name(xp)
    if other == mine:
        pytest.skip("same library")
    tx = getattr(P, method)(precondition_frequency=2)
    p, state = _stepped(tx, xp)
    before, fields = snap(state), host_fields(state)
    foreign = _array(other, np.ones((4, 3), np.float32))
    with pytest.raises(TypeError, match=f"grad comes from {other} but the state from {mine}"):
        tx.update(foreign, state, p)
    with pytest.raises(TypeError, match=f"param comes from {other} but the state from {mine}"):
        tx.update(xp.asarray(np.ones((4, 3), np.float32)), state, foreign)
    assert_untouched(state, before, fields)


@pytest.mark.parametrize("method", METHODS)
def test_batched_state_rejects_a_member(xp, method):
    """A batched state takes the whole stack: one member's gradient is a shape error."""
    tx = getattr(P, method)()
    stack = xp.asarray(np.ones((3, 4, 2), np.float32))
    state = tx.init(stack, batched=True)
    assert state.batched and state.shape == (3, 4, 2)
    with pytest.raises(ValueError, match=r"grad has shape \(4, 2\)"):
        tx.update(xp.asarray(np.ones((4, 2), np.float32)), state, stack)


@pytest.mark.parametrize("method", ["soap", "shampoo", "kl_shampoo", "kl_soap"])
def test_empty_parameter(method):
    """A parameter with a zero-length axis is either rejected at init (naming param) or
    stepped: empty updates of its shape, no exception later."""
    tx = getattr(P, method)(precondition_frequency=2)
    p = np.zeros((0, 3), np.float32)
    state = tx.init(p)
    for _ in range(4):
        u, state = tx.update(np.zeros((0, 3), np.float32), state, p)
        assert u.shape == (0, 3)
