"""Data-parallel mode of linalg_pc.integrations.torch over torch.distributed (gloo, CPU).

Two processes (tests/integrations/_torch_dist_worker.py) train a small MLP for 25 steps with
refreshes every 5 steps, the refreshes divided between them; the final parameters and every
state array and host field of both ranks equal the one-process run (computed in rank 0's
process, same thread count) bit for bit. Also: the ownership rule (largest first, balanced by
n·Σd³), bf16 state broadcast as bf16 (half the bytes of fp32), collectives only at refresh
steps, and a refresh failing on its owning rank handled the same way on every rank.
"""

from __future__ import annotations

import itertools
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
dist = pytest.importorskip("torch.distributed")

import _torch_dist_worker as worker  # noqa: E402
from _torch_optim_helpers import (  # noqa: E402
    _one_torch_thread,  # noqa: F401 - the module's autouse fixture
    assert_same_state,
    count_host_reads,
    same_bits,
)

import linalg_pc  # noqa: E402
from linalg_pc.integrations._torch_distributed import (  # noqa: E402
    assign_owners,
    byte_layout,
    pack,
    unpack,
)
from linalg_pc.integrations.torch import SOAP, KroneckerOptimizer  # noqa: E402

pytestmark = pytest.mark.skipif(not (dist.is_available() and dist.is_gloo_available()),
                                reason="torch.distributed with gloo is not available")

