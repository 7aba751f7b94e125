"""linalg_pc.integrations.torch: the optimizers train, equal the transforms called by hand bit
for bit (stacks, per-parameter states, parameter groups, LR schedulers), skip parameters
without a gradient, read the device only at refresh steps, and reject bad input clearly."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from _torch_optim_helpers import (  # noqa: E402
    FACTORIES,
    LRS,
    _one_torch_thread,  # noqa: F401 - the module's autouse fixture
    by_hand,
    clone_model,
    count_host_reads,
    loss_fn,
    mlp,
    problem,
    same_bits,
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
METHODS = list(FACTORIES)


@pytest.mark.parametrize("method", METHODS)
def test_training_reduces_the_loss(method):
    model = mlp()
    x, y = problem()
    opt = PRESETS[method](model.parameters(), lr=LRS[method], precondition_frequency=5)
    losses = train(model, opt, x, y, 50)
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert losses[-1] < 0.5 * losses[0], losses[::10]


@pytest.mark.parametrize("batched", [True, False], ids=["stacks", "per-parameter"])
@pytest.mark.parametrize("method", METHODS)
def test_equals_the_transform_called_by_hand(method, batched):
    """The preset and KroneckerOptimizer both equal the documented loop over ``tx.update``
    bit for bit, step by step, across refreshes (T = 3), with weight decay."""
    x, y = problem()
    hyper = {"lr": LRS[method], "precondition_frequency": 3, "weight_decay": 0.05}
    tx = FACTORIES[method](**hyper)
    ref = mlp()
    snaps = []
    by_hand(ref, x, y, 10, lambda k, g: tx, batched=batched,
            each=lambda k: snaps.append(clone_model(ref)))
    for opt_of in (lambda ps: PRESETS[method](ps, batched=batched, **hyper),
                   lambda ps: KroneckerOptimizer(ps, tx, batched=batched)):
        model = mlp()
        opt = opt_of(model.parameters())
        _train_against(model, opt, x, y, snaps)
    state, member = opt.precond_state(model[2].weight)
    assert state.batched == batched and member == 0
    assert int(state.count) == 9 and state.last_refresh == 9 and state.hint == 9
    if batched:
        assert opt.precond_state(model[4].weight) == (state, 1)  # one stack of (16, 16)


def _check(ok, k):
    assert ok, f"differs at step {k}"


def _train_against(model, opt, x, y, snaps):
    train(model, opt, x, y, len(snaps), each=lambda k: _check(same_params(model, snaps[k]), k))


def test_param_groups_with_their_own_lr_and_hyperparameters():
    x, y = problem()
    ref = mlp()
    n = len(list(ref.parameters()))
    weights, biases = list(range(0, n, 2)), list(range(1, n, 2))
    txs = [lpc.precond.soap(lr=2e-2, precondition_frequency=3),
           lpc.precond.soap(lr=1e-3, precondition_frequency=3, weight_decay=0.0)]
    snaps = []
    by_hand(ref, x, y, 10, lambda k, g: txs[g], groups=[weights, biases],
            each=lambda k: snaps.append(clone_model(ref)))

    model = mlp()
    ps = list(model.parameters())
    opt = SOAP([{"params": [ps[i] for i in weights], "lr": 2e-2},
                {"params": [ps[i] for i in biases], "weight_decay": 0.0}],
               lr=1e-3, precondition_frequency=3)
    train(model, opt, x, y, 10, each=lambda k: _check(same_params(model, snaps[k]), k))

    # KroneckerOptimizer: a group with its own transform takes that transform's lr
    model = mlp()
    ps = list(model.parameters())
    opt = KroneckerOptimizer([{"params": [ps[i] for i in weights]},
                              {"params": [ps[i] for i in biases], "transform": txs[1]}],
                             lpc.precond.soap(lr=5.0, precondition_frequency=3), lr=2e-2)
    assert [g["lr"] for g in opt.param_groups] == [2e-2, 1e-3]
    train(model, opt, x, y, 10, each=lambda k: _check(same_params(model, snaps[k]), k))


def test_groups_with_different_methods():
    x, y = problem()
    ref = mlp()
    n = len(list(ref.parameters()))
    first, second = list(range(4)), list(range(4, n))
    txs = [lpc.precond.kl_soap(lr=1e-2, precondition_frequency=3),
           lpc.precond.shampoo(lr=1e-2, precondition_frequency=3)]
    snaps = []
    by_hand(ref, x, y, 8, lambda k, g: txs[g], groups=[first, second],
            each=lambda k: snaps.append(clone_model(ref)))
    model = mlp()
    ps = list(model.parameters())
    opt = KroneckerOptimizer([{"params": [ps[i] for i in first]},
                              {"params": [ps[i] for i in second], "transform": txs[1]}], txs[0])
    train(model, opt, x, y, 8, each=lambda k: _check(same_params(model, snaps[k]), k))
    assert opt.precond_state(ps[0])[0].method == "kl_soap"
    assert opt.precond_state(ps[-1])[0].method == "shampoo"


@pytest.mark.parametrize("generic", [False, True], ids=["preset", "KroneckerOptimizer"])
def test_lr_scheduler_changes_the_step(generic):
    """StepLR halves group["lr"] every 4 steps: each step equals the transform built with the
    scheduled lr (weight decay included), and differs from a constant-lr run."""
    x, y = problem()
    lr0, hyper = 2e-2, {"precondition_frequency": 5, "weight_decay": 0.1}
    ref = mlp()
    snaps = []
    by_hand(ref, x, y, 14, lambda k, g: lpc.precond.soap(lr=lr0 * 0.5 ** (k // 4), **hyper),
            each=lambda k: snaps.append(clone_model(ref)))
    model = mlp()
    if generic:
        opt = KroneckerOptimizer(model.parameters(), lpc.precond.soap(lr=lr0, **hyper))
    else:
        opt = SOAP(model.parameters(), lr=lr0, **hyper)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=4, gamma=0.5)
    train(model, opt, x, y, 14, scheduler=sched,
          each=lambda k: _check(same_params(model, snaps[k]), k))
    assert opt.param_groups[0]["lr"] == pytest.approx(lr0 / 8)
    const = mlp()
    train(const, SOAP(const.parameters(), lr=lr0, **hyper), x, y, 14)
    assert not same_params(model, const)


def test_parameters_without_grad_are_skipped():
    """A frozen parameter never gets state; a layer used every other step is left bit for bit
    alone at the other steps, and its stack (shared with a same-shape layer used every step)
    is split once, each part counting its own steps."""
    model = mlp()
    x, y = problem()
    model[0].bias.requires_grad_(False)
    frozen = model[0].bias.detach().clone()
    opt = SOAP(model.parameters(), lr=1e-2, precondition_frequency=3)
    hidden = model[4]  # (16, 16) like model[2]

    def closure(k):
        opt.zero_grad()
        h = torch.tanh(model[2](torch.tanh(model[0](x))))
        if k % 2 == 0:
            h = torch.tanh(hidden(h))
        loss = torch.nn.functional.mse_loss(model[6](h), y)
        loss.backward()
        return loss

    for k in range(9):
        before = hidden.weight.detach().clone()
        loss = opt.step(lambda k=k: closure(k))
        assert torch.is_tensor(loss) and loss.ndim == 0
        if k % 2:
            assert hidden.weight.grad is None
            assert same_bits(hidden.weight.detach(), before)
        else:  # the first step only initializes
            assert same_bits(hidden.weight.detach(), before) == (k == 0)  # 0: initializes
    assert same_bits(model[0].bias.detach(), frozen)
    assert opt.precond_state(model[0].bias) is None
    s2, m2 = opt.precond_state(model[2].weight)
    s4, m4 = opt.precond_state(hidden.weight)
    assert s2 is not s4 and m2 == m4 == 0
    assert s2.layout.batch == s4.layout.batch == (1,)
    assert int(s2.count) == 8 and int(s4.count) == 4  # 9 and 5 steps, the first initializes
    # the 16-element biases of layers 2 and 4 split the same way; layer 0's is frozen
    assert opt.precond_state(model[2].bias)[0] is not opt.precond_state(hidden.bias)[0]


@pytest.mark.parametrize("batched", [True, False], ids=["stacks", "per-parameter"])
def test_a_nonfinite_gradient_skips_its_stack(batched):
    model = mlp()
    x, y = problem()
    opt = SOAP(model.parameters(), lr=1e-2, precondition_frequency=3, batched=batched)
    train(model, opt, x, y, 4)
    opt.zero_grad()
    loss_fn(model, x, y).backward()
    model[2].weight.grad[0, 0] = float("nan")
    before = [p.detach().clone() for p in model.parameters()]
    opt.step()
    after = list(model.parameters())
    unchanged = [same_bits(a.detach(), b) for a, b in zip(after, before)]
    # model[2].weight is parameter 2, model[4].weight (same stack when batched) parameter 4
    assert unchanged[2]
    assert unchanged[4] == batched
    assert not any(unchanged[i] for i in (0, 1, 3, 5, 6, 7))
    st = opt.precond_state(model[2].weight)[0]
    assert int(st.count) == 3 and int(st.skipped) == 1 and not bool(st.step_ok)
    train(model, opt, x, y, 3)
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert int(st.count) == 6


@pytest.mark.parametrize("method", METHODS)
def test_no_host_reads_between_refreshes(method):
    """The device is read only at the first step and at refresh steps (count a multiple of
    T = 5: steps 6, 11, 16, 21); the counters and the schedule are right."""
    model = mlp()
    x, y = problem()
    opt = PRESETS[method](model.parameters(), lr=LRS[method], precondition_frequency=5)
    reads = []
    for _ in range(23):
        opt.zero_grad()
        loss_fn(model, x, y).backward()
        with count_host_reads() as counter:
            opt.step()
        reads.append(counter[0])
    read_at = [k + 1 for k, r in enumerate(reads) if r]
    assert read_at == [1, 6, 11, 16, 21], reads
    for p in model.parameters():
        st = opt.precond_state(p)[0]
        assert (int(st.count), st.hint, st.last_refresh) == (22, 22, 20)
        assert int(st.skipped) == 0 and st.refresh_failures == 0 and st.initialized


def test_bad_input():
    model = mlp()
    ps = list(model.parameters())
    tx = lpc.precond.soap()
    with pytest.raises(TypeError, match="transform of linalg_pc.precond"):
        KroneckerOptimizer(ps, object())
    with pytest.raises(TypeError, match="not grouped"):
        KroneckerOptimizer(ps, lpc.precond.grouped(tx))
    with pytest.raises(TypeError, match="transform of linalg_pc.precond"):
        KroneckerOptimizer([{"params": ps[:2], "transform": "soap"}], tx)
    with pytest.raises(TypeError, match="tensor"):
        KroneckerOptimizer(ps, tx, lr=torch.tensor(1e-3))
    with pytest.raises(ValueError, match="lr"):
        SOAP(ps, lr=-1.0)
    with pytest.raises(TypeError, match="batched must be a bool"):
        KroneckerOptimizer(ps, tx, batched=1)
    with pytest.raises(TypeError, match="unknown hyperparameters"):
        SOAP(ps, momentum=0.9)
    with pytest.raises(TypeError, match="through its 'transform'"):
        KroneckerOptimizer([{"params": ps, "weight_decay": 0.0}], tx)
    with pytest.raises(TypeError, match="use KroneckerOptimizer"):
        SOAP([{"params": ps, "transform": tx}])
    with pytest.raises(ValueError, match="betas"):
        SOAP([{"params": ps[:2]}, {"params": ps[2:], "betas": (0.9, 1.5)}])
    with pytest.raises(TypeError, match="complex"):
        KroneckerOptimizer([torch.nn.Parameter(torch.zeros(3, 3, dtype=torch.complex64))], tx)
    opt = SOAP(ps)
    x, y = problem()
    loss_fn(model, x, y).backward()
    opt.param_groups[0]["lr"] = torch.tensor(1e-3)
    with pytest.raises(TypeError, match="tensor"):
        opt.step()


def test_sparse_gradients_are_rejected_before_any_update():
    emb = torch.nn.Embedding(10, 4, sparse=True)
    lin = torch.nn.Linear(4, 2)
    opt = KroneckerOptimizer([{"params": lin.parameters()}, {"params": emb.parameters()}],
                             lpc.precond.soap())
    lin(emb(torch.tensor([1, 2, 3]))).sum().backward()
    before = lin.weight.detach().clone()
    with pytest.raises(RuntimeError, match="sparse"):
        opt.step()
    assert same_bits(lin.weight.detach(), before)
    assert opt.precond_state(lin.weight) is None


def test_structural_hyperparameters_are_fixed_once_there_is_state():
    model = mlp()
    x, y = problem()
    opt = SOAP(model.parameters(), precondition_frequency=3)
    train(model, opt, x, y, 2)
    opt.param_groups[0]["weight_decay"] = 0.0  # a hyperparameter of the step: fine
    opt.param_groups[0]["betas"] = (0.9, 0.99)
    train(model, opt, x, y, 2)
    opt.param_groups[0]["storage"] = "bf16"
    before = clone_model(model)
    with pytest.raises(ValueError, match="fixed once a parameter has state"):
        train(model, opt, x, y, 1)
    assert same_params(model, before)  # checked before any parameter moved


def test_bf16_parameters():
    """bf16 parameters and gradients: the update comes back in bf16, the loss decreases."""
    model = mlp(dtype=torch.bfloat16)
    x, y = problem(dtype=torch.bfloat16)
    opt = SOAP(model.parameters(), lr=1e-2, precondition_frequency=5, storage="bf16")
    losses = train(model, opt, x, y, 30)
    assert all(p.dtype == torch.bfloat16 for p in model.parameters())
    st = opt.precond_state(model[2].weight)[0]
    assert st.param_format == "bf16" and {r.format for r in st.describe()} >= {"bf16"}
    assert losses[-1] < 0.8 * losses[0]


def test_docs_example_runs_and_trains():
    import pathlib
    import re

    doc = pathlib.Path(__file__).resolve().parents[2] / "docs" / "precond.md"
    blocks = re.findall(r"```python\n(.*?)```", doc.read_text(), re.S)
    block = next(b for b in blocks if "from linalg_pc.integrations.torch import" in b)
    ns: dict = {}
    exec(block, ns)  # noqa: S102 - the documented example, verbatim
    model, x, y, opt = ns["model"], ns["x"], ns["y"], ns["opt"]
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-2 / 4)  # StepLR, 40 steps
    assert opt.param_groups[1]["weight_decay"] == 0.0
    torch.manual_seed(0)
    fresh = type(model)(*[type(m)(*_init_args(m)) for m in model])
    assert loss_fn(model, x, y) < 0.9 * loss_fn(fresh, x, y)


def _init_args(m):
    return (m.in_features, m.out_features) if isinstance(m, torch.nn.Linear) else ()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize("method", METHODS)
def test_no_synchronization_between_refreshes_on_cuda(method):
    """On CUDA, the steps that refresh nothing run under set_sync_debug_mode("error")."""
    model = mlp().cuda()
    x, y = (t.cuda() for t in problem())
    opt = PRESETS[method](model.parameters(), lr=LRS[method], precondition_frequency=5)
    for k in range(12):
        opt.zero_grad()
        loss_fn(model, x, y).backward()
        quiet = k % 5 != 0  # steps 1, 6, 11 (k = 0, 5, 10) initialize or refresh
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error" if quiet else "default")
        try:
            opt.step()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    st = opt.precond_state(model[2].weight)[0]
    assert (int(st.count), st.last_refresh) == (11, 10)


def test_parameters_without_a_factor_as_configured():
    """Biases (1-D) get no factor by default and SOAP runs Adam on them (checked against Adam
    written out here, the first step only initializing); ``precondition_1d=True`` gives them
    one; ``max_precond_dim`` leaves longer axes without one; each configuration equals the
    transform called by hand."""
    x, y = problem()
    model = mlp()
    opt = SOAP(model.parameters(), lr=1e-2, precondition_frequency=3, weight_decay=0.0,
               betas=(0.9, 0.99))
    grads = []
    train(model, opt, x, y, 8, each=lambda k: grads.append(model[6].bias.grad.clone()))
    st, _ = opt.precond_state(model[6].bias)
    assert st.layout.factored == (False,) and st.factors == (None,) and st.bases == (None,)
    p, m, v = mlp()[6].bias.detach().double(), 0.0, 0.0
    for t, g in enumerate(grads):  # t: steps after the first
        if t == 0:
            continue
        g = g.double()
        m, v = 0.9 * m + 0.1 * g, 0.99 * v + 0.01 * g * g
        p = p - 1e-2 * (1 - 0.99 ** t) ** 0.5 / (1 - 0.9 ** t) * m / (v.sqrt() + 1e-8)
    u = torch.finfo(torch.float32).eps / 2
    # 7 steps of O(10) roundings of O(lr)-sized updates (the moments' ratio is O(1))
    assert torch.allclose(model[6].bias.detach().double(), p, rtol=0, atol=7 * 20 * u)
    assert not torch.equal(model[6].bias.detach(), mlp()[6].bias.detach())

    for hyper, check in (
            ({"precondition_1d": True},
             lambda o, mdl: o.precond_state(mdl[0].bias)[0].factors[0].shape == (3, 16, 16)),
            ({"max_precond_dim": 10},
             lambda o, mdl: [None if K is None else tuple(K.shape) for K in
                             o.precond_state(mdl[0].weight)[0].factors] == [None, (1, 8, 8)])):
        hp = {"lr": 1e-2, "precondition_frequency": 3, **hyper}
        tx = lpc.precond.soap(**hp)
        ref = mlp()
        snaps = []
        by_hand(ref, x, y, 6, lambda k, g, tx=tx: tx,
                each=lambda k, ref=ref, snaps=snaps: snaps.append(clone_model(ref)))
        model = mlp()
        opt = SOAP(model.parameters(), **hp)
        _train_against(model, opt, x, y, snaps)
        assert check(opt, model), hyper
