"""The examples of docs/precond.md and of the precond docstrings run and do what they say."""

from __future__ import annotations

import doctest
import importlib
import pathlib
import re

import numpy as np
import pytest

# the package exports functions named like their modules: import the modules themselves
soap_module = importlib.import_module("linalg_pc.precond.soap")
grouping = importlib.import_module("linalg_pc.precond.grouping")

DOC = pathlib.Path(__file__).resolve().parents[2] / "docs" / "precond.md"


@pytest.mark.parametrize("module", [soap_module, grouping], ids=lambda m: m.__name__)
def test_docstring_examples(module):
    res = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert res.attempted > 0
    assert res.failed == 0


def _blocks():
    return re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S)


def test_numpy_loop_example_reduces_the_loss():
    block = next(b for b in _blocks() if "np.random.default_rng" in b)
    ns: dict = {}
    exec(block, ns)  # noqa: S102 - the documented example, verbatim
    A, B, W = ns["A"], ns["B"], ns["W"]
    assert np.all(np.isfinite(W))
    loss0 = np.linalg.norm(B) ** 2
    assert np.linalg.norm(A @ W - B) ** 2 < 0.9 * loss0


def test_torch_loop_example_runs():
    torch = pytest.importorskip("torch")
    block = next(b for b in _blocks() if "torch.nn.Linear" in b)
    torch.manual_seed(0)
    ns: dict = {}
    exec(block, ns)  # noqa: S102 - the documented example, verbatim
    model, x, y = ns["model"], ns["x"], ns["y"]
    torch.manual_seed(0)
    model0 = torch.nn.Linear(64, 32)  # the example's initial model (same seed, same draws)
    assert all(bool(torch.isfinite(p).all()) for p in model.parameters())
    assert ns["state"].nbytes > 0
    with torch.no_grad():
        mse = torch.nn.functional.mse_loss
        assert float(mse(model(x), y)) < float(mse(model0(x), y))
