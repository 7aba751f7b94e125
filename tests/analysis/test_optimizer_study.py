"""The optimizer training study: its data, its target arithmetic, and ``linalg-pc study
optimizer --quick`` end to end (report, every figure, the JSON records, finite numbers, SOAP
fp32 lowers the validation loss). Skips cleanly where torch, scikit-learn, pytorch_optimizer or
matplotlib are missing; the default ``linalg-pc study`` needs none of them (checked in a fresh
interpreter)."""

from __future__ import annotations

import json
import math
import pathlib
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from linalg_pc.analysis import optimizer_study as ost
from linalg_pc.analysis.optim_data import stdlib_corpus
from linalg_pc.analysis.records import Records

# ----------------------------------------------------------------------------- data (no torch)


def test_stdlib_corpus_is_deterministic_and_split_by_file():
    a = stdlib_corpus(max_files=40)
    b = stdlib_corpus(max_files=40)
    info = a["info"]
    assert info["train_sha256"] == b["info"]["train_sha256"]
    assert np.array_equal(a["train"], b["train"]) and np.array_equal(a["val"], b["val"])
    assert not set(info["train_files"]) & set(info["val_files"])
    assert len(info["val_files"]) == 4  # files 9, 19, 29, 39 of the sorted 40
    names = sorted(info["train_files"] + info["val_files"])
    assert info["val_files"] == names[9::10]
    assert a["train"].dtype == np.uint8 and len(a["train"]) == info["train_bytes"]
    # the bytes are the files' own bytes, NUL-separated, in sorted order
    first = min(pathlib.Path(info["stdlib"]).glob("*.py"))
    assert a["train"][:16].tobytes() == first.read_bytes()[:16]


def test_stdlib_corpus_max_bytes_and_bad_input():
    c = stdlib_corpus(max_bytes=5000)
    assert len(c["train"]) == 5000 and len(c["val"]) == 5000
    with pytest.raises(ValueError, match="val_every"):
        stdlib_corpus(val_every=1)


def test_digits_split_and_standardization():
    pytest.importorskip("sklearn")
    from linalg_pc.analysis.optim_data import digits

    d = digits()
    assert len(d["y_train"]) + len(d["y_val"]) == 1797
    assert len(d["y_val"]) == round(0.2 * 1797)
    # standardized with the training statistics: training mean 0 per feature (fp32 rounding)
    assert np.abs(d["x_train"].mean(axis=0)).max() < 1e-5
    assert set(np.unique(d["y_train"])) == set(range(10))
    assert np.array_equal(d["x_val"], digits()["x_val"])  # the split does not move
    with pytest.raises(ValueError, match="val_fraction"):
        digits(val_fraction=1.0)


# ----------------------------------------------------------------------------- target arithmetic


def _row(opt, loss, sd, mib=1.0, task="t"):
    return {"task": task, "optimizer": opt, "final_loss": loss, "final_loss_sd": sd,
            "state_MiB": mib}


def test_targets_from_a_made_up_summary():
    summary = Records([_row(ost.SOAP32, 1.00, 0.01, 2.0), _row(ost.SOAP16, 1.20, 0.01, 1.0),
                       _row(ost.SOAP_SUB[0], 1.05, 0.01), _row(ost.SOAP_SUB[1], 1.15, 0.01),
                       _row(ost.SOAP_DRIFT, 1.19, 0.01),
                       _row(ost.KLSOAP_SUB, 0.90, 0.02), _row(ost.KLSHAMPOO32, 0.89, 0.02)])
    env = {"load_start": 1.0, "load_end": 1.0, "cpus": 2}
    timing = Records([{"optimizer": ost.SOAP16, "ms_refresh": 9.0},
                      {"optimizer": "SOAP bf16 sub project", "ms_refresh": 2.0},
                      {"optimizer": ost.SOAP32, "ratio": 1.2, "ratio_q1": 1.1, "ratio_q3": 1.3},
                      {"optimizer": ost.PEER}])
    tg = {r["target"]: r for r in ost.evaluate_targets(summary, timing, env)}
    assert tg["(1) SOAP bf16 worse than fp32"]["holds"] == "yes"
    # (1.20 - 1.05) / 0.20 = 0.75 of the gap closed; (1.20 - 1.15) / 0.20 = 0.25
    assert "0.75" in tg[f"(2) {ost.SOAP_SUB[0]} closes >= 1/2 of the gap"]["measured"]
    assert tg[f"(2) {ost.SOAP_SUB[0]} closes >= 1/2 of the gap"]["holds"] == "yes"
    assert tg[f"(2) {ost.SOAP_SUB[1]} closes >= 1/2 of the gap"]["holds"] == "no"
    assert tg["(3) KL-SOAP bf16 sub <= KL-Shampoo fp32 (within noise)"]["holds"] == "yes"
    assert tg["(5) state bytes SOAP bf16 / fp32 <= 0.55"]["holds"] == "yes"
    assert tg["(4) refresh time full / subspace k=d/8 >= 3 (same T, bf16)"]["holds"] == "yes"
    assert tg["(6) step time ours SOAP fp32 / pytorch_optimizer.SOAP <= 1.0"]["holds"] == "no"
    # no gap beyond the noise: target (2) is undefined, not passed
    summary[1]["final_loss"] = 1.005
    tg = {r["target"]: r for r in ost.evaluate_targets(summary, Records(), env)}
    assert tg["(1) SOAP bf16 worse than fp32"]["holds"] == "no"
    assert tg[f"(2) {ost.SOAP_SUB[0]} closes >= 1/2 of the gap"]["holds"] == "n/a"


