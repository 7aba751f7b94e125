"""The precision study reproduces its facts (module docstring; sources in docs/references.md),
and the CLI/report around it."""

from __future__ import annotations

import json

import pytest

from linalg_pc import cli
from linalg_pc.analysis.precision_study import (
    LAMBDA_PROB,
    gamma,
    precision_study,
    rounding_error_records,
    summation_records,
)
from linalg_pc.analysis.records import Records


def test_rounding_errors_within_bounds_and_unbiased():
    recs = rounding_error_records(samples=40_000, rng=3)
    assert {r["format"] for r in recs} == {"bf16", "fp16", "tf32", "fp32"}
    for r in recs:
        assert r["within_bound"], r
        if r["mode"] == "nearest":
            assert 0.9 < r["max_rel_err/u"] <= 1.0
            assert abs(r["bias/u"]) <= 4 * r["bias_se/u"]
        elif r["mode"] == "stochastic":
            assert abs(r["bias/u"]) <= 4 * r["bias_se/u"]  # unbiased
            assert r["max_rel_err/u"] < 2.0
        else:  # toward zero: biased by about -(ln 2)·u·... well below zero
            assert r["bias/u"] < -0.5


def test_summation_stagnates_in_bf16_only():
    recs = summation_records((100, 1000, 10_000), trials=2, rng=1)
    by_n = {r["n"]: r for r in recs}
    assert by_n[1000]["sum_of_ones_bf16"] == 256.0  # 256 + 1 rounds back to 256 (ties to even)
    assert by_n[10_000]["bf16_nearest_rel_err"] > 0.5  # stagnation
    for r in recs:
        assert r["bf16_stochastic_rel_err"] <= r["bf16_prob_bound"]
        assert r["fp32_rel_err"] <= r["fp32_prob_bound"]
    assert gamma(10, 0.01) == pytest.approx(0.1 / 0.9)
    assert gamma(300, 2**-8) == float("inf")
    assert LAMBDA_PROB > 0


def test_records_exports(tmp_path):
    r = Records([{"a": 1, "b": 0.5}, {"a": 2, "b": float("inf"), "c": True}], title="t")
    md = r.to_markdown()
    assert md.splitlines()[0] == "| a | b | c |" and "inf" in md and "yes" in md
    r.to_json(tmp_path / "r.json")
    back = json.loads((tmp_path / "r.json").read_text())
    assert back[1]["b"] == "inf" and back[0]["a"] == 1
    assert len(r.where(a=2)) == 1


def test_cli_study_precision_writes_report(tmp_path, capsys):
    rc = cli.main(["study", "precision", "--quick", "--out", str(tmp_path), "--seed", "5",
                   "--no-progress"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "Round to nearest stayed within u" in out
    report = (tmp_path / "report.md").read_text()
    assert "## Number formats" in report and "| format | mode |" in report
    recs = json.loads((tmp_path / "precision_rounding.json").read_text())
    assert all(r["within_bound"] for r in recs)


def test_cli_bad_study_name_and_info(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["study", "nonsense"])
    assert e.value.code == 2
    assert "unknown study" in capsys.readouterr().err
    assert cli.main(["info"]) == 0
    out = capsys.readouterr().out
    assert "numpy" in out and "backends:" in out and "GPU:" in out


def test_precision_study_seeded_reproducible():
    a = precision_study(quick=True, rng=11)
    b = precision_study(quick=True, rng=11)
    assert a["summation"] == b["summation"]
