"""Preconditioner suite: SOAP steps against pytorch_optimizer.SOAP and heavyball.SOAP.

Everything runs on torch CPU tensors in fp32 (``torch.set_num_threads`` left at its default),
with the same hyperparameters on every side: lr 3e-3, betas (0.95, 0.95), shampoo_beta 0.95,
eps 1e-8, weight_decay 0.01, precondition_frequency T = 10, max precond dim 10000, no merging
of axes, no 1-D preconditioning, bias correction on, no gradient normalization.

One timed call is a block of T = 10 steps, so a step's time is the block's time / 10 with one
basis refresh (sort by Rayleigh quotient, K·Q, QR) amortized over the 10 steps. The first step
of every optimizer (factors and their eigh only, no parameter update) runs when the case is
built; the harness's warm-up call then runs steps 2-11, so every timed block holds exactly one
refresh. The gradients cycle through 4 fixed random tensors per parameter (no gradient
computation is timed); ours adds its returned update to the parameter in place, as the peers do.

Cases
-----
- ``soap step MxN vs <peer>``: ours (``lpc.precond.soap`` on a torch tensor) against
  ``pytorch_optimizer.SOAP`` and against ``heavyball.SOAP`` on one M×N parameter (1024×1024,
  4096×1024; quick: 512×512, 1024×256). ``ours/peer`` is the time ratio (target ≤ 0.8);
  ``ms/step`` is ours per step. The records carry the optimizer state in bytes per parameter
  element, measured after the timing (many refreshes in): ours (``state.nbytes / numel``) and
  the peer's (the sum of ``nbytes`` of every tensor in ``optimizer.state``).
- ``soap step MxN storage=bf16 vs pytorch_optimizer``: ours with every kind of state stored in
  bf16 (computed in fp32), with its bytes per element (quick: the first size only).
- ``soap step MxN numpy vs ours on torch``: ours on NumPy fp32 arrays (no peer runs on NumPy; the
  baseline is ours on torch, only for scale; full runs, first size only).
- ``soap batch BxDxD ...``: B parameters of D×D (64 of 256×256; quick: 16 of 128×128). Ours
  batched (``tx.init(stack, batched=True)``, one ``tx.update`` per step on the B×D×D stack)
  against ours called once per parameter (B states; target ≥ 3×) and against each peer with one
  optimizer over the B parameters (target ≥ 4× against the faster peer). heavyball stacks
  same-shape parameters into one slab inside its step ("bucket"), pytorch_optimizer loops.
- ``soap step MxN vs its floor``: ours on one parameter against the same floor for B = 1.
- ``soap batch BxDxD batched vs its floor``: ours batched against the work no implementation
  of the step can avoid (:class:`_Floor`: the 6 batched products per step, the fewest
  elementwise passes, one refresh per block), timed in the same run; ``ours/floor`` says how
  far from it we are, and floor/loop bounds what batching can gain on this machine.
- ``soap refresh DxD subspace k=D/8 vs full``: one basis refresh of both factors of a D×D
  SOAP state (D = 1024 and 2048; quick: 512), ours against ours: ``basis_update="subspace"``
  with k = D/8 columns (the default "topk-cyclic" policy) against the full refresh
  (``basis_update="full"``: sort, K·Q, QR of all D columns) at the same T. Both states took
  the same 11 steps first; a timed call is one refresh (the transform's refresh of all its
  factors, with the moments' rotation and permutation), called directly so that no step is
  timed. ``speedup`` = full / subspace (the issue's target: ≥ 3× at k = D/8); the flops say
  2D²k (K·Q_J) + 2D²k (the k rows of Q_newᵀQ_old) + 2kD² (their product with the first
  moment) per factor against ≈ 2D³ + 8/3·D³ + 2D³.

Deliberate differences from the peers (hyperparameters matched as far as each peer allows)
-----------------------------------------------------------------------------------------
pytorch_optimizer.SOAP follows nikhilvyas/SOAP, as ours does: the same step in exact
arithmetic (tests/precond/test_peers_soap.py checks 50-step trajectories to rounding, in fp32
and in fp64). It keeps
the first moment in the parameter's space and projects it every step (8 products of a factor
with the gradient per step for a matrix); ours keeps it in the eigenbasis and rotates it at
refreshes (6 per step, 2 more per refresh). Its ``max_precondition_dim`` is our
``max_precond_dim``; ``data_format`` (channels_first) plays no role for 2-D parameters.

heavyball.SOAP (3.2.1) is run with ``heavyball.utils.compile_mode = None`` (its
``torch.compile`` off: every ``@decorator_knowngood`` function runs eagerly; ``compile_step``
stays False), ``caution=False``, ``mars=False``, ``palm`` off, ``warmup_steps=0``,
``multi_tensor=True``, ``storage_dtype="float32"``, ``merge_dims=False``,
``precondition_1d=False``, ``max_precond_dim=10000`` (its default 2048 would leave the
4096-axis unpreconditioned) and ``shampoo_beta=0.95`` (its default is not β₂). Its refresh
schedule accumulates 1/T in a float and refreshes when the integer part grows (with T = 10: at
steps 11, 20, 30, 40, 51, ...); here ``precond_schedule`` is set to the periodic schedule
(refresh at steps 11, 21, 31, ...), so each timed block holds one refresh on every side. What
settings cannot change: its refresh runs QR on (K + c·max|diag(QᵀKQ)|·I)Q with
c = max(eps, min(64·d·2⁻²³, 0.125)) instead of KQ (and keeps the columns in place with signs
fixed rather than permuting v); its decoupled weight decay is p(1 − η·wd) − η·u instead of
(p − η·u)(1 − η·wd); its Adam denominator is max(√v̂, ε) on the bias-corrected v̂ instead of
√v + ε; its factors are bias-corrected EMAs (a scale, no effect on the bases). The step's
arithmetic is otherwise the same; the test module measures the resulting differences.
"""

