"""state_dict / load_state_dict of linalg_pc.integrations.torch: every state array bit for bit
(bf16 and int32 counters in their own dtypes) and every host field round-trip through torch.save
and torch.load (weights_only), and a resumed run follows the uninterrupted one exactly."""

from __future__ import annotations

import io

import pytest

torch = pytest.importorskip("torch")

from _torch_optim_helpers import (  # noqa: E402
    FACTORIES,
    LRS,
    assert_same_state,
    loss_fn,
    mlp,
    problem,
    same_params,
    train,
)

import linalg_pc as lpc  # noqa: E402
from linalg_pc.integrations.torch import (  # noqa: E402
    KLSOAP,
    SOAP,
    KLShampoo,
    KroneckerOptimizer,
    Shampoo,
)

PRESETS = {"soap": SOAP, "shampoo": Shampoo, "kl_shampoo": KLShampoo, "kl_soap": KLSOAP}
CASES = [(m, s) for s in (None, "bf16") for m in FACTORIES]


def _ids(case):
    return f"{case[0]}-{case[1] or 'fp32'}"


def _save(obj) -> io.BytesIO:
    buf = io.BytesIO()
    torch.save(obj, buf)
    buf.seek(0)
    return buf


def _optimizer(method, params, storage, generic):
    hyper = {"lr": LRS[method], "precondition_frequency": 4, "storage": storage}
    if generic:
        return KroneckerOptimizer(params, FACTORIES[method](**hyper))
    return PRESETS[method](params, **hyper)


@pytest.mark.parametrize("case", CASES, ids=_ids)
def test_round_trip_is_bit_for_bit(case):
    method, storage = case
    model = mlp()
    x, y = problem()
    opt = _optimizer(method, model.parameters(), storage, generic=False)
    train(model, opt, x, y, 10)
    sd = torch.load(_save(opt.state_dict()))  # weights_only: tensors and plain values only
    model2 = mlp(seed=5)
    opt2 = _optimizer(method, model2.parameters(), storage, generic=False)
    opt2.load_state_dict(sd)
    for p, q in zip(model.parameters(), model2.parameters()):
        (s1, m1), (s2, m2) = opt.precond_state(p), opt2.precond_state(q)
        assert m1 == m2
        assert_same_state(s1, s2)
        assert s1.count is not s2.count
    if storage == "bf16":
        st = opt2.precond_state(model2[2].weight)[0]
        assert {r.name: r.format for r in st.describe()}["factor0"] == "bf16"
        assert st.count.dtype == torch.int32 and st.step_ok.dtype == torch.bool
    # stacks are rebuilt as stacks: the two (16, 16) weights share one state again
    assert opt2.precond_state(model2[2].weight)[0] is opt2.precond_state(model2[4].weight)[0]
    assert opt2.param_groups[0]["lr"] == opt.param_groups[0]["lr"]


@pytest.mark.parametrize("case", [*CASES, ("soap", "bf16-params")], ids=_ids)
def test_resumed_run_follows_the_uninterrupted_one(case):
    """10 steps, a checkpoint (model and optimizer through torch.save), then 30 steps twice:
    on, and from the checkpoint in a fresh model and optimizer. T = 4: the checkpoint falls
    between refreshes (count 9) and 8 refreshes follow; the parameters agree bit for bit at
    every step and the states at the end."""
    method, storage = case
    dtype = torch.float32
    generic = method in ("shampoo", "kl_soap")  # both classes, each over half the methods
    if storage == "bf16-params":
        storage, dtype = "bf16", torch.bfloat16
    x, y = problem(dtype=dtype)
    model = mlp(dtype=dtype)
    opt = _optimizer(method, model.parameters(), storage, generic)
    train(model, opt, x, y, 10)
    ckpt = _save({"model": model.state_dict(), "opt": opt.state_dict()})

    trail = []
    train(model, opt, x, y, 30,
          each=lambda k: trail.append([p.detach().clone() for p in model.parameters()]))

    model2 = mlp(seed=7, dtype=dtype)
    opt2 = _optimizer(method, model2.parameters(), storage, generic)
    saved = torch.load(ckpt)
    model2.load_state_dict(saved["model"])
    opt2.load_state_dict(saved["opt"])

    def check(k):
        for p, q in zip(trail[k], model2.parameters()):
            assert torch.equal(p, q.detach()), f"differs at step {k}"

    train(model2, opt2, x, y, 30, each=check)
    assert same_params(model, model2)
    for p, q in zip(model.parameters(), model2.parameters()):
        assert_same_state(opt.precond_state(p)[0], opt2.precond_state(q)[0])
    st = opt2.precond_state(model2[2].weight)[0]
    assert (int(st.count), st.last_refresh) == (39, 36)


