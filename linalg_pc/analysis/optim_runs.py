"""One training run of the optimizer study: the optimizers by name, timing hooks, the loop.

:data:`OPTIMIZERS` names every configuration the study compares: AdamW; SOAP, KL-SOAP and
KL-Shampoo of :mod:`linalg_pc.precond` through the torch adapter
(:class:`linalg_pc.integrations.torch.KroneckerOptimizer`) with fp32 or bf16 storage, full or
subspace (k = d/8) basis refreshes and each bf16 basis scheme; and ``pytorch_optimizer.SOAP``
as the peer anchor. :func:`train` runs one (task, optimizer, lr, seed) and returns a flat record.

Time per step is split from outside the library: each transform's ``_direction`` (rotate,
moments, back-rotate), ``_accumulate`` (factor statistics) and ``_maybe_refresh`` (the basis
refresh, every T steps) are wrapped by a timer on the transform instance; the rest of
``optimizer.step`` (stacking the gradients, weight decay, the adapter) is "other". On a CPU
every torch operation is synchronous, so wall-clock timers measure the work.
"""

from __future__ import annotations

import math
import time

import torch

from .. import precond
from ..integrations.torch import KroneckerOptimizer
from .optim_models import Task
from .optim_specs import OPTIMIZERS, OptimizerSpec

__all__ = ["OptimizerSpec", "OPTIMIZERS", "build_optimizer", "state_bytes", "train",
           "interleaved_step_times", "torch_threads"]


#: Shared hyperparameters (the SOAP reference code's, except the period T and k).
BETAS_SOAP = (0.95, 0.95)
BETAS_ADAMW = (0.9, 0.95)
WEIGHT_DECAY = 0.01
BASIS_K = 1 / 8


def torch_threads(n: int | None = None) -> int:
    """PyTorch's intra-op thread count; set it to ``n`` when given. Returns the count before."""
    before = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(int(n))
    return before


class _Timers:
    """Seconds spent in each wrapped hook of the transforms (summed over the run)."""

    def __init__(self):
        self.t = {"direction": 0.0, "factors": 0.0, "refresh": 0.0, "init": 0.0}

    def wrap(self, tx):
        for attr, key in (("_direction", "direction"), ("_accumulate", "factors"),
                          ("_maybe_refresh", "refresh"), ("_first_step", "init")):
            fn = getattr(tx, attr)

            def timed(*a, _fn=fn, _key=key, **kw):
                t0 = time.perf_counter()
                try:
                    return _fn(*a, **kw)
                finally:
                    self.t[_key] += time.perf_counter() - t0

            setattr(tx, attr, timed)
        return tx


def _groups(model):
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    return decay, no_decay


def build_optimizer(spec: OptimizerSpec, model, lr: float, T: int, timers: _Timers | None = None):
    """The torch optimizer of ``spec`` over ``model`` (weight decay on matrices only)."""
    decay, no_decay = _groups(model)
    if spec.kind == "adamw":
        return torch.optim.AdamW([{"params": decay}, {"params": no_decay, "weight_decay": 0.0}],
                                 lr=lr, betas=BETAS_ADAMW, weight_decay=WEIGHT_DECAY)
    if spec.kind == "peer-soap":
        import pytorch_optimizer

        return pytorch_optimizer.SOAP([{"params": decay},
                                       {"params": no_decay, "weight_decay": 0.0}],
                                      lr=lr, betas=BETAS_SOAP, weight_decay=WEIGHT_DECAY,
                                      precondition_frequency=T)
    factory = {"soap": precond.soap, "kl_soap": precond.kl_soap,
               "kl_shampoo": precond.kl_shampoo}[spec.kind]
    hp = {"precondition_frequency": T, "storage": spec.storage,
          "basis_update": spec.basis_update}
    if spec.kind == "soap":
        hp["betas"] = BETAS_SOAP
    if spec.basis_update == "subspace":
        hp.update(basis_k=BASIS_K, basis_scheme=spec.basis_scheme)
    if spec.factor_free:
        hp["factor_free"] = True
    txs = [factory(lr=lr, weight_decay=wd, **hp) for wd in (WEIGHT_DECAY, 0.0)]
    if timers is not None:
        txs = [timers.wrap(tx) for tx in txs]
    return KroneckerOptimizer([{"params": decay}, {"params": no_decay, "transform": txs[1]}],
                              txs[0])


def _tensor_bytes(v) -> int:
    if isinstance(v, torch.Tensor):
        return v.numel() * v.element_size()
    if isinstance(v, dict):
        return sum(_tensor_bytes(w) for w in v.values())
    if isinstance(v, (list, tuple)):
        return sum(_tensor_bytes(w) for w in v)
    return 0


def state_bytes(opt, model) -> int:
    """Bytes of the optimizer's state arrays (each linalg_pc stack counted once)."""
    if isinstance(opt, KroneckerOptimizer):
        seen = {}
        for p in model.parameters():
            got = opt.precond_state(p)
            if got is not None:
                seen[id(got[0])] = got[0].nbytes
        return int(sum(seen.values()))
    return int(sum(_tensor_bytes(s) for s in opt.state.values()))