from __future__ import annotations

from harness import Case

import linalg_pc as lpc

#: The refresh period T (one timed call is T steps).
T = 10
HP = dict(lr=3e-3, betas=(0.95, 0.95), shampoo_beta=0.95, eps=1e-8, weight_decay=0.01,
          precondition_frequency=T, max_precond_dim=10000)
#: Gradients per parameter, cycled.
N_GRADS = 4


def _torch():
    try:
        import torch
    except ImportError:
        return None
    return torch


def _grads(torch, shape, seed):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(shape, generator=g, dtype=torch.float32) for _ in range(N_GRADS)]


def _param(torch, shape, seed):
    g = torch.Generator().manual_seed(10_000 + seed)
    return 0.1 * torch.randn(shape, generator=g, dtype=torch.float32)


class _Periodic:
    """heavyball's ``precond_schedule`` hook: probability 1 at steps 1 + kT (k ≥ 1), else 0, so
    its cumulative-probability test refreshes exactly where the reference code does."""

    def __init__(self, period: int):
        self.period = period

    def __call__(self, step: int) -> float:
        return 1.0 if step > 1 and (step - 1) % self.period == 0 else 0.0


# ----------------------------------------------------------------------------------- runners
class _Ours:
    """Our SOAP on one parameter or one stack (``batched``); ``block()`` runs T steps."""

    def __init__(self, p, grads, *, batched=False, **kw):
        self.tx = lpc.precond.soap(**HP, **kw)
        self.p = p
        self.grads = grads
        self.i = 0
        self.state = self.tx.init(p, batched=batched) if batched else self.tx.init(p)
        self.step()  # the first step: factors and eigh, no update

    def step(self):
        g = self.grads[self.i % len(self.grads)]
        self.i += 1
        upd, self.state = self.tx.update(g, self.state, self.p)
        self.p += upd  # in place, on torch and NumPy alike

    def block(self):
        for _ in range(T):
            self.step()
        return self.p

    def nbytes(self) -> int:
        return int(self.state.nbytes)


class _OursLoop:
    """Our SOAP called once per parameter per step (one state each)."""

    def __init__(self, params, grads):
        self.members = [_Ours(p, g) for p, g in zip(params, grads)]

    def block(self):
        for _ in range(T):
            for m in self.members:
                m.step()
        return self.members[0].p