def _run(task, opt, lr, seed, loss, best=False):
    return {"task": task, "optimizer": opt, "lr": lr, "seed": seed, "final_loss": loss,
            "best_loss": loss, "diverged": False, "state_bytes": 2**20, "best_lr": best,
            **{k: 1.0 for k in ("ms_fwd_bwd", "ms_step", "ms_factors", "ms_direction",
                                "ms_refresh", "ms_other")}}


def test_merge_results_joins_parts_and_recomputes_the_summary():
    env = {"torch_threads": 1, "load_start": 3.0, "load_end": 4.0, "cpus": 2, "T": 10,
           "lrs": [1e-3, 3e-3], "seeds": 2}
    a = {"runs": Records([_run("t", ost.SOAP32, 1e-3, 0, 2.0),
                          _run("t", ost.SOAP32, 3e-3, 0, 1.0, True),
                          _run("t", ost.SOAP32, 3e-3, 1, 1.2, True)]),
         "timing": Records(), "data": Records([{"task": "t"}]), "env": Records([env])}
    b = {"runs": Records([_run("t", ost.SOAP16, 3e-3, 0, 1.5, True),
                          _run("t", ost.SOAP16, 3e-3, 1, 1.5, True)]),
         "timing": Records([{"optimizer": ost.PEER}]), "data": Records([{"task": "t"}]),
         "env": Records([{**env, "load_start": 1.0, "load_end": 9.0}])}
    res = ost.merge_results([a, b])
    assert len(res["runs"]) == 5 and len(res["timing"]) == 1 and len(res["data"]) == 1
    (s32,) = [r for r in res["summary"] if r["optimizer"] == ost.SOAP32]
    assert s32["final_loss"] == pytest.approx(1.1) and s32["seeds"] == 2
    assert s32["final_loss_sd"] == pytest.approx(math.sqrt(0.02))  # sample sd of 1.0, 1.2
    assert s32["lr_at_edge"]  # the best lr is the sweep's largest
    assert res["env"][0]["load_start"] == 1.0 and res["env"][0]["load_end"] == 9.0
    assert [r["holds"] for r in res["targets"]
            if r["target"].startswith("(1)")] == ["yes"]  # gap 0.4 > noise 0.14
    with pytest.raises(ValueError, match="parts"):
        ost.merge_results([])


def test_bad_arguments_are_named():
    # checked before the study imports torch or scikit-learn
    with pytest.raises(ValueError, match="optimizers"):
        ost.optimizer_study(quick=True, optimizers=["Adam9"])
    with pytest.raises(ValueError, match="config"):
        ost.optimizer_study(quick=True, config={"lrs": ()})


# ----------------------------------------------------------------------------- without extras


def _fresh(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, timeout=300)


def test_default_study_needs_neither_torch_nor_sklearn():
    res = _fresh("""
        import sys
        from linalg_pc import cli
        from linalg_pc.analysis import registry, report
        assert "optimizer" in registry.STUDIES
        assert "optimizer" not in registry.resolve_names([])
        assert "optimizer" not in registry.resolve_names(["all"])  # opt-in: only when named
        print(sorted(m for m in ("torch", "sklearn", "pytorch_optimizer") if m in sys.modules))
    """)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "[]"


