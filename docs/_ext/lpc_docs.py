"""Sphinx extension of the linalg_pc documentation: generated pages and benchmark tables.

- The API reference (``docs/api/``) is written at build time from ``__all__``: one page per
  public namespace (:data:`API_PAGES`), a summary table and then every name with its docstring,
  so a name added to an ``__all__`` is documented without editing a page.
- The notebooks of ``examples/notebooks/`` are copied to ``docs/examples/`` (myst-nb executes
  them during the build).
- ``.. benchmark-table:: benchmarks/NAME.json`` renders the records written by
  ``python benchmarks/run.py SUITE --json PATH`` as a table (times in ms, the speedup of ours over
  the baseline; ``:extra: key, key`` adds record fields as columns), so the published numbers
  are the measured ones.
- Docstrings write mathematics in plain Unicode (``|x|``, ``(*batch, d)``): outside literals,
  ``|`` and a ``*`` that opens a shape are escaped, so reStructuredText does not read them as
  substitutions or emphasis.
- A cross-reference to a name of the package that is documented under another path (``lpc.pcg``
  for :func:`linalg_pc.solvers.pcg`, a bare ``eigenbasis_quality``) is resolved to the documented
  object; one to an undocumented module or constant of the package goes to the API page of the
  package that holds it. Anything else stays a broken reference (an error with ``-W``).
"""

from __future__ import annotations

import importlib
import inspect
import json
import pathlib
import re
import shutil
import sys

from docutils import nodes
from docutils.parsers.rst import directives
from sphinx.util.docutils import SphinxDirective

DOCS = pathlib.Path(__file__).resolve().parents[1]
ROOT = DOCS.parent

#: (module, page name, title, one-line description) of each API page.
API_PAGES = [
    ("linalg_pc", "core", "Number formats and precision (``linalg_pc``)",
     "Formats, rounding, storage conversion and the precision policy. The names of "
     ":mod:`linalg_pc.qr_methods`, :mod:`linalg_pc.basis`, :mod:`linalg_pc.solvers` and "
     ":mod:`linalg_pc.analysis` are also re-exported at the top level (``lpc.qr``, "
     "``lpc.pcg``, ...); they are documented on their own pages."),
    ("linalg_pc.qr_methods", "qr_methods", "QR factorizations (``linalg_pc.qr_methods``)",
     "``lpc.qr`` and the individual algorithms (guide: :doc:`/qr`)."),
    ("linalg_pc.basis", "basis", "Basis updates and storage (``linalg_pc.basis``)",
     "Subspace refreshes, basis completion, bf16 basis storage (guide: :doc:`/basis`)."),
    ("linalg_pc.precond", "precond", "Preconditioners (``linalg_pc.precond``)",
     "Shampoo, SOAP, KL-Shampoo and KL-SOAP as transforms over arrays (guide: :doc:`/precond`)."),
    ("linalg_pc.solvers", "solvers", "Solvers (``linalg_pc.solvers``)",
     "PCG, block-Schur degeneracy analysis, Woodbury inverses (guide: :doc:`/solvers`)."),
    ("linalg_pc.analysis", "analysis", "Error analysis (``linalg_pc.analysis``)",
     "Metrics, test matrices, bounds, studies and figures (guide: :doc:`/error-analysis`)."),
    ("linalg_pc.distributed", "distributed", "Distributed (``linalg_pc.distributed``)",
     "Dask arrays passed to the public routines dispatch here by themselves; this namespace "
     "adds a system kept split over the workers for many PCG solves (guide: "
     ":doc:`/distributed`)."),
    ("linalg_pc.integrations.torch", "integrations_torch",
     "PyTorch optimizers (``linalg_pc.integrations.torch``)",
     "``torch.optim.Optimizer`` classes over :mod:`linalg_pc.precond` (imports PyTorch)."),
]

#: Subpackages whose ``__all__`` the top-level package re-exports (documented on their pages).
REEXPORTED = ("analysis", "basis", "qr_methods", "solvers")


def public_names(modname: str) -> list[str]:
    """The names an API page documents: the module's ``__all__`` (for the top-level package,
    without the subpackages' re-exported names and the subpackage modules)."""
    mod = importlib.import_module(modname)
    names = list(mod.__all__)
    if modname == "linalg_pc":
        skip = {n for sub in REEXPORTED for n in importlib.import_module(
            f"linalg_pc.{sub}").__all__}
        names = [n for n in names if n not in skip
                 and not inspect.ismodule(getattr(mod, n))]
    return names


