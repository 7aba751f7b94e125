"""The optimizer training study: SOAP, KL-SOAP and KL-Shampoo with fp32 / bf16 storage and
full / subspace basis refreshes, against AdamW and ``pytorch_optimizer.SOAP``, on two real
offline tasks (an MLP on scikit-learn's digits, a byte-level transformer on the Python standard
library's sources).

It tests at optimizer level the claims of Milligan, Xu, Dangel, Lacoste-Julien & Lin,
"Reparametrizing Shampoo and SOAP for Subspace Basis Updates and BFloat16 Storage" (arXiv
2605.26327): plain bf16 storage degrades SOAP; subspace updates with a non-drifting bf16 scheme
recover most of the loss; KL-SOAP with them matches KL-Shampoo (Lin et al., arXiv 2509.03378);
a subspace refresh of k = d/8 columns costs a fraction of the full one. docs/optimizers.md
describes the setup and the measured results.

Protocol: every optimizer runs the same learning-rate sweep from one seed; the learning rate
with the lowest final validation loss is rerun from further seeds; the headline numbers are
the means (and standard deviations) over those seeds. Step times of our SOAP against the peer,
and of full against subspace refreshes, come from one interleaved run (:func:`.optim_runs.
interleaved_step_times`), which exposes both to the same machine load.

PyTorch and scikit-learn are imported only when the study runs (extra ``study``).
"""

from __future__ import annotations

import math
import os
import time

from .records import Records

__all__ = ["optimizer_study", "merge_results", "study_output", "interpret_optimizer", "FULL",
           "QUICK", "check_dependencies"]

#: The default configuration: sized for minutes per task on 2 CPU cores.
FULL = {
    "tasks": {
        "digits": dict(steps=200, batch=64, eval_every=20, hidden=128, layers=2),
        "charlm": dict(steps=150, batch=16, eval_every=25, hidden=64, layers=2, context=64,
                       heads=4, corpus_bytes=1_000_000, val_batches=4),
    },
    "lrs": (1e-3, 3e-3, 1e-2),
    "seeds": 3,
    "T": 10,
    "timing_steps": 61,
    "threads": 1,
    "warmup": True,
}
#: ``--quick``: every optimizer and figure, tiny sizes (seconds per task).
QUICK = {
    "tasks": {
        "digits": dict(steps=20, batch=32, eval_every=10, hidden=32, layers=2),
        "charlm": dict(steps=10, batch=4, eval_every=5, hidden=32, layers=1, context=32,
                       heads=2, corpus_bytes=200_000, val_batches=2),
    },
    "lrs": (3e-3,),
    "seeds": 1,
    "T": 5,
    "timing_steps": 11,
    "threads": 1,
    "warmup": False,
}

#: the configurations the targets compare
SOAP32, SOAP16 = "SOAP fp32", "SOAP bf16"
SOAP_SUB = ("SOAP bf16 sub project", "SOAP bf16 sub rectify")
SOAP_DRIFT = "SOAP bf16 sub bf16"
KLSOAP_SUB, KLSHAMPOO32 = "KL-SOAP bf16 sub project", "KL-Shampoo fp32"
PEER = "pytorch_optimizer SOAP"
TIMED = (PEER, SOAP32, SOAP16, "SOAP bf16 sub project")


def check_dependencies() -> None:
    """Raise ImportError naming the missing packages (torch, scikit-learn, pytorch_optimizer)."""
    import importlib.util

    missing = [pkg for mod, pkg in (("torch", "torch"), ("sklearn", "scikit-learn"),
                                    ("pytorch_optimizer", "pytorch_optimizer"))
               if importlib.util.find_spec(mod) is None]
    if missing:
        raise ImportError(f"the optimizer study needs {', '.join(missing)}: pip install "
                          f"'linalg_pc[study]'")


def _mean_sd(xs):
    xs = [x for x in xs if x is not None]
    if not xs:
        return math.nan, math.nan
    m = sum(xs) / len(xs)
    sd = math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1)) if len(xs) > 1 else 0.0
    return m, sd


