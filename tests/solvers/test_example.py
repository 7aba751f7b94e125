"""The ICP corridor example runs and flags the along-corridor axis."""

from __future__ import annotations

import importlib.util
import pathlib

import numpy as np

import linalg_pc as lpc

EXAMPLE = pathlib.Path(__file__).resolve().parents[2] / "examples" / "icp_corridor.py"


def _load():
    spec = importlib.util.spec_from_file_location("icp_corridor", EXAMPLE)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_corridor_flags_x_only():
    mod = _load()
    rng = np.random.default_rng(7)
    P, N = mod.corridor_scan(rng)
    H, g = mod.icp_system(P, N, rng, np.array([0.01, -0.02, 0.015, 0.3, -0.05, 0.02]))
    rep = lpc.block_degeneracy(H)
    assert rep.flagged_axes() == ("x",)
    x, _, res = lpc.solve_degenerate(H, g)
    assert res.status == "converged"
    assert np.allclose(x, np.linalg.solve(H, g), rtol=1e-8)


def test_example_main_runs(capsys):
    _load().main()
    out = capsys.readouterr().out
    assert "flagged axes: ('x',)" in out
