"""Bad input to the analysis helpers: a clear error naming the argument, before any work
(issue 12, validation gaps); and records holding arrays serialize to JSON."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from linalg_pc.analysis import DriftingFactor, Records, qr_bound

NAN = float("nan")


# ----------------------------------------------------------------------------- DriftingFactor
@pytest.mark.parametrize("kw,name", [
    ({"d": 0}, "d"), ({"d": -3}, "d"), ({"d": 2.5}, "d"), ({"d": NAN}, "d"), ({"d": "8"}, "d"),
    ({"d": 8, "rank": 0}, "rank"), ({"d": 8, "rank": 9}, "rank"),
    ({"d": 8, "n": 0}, "n"), ({"d": 8, "beta": 1.0}, "beta"), ({"d": 8, "beta": -0.1}, "beta"),
    ({"d": 8, "beta": NAN}, "beta"), ({"d": 8, "angle": NAN}, "angle"),
    ({"d": 8, "angle": math.inf}, "angle"), ({"d": 8, "noise": -1.0}, "noise"),
    ({"d": 8, "noise": NAN}, "noise"), ({"d": 8, "warmup": -1}, "warmup"),
])
def test_drifting_factor_refuses_bad_arguments(kw, name):
    kw = dict(kw)
    d = kw.pop("d")
    with pytest.raises((ValueError, TypeError), match=rf"\b{name}\b"):
        DriftingFactor(d, **kw)


def test_drifting_factor_small_orders_still_work():
    for d in (1, 2, 3):
        K = DriftingFactor(d, rng=0).K
        assert K.shape == (d, d) and np.all(np.isfinite(K))
        np.testing.assert_array_equal(K, K.T)
    fac = DriftingFactor(16, rank=1, n=1, beta=0.0, angle=0.0, noise=0.0, warmup=0, rng=1)
    assert not fac.K.any()  # no warm-up: K_0 = 0
    assert np.linalg.matrix_rank(fac.step()) == 1  # fp32 K: rank tolerance of fp32


# ----------------------------------------------------------------------------- Records.to_json
def test_records_to_json_serializes_arrays_as_lists():
    r = Records([{"a": np.arange(3.0), "m": np.array([[1, 2], [3, 4]], np.int32),
                  "c": np.array([1.0, np.inf, NAN], np.float32), "z": np.float32(NAN),
                  "e": np.zeros((0,)), "s": np.array(2.5)}])
    out = json.loads(r.to_json())
    assert out == [{"a": [0.0, 1.0, 2.0], "m": [[1, 2], [3, 4]], "c": [1.0, "inf", "nan"],
                    "z": "nan", "e": [], "s": 2.5}]


def test_records_to_json_nested_and_writes_path(tmp_path):
    r = Records([{"t": (np.float64(1.5), [np.int64(2), math.inf]), "d": {"k": np.ones(2)}}])
    text = r.to_json(tmp_path / "r.json")
    assert json.loads((tmp_path / "r.json").read_text()) == json.loads(text)
    assert json.loads(text) == [{"t": [1.5, [2, "inf"]], "d": {"k": [1.0, 1.0]}}]


def test_records_to_json_refuses_unserializable_values_naming_the_field():
    with pytest.raises(TypeError, match=r"'obj'"):
        Records([{"obj": object()}]).to_json()


# ----------------------------------------------------------------------------- qr_bound
@pytest.mark.parametrize("kappa", [0.5, 0.0, -2.0, NAN, "big"])
def test_qr_bound_refuses_kappa_below_one_or_nan(kappa):
    with pytest.raises((ValueError, TypeError), match=r"\bkappa\b"):
        qr_bound("cholqr", 100, 10, kappa, "fp32")


@pytest.mark.parametrize("m,n,name", [(-1, 10, "m"), (10, -1, "n"), (NAN, 10, "m"),
                                      (10, math.inf, "n"), (10.5, 3, "m")])
def test_qr_bound_refuses_negative_or_non_integer_sizes(m, n, name):
    with pytest.raises((ValueError, TypeError), match=rf"\b{name}\b"):
        qr_bound("householder", m, n, 1.0, "fp32")


def test_qr_bound_accepts_the_edges():
    assert qr_bound("cholqr", 100, 10, 1.0, "fp32") > 0
    assert qr_bound("cholqr", 100, 10, math.inf, "fp32") == math.inf
    assert qr_bound("cholqr", 100, 10, None, "fp32") == math.inf
    assert qr_bound("householder", 0, 0, 1.0, "fp32") > 0  # empty: the k = 1 bound, as before
    assert qr_bound("householder", np.int64(50), 10.0, np.float32(3.0), "fp32") > 0


def test_records_to_json_keeps_a_json_default():
    assert json.loads(Records([{"obj": {1, 2}}]).to_json(default=sorted)) == [{"obj": [1, 2]}]


def test_qr_bound_takes_zero_dimensional_arrays():
    b = qr_bound("cholqr", np.array(100), 10, np.array(1e3), "fp32")
    assert b == qr_bound("cholqr", 100, 10, 1e3, "fp32")
