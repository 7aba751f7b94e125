"""Figures of the optimizer study (matplotlib, extra ``plot``): validation loss against step and
against training seconds, optimizer-state memory, and the split of the optimizer step time.

Each function takes the study's records and a path, writes one PNG (one panel per task) and
returns the path.
"""

from __future__ import annotations

import pathlib

from .plots import _plt, _save
from .records import Records

__all__ = ["plot_curves", "plot_memory", "plot_step_split"]

_STYLES = {
    "AdamW": ("tab:gray", "-"), "pytorch_optimizer SOAP": ("k", ":"),
    "SOAP fp32": ("k", "-"), "SOAP bf16": ("tab:red", "-"),
    "SOAP bf16 sub bf16": ("tab:orange", "--"), "SOAP bf16 sub project": ("tab:blue", "--"),
    "SOAP bf16 sub rectify": ("tab:purple", "-."), "KL-SOAP fp32": ("tab:green", "-"),
    "KL-SOAP bf16": ("tab:olive", "-"), "KL-SOAP bf16 sub project": ("tab:cyan", "--"),
    "KL-Shampoo fp32": ("tab:brown", "-"), "KL-Shampoo bf16": ("tab:pink", "-"),
}


def _style(name):
    return _STYLES.get(name, (None, "-"))


def _tasks(recs):
    return list(dict.fromkeys(r["task"] for r in recs))


def _mean_curve(rs, x):
    """The seed-mean curve of the best lr's runs: (x values, mean loss) at the common points."""
    n = min(len(r["curve"]) for r in rs)
    xs, ys = [], []
    for i in range(n):
        pts = [r["curve"][i] for r in rs]
        xs.append(pts[0][0] if x == "step" else sum(p[1] for p in pts) / len(pts))
        ys.append(sum(p[2] for p in pts) / len(pts))
    return xs, ys


def plot_curves(runs: Records, path, *, x: str = "step") -> pathlib.Path:
    """Validation loss vs step (``x="step"``) or vs training seconds (``x="time"``): the mean
    over seeds of each optimizer's best learning rate."""
    if x not in ("step", "time"):
        raise ValueError(f"x must be 'step' or 'time', got {x!r}")
    plt = _plt()
    tasks = _tasks(runs)
    fig, axes = plt.subplots(1, len(tasks), figsize=(6.0 * len(tasks), 4.6), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        rows = [r for r in runs if r["task"] == task and r.get("best_lr") and r["curve"]]
        lo = []
        for name in dict.fromkeys(r["optimizer"] for r in rows):
            rs = [r for r in rows if r["optimizer"] == name and not r["diverged"]]
            if not rs:
                continue
            xs, ys = _mean_curve(rs, x)
            c, ls = _style(name)
            ax.plot(xs, ys, color=c, ls=ls, lw=1.3, label=f"{name} (lr {rs[0]['lr']:g})")
            lo.append(min(ys))
        ax.set_yscale("log")
        if lo:
            first = [r["curve"][0][2] for r in rows]
            ax.set_ylim(min(lo) * 0.95, max(first) * 1.05)
        ax.set_xlabel("training step" if x == "step" else "training time (s, excluding "
                      "evaluation)")
        ax.set_ylabel("validation loss (cross-entropy, nats)")
        ax.set_title(f"{task}: mean over seeds at each optimizer's best lr", fontsize=9)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=6.5, ncol=2)
    return _save(fig, path)


def plot_memory(summary: Records, path) -> pathlib.Path:
    """Optimizer-state memory (MiB) per optimizer, one bar chart per task."""
    plt = _plt()
    tasks = _tasks(summary)
    fig, axes = plt.subplots(1, len(tasks), figsize=(6.0 * len(tasks), 4.4), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        rows = [r for r in summary if r["task"] == task]
        names = [r["optimizer"] for r in rows]
        ax.barh(range(len(rows)), [r["state_MiB"] for r in rows],
                color=[_style(n)[0] or "tab:blue" for n in names])
        ax.set_yticks(range(len(rows)), names, fontsize=7)
        ax.invert_yaxis()
        ax.set_xlabel("optimizer state (MiB)")
        ax.set_title(f"{task}: optimizer-state memory", fontsize=9)
        ax.grid(True, axis="x", alpha=0.3)
    return _save(fig, path)


def plot_step_split(summary: Records, path) -> pathlib.Path:
    """Milliseconds per step: forward+backward, and the optimizer step split into factor
    statistics / direction / refresh / other (one stacked bar per optimizer, per task)."""
    plt = _plt()
    tasks = _tasks(summary)
    fig, axes = plt.subplots(1, len(tasks), figsize=(6.0 * len(tasks), 4.4), squeeze=False)
    parts = (("ms_fwd_bwd", "forward+backward", "0.8"), ("ms_factors", "factor update",
             "tab:green"), ("ms_direction", "direction", "tab:blue"),
             ("ms_refresh", "refresh", "tab:red"), ("ms_other", "other (adapter)", "tab:gray"))
    for ax, task in zip(axes[0], tasks):
        rows = [r for r in summary if r["task"] == task]
        left = [0.0] * len(rows)
        for key, label, color in parts:
            vals = []
            for r in rows:
                v = r.get(key)
                if v is None and key == "ms_other":
                    v = r["ms_step"]  # the peers: the whole step, unsplit
                vals.append(v or 0.0)
            ax.barh(range(len(rows)), vals, left=left, color=color, label=label)
            left = [a + b for a, b in zip(left, vals)]
        ax.set_yticks(range(len(rows)), [r["optimizer"] for r in rows], fontsize=7)
        ax.invert_yaxis()
        ax.set_xlabel("ms per training step (mean over the run)")
        ax.set_title(f"{task}: where a step's time goes (AdamW, peer: step unsplit)",
                     fontsize=9)
        ax.legend(fontsize=7)
        ax.grid(True, axis="x", alpha=0.3)
    return _save(fig, path)