class _Peer:
    """A torch optimizer over ``params``; ``block()`` runs T steps."""

    def __init__(self, make, params, grads):
        import torch

        self.params = [torch.nn.Parameter(p) for p in params]
        self.grads = grads
        self.opt = make(self.params)
        self.i = 0
        self.step()

    def step(self):
        k = self.i % N_GRADS
        self.i += 1
        for p, g in zip(self.params, self.grads):
            p.grad = g[k]
        self.opt.step()

    def block(self):
        for _ in range(T):
            self.step()
        return self.params[0]

    def nbytes(self) -> int:
        """Bytes of every tensor in ``optimizer.state`` (views of one storage counted by their
        own size, each tensor once)."""
        import torch

        seen: set[int] = set()
        total = 0

        def walk(x):
            nonlocal total
            if isinstance(x, torch.Tensor):
                if id(x) not in seen:
                    seen.add(id(x))
                    total += x.nelement() * x.element_size()
            elif isinstance(x, dict):
                for v in x.values():
                    walk(v)
            elif isinstance(x, (list, tuple)):
                for v in x:
                    walk(v)

        for st in self.opt.state.values():
            walk(st)
        return total


def _make_pto(params):
    from pytorch_optimizer import SOAP

    return SOAP(params, lr=HP["lr"], betas=HP["betas"], shampoo_beta=HP["shampoo_beta"],
                weight_decay=HP["weight_decay"], precondition_frequency=T,
                max_precondition_dim=HP["max_precond_dim"], merge_dims=False,
                precondition_1d=False, correct_bias=True, normalize_gradient=False,
                eps=HP["eps"])


def _make_hb(params):
    import heavyball

    heavyball.utils.compile_mode = None  # no torch.compile anywhere in heavyball
    opt = heavyball.SOAP(params, lr=HP["lr"], betas=HP["betas"], shampoo_beta=HP["shampoo_beta"],
                         eps=HP["eps"], weight_decay=HP["weight_decay"],
                         precondition_frequency=T, max_precond_dim=HP["max_precond_dim"],
                         merge_dims=False, precondition_1d=False, warmup_steps=0,
                         multi_tensor=True, caution=False, mars=False, palm=False,
                         storage_dtype="float32", compile_step=False)
    opt.precond_schedule = _Periodic(T)
    return opt


def _peers() -> list[tuple[str, callable]]:
    out = []
    try:
        import pytorch_optimizer  # noqa: F401

        out.append(("pytorch_optimizer", _make_pto))
    except ImportError:
        pass
    try:
        import heavyball  # noqa: F401

        out.append(("heavyball", _make_hb))
    except ImportError:
        pass
    return out


# ------------------------------------------------------------------------------------- cases
def _per_elem(nbytes: int, numel: int) -> float:
    return nbytes / numel


def _ratio(target: float, kind: str):
    """Derived fields: the ratio ours/peer (time) or the speedup, and whether it meets the
    target."""

    def f(rec):
        r = rec["ours_s"] / rec["baseline_s"]
        out = {"ours/peer": r, "ms/step": rec["ours_s"] / T * 1e3}
        out["target"] = f"ours/peer<={target}" if kind == "ratio" else f"speedup>={target}"
        out["target_met"] = bool(r <= target) if kind == "ratio" else bool(
            rec["speedup"] >= target)
        return out

    return f


def _with_bytes(base, ours, peer, numel):
    def f(rec):
        out = base(rec)
        out["ours_B/elem"] = _per_elem(ours.nbytes(), numel)
        if peer is not None:
            out["peer_B/elem"] = _per_elem(peer.nbytes(), numel)
        return out

    return f


