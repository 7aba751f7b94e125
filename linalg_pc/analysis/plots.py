"""Figures of the studies (matplotlib, extra ``plot``; the Agg backend when there is no display).

Each function takes the study's records and a path, writes one PNG and returns the path. Axes are
labelled with the quantity, how it was measured and the format; every log axis carries at least
three labelled ticks; a figure with several panels has one legend below them. The figures are
read at the size ``linalg-pc study`` writes them (about 1000–1500 pixels wide), so the fonts are
sized for that. docs/error-analysis.md, "Reading the figures", describes each one.
"""

from __future__ import annotations

import math
import os
import pathlib

from ..basis.storage import STORAGE_SCHEMES
from .qr_study import study_bound
from .records import Records

__all__ = ["plot_qr_orthogonality", "plot_rounding_floor", "plot_drift", "plot_basis_drift"]

_MARKERS = "osD^v<>pXh*"
_RC = {"font.size": 10, "axes.titlesize": 10, "axes.labelsize": 10, "legend.fontsize": 9,
       "xtick.labelsize": 9, "ytick.labelsize": 9}
_DPI = 120
#: Colour of a bound shared by several methods (drawn once).
_SHARED = "0.35"
#: Panel titles of the QR study's configurations.
_QR_TITLES = {"fp32": "fp32 storage, fp32 arithmetic", "fp64": "fp64 storage and arithmetic",
              "bf16": "bf16 storage, fp32 arithmetic", "fp16": "fp16 storage, fp32 arithmetic",
              "emulate-bf16": "bf16 arithmetic (emulated)",
              "emulate-fp16": "fp16 arithmetic (emulated)"}


def _plt():
    try:
        import matplotlib
    except ImportError as exc:
        raise ImportError("figures need matplotlib: pip install 'linalg_pc[plot]'") from exc
    if not os.environ.get("DISPLAY") and not os.environ.get("MPLBACKEND"):
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path, *, tight: bool = True) -> pathlib.Path:
    import matplotlib.pyplot as plt

    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if tight:
        fig.tight_layout()
    fig.savefig(path, dpi=_DPI, bbox_inches="tight")
    plt.close(fig)
    return path


def _sci(v: float, _pos=None) -> str:
    """A tick label m×10^e (10^e when m = 1), in mathtext."""
    if v <= 0 or not math.isfinite(v):
        return ""
    e = math.floor(math.log10(v) + 1e-9)
    m = round(v / 10.0**e, 6)
    return rf"$10^{{{e}}}$" if m == 1 else rf"${m:g}\times10^{{{e}}}$"


def _plain(v: float, _pos=None) -> str:
    return f"{v:g}"


