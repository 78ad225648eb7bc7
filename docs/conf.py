"""Sphinx configuration of the xccm documentation (``python -m sphinx -b html docs DIR``)."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
sys.path.insert(0, str(ROOT))  # document this source tree, installed or not

import xccm  # noqa: E402

project = "xccm"
author = "xccm developers"
copyright = "xccm developers"
release = version = xccm.__version__

extensions = [
    "myst_parser",  # the guide is Markdown, as the README it came from
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",  # numpy-style docstrings
    "sphinx.ext.intersphinx",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
]
source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
root_doc = "index"
# performance_results.md is written by benchmarks/run.py and included by performance.md;
# chartfit_results.md by benchmarks/bench_chartfit.py, included by guide/chart_fit.md;
# models_table.md and ridge_scan.md by benchmarks/bench_models.py, included by guide/models.md
exclude_patterns = [
    "_build",
    "performance_results.md",
    "chartfit_results.md",
    "models_table.md",
    "ridge_scan.md",
]
templates_path = ["_templates"]

myst_enable_extensions = ["colon_fence", "dollarmath"]
myst_heading_anchors = 3  # [text](page.md#a-heading) links, as on GitHub

# API reference: one page per module listed in api.md, one stub per name in its __all__.
# The stubs are regenerated on every build, so a name dropped from __all__ leaves none behind.
shutil.rmtree(DOCS / "api" / "generated", ignore_errors=True)
autosummary_generate = True
autosummary_ignore_module_all = False
autosummary_imported_members = True
autodoc_typehints = "description"
autodoc_typehints_format = "short"
autodoc_member_order = "bysource"
autodoc_default_options = {"show-inheritance": True}
napoleon_google_docstring = False
napoleon_numpy_docstring = True
napoleon_use_rtype = False
napoleon_preprocess_types = True

intersphinx_mapping = {}  # the build needs no network; links to xarray etc. stay plain text

html_theme = "furo"
html_title = f"xccm {release}"
html_static_path = ["_static"]
html_css_files = ["custom.css"]
html_show_sourcelink = False
