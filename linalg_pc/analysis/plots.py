"""Figures of the studies (matplotlib, extra ``plot``; the Agg backend when there is no display).

Each function takes the study's records and a path, writes one PNG and returns the path. Axes are
labelled with quantities and units so a figure can go straight into a paper.
"""

from __future__ import annotations

import os
import pathlib

from ..basis.storage import STORAGE_SCHEMES
from .records import Records

_MARKERS = "osD^v<>pXh*"


def _plt():
    try:
        import matplotlib
    except ImportError as exc:
        raise ImportError("figures need matplotlib: pip install 'linalg_pc[plot]'") from exc
    if not os.environ.get("DISPLAY") and not os.environ.get("MPLBACKEND"):
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path) -> pathlib.Path:
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path


def plot_qr_orthogonality(recs: Records, path, *, fmt: str | None = None) -> pathlib.Path:
    """Loss of orthogonality vs κ₂(A) per method, log-log, with each method's bound as a line
    and breakdowns (Cholesky failure or fallback) marked with a cross."""
    plt = _plt()
    rows = [r for r in recs if fmt is None or r["format"] == fmt]
    formats = list(dict.fromkeys(r["format"] for r in rows))
    fig, axes = plt.subplots(1, len(formats), figsize=(5.2 * len(formats), 4.2), squeeze=False,
                             sharey=True)
    for ax, f in zip(axes[0], formats):
        sub = [r for r in rows if r["format"] == f]
        methods = list(dict.fromkeys(r["method"] for r in sub))
        for j, m in enumerate(methods):
            mr = sorted((r for r in sub if r["method"] == m), key=lambda r: r["kappa"])
            ok = [r for r in mr if not (r.get("breakdown") or r.get("fallback"))]
            bad = [r for r in mr if r.get("breakdown") or r.get("fallback")]
            line = ax.loglog([r["kappa"] for r in ok], [max(r["orth_loss"], 1e-18) for r in ok],
                             marker=_MARKERS[j % len(_MARKERS)], label=m)[0]
            if all("bound" in r for r in mr):
                ax.loglog([r["kappa"] for r in mr], [r["bound"] for r in mr], ls="--", lw=0.9,
                          color=line.get_color(), alpha=0.7)
            if bad:  # where the method broke down: the loss after the documented fallback
                ax.scatter([r["kappa"] for r in bad], [max(r["orth_loss"], 1e-18) for r in bad],
                           marker="x", s=60, color=line.get_color(), zorder=5)
        ax.set_xlabel(r"condition number $\kappa_2(A)$")
        ax.set_title(f"{f}, {sub[0]['m']}×{sub[0]['n']}  (dashed: bound; x: after fallback)",
                     fontsize=9)
        ax.grid(True, which="both", alpha=0.3)
        lo = min(max(r["orth_loss"], 1e-18) for r in rows)
        ax.set_ylim(lo / 10, 10.0)
    axes[0][0].set_ylabel(r"loss of orthogonality $\|I - Q^TQ\|_2$")
    axes[0][-1].legend(fontsize=8, loc="best")
    return _save(fig, path)