def _step_cases(torch, m, n, repeats, numpy_row, bf16_row=True):
    shape = (m, n)
    numel = m * n
    grads = _grads(torch, shape, 0)
    cases = []
    ours = _Ours(_param(torch, shape, 0), grads)
    for name, make in _peers():
        peer = _Peer(make, [_param(torch, shape, 0)], [grads])
        cases.append(Case(f"soap step {m}x{n} vs {name}", ours.block, peer.block, f"{name}.SOAP",
                          repeats=repeats,
                          derived=_with_bytes(_ratio(0.8, "ratio"), ours, peer, numel)))
    peers = _peers()
    if peers and bf16_row:
        name, make = peers[0]
        bf16 = _Ours(_param(torch, shape, 0), grads, storage="bf16")
        peer = _Peer(make, [_param(torch, shape, 0)], [grads])
        cases.append(Case(f"soap step {m}x{n} storage=bf16 vs {name}", bf16.block, peer.block,
                          f"{name}.SOAP", repeats=repeats,
                          derived=_with_bytes(_ratio(0.8, "ratio"), bf16, peer, numel)))
    floor = _Floor(torch, 1, m, [g[None] for g in grads], n)

    def vs_floor(rec):
        return {"ms/step": rec["ours_s"] / T * 1e3, "floor ms/step": rec["baseline_s"] / T * 1e3,
                "ours/floor": rec["ours_s"] / rec["baseline_s"]}

    cases.append(Case(f"soap step {m}x{n} vs its floor", ours.block, floor.block,
                      "floor: products + fused passes", repeats=repeats, derived=vs_floor))
    if numpy_row:
        npo = _Ours(_param(torch, shape, 0).numpy().copy(), [g.numpy() for g in grads])

        def scale(rec, npo=npo):
            return {"ms/step": rec["ours_s"] / T * 1e3,
                    "ours_B/elem": _per_elem(npo.nbytes(), numel)}

        cases.append(Case(f"soap step {m}x{n} numpy vs ours on torch", npo.block, ours.block,
                          "ours on torch", repeats=repeats, derived=scale))
    return cases


class _Floor:
    """The floor of one block of T batched SOAP steps on a B×M×N stack (B = 1: one parameter):
    only the work no implementation of the step can avoid, on preallocated arrays.

    Per step: the 4 products of the projections (Q_Lᵀ G, · Q_R, Q_L ·, · Q_Rᵀ) and the 2 Gram
    products with the factor EMA inside them (``baddbmm_``), each one batched ``bmm`` with
    ``out=``; and the elementwise work in the fewest passes the step allows: one read of G
    (finite test), one pass over G̃, m, v (the moments and the quotient), one over D and p (the
    update with weight decay) and the caller's ``p += u``. Per block: one refresh of each
    factor (K·Q, the QR through ``lpc.qr``, Q_newᵀQ_old and its product with m). The Gram
    products are full products here; a library may form them in fewer flops by their symmetry
    (ours does, for M or N ≥ 512), so it can beat the floor there. What the floor leaves out:
    sorting by Rayleigh quotients and permuting v (O(d²) per member), the Python and dispatch
    cost of the library's own step."""

    def __init__(self, torch, b, d, grads, n=None):
        from linalg_pc._kernels import cpu_precond as kern

        n = d if n is None else n
        self.torch, self.kern = torch, kern
        self.grads = [g.reshape(b, d, n).contiguous() for g in grads]
        gen = torch.Generator().manual_seed(7)
        self.QL = torch.linalg.qr(torch.randn((b, d, d), generator=gen))[0].contiguous()
        self.QR = torch.linalg.qr(torch.randn((b, n, n), generator=gen))[0].mT.contiguous()
        self.K = [torch.zeros((b, d, d)), torch.zeros((b, n, n))]
        shp = (b, d, n)
        self.m, self.v, self.p = torch.zeros(shp), torch.zeros(shp), torch.zeros(shp)
        self.t1, self.t2 = torch.empty(shp), torch.empty(shp)
        self.s = torch.full((1,), 3e-3)
        self.i = 0

    def step(self):
        t, k = self.torch, self.kern
        g = self.grads[self.i % len(self.grads)]
        self.i += 1
        h = k.host_view
        k.all_finite(h(g))
        t.bmm(self.QL.mT, g, out=self.t1)
        t.bmm(self.t1, self.QR, out=self.t2)
        k.adam_moments(h(self.t2), h(self.m), h(self.v), h(self.t2), 0.95, 0.95, 1e-8)
        t.bmm(self.QL, self.t2, out=self.t1)
        t.bmm(self.t1, self.QR.mT, out=self.t2)
        k.assemble(h(self.t2), h(self.p), h(self.t2), h(self.s), 3e-5)
        self.p += self.t2
        self.K[0].baddbmm_(g, g.mT, beta=0.95, alpha=0.05)
        self.K[1].baddbmm_(g.mT, g, beta=0.95, alpha=0.05)

    def refresh(self):
        t = self.torch
        QnL = lpc.qr(t.bmm(self.K[0], self.QL), compute="fp32").Q
        t.bmm(t.bmm(QnL.mT, self.QL), self.m, out=self.t1)
        QnR = lpc.qr(t.bmm(self.K[1], self.QR), compute="fp32").Q
        t.bmm(self.t1, t.bmm(QnR.mT, self.QR).mT, out=self.m)

    def block(self):
        for _ in range(T):
            self.step()
        self.refresh()
        return self.p


