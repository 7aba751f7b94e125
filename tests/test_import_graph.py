"""The package's import graph is a DAG by layers.

Every module of linalg_pc is parsed with :mod:`ast` (nothing is imported), every intra-package
import is collected (absolute and relative, at module level and inside functions), and the test
asserts that

- every module belongs to a layer of :data:`LAYERS` (a new top-level module must be placed);
- no module imports a module of a higher layer (``linalg_pc/__init__.py`` is the top);
- the graph has no cycle: neither between modules of one layer nor through a package's
  ``__init__`` (importing ``a.b.c`` first runs ``a/b/__init__.py``, an edge the graph counts).

Layers, bottom to top (a module may import its own layer and those below it)::

    base        _formats, _buffers, _version: import nothing of the package
    backend     _backend, _kernels: the only library-specific code
    core        precision, _policy, _operators: formats, conversion, the precision policy
    algorithms  qr_methods, basis, solvers, precond, distributed
    integrations  adapters of the algorithms to a framework (torch.optim): above the algorithms
                they adapt, below the analysis, whose studies may drive them
    analysis    metrics, matrices, bounds, the studies, the report
    cli         the ``linalg-pc`` command
    top         linalg_pc/__init__.py, the flat public API
"""

from __future__ import annotations

import ast
import pathlib

import pytest

PACKAGE = "linalg_pc"
ROOT = pathlib.Path(__file__).resolve().parents[1] / PACKAGE

#: (layer name, module prefixes); a module's layer is that of its longest matching prefix.
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("base", ("linalg_pc._formats", "linalg_pc._buffers", "linalg_pc._version")),
    ("backend", ("linalg_pc._backend", "linalg_pc._kernels")),
    ("core", ("linalg_pc.precision", "linalg_pc._policy", "linalg_pc._operators")),
    ("algorithms", ("linalg_pc.qr_methods", "linalg_pc.basis", "linalg_pc.solvers",
                    "linalg_pc.precond", "linalg_pc.distributed")),
    ("integrations", ("linalg_pc.integrations",)),
    ("analysis", ("linalg_pc.analysis",)),
    ("cli", ("linalg_pc.cli",)),
)
TOP = PACKAGE

#: Upward imports tolerated for now, as (importer, imported): each entry needs a comment saying
#: why and who removes it. Empty: there are none.
ALLOWED_UPWARD: frozenset[tuple[str, str]] = frozenset()

#: Import cycles tolerated for now, each as the frozenset of its modules, with a comment.
#: Empty: there are none.
ALLOWED_CYCLES: frozenset[frozenset[str]] = frozenset()


# --------------------------------------------------------------------------- the graph


def find_modules(root: pathlib.Path, package: str) -> dict[str, tuple[pathlib.Path, bool]]:
    """Dotted module name -> (file, is a package ``__init__``), for every .py under ``root``."""
    mods = {}
    for path in sorted(root.rglob("*.py")):
        parts = [package, *path.relative_to(root).with_suffix("").parts]
        is_pkg = parts[-1] == "__init__"
        if is_pkg:
            parts = parts[:-1]
        mods[".".join(parts)] = (path, is_pkg)
    return mods


def _owning_module(name: str, mods) -> str | None:
    """The module a dotted name lives in: itself, or its longest prefix that is a module."""
    while name and name not in mods:
        name = name.rpartition(".")[0]
    return name or None