def _directive(obj) -> str:
    if inspect.isclass(obj):
        return "autoclass"
    if callable(obj):
        return "autofunction"
    return "autodata"


def api_page(modname: str, title: str, blurb: str) -> str:
    mod = importlib.import_module(modname)
    names = public_names(modname)
    lines = [title, "=" * len(title), "", blurb, "",
             f".. automodule:: {modname}", "   :no-members:", "",
             f".. currentmodule:: {modname}", "", ".. autosummary::", ""]
    lines += [f"   {n}" for n in names]
    lines += ["", "Reference", "---------", ""]
    for n in names:
        d = _directive(getattr(mod, n))
        lines.append(f".. {d}:: {n}")
        if d == "autoclass":
            lines += ["   :members:", "   :undoc-members:"]
        if d == "autodata":
            lines.append("   :no-value:")
        lines.append("")
    return "\n".join(lines) + "\n"


def _write_if_changed(path: pathlib.Path, text: str) -> None:
    if not path.exists() or path.read_text(encoding="utf-8") != text:
        path.write_text(text, encoding="utf-8")


def generate(app) -> None:
    api = DOCS / "api"
    api.mkdir(exist_ok=True)
    index = ["API reference", "=============", "",
             "One page per public namespace; every name in its ``__all__`` with its docstring. "
             "``import linalg_pc as lpc`` gives the flat API.", "",
             ".. toctree::", "   :maxdepth: 1", ""]
    for modname, page, title, blurb in API_PAGES:
        try:
            text = api_page(modname, title, blurb)
        except ImportError as exc:  # PyTorch's adapters, where PyTorch is not installed
            text = "\n".join([title, "=" * len(title), "", blurb, "",
                              f"(Not rendered: ``import {modname}`` failed where these pages "
                              f"were built: {exc}.)", ""])
        _write_if_changed(api / f"{page}.rst", text)
        index.append(f"   {page}")
    _write_if_changed(api / "index.rst", "\n".join(index) + "\n")
    out = DOCS / "examples"
    out.mkdir(exist_ok=True)
    for nb in sorted((ROOT / "examples" / "notebooks").glob("*.ipynb")):
        dst = out / nb.name
        if not dst.exists() or dst.read_bytes() != nb.read_bytes():
            shutil.copyfile(nb, dst)


def _ms(seconds) -> str:
    return f"{seconds * 1e3:.3g}" if isinstance(seconds, (int, float)) else ""


def _cell(v) -> str:
    if isinstance(v, float):
        return f"{v:.3g}"
    return "" if v is None else str(v)


class BenchmarkTable(SphinxDirective):
    """A table of benchmark records: ``.. benchmark-table:: benchmarks/qr.json``."""

    required_arguments = 1
    option_spec = {"suite": directives.unchanged, "caption": directives.unchanged,
                   "extra": directives.unchanged}

    def run(self):
        rel = self.arguments[0]
        path = DOCS / rel
        self.env.note_dependency(str(path))
        try:
            records = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise self.error(f"benchmark-table: cannot read {rel}: {exc}") from exc
        if "suite" in self.options:
            records = [r for r in records if r.get("suite") == self.options["suite"]]
        if not records:
            raise self.error(f"benchmark-table: no records in {rel}")
        head = ["case", "linalg_pc (ms)", "baseline", "baseline (ms)", "speedup"]
        extra = [k.strip() for k in self.options.get("extra", "").split(",") if k.strip()]
        head += extra
        rows = [[r["case"], _ms(r["ours_s"]), str(r["baseline"]), _ms(r["baseline_s"]),
                 f"{r['speedup']:.2f}×"] + [_cell(r.get(k)) for k in extra] for r in records]
        table = nodes.table(classes=["benchmark-table"])
        group = nodes.tgroup(cols=len(head))
        table += group
        for _ in head:
            group += nodes.colspec(colwidth=1)
        thead = nodes.thead()
        group += thead
        thead += self._row(head)
        tbody = nodes.tbody()
        group += tbody
        for row in rows:
            tbody += self._row(row)
        if "caption" in self.options:
            title = nodes.title(text=self.options["caption"])
            table.insert(0, title)
        return [table]

    @staticmethod
    def _row(cells):
        row = nodes.row()
        for c in cells:
            entry = nodes.entry()
            entry += nodes.paragraph(text=c)
            row += entry
        return row


_LITERAL = re.compile(r"(``.*?``|`[^`]*`)")