def _log_ticks(ax, which: str = "y", minimum: int = 3) -> None:
    """At least ``minimum`` labelled ticks on a log axis, one label style, no minor labels."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, MaxNLocator, NullFormatter

    lo, hi = ax.get_ylim() if which == "y" else ax.get_xlim()
    lo, hi = min(lo, hi), max(lo, hi)
    if lo <= 0:
        return
    ticks: list[float] = []
    if hi / lo < 10:  # less than a decade: evenly spaced round values
        ticks = [float(t) for t in MaxNLocator(nbins=5, steps=[1, 2, 2.5, 5, 10]).tick_values(
            lo, hi) if lo <= t <= hi and t > 0]
    if len(ticks) < minimum:
        e0, e1 = math.floor(math.log10(lo)), math.ceil(math.log10(hi))
        for subs in ((1,), (1, 3), (1, 2, 5), (1, 2, 3, 4, 5, 6, 7, 8, 9)):
            cand = [s * 10.0**e for e in range(e0, e1 + 1) for s in subs]
            ticks = [t for t in cand if lo * (1 - 1e-9) <= t <= hi * (1 + 1e-9)]
            if len(ticks) >= minimum:
                break
        ticks = ticks[::max(1, math.ceil(len(ticks) / 8))]  # at most about 8 labels
    plain = all(1e-2 <= t < 1e4 for t in ticks)
    axis = ax.yaxis if which == "y" else ax.xaxis
    axis.set_major_locator(FixedLocator(ticks))
    axis.set_major_formatter(FuncFormatter(_plain if plain else _sci))
    axis.set_minor_formatter(NullFormatter())
    (ax.set_ylim if which == "y" else ax.set_xlim)(lo, hi)


def _bound_groups(rows: list[dict], methods: list[str]) -> list[tuple[list[str], list, list]]:
    """The bound of each method as a curve over the stored κ, where the method did not break
    down; methods whose curves coincide (to 1e-9 relative) form one group, drawn once."""
    groups: dict[tuple, tuple[list[str], list, list]] = {}
    for m in methods:
        mr = sorted((r for r in rows if r["method"] == m and not r.get("breakdown")
                     and "bound" in r), key=lambda r: r["kappa"])
        if not mr:
            continue
        xs = [r["kappa_stored"] for r in mr]
        bs = [r["bound"] for r in mr]
        key = tuple((round(math.log10(x), 9), round(math.log10(b), 9)) for x, b in zip(xs, bs))
        # a method that broke down early has a shorter curve: join a group whose curve it follows
        for k, g in groups.items():
            n = min(len(k), len(key))
            if k[:n] == key[:n]:
                g[0].append(m)
                if len(key) > len(k):  # keep the longest curve
                    groups[key] = (g[0], xs, bs)
                    del groups[k]
                break
        else:
            groups[key] = ([m], xs, bs)
    return list(groups.values())


def plot_qr_orthogonality(recs: Records, path, *, fmt: str | None = None) -> pathlib.Path:
    """Loss of orthogonality against the condition number of the factored matrix, per method.

    Parameters
    ----------
    recs : Records
        Rows of :func:`~linalg_pc.analysis.qr_study` (keys ``method``, ``format``, ``m``, ``n``,
        ``kappa``, ``kappa_stored``, ``orth_loss``, ``breakdown``).
    path : str or os.PathLike
        The PNG to write (its folder is created).
    fmt : str, optional
        Plot only this configuration (``"fp32"``, ``"bf16"``, ``"emulate-bf16"``, ...); default
        one panel per configuration in the records.

    Returns
    -------
    pathlib.Path
        ``path``.

    Notes
    -----
    The x-axis is κ₂ of the matrix that was factored, the stored one (``kappa_stored``: a
    matrix requested with κ = 1e6 and stored in bf16 has κ ≈ 5e3, since the rounding perturbs
    its small singular values), and each method's bound (:func:`~.qr_study.study_bound`) is
    evaluated there, dashed in the method's colour where the method did not break down. Bounds
    that coincide for several methods are drawn once, in grey, and labelled with the methods
    that share them. A breakdown (Cholesky failure or fallback, ``info.fallbacks``) is marked
    with a black cross on the loss measured after the documented fallback. One legend below
    the panels serves them all. docs/error-analysis.md reads the figure.
    """
    plt = _plt()
    from matplotlib.lines import Line2D

    rows = [r for r in recs if fmt is None or r["format"] == fmt]
    if not rows:
        raise ValueError("recs: no QR study records" + (f" for fmt={fmt!r}" if fmt else ""))
    formats = list(dict.fromkeys(r["format"] for r in rows))
    methods = list(dict.fromkeys(r["method"] for r in rows))
    colors = {m: f"C{j % 10}" for j, m in enumerate(methods)}
    markers = {m: _MARKERS[j % len(_MARKERS)] for j, m in enumerate(methods)}
    rows = [dict(r, kappa_stored=r.get("kappa_stored", r["kappa"])) for r in rows]
    for r in rows:  # the bound at the κ of the matrix that was factored
        r["bound"] = study_bound(r["method"], r["m"], r["n"], r["kappa_stored"], r["format"])
    lo = min(max(r["orth_loss"], 1e-18) for r in rows) / 10
    with plt.rc_context(_RC):
        fig, axes = plt.subplots(1, len(formats), figsize=(4.4 * len(formats) + 0.6, 4.3),
                                 squeeze=False, sharey=True)
        for ax, f in zip(axes[0], formats):
            sub = [r for r in rows if r["format"] == f]
            for m in methods:
                mr = sorted((r for r in sub if r["method"] == m), key=lambda r: r["kappa"])
                if not mr:
                    continue
                ok = [r for r in mr if not r.get("breakdown")]
                bad = [r for r in mr if r.get("breakdown")]
                # the line joins the method's own results; after a breakdown the loss is the
                # fallback's: its marker, unjoined, under a black cross
                ax.loglog([r["kappa_stored"] for r in ok],
                          [max(r["orth_loss"], 1e-18) for r in ok], marker=markers[m],
                          ms=5, lw=1.4, color=colors[m])
                if bad:
                    xb = [r["kappa_stored"] for r in bad]
                    yb = [max(r["orth_loss"], 1e-18) for r in bad]
                    ax.scatter(xb, yb, marker=markers[m], s=22, color=colors[m], zorder=5)
                    ax.scatter(xb, yb, marker="x", s=70, lw=1.6, color="k", zorder=6)
            for members, xs, bs in _bound_groups(sub, methods):
                shared = len(members) > 1
                ax.loglog(xs, bs, ls="--", lw=1.1, color=_SHARED if shared else
                          colors[members[0]], alpha=0.9)
                if shared:
                    ax.annotate("bound of " + ", ".join(members), (xs[-1], bs[-1]),
                                xytext=(0, 4), textcoords="offset points", fontsize=8,
                                color=_SHARED, ha="right")
            ax.set_title(f"{_QR_TITLES.get(f, f)}, {sub[0]['m']}×{sub[0]['n']}")
            ax.set_xlabel(r"$\kappa_2(A)$ of the stored matrix")
            ax.grid(True, which="major", alpha=0.3)
            ax.set_ylim(lo, 10.0)
            ax.set_xlim(min(r["kappa_stored"] for r in sub) / 2,
                        max(r["kappa_stored"] for r in sub) * 2)
            _log_ticks(ax, "x")
        axes[0][0].set_ylabel(r"$\|I - Q^TQ\|_2$ (measured in fp64)")
        _log_ticks(axes[0][0], "y")
        handles = [Line2D([], [], color=colors[m], marker=markers[m], ms=5, label=m)
                   for m in methods]
        handles += [Line2D([], [], color="0.2", ls="--", label="bound (grey: shared, named)"),
                    Line2D([], [], color="k", marker="x", ls="", ms=8, mew=1.8,
                           label="breakdown: loss after the documented fallback")]
        ncol = min(len(handles), 5 if len(formats) >= 3 else 3)
        rows_of_legend = math.ceil(len(handles) / ncol)
        fig.tight_layout(rect=(0, 0.055 * rows_of_legend, 1, 1))
        fig.legend(handles=handles, loc="lower center", ncol=ncol,
                   frameon=False, bbox_to_anchor=(0.5, 0.0))
        return _save(fig, path, tight=False)


def plot_rounding_floor(recs: Records, path) -> pathlib.Path:
    """‖fl(Q)ᵀfl(Q) − I‖ after one rounding of a d×d orthogonal Q, against d, with the model.

    Parameters
    ----------
    recs : Records
        Rows of :func:`~linalg_pc.analysis.rounding_floor_study` (keys ``format``, ``m``,
        ``n``, ``loss_2``, ``loss_fro``, ``model_2``, ``model_fro``); the square rows are drawn.
    path : str or os.PathLike
        The PNG to write.

    Returns
    -------
    pathlib.Path
        ``path``.

    Notes
    -----
    Solid: the 2-norm (flat in d, about 1.2·u); dotted: the Frobenius norm (about 0.6·u·√d);
    dashed grey: the model of :func:`~linalg_pc.analysis.floor_prediction`. The x ticks are
    the measured sizes.
    """
    plt = _plt()
    from matplotlib.lines import Line2D
    from matplotlib.ticker import FixedLocator, NullFormatter, NullLocator

    fmts = sorted({r["format"] for r in recs})
    with plt.rc_context(_RC):
        fig, ax = plt.subplots(figsize=(6.0, 4.4))
        sizes: set[int] = set()
        for j, f in enumerate(fmts):
            sq = sorted((r for r in recs if r["format"] == f and r["m"] == r["n"]),
                        key=lambda r: r["m"])
            d = [r["m"] for r in sq]
            sizes |= set(d)
            for norm, ls in (("2", "-"), ("fro", ":")):
                ax.loglog(d, [r[f"loss_{norm}"] for r in sq], marker=_MARKERS[j], ls=ls,
                          color=f"C{j}", ms=5,
                          label=f"{f}, {'2-norm' if norm == '2' else 'Frobenius norm'}")
                ax.loglog(d, [r[f"model_{norm}"] for r in sq], ls="--", lw=0.9, color="0.4")
        ax.set_xlabel("matrix size d (Q is d×d, rounded once)")
        ax.set_ylabel(r"$\|\mathrm{fl}(Q)^T\mathrm{fl}(Q) - I\|$ (measured in fp64)")
        ax.set_title("One rounding of an orthogonal matrix to each format")
        ax.grid(True, which="major", alpha=0.3)
        ticks = sorted(sizes)
        ax.xaxis.set_major_locator(FixedLocator(ticks))
        ax.xaxis.set_major_formatter(plt.FuncFormatter(lambda v, _p: f"{v:g}"))
        ax.xaxis.set_minor_locator(NullLocator())
        ax.xaxis.set_minor_formatter(NullFormatter())
        if ticks:
            ax.set_xlim(ticks[0] / 1.25, ticks[-1] * 1.25)
        _log_ticks(ax, "y")
        handles, _ = ax.get_legend_handles_labels()
        handles.append(Line2D([], [], ls="--", color="0.4", label="model (floor_prediction)"))
        ax.legend(handles=handles, loc="best", fontsize=8)
        return _save(fig, path)


def plot_drift(recs: Records, path, *, metric: str = "orth_loss", group: str = "label",
               ylabel: str = r"$\|I - Q^TQ\|_2$ of the stored basis (measured in fp64)"
               ) -> pathlib.Path:
    """A metric against the update step, one line per ``group`` value, log y-axis.

    Parameters
    ----------
    recs : Records
        Rows of :func:`~linalg_pc.analysis.rerounding_drift` or
        :func:`~linalg_pc.analysis.drift_study` (keys ``step``, ``group`` and ``metric``; the
        ``"re-round"`` group's ``model`` is drawn dashed when present).
    path : str or os.PathLike
        The PNG to write.
    metric, group : str
        The record keys of the y values and of the line labels.
    ylabel : str
        The y-axis label.

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    plt = _plt()
    with plt.rc_context(_RC):
        fig, ax = plt.subplots(figsize=(6.0, 4.4))
        for j, g in enumerate(dict.fromkeys(r[group] for r in recs)):
            rs = sorted((r for r in recs if r[group] == g), key=lambda r: r["step"])
            ax.semilogy([r["step"] for r in rs], [r[metric] for r in rs],
                        marker=_MARKERS[j % len(_MARKERS)], markevery=max(1, len(rs) // 10),
                        ms=5, label=str(g))
            if "model" in rs[0] and g == "re-round":
                ax.semilogy([r["step"] for r in rs], [r["model"] for r in rs], ls="--",
                            lw=0.9, color="0.4",
                            label=r"model: floor $\times\sqrt{\mathrm{roundings\ per\ column}}$")
        ax.set_title(recs.title or metric)
        ax.set_xlabel("update step")
        ax.set_ylabel(ylabel)
        ax.grid(True, which="major", alpha=0.3)
        _log_ticks(ax, "y")
        ax.legend(loc="best", fontsize=8)
        return _save(fig, path)


_STYLE = {"fp32": ("k", "-"), "bf16": ("tab:red", "-"), "bf16-project": ("tab:blue", "--"),
          "bf16-rectify": ("tab:purple", "-."), "block-rotation": ("tab:green", "-")}
_QUALITY = r"$\|\mathrm{offdiag}(Q^TKQ)\|_F\,/\,\|Q^TKQ\|_F$"


def plot_basis_drift(records: list[dict], path, *, policy: str = "cyclic", d: int | None = None,
                     eq_policy: str | None = None, dpi: int = _DPI):
    """Figure of the basis study: orthogonality and eigenbasis quality against the update step.

    Parameters
    ----------
    records : list of dict
        Records of :func:`~linalg_pc.analysis.basis_drift_study` and
        :func:`~linalg_pc.analysis.equal_compute_study` (``study`` "drift" or
        "equal-compute").
    path : str or os.PathLike
        The PNG to write.
    policy : str
        The column policy whose drift records are drawn (one line per storage scheme).
    d : int, optional
        The order of the factor (default: the largest in the records).
    eq_policy : str, optional
        The policy of the equal-compute panel (default "topk-cyclic" when recorded, else the
        first recorded).
    dpi : int
        Resolution of the PNG.

    Returns
    -------
    str or os.PathLike
        ``path``.

    Raises
    ------
    ValueError
        ``records`` hold no study results.

    Notes
    -----
    Left: loss of orthogonality of each storage scheme's basis, with the one-rounding floor of
    bf16 dotted; middle: eigenbasis quality (lower is better); right, when recorded: the
    equal-compute comparison of k-column subspace updates every step against a full
    ``qr(KQ)`` every T steps. One legend below the panels. Needs matplotlib.
    """
    drift = [r for r in records if r.get("study") == "drift"]
    eq = [r for r in records if r.get("study") == "equal-compute"]
    ds = sorted({r["d"] for r in drift} | {r["d"] for r in eq})
    if not ds:
        raise ValueError("records hold no study results")
    plt = _plt()
    d = ds[-1] if d is None else d
    drift = [r for r in drift if r["d"] == d and r["policy"] == policy]
    eq = [r for r in eq if r["d"] == d]
    if eq:
        pols = sorted({r["policy"] for r in eq})
        eq_policy = eq_policy or ("topk-cyclic" if "topk-cyclic" in pols else pols[0])
        eq = [r for r in eq if r["policy"] == eq_policy]
    ncol = 3 if eq else 2
    with plt.rc_context(_RC):
        fig, axes = plt.subplots(1, ncol, figsize=(4.6 * ncol, 4.0))
        schemes = [s for s in STORAGE_SCHEMES if any(r["scheme"] == s for r in drift)]
        for s in schemes:
            rs = sorted((r for r in drift if r["scheme"] == s), key=lambda r: r["step"])
            c, ls = _STYLE.get(s, (None, "-"))
            axes[0].semilogy([r["step"] for r in rs],
                             [max(r["orthogonality"], 1e-12) for r in rs], color=c, ls=ls,
                             label=f"scheme {s}")
            later = [r for r in rs if r["step"] > 0]  # step 0 is the exact eigenbasis
            axes[1].semilogy([r["step"] for r in later],
                             [max(r["quality"], 1e-12) for r in later], color=c, ls=ls)
        if drift:
            axes[0].axhline(drift[0]["floor"], color="gray", ls=":", lw=1.2,
                            label="one bf16 rounding (floor)")
        k = drift[0]["k"] if drift else (eq[0]["k"] if eq else "?")
        axes[0].set(xlabel="update step", ylabel=r"$\|Q^TQ - I\|_2$ (measured in fp64)",
                    title=f"loss of orthogonality (d={d}, k={k}, {policy})")
        axes[1].set(xlabel="update step", ylabel=_QUALITY + " (fp64)",
                    title="eigenbasis quality (lower is better)")
        if eq:
            for method, c in (("subspace", "tab:green"), ("full", "tab:orange"),
                              ("none", "gray")):
                rs = sorted((r for r in eq if r["method"] == method and r["step"] > 0),
                            key=lambda r: r["step"])
                if not rs:
                    continue
                lab = {"subspace": f"equal compute: k={rs[0]['k']} columns every step",
                       "full": f"equal compute: full qr(KQ) every {rs[0]['period']} steps",
                       "none": "equal compute: no refresh"}[method]
                axes[2].semilogy([r["step"] for r in rs],
                                 [max(r["quality"], 1e-12) for r in rs], color=c, ls="-",
                                 marker=".", label=lab)
            axes[2].set(xlabel="update step", ylabel=_QUALITY + " (fp64)",
                        title=f"equal compute ({eq_policy}), fp32 bases")
        for ax in axes:
            ax.grid(True, which="major", alpha=0.3)
            _log_ticks(ax, "y")
        handles, labels = [], []
        for ax in axes:
            h, lab = ax.get_legend_handles_labels()
            handles += h
            labels += lab
        fig.tight_layout(rect=(0, 0.14, 1, 1))
        fig.legend(handles, labels, loc="lower center", ncol=3, frameon=False,
                   bbox_to_anchor=(0.5, 0.0))
        path_out = path
        fig.savefig(path_out, dpi=dpi, bbox_inches="tight")
        plt.close(fig)
    return path_out