def train(task: Task, spec: OptimizerSpec, lr: float, seed: int, *, T: int = 10) -> dict:
    """Train ``task``'s model with ``spec`` at learning rate ``lr`` from seed ``seed``.

    Returns a flat record: final and best validation loss (and accuracy for the digits), the
    validation curve against step and training seconds, the training-loss curve, the
    optimizer-state bytes, and milliseconds per step (forward+backward, optimizer step and its
    split into factors / direction / refresh / other). A non-finite training loss stops the run
    (``diverged``: its losses are inf).
    """
    cfg = task.cfg
    model = task.model(seed)
    timers = _Timers()
    opt = build_optimizer(spec, model, lr, T, timers)
    gen = torch.Generator().manual_seed(1000 + seed)
    ev = task.evaluate(model)
    curve = [[0, 0.0, ev["loss"], ev.get("acc")]]
    train_loss = []
    t_fb = t_opt = 0.0
    diverged = False
    step = 0
    for step in range(1, cfg.steps + 1):
        batch = task.batch(gen)
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss = task.loss(model, batch)
        loss.backward()
        t1 = time.perf_counter()
        opt.step()
        t2 = time.perf_counter()
        t_fb += t1 - t0
        t_opt += t2 - t1
        lv = float(loss.detach())
        train_loss.append(lv)
        if not math.isfinite(lv):
            diverged = True
            break
        if step % cfg.eval_every == 0 or step == cfg.steps:
            ev = task.evaluate(model)
            if not math.isfinite(ev["loss"]):
                diverged = True
                break
            curve.append([step, t_fb + t_opt, ev["loss"], ev.get("acc")])
    losses = [c[2] for c in curve[1:]] or [math.inf]
    n = max(step, 1)
    tt = timers.t
    hooks = tt["direction"] + tt["factors"] + tt["refresh"] + tt["init"]
    rec = {
        "task": cfg.name, "optimizer": spec.name, "lr": lr, "seed": seed, "steps": step,
        "T": T, "diverged": diverged,
        "final_loss": math.inf if diverged else curve[-1][2],
        "best_loss": math.inf if diverged else min(losses),
    }
    if cfg.name == "digits":
        accs = [c[3] for c in curve[1:]] or [0.0]
        rec["final_acc"] = 0.0 if diverged else curve[-1][3]
        rec["best_acc"] = 0.0 if diverged else max(accs)
    is_ours = isinstance(opt, KroneckerOptimizer)
    rec.update({
        "state_bytes": state_bytes(opt, model),
        "ms_fwd_bwd": 1e3 * t_fb / n, "ms_step": 1e3 * t_opt / n,
        "ms_factors": 1e3 * tt["factors"] / n if is_ours else None,
        "ms_direction": 1e3 * tt["direction"] / n if is_ours else None,
        "ms_refresh": 1e3 * tt["refresh"] / n if is_ours else None,
        "ms_other": 1e3 * (t_opt - hooks) / n if is_ours else None,
        "train_seconds": t_fb + t_opt,
        "curve": curve, "train_loss": train_loss,
    })
    return rec


def interleaved_step_times(task: Task, specs: list[OptimizerSpec], *, lr: float, steps: int,
                           T: int = 10, seed: int = 0) -> dict:
    """Optimizer step times of several optimizers measured in one run, interleaved.

    Every optimizer trains its own copy of the same model on the same batches; at each step the
    optimizers take their step one after the other, in an order rotated every step, so machine
    load falls on all of them alike. Times are summed over blocks of T steps (one refresh per
    block, the first block with the initial eigendecomposition dropped) and each block's time is
    divided by the first spec's. Returns per spec: median ms per step, median refresh ms per
    step (linalg_pc only), and the median and quartiles of the per-block ratio to ``specs[0]``.
    """
    models, opts, timers = [], [], []
    for spec in specs:
        m = task.model(seed)
        tm = _Timers()
        models.append(m)
        timers.append(tm)
        opts.append(build_optimizer(spec, m, lr, T, tm))
    gen = torch.Generator().manual_seed(1000 + seed)
    n = len(specs)
    step_t = [[0.0] * steps for _ in range(n)]
    ref_t = [[0.0] * steps for _ in range(n)]
    for s in range(steps):
        batch = task.batch(gen)
        for m, o in zip(models, opts):
            o.zero_grad(set_to_none=True)
            task.loss(m, batch).backward()
        for j in range(n):
            i = (j + s) % n
            r0 = timers[i].t["refresh"]
            t0 = time.perf_counter()
            opts[i].step()
            step_t[i][s] = time.perf_counter() - t0
            ref_t[i][s] = timers[i].t["refresh"] - r0
    blocks = [(b * T + 1, (b + 1) * T + 1) for b in range(1, steps // T) if (b + 1) * T < steps]
    if not blocks:
        blocks = [(1, steps)]
    out = {}
    for i, spec in enumerate(specs):
        bt = [sum(step_t[i][a:b]) / (b - a) for a, b in blocks]
        br = [sum(ref_t[i][a:b]) / (b - a) for a, b in blocks]
        b0 = [sum(step_t[0][a:b]) / (b - a) for a, b in blocks]
        ratios = sorted(x / y for x, y in zip(bt, b0))
        out[spec.name] = {"ms_step": 1e3 * _median(bt), "ms_refresh": 1e3 * _median(br),
                          "ratio": _median(ratios), "ratio_q1": _quantile(ratios, 0.25),
                          "ratio_q3": _quantile(ratios, 0.75), "blocks": len(blocks)}
    return out


def _median(x):
    return _quantile(x, 0.5)


def _quantile(x, q):
    x = sorted(x)
    if not x:
        return math.nan
    pos = q * (len(x) - 1)
    lo = int(math.floor(pos))
    hi = min(lo + 1, len(x) - 1)
    return x[lo] + (pos - lo) * (x[hi] - x[lo])