def _escape(text: str) -> str:
    parts = _LITERAL.split(text)
    for i in range(0, len(parts), 2):  # the even parts are outside literals and roles
        parts[i] = re.sub(r"(?<!\\)\|", r"\\|", parts[i])
        parts[i] = re.sub(r"\(\*(?=\w)", r"(\\*", parts[i])
    return "".join(parts)


def escape_plain_math(app, what, name, obj, options, lines) -> None:
    if not name.startswith("linalg_pc"):
        return
    if what in ("data", "attribute") and not inspect.isclass(obj) and not callable(obj):
        doc = getattr(type(obj), "__doc__", None)
        inherited = inspect.cleandoc(doc).splitlines() if isinstance(doc, str) else []
        if [ln for ln in lines if ln.strip()] == [ln for ln in inherited if ln.strip()]:
            # a constant without its own documentation: show its value, not its type's docstring
            value = repr(obj)
            value = value if len(value) <= 300 else value[:297] + "..."
            lines[:] = [f"Value: ``{value}``", ""]
    lines[:] = [_escape(line) for line in lines]


def _documented(app) -> dict[str, str]:
    """Short name -> full documented name, over every API page."""
    index = getattr(app.env, "_lpc_documented", None)
    if index is None:
        index = {}
        for modname, *_ in API_PAGES:
            try:
                names = public_names(modname)
            except ImportError:
                continue
            for n in names:
                index.setdefault(n, f"{modname}.{n}")
        app.env._lpc_documented = index
    return index


def _page_of(modname: str) -> str | None:
    best = None
    for page_mod, page, *_ in API_PAGES:
        if (modname == page_mod or modname.startswith(page_mod + ".")) and (
                best is None or len(page_mod) > len(best[0])):
            best = (page_mod, page)
    if best is None or best[0] == "linalg_pc":
        return "api/core" if modname.split(".")[0] == "linalg_pc" else None
    return f"api/{best[1]}"


def _owner(target: str, context: str | None) -> str | None:
    """The module of the package that defines ``target`` (a module, or a name in one)."""
    candidates = [target]
    if context:
        base = context
        while base:
            candidates.append(f"{base}.{target.lstrip('.')}")
            base = base.rpartition(".")[0]
    for cand in candidates:
        if not cand.startswith("linalg_pc"):
            continue
        parts = cand.split(".")
        for cut in range(len(parts), 0, -1):
            modname = ".".join(parts[:cut])
            try:
                mod = importlib.import_module(modname)
            except ImportError:
                continue
            obj = mod
            try:
                for attr in parts[cut:]:
                    obj = getattr(obj, attr)
            except AttributeError:
                break
            return modname
    return None


def resolve_package_reference(app, env, node, contnode):
    if node.get("refdomain") != "py":
        return None
    target = node["reftarget"]
    py = env.get_domain("py")
    short = target.lstrip(".~").split(".")[-1]
    full = _documented(app).get(short)
    in_package = (target.startswith(("linalg_pc", "lpc.", "."))
                  or node.get("py:module", "").startswith("linalg_pc"))
    if full and in_package:
        found = py.resolve_any_xref(env, node["refdoc"], app.builder, full, node, contnode)
        for _role, ref in found:
            return ref
    if target.startswith("lpc."):
        target = "linalg_pc." + target[4:]
    cls, context = node.get("py:class"), node.get("py:module") or ""
    if cls and context.startswith("linalg_pc") and "." not in target:  # an attribute of a class
        owner_cls = getattr(importlib.import_module(context), cls.split(".")[0], None)
        if owner_cls is not None:  # its attributes are described in the class's docstring
            full = f"{context}.{cls}"
            found = py.resolve_any_xref(env, node["refdoc"], app.builder, full, node, contnode)
            for _role, ref in found:
                return ref
    owner = _owner(target.lstrip("~"), context or None)
    if owner is None and context.startswith("linalg_pc") and "." not in target:
        # a constant of a submodule that the package does not export (bounds.FLOOR_C, ...)
        owner = next((name for name, mod in sorted(sys.modules.items())
                      if name.startswith(context + ".") and mod is not None
                      and hasattr(mod, target)), None)
    page = _page_of(owner) if owner else None
    if page is None:
        return None
    from sphinx.util.nodes import make_refnode

    anchor = "module-" + next(m for m, p, *_ in API_PAGES if f"api/{p}" == page)
    return make_refnode(app.builder, node["refdoc"], page, anchor, contnode)


def setup(app):
    app.connect("builder-inited", generate)
    app.connect("autodoc-process-docstring", escape_plain_math, priority=400)
    app.connect("missing-reference", resolve_package_reference)
    app.add_directive("benchmark-table", BenchmarkTable)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
