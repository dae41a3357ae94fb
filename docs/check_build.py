"""Checks of a finished documentation build.

Usage (from the repository root, after the Sphinx build)::

    python docs/check_build.py docs/_build/html

1. Every ``examples/plot_*.py`` produced at least one figure under
   ``docs/auto_examples/images`` (the gallery ran it and it drew something).
2. Every public name of the package is documented: ``skdsc.__all__``,
   ``skdsc.nn.__all__`` and the public functions and classes of
   ``skdsc.metrics``, ``skdsc.datasets`` and ``skdsc.spectral`` appear in the
   build's ``objects.inv``.

Exits with status 1 and lists what is missing otherwise.
"""

import importlib
import inspect
import posixpath
import sys
from pathlib import Path

from sphinx.util.inventory import InventoryFile

ROOT = Path(__file__).resolve().parent.parent


def missing_figures():
    """Example files without any figure in the gallery output."""
    images = ROOT / "docs" / "auto_examples" / "images"
    return [
        example.name
        for example in sorted((ROOT / "examples").glob("plot_*.py"))
        if not list(images.glob(f"sphx_glr_{example.stem}_*.png"))
    ]


def public_names():
    """Fully qualified names that the API reference must document."""
    names = []
    for module_name in ("skdsc", "skdsc.nn"):
        module = importlib.import_module(module_name)
        names += [f"{module_name}.{name}" for name in module.__all__]
    for module_name in ("skdsc.metrics", "skdsc.datasets", "skdsc.spectral"):
        module = importlib.import_module(module_name)
        for name, value in vars(module).items():
            if (not name.startswith("_")
                    and (inspect.isfunction(value) or inspect.isclass(value))
                    and value.__module__.startswith("skdsc")):
                names.append(f"{module_name}.{name}")
    return names


def undocumented(build_dir):
    """Public names missing from the build's ``objects.inv``."""
    with open(Path(build_dir) / "objects.inv", "rb") as stream:
        inventory = InventoryFile.load(stream, "", posixpath.join)
    documented = set()
    for role, entries in inventory.items():
        if role.startswith("py:"):
            documented.update(entries)
    return [name for name in public_names() if name not in documented]


def main(argv):
    if len(argv) != 1:
        print(__doc__)
        return 2
    sys.path.insert(0, str(ROOT))
    problems = []
    for name in missing_figures():
        problems.append(f"examples/{name} produced no figure under docs/auto_examples/images")
    for name in undocumented(argv[0]):
        problems.append(f"{name} is public but not in the API reference (docs/api.rst)")
    for problem in problems:
        print(problem, file=sys.stderr)
    if not problems:
        n_examples = len(list((ROOT / "examples").glob("plot_*.py")))
        print(f"docs check: {n_examples} examples drew figures; every public name is documented")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
