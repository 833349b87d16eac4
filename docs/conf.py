"""Sphinx configuration of the kgestimator documentation.

Build (from the repository root, after ``pip install -e '.[docs]'``)::

    sphinx-build -W -b html docs docs/_build/html

The gallery runs every example in ``examples/`` in its quick mode
(``KGESTIMATOR_EXAMPLE_FAST=1``: seconds each, numbers from tiny runs); unset
``KGESTIMATOR_EXAMPLE_FAST=0`` before the build for the full-size runs.
"""

import os
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # document this checkout, not some installed copy
os.environ.setdefault("KGESTIMATOR_EXAMPLE_FAST", "1")
os.environ.setdefault("MPLBACKEND", "agg")

import kgestimator  # noqa: E402

project = "kgestimator"
author = "the kgestimator developers"
copyright = "2026, the kgestimator developers"
version = release = kgestimator.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    "numpydoc",
    "myst_parser",
    "sphinx_gallery.gen_gallery",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
exclude_patterns = ["_build", "**.ipynb_checkpoints"]
templates_path = ["_templates"]

# ---------------------------------------------------------------- API pages
autosummary_generate = True
# numpydoc lists the methods of a class itself; autosummary's own lists would repeat them
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False

# ---------------------------------------------------------------- Markdown (README, BENCHMARKS, the algorithms)
myst_enable_extensions = ["dollarmath", "amsmath"]
myst_heading_anchors = 4  # "[Speed](#speed)" links of the README resolve

# ---------------------------------------------------------------- maths
# MathJax from the machine (Debian's libjs-mathjax) when present, so that the pages
# load nothing from the internet; the CDN copy of Sphinx's default otherwise
_MATHJAX = Path("/usr/share/javascript/mathjax")
if (_MATHJAX / "MathJax.js").is_file():
    # CommonHTML output: the HTML-CSS one declares a font at about:blank, which Chromium
    # refuses (a console error) whenever its font test runs before the web fonts load
    mathjax_path = "mathjax/MathJax.js?config=TeX-AMS_CHTML"
    # Debian ships MathJax 2: typeset only the elements Sphinx and MyST mark as maths
    mathjax2_config = {"tex2jax": {
        "inlineMath": [["\\(", "\\)"]], "displayMath": [["\\[", "\\]"]],
        "processClass": "tex2jax_process|mathjax_process|math|output_area",
        "ignoreClass": "tex2jax_ignore|mathjax_ignore|document"}}
    myst_update_mathjax = False  # MyST's own settings are MathJax 3's

# ---------------------------------------------------------------- gallery
sphinx_gallery_conf = {
    "examples_dirs": str(ROOT / "examples"),
    "gallery_dirs": "auto_examples",
    "filename_pattern": "/plot_",  # run every example
    "download_all_examples": False,
    "remove_config_comments": True,
    "reset_modules": ("matplotlib",),
    "abort_on_example_error": True,
    "show_memory": False,
}

# ---------------------------------------------------------------- HTML
# pydata-sphinx-theme: the theme of scikit-learn, numpy and pandas, whose API pages
# users of an estimator library already know; it ships its fonts and icons, so the
# pages need nothing from the internet
html_theme = "pydata_sphinx_theme"
html_title = f"kgestimator {release}"
html_static_path = ["_static"]
html_theme_options = {
    "navigation_with_keys": False,
    "show_toc_level": 2,
    "secondary_sidebar_items": ["page-toc"],
}
html_show_sourcelink = False
# without a default the theme's script reads an empty mode on a first visit and logs an error
html_context = {"default_mode": "auto"}
# browsers ask for a favicon on every site: without one, each page logs a 404
html_favicon = "_static/favicon.svg"


def _copy_mathjax(app, exception):
    if exception is None and app.builder.format == "html" and (_MATHJAX / "MathJax.js").is_file():
        target = Path(app.outdir) / "_static" / "mathjax"
        if not target.exists():
            shutil.copytree(_MATHJAX, target, symlinks=False,
                            ignore=shutil.ignore_patterns("unpacked", "*.md"))


#: links of README.md and BENCHMARKS.md to repository files -> the docs pages holding them
_LINKS = {
    "](BENCHMARKS.md": "](benchmarks.md",
    "](examples/)": "](auto_examples/index.rst)",
    "](docs/algorithms.md": "](algorithms.md",
    "](docs/)": "](index.rst)",
    "](kgestimator/bundled/LICENSES.md": "](bundled_licenses.md",
}


def _rewrite_links(app, relative_path, parent_docname, content):
    if relative_path.name in ("README.md", "BENCHMARKS.md"):
        for old, new in _LINKS.items():
            content[0] = content[0].replace(old, new)


def _skip_metadata_requests(app, what, name, obj, skip, options):
    # scikit-learn generates set_<method>_request for metadata routing on every estimator;
    # their docstrings cite scikit-learn's own glossary, and they are scikit-learn's API, not ours
    if name.startswith("set_") and name.endswith("_request"):
        return True
    return None


def setup(app):
    app.connect("autodoc-skip-member", _skip_metadata_requests)
    app.connect("include-read", _rewrite_links)
    app.connect("build-finished", _copy_mathjax)
