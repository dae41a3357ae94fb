"""Sphinx configuration for the skdsc documentation.

Build (from the repository root)::

    python -m sphinx -W -b html docs docs/_build/html

The example gallery (``examples/plot_*.py``) is executed during the build.
``SKDSC_EXAMPLES_QUICK=1`` runs every example with small settings (the whole
build then takes about two minutes on two idle CPU cores); ``-D
plot_gallery=0`` skips running them.
"""

import os
import sys
from importlib.util import find_spec
from pathlib import Path

DOCS = Path(__file__).resolve().parent
# Import the package from this checkout when it is not installed.
sys.path.insert(0, str(DOCS.parent))
# Helpers of this configuration (skdsc_gallery).
sys.path.insert(0, str(DOCS / "sphinxext"))

project = "skdsc"
author = "skdsc developers"
copyright = "2026, skdsc developers"

try:
    from skdsc import __version__ as release
except ImportError:  # pragma: no cover - the API pages then stay empty
    release = "0.1.0"
version = ".".join(release.split(".")[:2])

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "sphinx_gallery.gen_gallery",
    "matplotlib.sphinxext.plot_directive",
]
# numpydoc renders the NumPy-style docstrings best; napoleon (part of Sphinx)
# reads them too when numpydoc is not installed.
if find_spec("numpydoc") is not None:
    extensions.append("numpydoc")
    numpydoc_show_class_members = False
    numpydoc_class_members_toctree = False
else:
    extensions.append("sphinx.ext.napoleon")
    napoleon_google_docstring = False
    napoleon_numpy_docstring = True

autodoc_default_options = {
    "members": True,
}
autodoc_member_order = "bysource"

templates_path = []
exclude_patterns = ["_build", "sphinxext", "README.md", "requirements.txt"]
default_role = "literal"

html_theme = "alabaster"
html_title = f"skdsc {release}"

# -- Example gallery (sphinx-gallery) -----------------------------------------

sphinx_gallery_conf = {
    "examples_dirs": str(DOCS.parent / "examples"),
    "gallery_dirs": "auto_examples",
    # Files named plot_*.py are executed; each draws at least one figure.
    "filename_pattern": r"/plot_",
    # --output "": the gallery collects the figures, the examples save none.
    "reset_argv": "skdsc_gallery.reset_argv",
    "within_subsection_order": "skdsc_gallery.ExampleOrder",
    # "Examples using this object" on the API pages.
    "doc_module": ("skdsc",),
    "backreferences_dir": "gen_modules/backreferences",
    # No network access is assumed: links are resolved only within skdsc.
    "reference_url": {"skdsc": None},
    "remove_config_comments": True,
    "min_reported_time": 1,
    "show_memory": False,
}

# -- Figures made at build time (matplotlib's plot directive) -----------------

plot_include_source = True
plot_html_show_source_link = False
plot_html_show_formats = False
plot_formats = [("png", 100)]
plot_rcparams = {"figure.autolayout": True}