WORKER = Path(__file__).with_name("_torch_dist_worker.py")
WORLD = 2
QUICK = ("soap", "soap-bf16", "soap-failure")
SLOW = ("soap-bf16-subspace", "kl_soap", "kl_shampoo", "shampoo")
#: the weights of the worker's MLP: (24, 9), (16, 24), 2 x (16, 16), (4, 16)
WEIGHTS = ((24, 9), (16, 24), (16, 16), (16, 16), (4, 16))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(names, out: Path, timeout: float = 300.0) -> dict:
    """Rank 0 in this process (warm imports), ranks 1.. as fresh processes of the worker;
    {"ranks": [results of each rank], "reference": the one-process runs}."""
    if dist.is_initialized():
        pytest.skip("a process group is already initialized in this process")
    env = dict(os.environ)
    root = str(Path(linalg_pc.__file__).resolve().parents[1])  # the package under test
    env["PYTHONPATH"] = os.pathsep.join([root, env.get("PYTHONPATH", "")])
    env["OMP_NUM_THREADS"] = "1"
    port = _free_port()
    procs = [subprocess.Popen([sys.executable, str(WORKER), str(r), str(WORLD), str(port),
                               str(out), ",".join(names)], env=env, cwd=str(WORKER.parent),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for r in range(1, WORLD)]
    threads = torch.get_num_threads()
    try:
        res0, ref = worker.serve(0, WORLD, f"tcp://127.0.0.1:{port}", names, timeout=timeout)
    except Exception:
        for p in procs:
            p.kill()
        logs = "\n----\n".join(p.communicate()[0] for p in procs)
        raise AssertionError(f"rank 0 failed; the other ranks said:\n{logs}") from None
    finally:
        torch.set_num_threads(threads)
    for p in procs:
        try:
            log = p.communicate(timeout=timeout)[0]
        except subprocess.TimeoutExpired:
            p.kill()
            pytest.fail(f"a rank did not finish within {timeout:.0f} s")
        assert p.returncode == 0, f"a rank failed:\n{log}"
    ranks = [res0] + [torch.load(out / f"rank{r}.pt", weights_only=False)
                      for r in range(1, WORLD)]
    return {"ranks": ranks, "reference": ref}


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    return _launch(QUICK, tmp_path_factory.mktemp("dist-quick"))


@pytest.fixture(scope="module")
def slow(tmp_path_factory):
    return _launch(SLOW, tmp_path_factory.mktemp("dist-slow"))


def _same(a, b, path: str = "") -> None:
    """Two state_dicts (or parts): tensors bit for bit in their dtypes, the rest equal."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and same_bits(a, b), path
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), path
        for k in a:
            _same(a[k], b[k], f"{path}/{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            _same(x, y, f"{path}[{i}]")
    else:
        assert a == b, path


def _check_equal_to_one_process(run: dict, name: str) -> None:
    ref = run["reference"][name]
    for r, res in enumerate(run["ranks"]):
        res = res[name]
        assert len(res["params"]) == len(ref["params"])
        for i, (p, q) in enumerate(zip(res["params"], ref["params"])):
            assert same_bits(p, q), f"rank {r}, parameter {i}"
        _same(res["state"]["state"], ref["state"]["state"], f"rank {r}")
        assert res["statuses"] == ref["statuses"], f"rank {r}"
        # collectives at the first step and at the refreshes of counts 5, 10, 15, 20 only
        assert res["exchanges"] == 5


@pytest.mark.parametrize("name", QUICK)
def test_two_ranks_equal_the_one_process_run(quick, name):
    _check_equal_to_one_process(quick, name)


@pytest.mark.slow
@pytest.mark.parametrize("name", SLOW)
def test_two_ranks_equal_the_one_process_run_every_method(slow, name):
    _check_equal_to_one_process(slow, name)


def test_refreshes_are_owned_largest_first_and_balanced(quick):
    owners = quick["ranks"][0]["soap"]["owners"]  # batched=False: one stack per parameter
    assert owners == quick["ranks"][1]["soap"]["owners"]
    weights, biases = owners[0::2], owners[1::2]
    assert biases == [None] * len(biases)  # no factor: stepped by every rank, never sent
    costs = [m ** 3 + n ** 3 for m, n in WEIGHTS]
    assert set(weights) == set(range(WORLD))
    assert weights[int(np.argmax(costs))] == 0  # the largest goes first, to rank 0
    load = [sum(c for c, r in zip(costs, weights) if r == q) for q in range(WORLD)]
    assert max(load) - min(load) <= max(costs)
    best = min(max(sum(c for c, s in zip(costs, side) if s == q) for q in range(WORLD))
               for side in itertools.product(range(WORLD), repeat=len(costs)))
    assert max(load) <= 4 / 3 * best  # the longest-processing-time bound


def test_assign_owners_rule():
    rng = np.random.default_rng(0)
    for _ in range(50):
        world = int(rng.integers(1, 4))
        costs = [int(c) for c in rng.integers(0, 1000, size=int(rng.integers(0, 8)))]
        owners = assign_owners(costs, world)
        assert owners == assign_owners(list(costs), world)  # deterministic
        assert [o is None for o in owners] == [c == 0 for c in costs]
        load = [sum(c for c, o in zip(costs, owners) if o == r) for r in range(world)]
        if any(costs):
            assert max(load) - min(load) <= max(costs)
    assert assign_owners([5, 7, 7, 0, 1], 2) == [0, 0, 1, None, 1]


def test_bf16_state_is_broadcast_in_bf16(quick):
    fp32, bf16 = (quick["ranks"][0][n] for n in ("soap", "soap-bf16"))
    # the same arrays (bases at the first step; bases and both moments at each refresh)
    assert bf16["bytes"] * 2 == fp32["bytes"] > 0
    assert bf16["bytes"] == quick["ranks"][1]["soap-bf16"]["bytes"]
    st = bf16["state"]["state"][0]["precond"]
    assert st["bases"][0]["Q"].dtype == torch.bfloat16
    assert st["moments"]["exp_avg"].dtype == torch.bfloat16


def test_a_failed_refresh_is_handled_the_same_on_every_rank(quick):
    # NaN in the first weight's factor on its owning rank only, after step 7: the refreshes
    # of steps 11 and 16 fail there; max_failures=2 resets the basis and the factor at 16
    ranks = [r["soap-failure"] for r in quick["ranks"]]
    statuses = ranks[0]["statuses"]
    assert statuses[10].startswith("refresh-failed") and statuses[15].startswith("fallback")
    assert statuses[20] == "refresh"
    assert all(r["statuses"] == statuses for r in ranks)
    assert ranks[0]["owners"][0] in range(WORLD)
    for r in ranks:
        st = r["state"]["state"][0]["precond"]
        assert st["refresh_failures"] == 2 and st["fallbacks"] == 1
        assert bool(torch.isfinite(st["factors"][0]).all())  # restarted from zero, then fed


# --------------------------------------------------------------------------- in process


def test_packed_bytes_come_back_bit_for_bit():
    """Arrays of every dtype the state holds, odd sizes (a bf16 9 x 9 basis followed by fp32
    estimates), 0-d counters, NaN and -0.0: packed into one buffer and written back."""
    g = torch.Generator().manual_seed(0)
    arrays = [torch.randn(9, 9, generator=g).to(torch.bfloat16), torch.randn(9, generator=g),
              torch.tensor([float("nan"), -0.0, float("inf")]), torch.zeros((), dtype=torch.int32)
              + 7, torch.tensor([True, False, True]), torch.randn(3, 5, generator=g).double().T,
              torch.randn(2, 3, 5, generator=g).to(torch.float16)]
    offsets, total = byte_layout(arrays)
    assert all(o % 8 == 0 for o in offsets) and total % 8 == 0
    assert total >= sum(a.numel() * a.element_size() for a in arrays)
    flat = pack(arrays, "cpu")
    assert flat.dtype == torch.uint8 and flat.numel() == total
    out = [torch.empty_like(a) for a in arrays]
    out[5] = torch.empty(3, 5, dtype=torch.float64).T  # a non-contiguous destination
    unpack(flat, out)
    for a, b in zip(arrays, out):
        assert same_bits(a, b)



@pytest.fixture
def one_rank_group():
    """A gloo group of one process in this process (destroyed afterwards)."""
    if dist.is_initialized():
        pytest.skip("a process group is already initialized in this process")
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        yield dist.group.WORLD
    finally:
        dist.destroy_process_group()


def _mlp():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(6, 12), torch.nn.Tanh(), torch.nn.Linear(12, 3))


def test_one_rank_group_equals_no_group(one_rank_group):
    x, y = torch.randn(32, 6), torch.randn(32, 3)
    runs = []
    for kw in ({}, {"process_group": one_rank_group, "reduce_grads": True}):
        m = _mlp()
        opt = SOAP(m.parameters(), lr=1e-2, precondition_frequency=3, storage="bf16", **kw)
        reads = []
        for _ in range(8):
            opt.zero_grad()
            torch.nn.functional.mse_loss(m(x), y).backward()
            with count_host_reads() as counter:
                opt.step()
            reads.append(counter[0])
        runs.append((m, opt, reads))
    # the mode adds no read of the device between refreshes (the gradients' all_reduce reads
    # nothing; the exchanges happen at the first step and the refreshes, steps 1, 4 and 7)
    quiet = [k for k in range(8) if k not in (0, 3, 6)]
    assert [runs[1][2][k] for k in quiet] == [runs[0][2][k] for k in quiet]
    (m0, o0, _), (m1, o1, _) = runs
    for p, q in zip(m0.parameters(), m1.parameters()):
        assert same_bits(p.detach(), q.detach())
        assert_same_state(o0.precond_state(p)[0], o1.precond_state(q)[0])
    assert o1.refresh_owner(m1[0].weight) == 0 and o1.refresh_owner(m1[0].bias) is None
    assert o0.refresh_owner(m0[0].weight) is None
    assert o1._dp.exchanges == 3  # the first step and the refreshes at counts 3 and 6


def test_bad_input(one_rank_group):
    params = list(_mlp().parameters())
    with pytest.raises(ValueError, match="reduce_grads=True needs a process_group"):
        SOAP(params, reduce_grads=True)
    with pytest.raises(TypeError, match="reduce_grads must be a bool"):
        SOAP(params, process_group=one_rank_group, reduce_grads=1)
    with pytest.raises(TypeError, match="process_group must be a torch.distributed"):
        KroneckerOptimizer(params, linalg_pc.precond.soap(), process_group="world")


def test_process_group_without_initialization():
    if dist.is_initialized():
        pytest.skip("a process group is initialized in this process")
    with pytest.raises(RuntimeError, match="process_group was given but torch.distributed"):
        SOAP(list(_mlp().parameters()), process_group=object())
