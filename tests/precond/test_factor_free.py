"""Factor-free SOAP (``soap(factor_free=True)``): no d×d factors, only the bases, per-column
eigenvalue estimates λ and the k×k block Z = Q_Jᵀ K Q_J of the next refresh's columns J.

What must hold: the accumulated block is the exact factor's block minus the decayed old
factor's, with the old block replaced by diag(λ_J) (an fp64 dense formula); λ is the diagonal
of QᵀKQ of the exact factor between refreshes; the first refresh (the old factor is diagonal
in the initial eigenbasis) equals the factored subspace refresh; the state holds no factor and
its bytes drop by the factor bytes less the blocks'; options that need the factor are refused
before any work; updates stay finite; and the torch adapter's state_dict carries the new
fields bit for bit.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import linalg_pc as lpc
from linalg_pc.precond._deferred import follower

U64 = 2.0**-53
BETA = 0.9


def _grads(rng, shape, n):
    A = rng.standard_normal((shape[0], shape[0])) / np.sqrt(shape[0])
    return [A @ rng.standard_normal(shape).reshape(shape[0], -1).reshape(shape)
            if len(shape) == 2 else rng.standard_normal(shape) for _ in range(n)]


def _unfold(G, a):
    return np.moveaxis(G, a, 0).reshape(G.shape[a], -1)


def _soap(T, **kw):
    return lpc.precond.soap(lr=1e-2, shampoo_beta=BETA, precondition_frequency=T,
                            weight_decay=0.0, compute="fp64", storage="fp64",
                            basis_update="subspace", **kw)


@pytest.mark.parametrize("shape", [(9, 7), (5, 4, 6)])
def test_block_and_estimates_match_the_exact_factor(shape):
    """Between refreshes: Z − β^t diag(λ₀,J) = Q_Jᵀ(K_t − β^t K₀)Q_J and λ = diag(QᵀK_tQ), with
    K the exact EMA factor formed densely in fp64 (K₀ is diagonal in Q: the initial eigh)."""
    rng = np.random.default_rng(0)
    steps = 6
    grads = _grads(rng, shape, steps + 1)
    tx = _soap(100, factor_free=True, basis_k=2)
    p = np.zeros(shape)
    state = tx.init(p)
    _, state = tx.update(grads[0], state, p)
    lam0 = [None if e is None else e.copy() for e in state.estimates]
    for g in grads[1:]:
        _, state = tx.update(g, state, p)
    assert state.hint == steps and state.last_refresh == 0
    for a in range(len(shape)):
        K0 = (1 - BETA) * _unfold(grads[0], a) @ _unfold(grads[0], a).T
        K = K0.copy()
        for g in grads[1:]:
            K = BETA * K + (1 - BETA) * _unfold(g, a) @ _unfold(g, a).T
        Q = state.bases[a].Q
        J = state.extra["ff_J"][a]
        Z = state.extra["ff_Z"][a]
        QJ = Q[:, J]
        bt = BETA**steps
        want = QJ.T @ (K - bt * K0) @ QJ
        tol = 64 * shape[a] * U64 * np.linalg.norm(K, 2)
        np.testing.assert_allclose(Z - bt * np.diag(lam0[a][J]), want, rtol=0, atol=tol)
        np.testing.assert_allclose(state.estimates[a], np.diag(Q.T @ K @ Q), rtol=0, atol=tol)
        # and the initial λ is the spectrum of K₀ in its eigenbasis
        np.testing.assert_allclose(lam0[a], np.sort(np.linalg.eigvalsh(K0))[::-1], rtol=0,
                                   atol=tol)


@pytest.mark.parametrize("k", [2, 3])
def test_first_refresh_equals_the_factored_refresh(k):
    """At the first refresh the old factor is diagonal in the basis, so K̂ = Q_J Z Q_Jᵀ has the
    factored K's block Q_JᵀKQ_J and the refresh (basis, moments, estimates of J) is the
    factored subspace refresh's, to fp64 rounding."""
    rng = np.random.default_rng(1)
    shape, T = (10, 8), 4
    grads = _grads(rng, shape, T + 1)
    out = []
    for ff in (False, True):
        tx = _soap(T, factor_free=ff, basis_k=k)
        p = np.zeros(shape)
        state = tx.init(p)
        for g in grads:
            _, state = tx.update(g, state, p)
        assert state.last_refresh == T and state.last_status == "refresh"
        out.append(state)
    fac, ff = out
    tol = 1e3 * U64
    for a in range(2):
        np.testing.assert_allclose(ff.bases[a].Q, fac.bases[a].Q, rtol=0, atol=tol)
    for name in ("exp_avg", "exp_avg_sq"):
        scale = np.max(np.abs(fac.moments[name]))
        np.testing.assert_allclose(ff.moments[name], fac.moments[name], rtol=0,
                                   atol=tol * scale)


