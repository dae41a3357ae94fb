"""Settings of the example gallery that sphinx-gallery imports by name.

They live in a module rather than in ``conf.py`` so that Sphinx can cache
the configuration (functions defined in ``conf.py`` cannot be pickled).
"""


def reset_argv(gallery_conf, script_vars):
    """Command-line arguments of every example that the gallery runs.

    The examples save their figure to ``--output`` when run as scripts; in the
    gallery the figures are collected from matplotlib instead, so ``--output
    ''`` keeps them from writing files next to the example sources.
    """
    return ["--output", ""]


# Order of the examples in the gallery: from a first fit to model selection.
EXAMPLE_ORDER = (
    "plot_digits.py",
    "plot_orl_faces.py",
    "plot_synthetic_subspaces.py",
    "plot_training_curves.py",
    "plot_batch_size_lr_heatmap.py",
    "plot_label_free_grid_search.py",
    "plot_coil100_contrastive.py",
)


class ExampleOrder:
    """Sort key of the gallery: ``EXAMPLE_ORDER`` first, other files after, by name."""

    def __init__(self, src_dir):
        self.src_dir = src_dir

    def __call__(self, filename):
        name = str(filename).replace("\\", "/").rsplit("/", 1)[-1]
        rank = EXAMPLE_ORDER.index(name) if name in EXAMPLE_ORDER else len(EXAMPLE_ORDER)
        return f"{rank:03d}{name}"

    def __repr__(self):
        return f"<{type(self).__name__}>"
