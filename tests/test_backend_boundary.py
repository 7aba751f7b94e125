"""Only the backend layer knows which array library it holds.

Every module outside ``linalg_pc/_backend/`` and ``linalg_pc/_kernels/`` is parsed with
:mod:`ast` and must not test the library of an array (``is_numpy``, ``is_torch``, ``is_cupy``,
``is_strict``, or ``namespace_name(...)`` compared with a library's name) nor import PyTorch or
CuPy (except the modules of :data:`ALLOWED_IMPORTS`; ``integrations/torch.py``, PyTorch's
``torch.optim`` adapter, and its data-parallel mode ``integrations/_torch_distributed.py`` are by
design the only ones built on PyTorch): it computes with the
array-API namespace of its inputs and asks the backend for a capability (a delegate,
``host_blas``, ``cpu_solver_kernels``) instead.
"""

from __future__ import annotations

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1] / "linalg_pc"
BACKEND = ("_backend", "_kernels")
LIBRARY_TESTS = {"is_numpy", "is_torch", "is_cupy", "is_strict"}
LIBRARY_NAMES = {"numpy", "torch", "cupy", "array_api_strict", "dask"}
LIBRARY_MODULES = {"torch", "cupy", "cupyx"}
#: modules allowed to import a library for a reason other than choosing a code path
ALLOWED_IMPORTS = {
    "cli.py": "`linalg-pc info` reports the installed versions of PyTorch and CuPy",
    "integrations/torch.py": "the torch.optim adapter subclasses torch.optim.Optimizer: by "
                             "design the only module outside the backend built on PyTorch",
    "integrations/_torch_distributed.py": "the adapter's data-parallel mode: the collectives "
                                          "of torch.distributed",
    "analysis/optim_models.py": "the optimizer study's models and batches are PyTorch modules "
                                "and tensors (imported only when that study runs)",
    "analysis/optim_runs.py": "the optimizer study's training loop drives torch.optim "
                              "optimizers (imported only when that study runs)",
}


def _modules():
    for path in sorted(ROOT.rglob("*.py")):
        rel = path.relative_to(ROOT)
        if rel.parts[0] not in BACKEND:
            yield rel


def violations(tree: ast.AST, rel: str) -> list[str]:
    """Library tests and library imports in one parsed module, as readable lines."""
    bad = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Name | ast.Attribute):
            name = node.id if isinstance(node, ast.Name) else node.attr
            if name in LIBRARY_TESTS:
                bad.append(f"{rel}:{node.lineno}: {name}")
        elif isinstance(node, ast.Compare):
            parts = [node.left, *node.comparators]
            calls = [p for p in parts if isinstance(p, ast.Call)
                     and getattr(p.func, "attr", getattr(p.func, "id", "")) == "namespace_name"]
            names = [p for p in parts if isinstance(p, ast.Constant) and p.value in LIBRARY_NAMES]
            if calls and names:
                bad.append(f"{rel}:{node.lineno}: namespace_name(...) compared with "
                           f"{names[0].value!r}")
        elif isinstance(node, ast.Import | ast.ImportFrom) and rel not in ALLOWED_IMPORTS:
            mods = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""]
            for m in mods:
                if m.split(".")[0] in LIBRARY_MODULES and not getattr(node, "level", 0):
                    bad.append(f"{rel}:{node.lineno}: imports {m}")
    return bad


@pytest.mark.parametrize("rel", [str(r) for r in _modules()])
def test_no_library_branch_outside_the_backend(rel):
    tree = ast.parse((ROOT / rel).read_text(encoding="utf-8"))
    assert not violations(tree, rel)


def test_the_check_catches_each_kind():
    code = ("import torch\n"
            "from cupyx.scipy import linalg\n"
            "def f(xp, x):\n"
            "    if B.is_numpy(xp):\n"
            "        return 1\n"
            "    if B.namespace_name(xp) == 'torch':\n"
            "        return 2\n")
    found = violations(ast.parse(code), "made_up.py")
    assert len(found) == 4, found