def test_state_has_no_factors_and_fewer_bytes():
    shape = (40, 24)
    rng = np.random.default_rng(2)
    g = rng.standard_normal(shape).astype(np.float32)
    for storage, nbytes in ((None, 4), ("bf16", 2)):
        states = []
        for ff in (False, True):
            tx = lpc.precond.soap(basis_update="subspace", basis_k=0.125, factor_free=ff,
                                  storage=storage, precondition_frequency=2)
            p = np.zeros(shape, np.float32)
            s = tx.init(p)
            for _ in range(5):
                _, s = tx.update(g, s, p)
            states.append(s)
        fac, ff = states
        assert all(K is None for K in ff.factors)
        assert not any(r.name.startswith("factor") for r in ff.describe())
        ks = [max(1, round(d / 8)) for d in shape]
        assert [z.shape for z in ff.extra["ff_Z"]] == [(k, k) for k in ks]
        saved = sum(d * d - k * k for d, k in zip(shape, ks)) * nbytes
        assert fac.nbytes - ff.nbytes == saved
        assert {r.name: r.format for r in ff.describe()}["block0"] == (storage or "fp32")


def test_options_that_need_the_factor_are_refused():
    with pytest.raises(ValueError, match="factor_free=True needs basis_update='subspace'"):
        lpc.precond.soap(factor_free=True)
    with pytest.raises(ValueError, match="refresh_tol"):
        lpc.precond.soap(factor_free=True, basis_update="subspace", refresh_tol=0.1)
    with pytest.raises(ValueError, match="residual"):
        lpc.precond.soap(factor_free=True, basis_update="subspace", basis_policy="residual")
    with pytest.raises(TypeError, match="factor_free must be a bool"):
        lpc.precond.soap(factor_free=1, basis_update="subspace")
    with pytest.raises(ValueError, match="cannot defer"):
        follower(lpc.precond.soap(factor_free=True, basis_update="subspace"))
    from linalg_pc.precond.kl import KLSOAP

    with pytest.raises(ValueError, match="soap only"):
        KLSOAP(lr=1e-3, betas=(0.9, 0.95), shampoo_beta=None, eps=1e-8, weight_decay=0.0,
               precondition_frequency=2, max_precond_dim=100, merge_dims=False,
               precondition_1d=False, normalize_grads=False, correct_bias=False, storage=None,
               compute="fp32", refresh_tol=None, max_failures=3, init_factor=0.1,
               max_clamp=None, basis_update="subspace", factor_free=True)


@settings(max_examples=8, deadline=None)
@given(m=st.integers(1, 12), n=st.integers(1, 12), scale=st.sampled_from([1e-20, 1.0, 1e15]),
       storage=st.sampled_from([None, "bf16"]), policy=st.sampled_from(
           ["topk-cyclic", "topk", "cyclic", "random"]), seed=st.integers(0, 2**16))
def test_updates_and_state_stay_finite(m, n, scale, storage, policy, seed):
    rng = np.random.default_rng(seed)
    tx = lpc.precond.soap(lr=1e-2, basis_update="subspace", basis_k=0.3, factor_free=True,
                          storage=storage, basis_policy=policy, precondition_frequency=2)
    p = rng.standard_normal((m, n)).astype(np.float32)
    state = tx.init(p)
    for i in range(7):
        g = (scale * rng.standard_normal((m, n))).astype(np.float32)
        if i == 3:
            g[0, 0] = np.nan  # a skipped step changes nothing
        u, state = tx.update(g, state, p)
        assert np.all(np.isfinite(u))
        p = p + u
    for name, arr in state.arrays().items():
        assert np.all(np.isfinite(np.asarray(arr, dtype=np.float64))), name
    assert int(state.skipped) == 1


