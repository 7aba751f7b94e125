"""Every docstring example of the package runs and prints what it shows.

The examples are collected from every module of ``linalg_pc`` (the public API and the modules it
re-exports) and run with ``ELLIPSIS`` and ``NORMALIZE_WHITESPACE``, and with floats compared as
far as the example writes them (pytest's ``NUMBER`` option: ``0.0039`` matches any value that
rounds to it), so outputs are tolerant of last digits. Outputs use fixed seeds. A module whose
optional dependency is missing here (CuPy without a GPU) is skipped, with the reason.
"""

from __future__ import annotations

import doctest
import importlib
import pkgutil
import re

import numpy as np
import pytest

import linalg_pc

OPTIONS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE

_FLOAT = re.compile(r"(?<![\w.])[-+]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?(?![\w.])")


class NumberChecker(doctest.OutputChecker):
    """Floats in the output match those of the example as far as the example writes them."""

    def check_output(self, want, got, optionflags):
        if super().check_output(want, got, optionflags):
            return True
        wants, gots = list(_FLOAT.finditer(want)), list(_FLOAT.finditer(got))
        if not wants or len(wants) != len(gots):
            return False
        out, pos = [], 0
        for w, g in zip(wants, gots):
            text = w.group()
            mant = text.split("e")[0].split("E")[0]
            places = len(mant.split(".")[1]) if "." in mant else 0
            exp = int(re.split("[eE]", text)[1]) if re.search("[eE]", text) else 0
            tol = 0.5 * 10.0 ** (exp - places)
            if abs(float(g.group()) - float(text)) <= tol * (1 + 1e-12):
                out += [got[pos:g.start()], text]
            else:
                out += [got[pos:g.end()]]
            pos = g.end()
        out.append(got[pos:])
        return super().check_output(want, "".join(out), optionflags)


def _module_names() -> list[str]:
    names = ["linalg_pc"]
    names += [m.name for m in pkgutil.walk_packages(linalg_pc.__path__, "linalg_pc.")]
    return sorted(names)


def _examples(module) -> list[doctest.DocTest]:
    tests = doctest.DocTestFinder(exclude_empty=True).find(module, module.__name__)
    return [t for t in tests if t.examples]


def _collect() -> list[str]:
    """Modules with examples, and those that cannot be imported here (reported as skips)."""
    out = []
    for name in _module_names():
        try:
            mod = importlib.import_module(name)
        except ImportError:
            out.append(name)
            continue
        if _examples(mod):
            out.append(name)
    return out


MODULES = _collect()


def test_modules_with_examples_cover_the_public_api():
    """The collection finds the examples: most public subpackages' modules carry some."""
    with_examples = set()
    for name in MODULES:
        try:
            importlib.import_module(name)
        except ImportError:
            continue
        with_examples.add(name.split(".")[1] if "." in name else name)
    for sub in ("qr_methods", "basis", "solvers", "precond", "analysis", "precision"):
        assert sub in with_examples, f"no docstring example found under linalg_pc.{sub}"


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    try:
        mod = importlib.import_module(name)
    except ImportError as exc:  # an optional library (CuPy) that is not installed here
        pytest.skip(f"{name} needs a library missing here: {exc}")
    tests = _examples(mod)
    runner = doctest.DocTestRunner(checker=NumberChecker(), optionflags=OPTIONS)
    report: list[str] = []
    for t in tests:
        t.globs.setdefault("np", np)
        t.globs.setdefault("lpc", linalg_pc)
        runner.run(t, out=report.append)
    results = runner.summarize(verbose=False)
    assert results.failed == 0, "".join(report)


@pytest.mark.parametrize(("want", "got", "ok"), [
    ("0.0039\n", "0.00390625\n", True),
    ("0.0039\n", "0.0041\n", False),
    ("[1.0, 2.5]\n", "[1.0000001, 2.4999]\n", True),
    ("1.2e-03\n", "0.00124\n", True),
    ("1.2e-03\n", "0.0013\n", False),
    ("3\n", "4\n", False),
])
def test_number_checker(want, got, ok):
    assert NumberChecker().check_output(want, got, OPTIONS) is ok