def _batch_cases(torch, b, d, repeats):
    shape = (d, d)
    grads = [_grads(torch, shape, 100 + i) for i in range(b)]
    params = [_param(torch, shape, 100 + i) for i in range(b)]
    stack_grads = [torch.stack([g[k] for g in grads]) for k in range(N_GRADS)]
    batched = _Ours(torch.stack(params), stack_grads, batched=True)
    loop = _OursLoop([p.clone() for p in params], grads)
    numel = b * d * d
    floor = _Floor(torch, b, d, stack_grads)

    def vs_floor(rec):
        return {"ms/step": rec["ours_s"] / T * 1e3, "floor ms/step": rec["baseline_s"] / T * 1e3,
                "ours/floor": rec["ours_s"] / rec["baseline_s"]}

    cases = [Case(f"soap batch {b}x{d}x{d} batched vs {b} calls of ours", batched.block,
                  loop.block, f"ours, {b} calls", repeats=repeats,
                  derived=_with_bytes(_ratio(3.0, "speedup"), batched, None, numel)),
             Case(f"soap batch {b}x{d}x{d} batched vs its floor", batched.block, floor.block,
                  "floor: products + fused passes", repeats=repeats, derived=vs_floor)]
    for name, make in _peers():
        peer = _Peer(make, [p.clone() for p in params], grads)
        cases.append(Case(f"soap batch {b}x{d}x{d} batched vs {name} over {b} params",
                          batched.block, peer.block, f"{name}.SOAP, {b} params",
                          repeats=repeats,
                          derived=_with_bytes(_ratio(4.0, "speedup"), batched, peer, numel)))
    return cases


class _Refresh:
    """A D×D SOAP state after 11 steps; each call runs one refresh of both factors (the
    transform's refresh with the moments' rotation and permutation, at the next refresh
    count so that the cyclic column policy moves on)."""

    def __init__(self, torch, d, **kw):
        from linalg_pc import _backend as B

        self.tx = lpc.precond.soap(**HP, **kw)
        p = _param(torch, (d, d), 0)
        grads = _grads(torch, (d, d), 0)
        self.xp = B.array_namespace(p)
        self.state = self.tx.init(p)
        for i in range(T + 1):
            _, self.state = self.tx.update(grads[i % len(grads)], self.state, p)
        self.count = int(B.to_float(self.state.count))

    def __call__(self):
        self.count += T
        self.state = self.tx._refresh_all(self.xp, self.state, self.count)
        return self.state


def _refresh_cases(torch, d, repeats):
    sub = _Refresh(torch, d, basis_update="subspace", basis_k=d // 8)
    full = _Refresh(torch, d, basis_update="full")

    def derived(rec):
        return {"ms/refresh": rec["ours_s"] * 1e3, "full ms/refresh": rec["baseline_s"] * 1e3,
                "target": "speedup>=3", "target_met": bool(rec["speedup"] >= 3.0)}

    return [Case(f"soap refresh {d}x{d} subspace k={d // 8} vs full", sub, full,
                 "ours, full refresh", repeats=repeats, derived=derived)]


def cases(quick: bool) -> list[Case]:
    torch = _torch()
    if torch is None:
        print("  (torch is not installed: the precond suite has no cases)")
        return []
    if quick:
        return (_step_cases(torch, 512, 512, 3, numpy_row=False)
                + _step_cases(torch, 1024, 256, 3, numpy_row=False, bf16_row=False)
                + _batch_cases(torch, 16, 128, 3)
                + _refresh_cases(torch, 512, 3))
    return (_step_cases(torch, 1024, 1024, 5, numpy_row=True)
            + _step_cases(torch, 4096, 1024, 3, numpy_row=False)
            + _batch_cases(torch, 64, 256, 5)
            + _refresh_cases(torch, 1024, 5) + _refresh_cases(torch, 2048, 3))

