"""The Python code blocks of the site's front pages run as written (docs/index.md,
docs/getting-started.md): each page's blocks in order, in one namespace, as a reader would paste
them. Their results are checked against independent references where they claim a value."""

from __future__ import annotations

import pathlib
import re

import numpy as np
import pytest

import linalg_pc as lpc

DOCS = pathlib.Path(__file__).resolve().parents[2] / "docs"
_BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def _blocks(page: str) -> list[str]:
    return _BLOCK.findall((DOCS / page).read_text(encoding="utf-8"))


@pytest.mark.parametrize("page", ["index.md", "getting-started.md"])
def test_code_blocks_run(page):
    blocks = _blocks(page)
    assert blocks, f"{page} has no python code block"
    ns: dict = {}
    for code in blocks:
        exec(compile(code, f"{page}", "exec"), ns)  # noqa: S102 - the page's own code
    if page == "index.md":
        # the bf16 QR's loss sits at the one-rounding floor of its 1000×64 Q (1.2·u·√(64/1000))
        floor = lpc.analysis.storage_floor(1000, 64, "bf16")
        assert 0.3 * floor <= float(lpc.orthogonality_loss(ns["Q"])) <= 3 * floor
        r = ns["A"].astype(np.float64)
        assert lpc.analysis.factorization_error(r, ns["Q"], ns["R"]) < 10 * 2.0**-8
    else:
        res = ns["res"]
        A, b = ns["A"].astype(np.float64), np.ones(64)
        assert res.converged
        ref = np.linalg.solve(A, b)
        assert np.linalg.norm(np.asarray(res.x, np.float64) - ref) <= 1e-4 * np.linalg.norm(ref)