def optimizer_study(*, quick: bool = False, seed: int = 0, progress=None, config=None,
                    optimizers=None, log=None, on_run=None) -> dict:
    """Run the study; returns ``{"runs", "summary", "targets", "timing", "data"}`` Records.

    Parameters
    ----------
    quick : bool
        :data:`QUICK` (tiny sizes) instead of :data:`FULL` (about 15 minutes on one quiet
        core; docs/optimizers.md).
    seed : int
        Seed of the sweep; the extra seeds are seed+1, seed+2, ...
    progress : Progress, optional
        The report's progress bar.
    config : dict, optional
        Overrides :data:`FULL`/:data:`QUICK` (same keys).
    optimizers : sequence of str, optional
        A subset of :data:`.optim_specs.OPTIMIZERS` (default: all).
    log : callable, optional
        Called with one line per finished run (the command line passes stderr's writer).
    on_run : callable, optional
        Called with the record of every finished run (e.g. to save runs as they finish).

    The configuration keys ``sweep`` and ``timing`` (default True) switch the training runs
    and the interleaved timing run off, so that parts of the study can run in separate
    processes and be joined by :func:`merge_results`.
    """
    from .optim_specs import OPTIMIZERS

    cfg = dict(QUICK if quick else FULL)
    cfg.update(config or {})
    names = list(OPTIMIZERS) if optimizers is None else list(optimizers)
    for n in names:
        if n not in OPTIMIZERS:
            raise ValueError(f"optimizers: unknown {n!r}; valid: {list(OPTIMIZERS)}")
    if not cfg["lrs"] or int(cfg["seeds"]) < 1 or int(cfg["T"]) < 1:
        raise ValueError(f"config: needs at least one lr, seeds >= 1 and T >= 1, got "
                         f"lrs={cfg['lrs']!r}, seeds={cfg['seeds']!r}, T={cfg['T']!r}")
    check_dependencies()
    from .optim_runs import torch_threads

    threads_before = torch_threads()
    threads = int(cfg.get("threads") or threads_before)
    torch_threads(threads)
    try:
        return _study(cfg, names, seed, progress, log, threads, on_run)
    finally:
        torch_threads(threads_before)


def _study(cfg, names, seed, progress, log, threads, on_run=None) -> dict:
    from .optim_models import TaskConfig, make_task
    from .optim_runs import interleaved_step_times, train
    from .optim_specs import OPTIMIZERS

    T, lrs, nseeds = int(cfg["T"]), tuple(cfg["lrs"]), int(cfg["seeds"])
    load0 = os.getloadavg()[0] if hasattr(os, "getloadavg") else math.nan
    tasks = {name: make_task(TaskConfig(name, **kw)) for name, kw in cfg["tasks"].items()}
    sweep = cfg.get("sweep", True)
    total = (len(tasks) * len(names) * (len(lrs) + nseeds - 1) if sweep else 0) + 1
    done = 0

    def tick(label):
        nonlocal done
        done += 1
        if progress is not None:
            progress.update(label, done, total)

    # warm-up: compile the Numba kernels and touch every code path once, untimed
    if cfg.get("warmup") and sweep:
        warm = make_task(TaskConfig("digits", **QUICK["tasks"]["digits"]))
        for n in names:
            train(warm, OPTIMIZERS[n], lrs[0], seed, T=2)
    tick("optimizer: warm-up")
    runs = Records(title="Every run (learning-rate sweep, then the best lr from more seeds)")
    for tname, task in (tasks.items() if sweep else ()):
        for n in names:
            spec = OPTIMIZERS[n]
            trial = []
            for lr in lrs:
                r = train(task, spec, lr, seed, T=T)
                trial.append(r)
                runs.append(r)
                tick(f"optimizer: {tname}")
                _report(r, log, on_run)
            best = min(trial, key=lambda r: (r["final_loss"], r["lr"]))
            best["best_lr"] = True
            for s in range(1, nseeds):
                r = train(task, spec, best["lr"], seed + s, T=T)
                r["best_lr"] = True
                runs.append(r)
                tick(f"optimizer: {tname}")
                _report(r, log, on_run)
    timed = [n for n in TIMED if n in names]
    timing = Records(title="Interleaved step times on the char-LM (ratio to pytorch_optimizer "
                           "SOAP; median and quartiles over blocks of T steps)")
    if cfg.get("timing", True) and "charlm" in tasks and len(timed) >= 2:
        best_lr = {r["optimizer"]: r["lr"] for r in runs
                   if r["task"] == "charlm" and r.get("best_lr")}
        res = interleaved_step_times(tasks["charlm"], [OPTIMIZERS[n] for n in timed],
                                     lr=best_lr.get(SOAP32, lrs[0]),
                                     steps=int(cfg["timing_steps"]), T=T, seed=seed)
        for n in timed:
            row = {"optimizer": n, **res[n]}
            if OPTIMIZERS[n].kind == "peer-soap":
                row["ms_refresh"] = None
            timing.append(row)
    tick("optimizer: timing")
    load1 = os.getloadavg()[0] if hasattr(os, "getloadavg") else math.nan
    data = Records([{"task": t, **_data_row(task.info)} for t, task in tasks.items()],
                   title="Data")
    env = {"torch_threads": threads, "load_start": load0, "load_end": load1,
           "cpus": os.cpu_count(), "T": T, "lrs": list(lrs), "seeds": nseeds}
    return merge_results([{"runs": runs, "timing": timing, "data": data,
                           "env": Records([env])}])