def test_missing_extra_skips_with_a_clear_message(tmp_path):
    res = _fresh(f"""
        import sys
        sys.modules["sklearn"] = None  # as if scikit-learn were not installed
        from linalg_pc import cli
        rc = cli.main(["study", "optimizer", "--quick", "--out", {str(tmp_path)!r},
                       "--no-progress"])
        print("rc", rc)
    """)
    assert res.returncode == 0, res.stderr
    assert "rc 0" in res.stdout
    assert "skipped" in res.stdout and "scikit-learn" in res.stdout
    assert "linalg_pc[study]" in (tmp_path / "report.md").read_text()


# ----------------------------------------------------------------------------- the quick study


@pytest.fixture(scope="module")
def quick_report(tmp_path_factory):
    for mod in ("torch", "sklearn", "pytorch_optimizer", "matplotlib"):
        pytest.importorskip(mod)
    from linalg_pc import cli

    out = tmp_path_factory.mktemp("optimizer-study")
    assert cli.main(["study", "optimizer", "--quick", "--out", str(out), "--no-progress"]) == 0
    return out


FIGURES = ("optimizer_loss_vs_step.png", "optimizer_loss_vs_time.png", "optimizer_memory.png",
           "optimizer_step_time.png")
TABLES = ("targets", "summary", "timing", "data", "data_files", "env", "runs", "curves")


def _finite_numbers(v, where):
    if isinstance(v, bool) or v is None or isinstance(v, str):
        return
    if isinstance(v, (int, float)):
        assert math.isfinite(v), where
    elif isinstance(v, dict):
        for k, w in v.items():
            _finite_numbers(w, f"{where}.{k}")
    elif isinstance(v, list):
        for i, w in enumerate(v):
            _finite_numbers(w, f"{where}[{i}]")


@pytest.mark.slow
def test_quick_writes_report_figures_and_json(quick_report):
    text = (quick_report / "report.md").read_text()
    assert "## Optimizers: bf16 storage and subspace basis updates in training" in text
    assert "target checks hold" in text
    for fig in FIGURES:
        assert (quick_report / fig).stat().st_size > 5000, fig
        assert f"![{fig}]({fig})" in text
    for t in TABLES:
        json.loads((quick_report / f"optimizer_{t}.json").read_text())


@pytest.mark.slow
def test_quick_numbers_are_finite_and_every_optimizer_ran(quick_report):
    from linalg_pc.analysis.optim_specs import OPTIMIZERS

    runs = json.loads((quick_report / "optimizer_curves.json").read_text())
    assert {(r["task"], r["optimizer"]) for r in runs} == {
        (t, n) for t in ("digits", "charlm") for n in OPTIMIZERS}
    for r in runs:
        assert not r["diverged"], r["optimizer"]
        _finite_numbers(r, f"{r['task']}/{r['optimizer']}")
        assert r["state_bytes"] > 0
    for t in ("summary", "timing", "targets"):
        _finite_numbers(json.loads((quick_report / f"optimizer_{t}.json").read_text()), t)


@pytest.mark.slow
def test_quick_soap_fp32_lowers_the_validation_loss(quick_report):
    runs = json.loads((quick_report / "optimizer_curves.json").read_text())
    for task in ("digits", "charlm"):
        (r,) = [r for r in runs if r["task"] == task and r["optimizer"] == ost.SOAP32]
        first, last = r["curve"][0][2], r["curve"][-1][2]
        assert last < first, (task, r["curve"])
        # the peer, from the same seed and batches, follows it (same algorithm, fp32 rounding)
        (p,) = [p for p in runs if p["task"] == task and p["optimizer"] == ost.PEER]
        assert p["curve"][-1][2] == pytest.approx(last, rel=1e-3)


# ----------------------------------------------------------------------------- the docs example

DOC = pathlib.Path(__file__).resolve().parents[2] / "docs" / "optimizers.md"


@pytest.mark.slow
def test_docs_example_trains_with_bf16_subspace_soap(capsys):
    torch = pytest.importorskip("torch")
    import re

    block = next(b for b in re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S)
                 if "from linalg_pc.integrations.torch import SOAP" in b)
    ns: dict = {}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny products: a second thread only waits on a shared machine
    try:
        exec(block, ns)  # noqa: S102 - the documented example, verbatim
    finally:
        torch.set_num_threads(threads)
    model, x, y, state = ns["model"], ns["x"], ns["y"], ns["state"]
    with torch.no_grad():
        final = float(torch.nn.functional.cross_entropy(model(x), y))
    # from ≈ log 4 (chance) at initialization; the argmax of 4 inputs is learnable
    assert final < 0.7 * math.log(4)
    assert state.formats["basis"] == "bf16" and state.formats["factors"] == "bf16"
    assert str(state.nbytes) in capsys.readouterr().out
