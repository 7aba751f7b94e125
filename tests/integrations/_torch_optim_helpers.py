"""Shared helpers of the torch.optim adapter tests (not a test module): a small MLP on a
synthetic regression problem, a hand-written training loop over the transforms, and bitwise
comparisons of tensors and of PrecondStates."""

from __future__ import annotations

import contextlib
import copy
import dataclasses

import numpy as np
import pytest
import torch

import linalg_pc as lpc

FACTORIES = {"soap": lpc.precond.soap, "shampoo": lpc.precond.shampoo,
             "kl_shampoo": lpc.precond.kl_shampoo, "kl_soap": lpc.precond.kl_soap}
#: learning rates under which 50 steps at least halve the loss of :func:`problem`
LRS = {"soap": 1e-2, "shampoo": 1e-2, "kl_shampoo": 3e-2, "kl_soap": 1e-2}


def mlp(seed: int = 0, dtype=torch.float32) -> torch.nn.Module:
    """8 -> 16 -> 16 -> 16 -> 4 with tanh: weights (16, 8), 2 x (16, 16), (4, 16) and biases
    3 x (16,), (4,): two stacks of same-shape parameters."""
    torch.manual_seed(seed)
    layers = [torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 16), torch.nn.Tanh(),
              torch.nn.Linear(16, 16), torch.nn.Tanh(), torch.nn.Linear(16, 4)]
    return torch.nn.Sequential(*layers).to(dtype)


def problem(seed: int = 1, n: int = 128, dtype=torch.float32):
    """(x, y): y from a random teacher MLP plus noise."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 8, generator=g)
    W1, W2 = torch.randn(8, 12, generator=g), torch.randn(12, 4, generator=g)
    y = torch.tanh(x @ W1 / 3) @ W2 + 0.01 * torch.randn(n, 4, generator=g)
    return x.to(dtype), y.to(dtype)


def loss_fn(model, x, y):
    return torch.nn.functional.mse_loss(model(x), y)


def train(model, opt, x, y, steps: int, *, scheduler=None, each=None):
    """``steps`` optimizer steps; returns the losses (read after the runs' steps)."""
    losses = []
    for k in range(steps):
        opt.zero_grad()
        loss = loss_fn(model, x, y)
        loss.backward()
        opt.step()
        losses.append(loss.detach())
        if scheduler is not None:
            scheduler.step()
        if each is not None:
            each(k)
    return [float(v) for v in losses]


def by_hand(model, x, y, steps: int, make_tx, *, batched: bool = True, groups=None,
            each=None):
    """The documented loop: ``tx.update`` called directly. ``make_tx(k, g)`` gives the
    transform of group g at step k; ``groups`` lists the parameter indices of each group
    (default: one group of every parameter)."""
    params = list(model.parameters())
    groups = groups or [list(range(len(params)))]
    states = [None] * len(groups)
    for k in range(steps):
        loss = loss_fn(model, x, y)
        grads = torch.autograd.grad(loss, params)
        with torch.no_grad():
            for gi, idx in enumerate(groups):
                tx = make_tx(k, gi)
                ps, gs = [params[i] for i in idx], [grads[i] for i in idx]
                if batched:
                    gtx = lpc.precond.grouped(tx)
                    if states[gi] is None:
                        states[gi] = gtx.init([p.detach() for p in ps])
                    ups, states[gi] = gtx.update(gs, states[gi], [p.detach() for p in ps])
                else:
                    if states[gi] is None:
                        states[gi] = [tx.init(p.detach()) for p in ps]
                    ups = []
                    for j, (p, g) in enumerate(zip(ps, gs)):
                        u, states[gi][j] = tx.update(g, states[gi][j], p.detach())
                        ups.append(u)
                for p, u in zip(ps, ups):
                    p.add_(u)
        if each is not None:
            each(k)
    return states


def bits(t: torch.Tensor) -> torch.Tensor:
    """The tensor's bit pattern (NaNs compare equal to themselves)."""
    if t.dtype.is_floating_point:
        return t.contiguous().view({2: torch.int16, 4: torch.int32,
                                    8: torch.int64}[t.element_size()])
    return t


def same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and torch.equal(bits(a), bits(b))


def same_params(m1, m2) -> bool:
    return all(same_bits(p.detach(), q.detach())
               for p, q in zip(m1.parameters(), m2.parameters()))


def assert_same_state(s1, s2):
    """Every field of two PrecondStates: arrays bit for bit (dtype included), host fields
    equal."""
    a1, a2 = s1.arrays(), s2.arrays()
    assert a1.keys() == a2.keys()
    for name in a1:
        assert same_bits(a1[name], a2[name]), name
    arrays = {"factors", "bases", "eigenvalues", "estimates", "moments", "count", "skipped",
              "step_ok"}
    for f in dataclasses.fields(s1):
        if f.name == "consecutive":  # host arrays, one count per member
            assert len(s1.consecutive) == len(s2.consecutive)
            assert all(np.array_equal(c1, c2) for c1, c2 in
                       zip(s1.consecutive, s2.consecutive)), f.name
        elif f.name not in arrays:
            assert getattr(s1, f.name) == getattr(s2, f.name), f.name
    for q1, q2 in zip(s1.bases, s2.bases):
        assert (q1 is None) == (q2 is None)
        if q1 is not None:
            assert (q1.scheme, q1.block_size, q1.offset) == (q2.scheme, q2.block_size, q2.offset)


def clone_model(model):
    return copy.deepcopy(model)


#: Reads of a tensor's values by the host, counted with the backend's host exchange
#: (``to_numpy``, through which every other host read of the library goes). A zero-copy
#: ``Tensor.numpy()`` view of a CPU tensor, through which the CPU kernels work on a tensor's
#: memory, reads nothing and waits for nothing (accelerator tensors take other kernels): it is
#: not counted, as in tests/precond/test_sync.py.
HOST_READS = ("item", "tolist", "__bool__", "__float__", "__int__", "__index__", "__array__",
              "__dlpack__")


@contextlib.contextmanager
def count_host_reads():
    """Counts the Python-level reads of a tensor's values on the host (``counter[0]``)."""
    import linalg_pc._backend as B
    import linalg_pc._backend._core as core
    import linalg_pc._backend.linalg as blinalg

    counter = [0]
    originals = {n: getattr(torch.Tensor, n) for n in HOST_READS}
    own = {n for n in HOST_READS if n in vars(torch.Tensor)}
    exchanges = [(mod, mod.to_numpy) for mod in (B, core, blinalg)]
    orig_to_numpy = core.to_numpy

    def wrap(f):
        def read(*args, **kwargs):
            counter[0] += 1
            return f(*args, **kwargs)
        return read

    def to_numpy(x, *args, **kwargs):
        if isinstance(x, torch.Tensor):
            counter[0] += 1
        return orig_to_numpy(x, *args, **kwargs)

    for n, f in originals.items():
        setattr(torch.Tensor, n, wrap(f))
    for mod, _ in exchanges:
        mod.to_numpy = to_numpy
    try:
        yield counter
    finally:
        for mod, f in exchanges:
            mod.to_numpy = f
        for n, f in originals.items():
            if n in own:
                setattr(torch.Tensor, n, f)
            else:
                delattr(torch.Tensor, n)


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """PyTorch runs single-threaded in these tests (the models are tiny; on a busy machine
    OpenMP barriers cost milliseconds per operation). Imported by each test module."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
