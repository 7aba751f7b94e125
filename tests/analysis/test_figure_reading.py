"""What the figures and the report promise a reader (docs/error-analysis.md, "Reading the
figures"): the QR study's bounds at the stored κ, shared bounds drawn once, at least three
labelled ticks per log axis without crowding, the public figure helpers, and the sentence that
explains a full refresh winning at equal compute."""

from __future__ import annotations

import pytest

import linalg_pc as lpc
from linalg_pc.analysis import plots
from linalg_pc.analysis.basis_study import interpret_basis
from linalg_pc.analysis.qr_study import qr_study, study_bound

PUBLIC = ("plot_qr_orthogonality", "plot_rounding_floor", "plot_drift", "plot_basis_drift",
          "storage_floor", "floor_prediction", "qr_kappa_limit")


def test_helpers_are_public_and_documented():
    for name in PUBLIC:
        assert name in lpc.analysis.__all__
        obj = getattr(lpc.analysis, name)
        assert "Returns" in obj.__doc__, name


@pytest.fixture(scope="module")
def bf16_records():
    return qr_study(methods=("householder", "cholqr2", "mgs", "cholqr"), kappas=(1e0, 1e6),
                    formats=("bf16",), shape=(60, 6), trials=1, rng=5)


def test_qr_study_bound_is_at_the_stored_kappa(bf16_records):
    far = [r for r in bf16_records if r["kappa"] == 1e6]
    assert far and all(r["kappa_stored"] < 1e-2 * r["kappa"] for r in far)  # bf16 rounding
    for r in bf16_records:
        assert r["bound"] == study_bound(r["method"], r["m"], r["n"], r["kappa_stored"],
                                         r["format"])


def test_coinciding_bounds_form_one_group():
    def row(method, kappa, bound, breakdown=False):
        return {"method": method, "kappa": kappa, "kappa_stored": kappa, "bound": bound,
                "breakdown": breakdown}

    rows = [row(m, k, 1e-5) for m in ("householder", "cgs2") for k in (1, 1e3, 1e6)]
    rows += [row("cholqr2", 1, 1e-5), row("cholqr2", 1e3, 1e-5), row("cholqr2", 1e6, 1, True)]
    rows += [row("mgs", k, max(1e-5, 4 * 6e-8 * k)) for k in (1, 1e3, 1e6)]
    groups = plots._bound_groups(rows, ["householder", "cgs2", "cholqr2", "mgs"])
    members = sorted(sorted(g[0]) for g in groups)
    # CholQR2's curve stops at its breakdown and follows the shared one until then
    assert members == [["cgs2", "cholqr2", "householder"], ["mgs"]]
    shared = next(g for g in groups if len(g[0]) == 3)
    assert shared[1] == [1, 1e3, 1e6]  # drawn over the longest member's range


@pytest.mark.parametrize(("lo", "hi"), [(0.08, 0.19), (0.04, 0.32), (5e-4, 8e-2),
                                        (1e-7, 10.0), (1.0, 1e7), (0.0046, 0.0049)])
def test_log_axes_get_three_to_nine_labels(lo, hi):
    plt = plots._plt()
    fig, ax = plt.subplots()
    ax.semilogy([0, 1], [lo, hi])
    plots._log_ticks(ax, "y")
    y0, y1 = ax.get_ylim()
    ticks = [t for t in ax.get_yticks() if y0 <= t <= y1]
    labels = [ax.yaxis.get_major_formatter()(t) for t in ticks]
    plt.close(fig)
    assert 3 <= len(ticks) <= 9, ticks
    assert all(labels) and len(set(labels)) == len(labels), labels


def test_figures_write_pngs(bf16_records, tmp_path):
    p = lpc.analysis.plot_qr_orthogonality(bf16_records, tmp_path / "qr.png")
    assert p.read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(ValueError, match="recs"):
        lpc.analysis.plot_qr_orthogonality(bf16_records, tmp_path / "x.png", fmt="fp16")


def _eq(d, period, q_sub, q_full, t_sub, t_full):
    rows = []
    for step in (0, 1, 2):
        for method, q in (("subspace", q_sub), ("full", q_full), ("none", 0.3)):
            rows.append({"study": "equal-compute", "d": d, "k": d // 8, "step": step,
                         "method": method, "policy": "topk-cyclic", "period": period,
                         "quality": q, "seconds": 0.0, "t_subspace": t_sub, "t_full": t_full})
    return rows


def test_report_explains_full_refresh_winning_at_small_d():
    text = interpret_basis(_eq(64, 2, 0.08, 0.03, 1e-4, 1.5e-4))
    assert "why:" in text and "1.5× a subspace step" in text and "every 2 steps" in text
    assert "why:" not in interpret_basis(_eq(256, 12, 0.03, 0.08, 1e-4, 1.2e-3))