def test_torch_state_dict_round_trip_is_bit_for_bit():
    torch = pytest.importorskip("torch")
    import io

    from linalg_pc.integrations.torch import SOAP

    def run(model, opt, steps, seed):
        g = torch.Generator().manual_seed(seed)
        x = torch.randn(64, 12, generator=g)
        y = torch.randn(64, 5, generator=g)
        for _ in range(steps):
            opt.zero_grad()
            torch.nn.functional.mse_loss(model(x), y).backward()
            opt.step()

    def make(seed):
        torch.manual_seed(seed)
        model = torch.nn.Sequential(torch.nn.Linear(12, 16), torch.nn.Tanh(),
                                    torch.nn.Linear(16, 5))
        opt = SOAP(model.parameters(), lr=1e-2, precondition_frequency=3,
                   basis_update="subspace", basis_k=0.25, factor_free=True, storage="bf16")
        return model, opt

    model, opt = make(0)
    run(model, opt, 7, 1)
    buf = io.BytesIO()
    torch.save({"m": model.state_dict(), "o": opt.state_dict()}, buf)
    buf.seek(0)
    run(model, opt, 8, 2)
    model2, opt2 = make(3)
    saved = torch.load(buf)
    model2.load_state_dict(saved["m"])
    opt2.load_state_dict(saved["o"])
    run(model2, opt2, 8, 2)
    for p, q in zip(model.parameters(), model2.parameters()):
        assert torch.equal(p, q)
        s1, s2 = opt.precond_state(p)[0], opt2.precond_state(q)[0]
        a1, a2 = s1.arrays(), s2.arrays()
        assert a1.keys() == a2.keys()
        for name in a1:
            assert a1[name].dtype == a2[name].dtype, name
            assert torch.equal(a1[name].view(torch.int16) if a1[name].dtype == torch.bfloat16
                               else a1[name], a2[name].view(torch.int16)
                               if a2[name].dtype == torch.bfloat16 else a2[name]), name
        for J1, J2 in zip(s1.extra["ff_J"], s2.extra["ff_J"]):
            assert (J1 is None and J2 is None) or np.array_equal(J1, J2)


def test_a_stack_follows_its_members():
    """A batched state (one call for a stack of same-shape parameters) gives each member the
    update of its own state: the columns J are shared, the blocks and estimates are not."""
    rng = np.random.default_rng(4)
    shape, n = (8, 6), 3
    grads = [rng.standard_normal((n, *shape)) for _ in range(9)]
    tx = _soap(3, factor_free=True, basis_k=2, basis_policy="cyclic")
    P = np.zeros((n, *shape))
    st_b = tx.init(P, batched=True)
    st_m = [tx.init(P[i]) for i in range(n)]
    for g in grads:
        ub, st_b = tx.update(g, st_b, P)
        for i in range(n):
            ui, st_m[i] = tx.update(g[i], st_m[i], P[i])
            np.testing.assert_allclose(ub[i], ui, rtol=0, atol=1e3 * U64 * np.max(np.abs(ui)))
    assert st_b.last_refresh == 6  # 8 steps after the first: refreshes at 3 and 6
    for i in range(n):
        for a in range(2):
            np.testing.assert_array_equal(st_b.extra["ff_J"][a], st_m[i].extra["ff_J"][a])
            np.testing.assert_allclose(st_b.extra["ff_Z"][a][i], st_m[i].extra["ff_Z"][a],
                                       rtol=0, atol=1e3 * U64 * np.max(np.abs(
                                           st_m[i].extra["ff_Z"][a])))


def test_torch_adapter_refuses_switching_factor_free():
    torch = pytest.importorskip("torch")
    from linalg_pc.integrations.torch import SOAP

    lin = torch.nn.Linear(6, 5, bias=False)
    opt = SOAP(lin.parameters(), lr=1e-2, basis_update="subspace", factor_free=True)
    for _ in range(2):
        opt.zero_grad()
        lin(torch.ones(3, 6)).square().sum().backward()
        opt.step()
    opt.param_groups[0]["factor_free"] = False
    with pytest.raises(ValueError, match="factor_free is fixed"):
        opt.step()