def plot_rounding_floor(recs: Records, path) -> pathlib.Path:
    """‖QᵀQ − I‖ after one rounding vs d, per format and norm, with the model as lines."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.6, 4.2))
    for j, f in enumerate(sorted({r["format"] for r in recs})):
        sq = sorted((r for r in recs if r["format"] == f and r["m"] == r["n"]),
                    key=lambda r: r["m"])
        d = [r["m"] for r in sq]
        for norm, ls in (("2", "-"), ("fro", ":")):
            line = ax.loglog(d, [r[f"loss_{norm}"] for r in sq], marker=_MARKERS[j],
                             ls=ls, label=f"{f}, {'2-norm' if norm == '2' else 'Frobenius'}")[0]
            ax.loglog(d, [r[f"model_{norm}"] for r in sq], ls="--", lw=0.8,
                      color=line.get_color(), alpha=0.6)
    ax.set_xlabel("matrix size d (d×d orthogonal Q)")
    ax.set_ylabel(r"$\|\mathrm{fl}(Q)^T\mathrm{fl}(Q) - I\|$")
    ax.set_title("One rounding of an orthogonal matrix (dashed: model)", fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_drift(recs: Records, path, *, metric: str = "orth_loss", group: str = "label",
               ylabel: str = r"loss of orthogonality $\|I - Q^TQ\|_2$") -> pathlib.Path:
    """A metric vs update step, one line per ``group`` value (scheme), log y-axis."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.6, 4.2))
    for j, g in enumerate(dict.fromkeys(r[group] for r in recs)):
        rs = sorted((r for r in recs if r[group] == g), key=lambda r: r["step"])
        ax.semilogy([r["step"] for r in rs], [r[metric] for r in rs],
                    marker=_MARKERS[j % len(_MARKERS)], markevery=max(1, len(rs) // 10),
                    label=str(g))
        if "model" in rs[0] and g == "re-round":
            ax.semilogy([r["step"] for r in rs], [r["model"] for r in rs], ls="--", lw=0.8,
                        color="gray", label=r"model $1.2u\sqrt{\mathrm{roundings}}$")
    ax.set_title(recs.title, fontsize=9)
    ax.set_xlabel("update step")
    ax.set_ylabel(ylabel)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


_STYLE = {"fp32": ("k", "-"), "bf16": ("tab:red", "-"), "bf16-project": ("tab:blue", "--"),
          "bf16-rectify": ("tab:purple", "-."), "block-rotation": ("tab:green", "-")}


def plot_basis_drift(records: list[dict], path, *, policy: str = "cyclic", d: int | None = None,
                     eq_policy: str | None = None, dpi: int = 90):
    """Figure of a study: orthogonality and eigenbasis quality vs step, equal-compute quality.

    One line per scheme for the given ``policy`` (and d: default the largest in the records);
    the one-rounding floor dotted; a third panel with the equal-compute curves when present
    (for ``eq_policy``, default "topk-cyclic" when recorded, else the first recorded).
    Writes ``path`` (PNG) and returns it. Needs matplotlib (imported lazily, Agg backend).
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:  # pragma: no cover - optional dependency
        raise ImportError("plot_basis_drift needs matplotlib (pip install linalg_pc[plot])"
                          ) from exc
    drift = [r for r in records if r.get("study") == "drift"]
    eq = [r for r in records if r.get("study") == "equal-compute"]
    ds = sorted({r["d"] for r in drift} | {r["d"] for r in eq})
    if not ds:
        raise ValueError("records hold no study results")
    d = ds[-1] if d is None else d
    drift = [r for r in drift if r["d"] == d and r["policy"] == policy]
    eq = [r for r in eq if r["d"] == d]
    if eq:
        pols = sorted({r["policy"] for r in eq})
        eq_policy = eq_policy or ("topk-cyclic" if "topk-cyclic" in pols else pols[0])
        eq = [r for r in eq if r["policy"] == eq_policy]
    ncol = 3 if eq else 2
    fig, axes = plt.subplots(1, ncol, figsize=(4.2 * ncol, 3.4), constrained_layout=True)
    schemes = [s for s in STORAGE_SCHEMES if any(r["scheme"] == s for r in drift)]
    for s in schemes:
        rs = sorted((r for r in drift if r["scheme"] == s), key=lambda r: r["step"])
        c, ls = _STYLE.get(s, (None, "-"))
        steps = [r["step"] for r in rs]
        axes[0].semilogy(steps, [max(r["orthogonality"], 1e-12) for r in rs], color=c,
                         ls=ls, label=s)
        later = [r for r in rs if r["step"] > 0]  # step 0 is the exact eigenbasis
        axes[1].semilogy([r["step"] for r in later], [max(r["quality"], 1e-12) for r in later],
                         color=c, ls=ls, label=s)
    if drift:
        axes[0].axhline(drift[0]["floor"], color="gray", ls=":", lw=1,
                        label="one bf16 rounding")
    k = drift[0]["k"] if drift else (eq[0]["k"] if eq else "?")
    axes[0].set(xlabel="update step", ylabel="‖QᵀQ − I‖₂ (fp64)",
                title=f"loss of orthogonality (d={d}, k={k}, {policy})")
    axes[1].set(xlabel="update step", ylabel="‖offdiag(QᵀKQ)‖_F / ‖QᵀKQ‖_F",
                title="eigenbasis quality (lower is better)")
    axes[0].legend(fontsize=7)
    axes[1].legend(fontsize=7)
    if eq:
        for method, c in (("subspace", "tab:green"), ("full", "tab:orange"), ("none", "gray")):
            rs = sorted((r for r in eq if r["method"] == method and r["step"] > 0),
                        key=lambda r: r["step"])
            if not rs:
                continue
            lab = {"subspace": f"k={rs[0]['k']} every step",
                   "full": f"full qr(KQ) every {rs[0]['period']}", "none": "no refresh"}[method]
            axes[2].semilogy([r["step"] for r in rs], [max(r["quality"], 1e-12) for r in rs],
                             color=c, label=lab)
        axes[2].set(xlabel="update step", ylabel="‖offdiag(QᵀKQ)‖_F / ‖QᵀKQ‖_F",
                    title=f"equal compute ({eq_policy}), fp32")
        axes[2].legend(fontsize=7)
    for ax in axes:
        ax.grid(True, which="both", alpha=0.3)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path
