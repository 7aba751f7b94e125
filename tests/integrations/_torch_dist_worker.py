"""One rank of the data-parallel tests of the torch.optim adapter (not a test module).

``python _torch_dist_worker.py RANK WORLD PORT OUT_DIR NAMES`` joins a gloo process group on
127.0.0.1:PORT, runs the scenarios NAMES (comma-separated keys of :data:`SCENARIOS`) with
``process_group=WORLD`` and writes ``OUT_DIR/rank{RANK}.pt``; rank 0 also runs each scenario in
one process (no process group, the gradients averaged by hand) and writes
``OUT_DIR/reference.pt``. The tests run rank 0 in their own process through :func:`serve`
(its imports are warm: one fresh process instead of two).
"""

from __future__ import annotations

import os
import sys
from datetime import timedelta

import torch
import torch.distributed as dist

from linalg_pc.integrations.torch import KLSOAP, SOAP, KLShampoo, Shampoo

STEPS = 25
T = 5
#: the step after which NaN is written into a factor (on its owning rank only in the
#: data-parallel run): the refreshes of steps 11 and 16 fail, the second falls back
INJECT_AFTER = 7

SCENARIOS = {
    # name: (class, hyperparameters, batched, reduce_grads)
    "soap": (SOAP, {"lr": 1e-2}, False, True),
    "soap-bf16": (SOAP, {"lr": 1e-2, "storage": "bf16"}, False, True),
    "soap-bf16-subspace": (SOAP, {"lr": 1e-2, "storage": "bf16", "basis_update": "subspace",
                                  "basis_k": 0.25}, True, False),
    "kl_soap": (KLSOAP, {"lr": 1e-2}, True, True),
    "kl_shampoo": (KLShampoo, {"lr": 3e-2, "basis_update": "subspace", "basis_k": 0.5},
                   False, False),
    "shampoo": (Shampoo, {"lr": 1e-2, "storage": {"basis": "bf16"}}, True, True),
    "soap-failure": (SOAP, {"lr": 1e-2, "max_failures": 2}, False, False),
}


def model(seed: int = 0) -> torch.nn.Module:
    """9 -> 24 -> 16 -> 16 -> 16 -> 4 with tanh: weights (24, 9), (16, 24), 2 x (16, 16),
    (4, 16) (factors of 4 to 24 rows; a 9 x 9 basis: odd byte counts in bf16) and biases."""
    torch.manual_seed(seed)
    sizes = (9, 24, 16, 16, 16, 4)
    layers = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        layers += [torch.nn.Linear(a, b), torch.nn.Tanh()]
    return torch.nn.Sequential(*layers[:-1])


def data(n: int = 64):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(n, 9, generator=g)
    y = torch.tanh(x @ torch.randn(9, 4, generator=g)) + 0.01 * torch.randn(n, 4, generator=g)
    return x, y


def grads(m, x, y):
    loss = torch.nn.functional.mse_loss(m(x), y)
    return torch.autograd.grad(loss, list(m.parameters()))


def run(name: str, rank: int, world: int, distributed: bool) -> dict:
    cls, hp, batched, reduce = SCENARIOS[name]
    m = model()
    params = list(m.parameters())
    kw = {"process_group": dist.group.WORLD, "reduce_grads": reduce} if distributed else {}
    opt = cls(params, batched=batched, precondition_frequency=T, **hp, **kw)
    x, y = data()
    shards = list(zip(x.chunk(world), y.chunk(world)))
    statuses = []
    for step in range(1, STEPS + 1):
        if distributed and reduce:  # each rank its shard; the optimizer averages
            gs = grads(m, *shards[rank])
        elif reduce:  # one process: the average of the shards' gradients, as all_reduce
            parts = list(zip(*(grads(m, *s) for s in shards)))
            gs = [sum(p[1:], p[0]) / world for p in parts]
        else:  # the gradients were reduced before the step (as DistributedDataParallel does)
            gs = grads(m, x, y)
        for p, g in zip(params, gs):
            p.grad = g
        opt.step()
        statuses.append(opt.precond_state(params[0])[0].last_status)
        if name == "soap-failure" and step == INJECT_AFTER:
            owner = opt.refresh_owner(params[0]) if distributed else rank
            if owner == rank:
                opt.precond_state(params[0])[0].factors[0].fill_(float("nan"))
    out = {"params": [p.detach().clone() for p in params], "state": opt.state_dict(),
           "statuses": statuses}
    if distributed:
        out["owners"] = [opt.refresh_owner(p) for p in params]
        out["exchanges"] = opt._dp.exchanges
        out["bytes"] = opt._dp.exchanged_bytes
    return out


def serve(rank: int, world: int, init_method: str, names, timeout: float = 120.0):
    """Join the gloo group as ``rank``, run ``names`` in it; rank 0 also runs them in one
    process. Returns (results, reference or None)."""
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=init_method, rank=rank, world_size=world,
                            timeout=timedelta(seconds=timeout))
    try:
        results = {name: run(name, rank, world, True) for name in names}
        ref = {name: run(name, rank, world, False) for name in names} if rank == 0 else None
        dist.barrier()
    finally:
        dist.destroy_process_group()
    return results, ref


def _skip_dynamo_import() -> None:
    """Mark torch.optim.Optimizer's dynamo-disabled methods as already resolved (to the
    methods themselves): a fresh process then does not import torch._dynamo (seconds of
    CPU) for the first ``add_param_group``. Nothing here is compiled."""
    for name in ("add_param_group", "state_dict", "load_state_dict", "zero_grad"):
        fn = getattr(getattr(torch.optim.Optimizer, name), "__wrapped__", None)
        if fn is not None and not hasattr(fn, "__dynamo_disable"):
            setattr(fn, "__dynamo_disable", fn)


def main() -> None:
    _skip_dynamo_import()
    rank, world, port, out_dir = (int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]),
                                  sys.argv[4])
    names = sys.argv[5].split(",")
    results, ref = serve(rank, world, f"tcp://127.0.0.1:{port}", names)
    torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
    if ref is not None:
        torch.save(ref, os.path.join(out_dir, "reference.pt"))


if __name__ == "__main__":
    main()