def merge_results(parts: list[dict]) -> dict:
    """Join the results of study parts run separately (other tasks, optimizers, or the timing
    run): runs, timing and data rows are concatenated, the summary and targets recomputed; the
    environment keeps the lowest and highest load average seen."""
    from .optim_specs import OPTIMIZERS

    if not parts:
        raise ValueError("parts: nothing to merge")
    runs = Records([r for p in parts for r in p["runs"]],
                   title="Every run (learning-rate sweep, then the best lr from more seeds)")
    timing = Records([r for p in parts for r in p["timing"]],
                     title="Interleaved step times on the char-LM (ratio to pytorch_optimizer "
                           "SOAP; median and quartiles over blocks of T steps)")
    seen = {}
    for p in parts:
        for r in p["data"]:
            seen.setdefault(r["task"], r)
    data = Records(seen.values(), title="Data")
    envs = [e for p in parts for e in p["env"]]
    env = dict(envs[0])
    env["load_start"] = min(e["load_start"] for e in envs)
    env["load_end"] = max(e["load_end"] for e in envs)
    env["processes"] = len(parts)
    names = [n for n in OPTIMIZERS if any(r["optimizer"] == n for r in runs)]
    summary = summarize(runs, names)
    return {"summary": summary, "targets": evaluate_targets(summary, timing, env),
            "timing": timing, "data": data, "runs": runs,
            "env": Records([env], title="Environment")}


def _report(r, log, on_run):
    if log:
        log(_line(r))
    if on_run:
        on_run(r)


def _line(r) -> str:
    acc = f" acc {r['final_acc']:.3f}" if "final_acc" in r else ""
    return (f"  {r['task']:<7} {r['optimizer']:<26} lr {r['lr']:.0e} seed {r['seed']}: "
            f"final {r['final_loss']:.4f} best {r['best_loss']:.4f}{acc}  "
            f"{r['ms_step']:.1f} ms/step  {r['train_seconds']:.1f} s")


def _data_row(info: dict) -> dict:
    if "train_files" in info:
        return {"source": f"Python {info['python']} stdlib, top-level .py files",
                "train": f"{len(info['train_files'])} files, {info['train_bytes']} bytes",
                "val": f"{len(info['val_files'])} files, {info['val_bytes']} bytes",
                "sha256 (train)": info["train_sha256"][:16],
                "files": info["train_files"] + info["val_files"]}
    return {"source": info["source"], "train": f"{info['n_train']} images",
            "val": f"{info['n_val']} images", "sha256 (train)": "", "files": []}


