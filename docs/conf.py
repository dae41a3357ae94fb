"""Sphinx configuration for the skdsc documentation."""

import os
import sys
from importlib.util import find_spec

# Import the package from this checkout when it is not installed.
sys.path.insert(0, os.path.abspath(".."))

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
exclude_patterns = ["_build"]
default_role = "literal"

html_theme = "alabaster"
html_title = f"skdsc {release}"