def test_round_trip_with_groups_splits_and_skips():
    """Two groups (weights, biases), a frozen parameter, a stack split by a missing gradient,
    a skipped step: the stacks and every counter survive the round trip; the lr a scheduler
    set and the groups' own hyperparameters are restored."""
    model = mlp()
    x, y = problem()
    ps = list(model.parameters())
    weights, biases = ps[0::2], ps[1::2]
    model[0].bias.requires_grad_(False)
    opt = SOAP([{"params": weights, "lr": 1e-2}, {"params": biases, "weight_decay": 0.0}],
               lr=3e-3, precondition_frequency=3)
    sched = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=0.9)
    train(model, opt, x, y, 4, scheduler=sched)
    assert opt.precond_state(model[2].weight)[0] is opt.precond_state(model[4].weight)[0]
    opt.zero_grad()
    loss_fn(model, x, y).backward()
    model[4].weight.grad = None  # splits the (16, 16) stack of the weights
    model[6].weight.grad[0, 0] = float("inf")  # the (4, 16) weight skips a step
    opt.step()
    train(model, opt, x, y, 2)

    model2 = mlp(seed=3)
    model2[0].bias.requires_grad_(False)
    ps2 = list(model2.parameters())
    opt2 = SOAP([{"params": ps2[0::2]}, {"params": ps2[1::2]}], lr=1.0)
    opt2.load_state_dict(torch.load(_save(opt.state_dict())))
    assert [g["lr"] for g in opt2.param_groups] == [g["lr"] for g in opt.param_groups]
    assert opt2.param_groups[0]["lr"] == pytest.approx(1e-2 * 0.9 ** 4)
    assert opt2.param_groups[1]["weight_decay"] == 0.0
    assert opt2.precond_state(ps2[1]) is None  # frozen
    for p, q in zip(ps, ps2):
        a, b = opt.precond_state(p), opt2.precond_state(q)
        assert (a is None) == (b is None)
        if a is not None:
            assert a[1] == b[1]
            assert_same_state(a[0], b[0])
    w2, w4, w6 = (opt2.precond_state(model2[i].weight)[0] for i in (2, 4, 6))
    assert w2 is not w4 and w2.layout.batch == w4.layout.batch == (1,)
    assert (int(w2.count), int(w4.count), int(w6.count), int(w6.skipped)) == (6, 5, 5, 1)
    b2, b4 = (opt2.precond_state(model2[i].bias) for i in (2, 4))
    assert b2[0] is b4[0] and (b2[1], b4[1]) == (0, 1)  # the biases' stack is whole
    model2.load_state_dict(model.state_dict())
    train(model, opt, x, y, 3)
    train(model2, opt2, x, y, 3)
    assert same_params(model, model2)


def test_state_dict_before_the_first_step_and_mismatches():
    model = mlp()
    opt = SOAP(model.parameters())
    sd = opt.state_dict()
    assert sd["state"] == {}
    opt.load_state_dict(torch.load(_save(sd)))

    x, y = problem()
    train(model, opt, x, y, 3)
    sd = torch.load(_save(opt.state_dict()))
    other = KroneckerOptimizer(mlp().parameters(), lpc.precond.kl_soap())
    with pytest.raises(ValueError, match="saved by a preset"):
        other.load_state_dict(sd)
    assert other.state_dict()["state"] == {}  # left as it was

    generic = KroneckerOptimizer(model.parameters(), lpc.precond.soap())
    train(model, generic, x, y, 2)
    gsd = torch.load(_save(generic.state_dict()))
    assert gsd["param_groups"][0]["transform"]["method"] == "soap"
    with pytest.raises(ValueError, match="'soap'"):
        KroneckerOptimizer(mlp().parameters(), lpc.precond.kl_soap()).load_state_dict(gsd)
    with pytest.raises(ValueError, match="KroneckerOptimizer"):
        SOAP(mlp().parameters()).load_state_dict(gsd)
    wide = torch.nn.Sequential(torch.nn.Linear(8, 17), torch.nn.Tanh(), torch.nn.Linear(17, 16),
                               torch.nn.Tanh(), torch.nn.Linear(16, 16), torch.nn.Tanh(),
                               torch.nn.Linear(16, 4))
    with pytest.raises(ValueError, match="shape"):
        SOAP(wide.parameters()).load_state_dict(sd)
    with pytest.raises(ValueError):
        SOAP(list(mlp().parameters())[:3]).load_state_dict(sd)


def test_deepcopy_of_model_and_optimizer_follows_the_original():
    import copy

    model = mlp()
    x, y = problem()
    opt = SOAP(model.parameters(), lr=1e-2, precondition_frequency=3)
    train(model, opt, x, y, 4)
    twin = copy.deepcopy({"model": model, "opt": opt})
    train(model, opt, x, y, 5)
    train(twin["model"], twin["opt"], x, y, 5)
    assert same_params(model, twin["model"])