def summarize(runs: Records, names) -> Records:
    """One row per (task, optimizer): the best lr's runs over seeds, mean ± sd."""
    out = Records(title="Best learning rate per optimizer: mean ± sd over seeds")
    for task in dict.fromkeys(r["task"] for r in runs):
        for n in names:
            rs = [r for r in runs if r["task"] == task and r["optimizer"] == n
                  and r.get("best_lr")]
            if not rs:
                continue
            lrs = sorted({r["lr"] for r in runs if r["task"] == task and r["optimizer"] == n})
            edge = len(lrs) > 1 and rs[0]["lr"] in (lrs[0], lrs[-1])
            row = {"task": task, "optimizer": n, "lr": rs[0]["lr"], "lr_at_edge": edge,
                   "seeds": len(rs)}
            for key in ("final_loss", "best_loss", "final_acc"):
                if key in rs[0]:
                    m, sd = _mean_sd([r[key] for r in rs])
                    row[key], row[key + "_sd"] = m, sd
            row["diverged"] = sum(bool(r["diverged"]) for r in rs)
            row["state_MiB"] = rs[0]["state_bytes"] / 2**20
            for key in ("ms_fwd_bwd", "ms_step", "ms_factors", "ms_direction", "ms_refresh",
                        "ms_other"):
                row[key] = _mean_sd([r[key] for r in rs])[0] if rs[0][key] is not None \
                    else None
            out.append(row)
    return out


def _get(summary, task, name):
    for r in summary:
        if r["task"] == task and r["optimizer"] == name:
            return r
    return None


def evaluate_targets(summary: Records, timing: Records, env: dict) -> Records:
    """The study's targets, measured: one row per (target, task) with the numbers and a
    verdict ("yes", "no", or "n/a" where the comparison is undefined)."""
    out = Records(title="Targets (losses: final validation loss, mean over seeds; noise: "
                        "√(sd₁² + sd₂²))")

    def add(target, task, measured, holds, note=""):
        out.append({"target": target, "task": task, "measured": measured,
                    "holds": holds, "note": note})

    for task in dict.fromkeys(r["task"] for r in summary):
        a, b = _get(summary, task, SOAP32), _get(summary, task, SOAP16)
        gap = noise = math.nan
        if a and b:
            gap = b["final_loss"] - a["final_loss"]
            noise = math.hypot(a["final_loss_sd"], b["final_loss_sd"])
            add("(1) SOAP bf16 worse than fp32", task, f"gap {gap:+.4f} (noise {noise:.4f})",
                "yes" if gap > noise else "no",
                "the gap exceeds the seed noise" if gap > noise else
                "the gap is within the seed noise" if gap > 0 else "bf16 is not worse")
        for n in (*SOAP_SUB, SOAP_DRIFT):
            c = _get(summary, task, n)
            if not (a and b and c):
                continue
            closed = (b["final_loss"] - c["final_loss"]) / gap if gap > 0 else math.nan
            verdict = "n/a" if not gap > noise else ("yes" if closed >= 0.5 else "no")
            add(f"(2) {n} closes >= 1/2 of the gap", task,
                f"loss {c['final_loss']:.4f} ± {c['final_loss_sd']:.4f}; closes "
                f"{closed:.2f} of the gap" if math.isfinite(closed) else
                f"loss {c['final_loss']:.4f} ± {c['final_loss_sd']:.4f}",
                verdict, "drifting scheme (control)" if n == SOAP_DRIFT else
                ("no gap beyond noise to close" if verdict == "n/a" else ""))
        k, s = _get(summary, task, KLSOAP_SUB), _get(summary, task, KLSHAMPOO32)
        if k and s:
            diff = k["final_loss"] - s["final_loss"]
            nz = math.hypot(k["final_loss_sd"], s["final_loss_sd"])
            add("(3) KL-SOAP bf16 sub <= KL-Shampoo fp32 (within noise)", task,
                f"diff {diff:+.4f} (noise {nz:.4f})", "yes" if diff <= nz else "no")
        m32, m16 = _get(summary, task, SOAP32), _get(summary, task, SOAP16)
        if m32 and m16:
            ratio = m16["state_MiB"] / m32["state_MiB"]
            add("(5) state bytes SOAP bf16 / fp32 <= 0.55", task, f"{ratio:.3f}",
                "yes" if ratio <= 0.55 else "no")
    t = {r["optimizer"]: r for r in timing}
    if SOAP16 in t and "SOAP bf16 sub project" in t:
        full, sub = t[SOAP16]["ms_refresh"], t["SOAP bf16 sub project"]["ms_refresh"]
        ratio = full / sub if sub else math.nan
        add("(4) refresh time full / subspace k=d/8 >= 3 (same T, bf16)", "charlm",
            f"{full:.2f} / {sub:.2f} ms per step = {ratio:.2f}", "yes" if ratio >= 3 else "no",
            "interleaved run")
    if SOAP32 in t and PEER in t:
        r = t[SOAP32]
        add("(6) step time ours SOAP fp32 / pytorch_optimizer.SOAP <= 1.0", "charlm",
            f"{r['ratio']:.2f} (quartiles {r['ratio_q1']:.2f}-{r['ratio_q3']:.2f})",
            "yes" if r["ratio"] <= 1.0 else "no",
            f"interleaved run; load average {env['load_start']:.1f}-{env['load_end']:.1f} "
            f"on {env['cpus']} cpus")
    return out


