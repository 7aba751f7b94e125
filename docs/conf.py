"""Sphinx configuration of the linalg_pc documentation.

Build: ``pip install -e ".[docs]" && sphinx-build -W -b html docs docs/_build/html``.
The API pages (docs/api/) are generated at build time from the packages' ``__all__``, the example
notebooks are copied from examples/notebooks/ and executed, and the benchmark tables are rendered
from the JSON files in docs/benchmarks/ (see docs/_ext/lpc_docs.py).
"""

from __future__ import annotations

import pathlib
import sys

DOCS = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(DOCS / "_ext"))
sys.path.insert(0, str(DOCS.parent))

import linalg_pc  # noqa: E402

project = "linalg_pc"
author = "the linalg_pc developers"
copyright = "the linalg_pc developers"  # noqa: A001
release = linalg_pc.__version__
version = ".".join(release.split(".")[:2])

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    "sphinx.ext.intersphinx",
    "numpydoc",
    "myst_nb",
    "lpc_docs",
]

source_suffix = {".rst": "restructuredtext", ".md": "myst-nb", ".ipynb": "myst-nb"}
root_doc = "index"
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store", "**.ipynb_checkpoints", "_ext"]

# Broken cross-references are errors (with -W).
nitpicky = True
nitpick_ignore_regex = [
    # numpydoc type phrases that are not objects
    ("py:class", r"(optional|array[_ ]like|array|arrays|ndarray|callable|sequence.*|default.*)"),
]

# -- autodoc / numpydoc ------------------------------------------------------------------------
autodoc_typehints = "none"
autodoc_default_options = {"member-order": "bysource"}
autosummary_generate = False
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False
numpydoc_validation_checks: set[str] = set()

intersphinx_mapping: dict[str, tuple[str, str | None]] = {}

# -- MyST / notebooks --------------------------------------------------------------------------
myst_enable_extensions = ["dollarmath", "colon_fence"]
myst_heading_anchors = 3
# The notebooks run at build time with the small sizes they already use (seconds each).
nb_execution_mode = "force"
nb_execution_timeout = 300
nb_execution_raise_on_error = True
nb_execution_show_tb = True
nb_merge_streams = True

# -- HTML --------------------------------------------------------------------------------------
html_theme = "pydata_sphinx_theme"
html_title = f"linalg_pc {release}"
html_static_path: list[str] = []
html_theme_options = {
    "navigation_with_keys": False,
    "show_toc_level": 2,
    "navbar_align": "left",
}
html_sidebars = {"index": [], "changelog": []}