def module_imports(module: str, mods, package: str) -> dict[str, int]:
    """Intra-package modules that ``module`` imports explicitly -> first line number."""
    path, is_pkg = mods[module]
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    here = module if is_pkg else module.rpartition(".")[0]
    found: dict[str, int] = {}

    def add(name: str | None, line: int) -> None:
        if name is not None and name != module:
            found.setdefault(name, line)

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == package or alias.name.startswith(package + "."):
                    add(_owning_module(alias.name, mods), node.lineno)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here.split(".")
                if node.level - 1 >= len(base):
                    raise AssertionError(f"{module}:{node.lineno}: relative import above "
                                         f"the package")
                base = base[: len(base) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
                if not (source == package or source.startswith(package + ".")):
                    continue
            for alias in node.names:
                sub = f"{source}.{alias.name}"
                add(sub if sub in mods else _owning_module(source, mods), node.lineno)
    return found


def _ancestors(module: str) -> list[str]:
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def import_graph(root: pathlib.Path = ROOT, package: str = PACKAGE
                 ) -> tuple[dict[str, dict[str, int]], dict[str, set[str]]]:
    """(explicit imports with line numbers, full edges) of every module.

    The full edges add, for an import of ``a.b.c``, the packages ``a.b`` that Python runs first,
    except the importer's own ancestors (already being imported when it runs).
    """
    mods = find_modules(root, package)
    explicit = {m: module_imports(m, mods, package) for m in mods}
    edges: dict[str, set[str]] = {}
    for m, targets in explicit.items():
        own = set(_ancestors(m))
        out = set(targets)
        for t in targets:
            out.update(a for a in _ancestors(t) if a not in own and a in mods)
        out.discard(m)
        edges[m] = out
    return explicit, edges


def layer_of(module: str, layers=LAYERS, top: str = TOP) -> int | None:
    """Index of the module's layer in ``layers`` (``len(layers)`` for the top)."""
    if module == top:
        return len(layers)
    best, best_len = None, -1
    for i, (_, prefixes) in enumerate(layers):
        for p in prefixes:
            if (module == p or module.startswith(p + ".")) and len(p) > best_len:
                best, best_len = i, len(p)
    return best


def upward_imports(explicit: dict[str, dict[str, int]], layers=LAYERS, top: str = TOP,
                   allowed=ALLOWED_UPWARD) -> list[str]:
    """Every import of a module of a higher layer, as a readable line."""
    def name(i: int) -> str:
        return "top" if i == len(layers) else layers[i][0]

    bad = []
    for m, targets in sorted(explicit.items()):
        lm = layer_of(m, layers, top)
        for t, line in sorted(targets.items()):
            lt = layer_of(t, layers, top)
            if lm is None or lt is None or lt <= lm or (m, t) in allowed:
                continue
            bad.append(f"{m} (line {line}, {name(lm)}) imports {t} ({name(lt)})")
    return bad


def strongly_connected(edges: dict[str, set[str]]) -> list[list[str]]:
    """The cycles of the graph: its strongly connected components of two or more modules
    (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = 0
    for start in sorted(edges):
        if start in index:
            continue
        work = [(start, iter(sorted(edges.get(start, ()))))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            v, it = work[-1]
            for w in it:
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(edges.get(w, ())))))
                    break
                if w in on_stack:
                    low[v] = min(low[v], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[v])
                if low[v] == index[v]:
                    comp = []
                    while True:
                        w = stack.pop()
                        on_stack.discard(w)
                        comp.append(w)
                        if w == v:
                            break
                    if len(comp) > 1:
                        out.append(sorted(comp))
    return out


# --------------------------------------------------------------------------- the tests


@pytest.fixture(scope="module")
def graph():
    return import_graph()


def test_parser_sees_the_package(graph):
    """A sanity check on the parser: known imports of each kind are found."""
    explicit, edges = graph
    assert len(explicit) > 40
    assert "linalg_pc._backend.convert" in explicit["linalg_pc.precision"]  # from .a.b import
    assert "linalg_pc.analysis.records" in explicit["linalg_pc.analysis.report"] or \
        "linalg_pc.analysis.registry" in explicit["linalg_pc.analysis.report"]
    # imports inside functions count (cli imports the report lazily)
    assert "linalg_pc.analysis.report" in explicit["linalg_pc.cli"]
    # importing a submodule runs its package first
    assert "linalg_pc.qr_methods" in edges["linalg_pc.analysis.bounds"]


def test_every_module_has_a_layer(graph):
    explicit, _ = graph
    missing = sorted(m for m in explicit if layer_of(m) is None)
    assert not missing, f"place these modules in LAYERS of {__file__}: {missing}"


def test_no_upward_imports(graph):
    explicit, _ = graph
    bad = upward_imports(explicit)
    assert not bad, "imports of a higher layer:\n  " + "\n  ".join(bad)


def test_no_import_cycles(graph):
    _, edges = graph
    cycles = [c for c in strongly_connected(edges) if frozenset(c) not in ALLOWED_CYCLES]
    assert not cycles, "import cycles:\n  " + "\n  ".join(" <-> ".join(c) for c in cycles)


def test_allow_lists_are_not_stale(graph):
    """An allow-list entry whose import is gone must be removed with it."""
    explicit, edges = graph
    stale = [e for e in ALLOWED_UPWARD if e[1] not in explicit.get(e[0], {})]
    live = {frozenset(c) for c in strongly_connected(edges)}
    stale += [sorted(c) for c in ALLOWED_CYCLES if c not in live]
    assert not stale, f"remove these allow-list entries: {stale}"


def test_the_checks_catch_violations(tmp_path):
    """On a made-up package: an upward import, a cycle through a package __init__, and a
    relative import inside a function are all seen."""
    pkg = tmp_path / "pkg"
    (pkg / "low").mkdir(parents=True)
    (pkg / "high").mkdir()
    (pkg / "__init__.py").write_text("from . import high\n")
    (pkg / "low" / "__init__.py").write_text("from .a import f\n")
    (pkg / "low" / "a.py").write_text("def f():\n    from ..high import b\n    return b\n")
    (pkg / "high" / "__init__.py").write_text("")
    (pkg / "high" / "b.py").write_text("import pkg.low.a\n")
    explicit, edges = import_graph(pkg, "pkg")
    assert explicit["pkg.low.a"] == {"pkg.high.b": 2}
    assert explicit["pkg.high.b"] == {"pkg.low.a": 1}
    assert "pkg.low" in edges["pkg.high.b"]  # the package runs before its submodule
    assert strongly_connected(edges) == [["pkg.high.b", "pkg.low", "pkg.low.a"]]
    layers = (("low", ("pkg.low",)), ("high", ("pkg.high",)))
    assert upward_imports(explicit, layers, "pkg", frozenset()) == [
        "pkg.low.a (line 2, low) imports pkg.high.b (high)"]
    assert upward_imports(explicit, layers, "pkg", frozenset({("pkg.low.a", "pkg.high.b")})) == []