def interpret_optimizer(res: dict) -> str:
    """A paragraph stating, from the numbers, which targets hold and which fail."""
    tg = res["targets"]
    env = res["env"][0]
    held = [r for r in tg if r["holds"] == "yes"]
    failed = [r for r in tg if r["holds"] == "no"]
    na = [r for r in tg if r["holds"] == "n/a"]
    parts = [f"{len(held)} of {len(tg)} target checks hold, {len(failed)} fail"
             + (f", {len(na)} are undefined" if na else "") + "."]
    for r in failed:
        parts.append(f"Fails: {r['target']} on {r['task']}: {r['measured']}"
                     + (f" ({r['note']})" if r["note"] else "") + ".")
    for r in na:
        parts.append(f"Undefined: {r['target']} on {r['task']}: {r['note']}.")
    parts.append(f"Learning rates {env['lrs']} (best by final validation loss), {env['seeds']} "
                 f"seeds at the best, T = {env['T']}; torch threads {env['torch_threads']}, "
                 f"load average {env['load_start']:.1f} at the start and "
                 f"{env['load_end']:.1f} at the end on {env['cpus']} cpus (timings shared the "
                 f"machine).")
    return " ".join(parts)


def run_registered(*, quick: bool, seed: int, progress):
    """The registry's entry: the study, its paragraph and figures (a StudyOutput's fields)."""
    import sys

    t0 = time.perf_counter()
    res = optimizer_study(quick=quick, seed=seed, progress=progress,
                          log=lambda s: (sys.stderr.write(s + "\n"), sys.stderr.flush()))
    tables, paragraph, figures = study_output(res)
    return tables, paragraph, figures, time.perf_counter() - t0


def study_output(res: dict):
    """(tables, paragraph, figures) of a study result, as the report writes them."""
    from . import optim_plots

    curves = res["runs"]
    figures = [
        ("optimizer_loss_vs_step.png",
         lambda p: optim_plots.plot_curves(curves, p, x="step")),
        ("optimizer_loss_vs_time.png",
         lambda p: optim_plots.plot_curves(curves, p, x="time")),
        ("optimizer_memory.png", lambda p: optim_plots.plot_memory(res["summary"], p)),
        ("optimizer_step_time.png", lambda p: optim_plots.plot_step_split(res["summary"], p)),
    ]
    runs_table = Records([{k: v for k, v in r.items() if k not in ("curve", "train_loss")}
                          for r in res["runs"]], title=res["runs"].title)
    tables = {"targets": res["targets"], "summary": res["summary"], "timing": res["timing"],
              "data": Records([{k: v for k, v in r.items() if k != "files"}
                               for r in res["data"]], title="Data"),
              "data_files": res["data"], "env": res["env"], "runs": runs_table,
              "curves": res["runs"]}
    return tables, interpret_optimizer(res), figures
