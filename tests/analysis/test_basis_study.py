"""The drifting-factor study: records, equal-compute comparison, summary and figure."""

from __future__ import annotations

import importlib

import numpy as np
import pytest

import linalg_pc as lpc
from linalg_pc.analysis.basis_study import (
    DriftingFactor,
    basis_study,
    interpret_basis,
    summarize_basis,
)
from linalg_pc.analysis.records import Records


def test_drifting_factor_is_spd_and_drifts():
    fac = DriftingFactor(32, rng=0)
    K0 = fac.K.copy()
    assert K0.dtype == np.float32
    np.testing.assert_array_equal(K0, K0.T)
    assert np.linalg.eigvalsh(K0.astype(np.float64)).min() > 0
    np.testing.assert_allclose(fac.R.T @ fac.R, np.eye(32), atol=1e-13)
    for _ in range(50):
        K = fac.step()
    w, V = np.linalg.eigh(K0.astype(np.float64))
    assert lpc.eigenbasis_quality(K, V) > lpc.eigenbasis_quality(K0, V) + 1e-3
    # deterministic given the seed
    np.testing.assert_array_equal(DriftingFactor(32, rng=0).K, K0)


def test_drift_study_records():
    recs = lpc.basis_drift_study(32, 4, 12, policies=("cyclic", "topk-cyclic"),
                                 record_every=6)
    keys = {"study", "d", "k", "step", "scheme", "policy", "orthogonality", "quality",
            "update_s", "select_s", "nbytes", "fp32_nbytes", "floor", "rebases"}
    assert all(keys <= set(r) for r in recs)
    assert isinstance(recs, Records) and recs.title
    assert len(recs) == 2 * 5 * 3  # policies × schemes × recorded steps (0, 6, 12)
    for r in recs:
        if r["scheme"] != "fp32":
            assert r["nbytes"] <= 0.5 * r["fp32_nbytes"] + 4 * r["d"] * r["k"]
        assert np.isfinite(r["orthogonality"]) and 0 <= r["quality"] < 1
    rows = summarize_basis(recs)
    assert isinstance(rows, Records)
    assert {r["scheme"] for r in rows} == set(lpc.STORAGE_SCHEMES)
    assert "one-rounding floor" in interpret_basis(recs)


def test_equal_compute_records():
    recs = lpc.equal_compute_study(32, 4, 10, record_every=5, period=3)
    assert isinstance(recs, Records)
    assert {r["method"] for r in recs} == {"subspace", "full", "none"}
    assert all(r["period"] == 3 for r in recs)
    rows = summarize_basis(recs)
    assert rows[0]["study"] == "equal-compute" and rows[0]["period"] == 3
    # a refreshed basis beats the stale one on a drifting factor
    assert rows[0]["quality_full"] < rows[0]["quality_none"]


def test_plot(tmp_path):
    pytest.importorskip("matplotlib")
    recs = (lpc.basis_drift_study(32, 4, 8, policies=("cyclic",), record_every=4)
            + lpc.equal_compute_study(32, 4, 8, record_every=4, period=2))
    path = lpc.plot_basis_drift(recs, tmp_path / "basis.png")
    data = (tmp_path / "basis.png").read_bytes()
    assert path == tmp_path / "basis.png" and data[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="no study results"):
        lpc.plot_basis_drift([], tmp_path / "x.png")


def test_public_names_and_records(monkeypatch):
    """The study is exported from linalg_pc.analysis and the flat namespace, returns Records."""
    import linalg_pc.analysis as analysis

    for name in ("basis_drift_study", "equal_compute_study", "basis_study", "DriftingFactor",
                 "plot_basis_drift"):
        assert getattr(lpc, name) is getattr(analysis, name)
        assert name in lpc.__all__
    # the module itself: the attribute linalg_pc.analysis.basis_study is the function
    mod = importlib.import_module("linalg_pc.analysis.basis_study")
    monkeypatch.setattr(mod, "QUICK", {"d": 16, "k": 2, "steps": 4, "record_every": 2})
    recs = basis_study(quick=True, rng=3)
    assert isinstance(recs, Records) and recs.title
    assert {r["study"] for r in recs} == {"drift", "equal-compute"}
    assert recs.to_json()  # JSON-serializable rows
