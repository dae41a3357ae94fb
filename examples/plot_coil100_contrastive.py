"""
Clustering COIL-100 objects with a contrastive timm encoder
===========================================================

This example clusters colour images of the COIL-100 objects (72 views of each
object, turned in steps of 5 degrees, 32x32 pixels) with
:class:`skdsc.ContrastiveDSC`: a timm ResNet-18 and a projection head are
trained by contrastive instance discrimination, with no decoder, and a
self-expressive layer over a memory bank of all codes gives the affinity
that spectral clustering cuts.

It shows how to

* give colour images as rows flattened from ``(channels, height, width)``
  with ``image_shape=(3, 32, 32)``;
* train the encoder from scratch (the default), or start from a local weights
  file with ``--pretrained resnet18.pth`` (any file timm can read:
  ``.safetensors``, ``.pth``, ``.bin``; ImageNet weights expect larger
  images, so pair them with ``--input-size 96`` or more);
* look at a few images from each found cluster, and score the clusters
  against the object labels (the labels are never used by ``fit``).

The data file is ``COIL100_32x32_rgb.npz`` with arrays ``X`` (7200, 32, 32, 3)
and ``y``. It is looked for in ``--data-dir DIR``, else in the directory named
by the environment variable ``SKDSC_DATA_DIR``, else in ``../shared/data``
next to the repository; ``--data PATH`` names the file itself. Run it with::

    python examples/plot_coil100_contrastive.py --data-dir ../shared/data
    python examples/plot_coil100_contrastive.py --objects 20   # first 20 objects
    python examples/plot_coil100_contrastive.py --quick        # smoke test

The full run (100 objects, 30 + 5 epochs of a ResNet-18) takes about 25
minutes on one CPU core. ``--quick``, also turned on by the environment
variable ``SKDSC_EXAMPLES_QUICK=1``, clusters 10 objects for 1 + 1 epochs:
a smoke test, not a meaningful accuracy.
"""

import argparse
import os
import sys
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.metrics import normalized_mutual_info_score  # noqa: E402

from skdsc import ContrastiveDSC  # noqa: E402
from skdsc.datasets import load_npz  # noqa: E402
from skdsc.metrics import clustering_accuracy  # noqa: E402

DESCRIPTION = "Clustering COIL-100 objects with a contrastive timm encoder."

DATA_FILE = "COIL100_32x32_rgb.npz"
N_CLUSTERS_SHOWN = 10
N_IMAGES_SHOWN = 10


def parse_args(argv=None):
    """Parse the command line.

    Parameters
    ----------
    argv : list of str or None, default=None
        Arguments; ``None`` reads ``sys.argv``.

    Returns
    -------
    args : argparse.Namespace
    """
    parser = argparse.ArgumentParser(description=DESCRIPTION)
    parser.add_argument("--data-dir", default=None,
                        help=f"folder holding {DATA_FILE} (default: $SKDSC_DATA_DIR, "
                             "else ../shared/data next to the repository)")
    parser.add_argument("--data", default=None,
                        help=f"path of {DATA_FILE} itself (overrides --data-dir)")
    parser.add_argument("--objects", type=int, default=100,
                        help="cluster the first N objects only (default: %(default)s)")
    parser.add_argument("--quick", action="store_true",
                        help="10 objects and a few epochs (a fast smoke test)")
    parser.add_argument("--encoder", default="resnet18", help="timm model name")
    parser.add_argument("--pretrained", default=False,
                        help="local weights file for the encoder (default: train from scratch)")
    parser.add_argument("--input-size", type=int, default=None,
                        help="resize images to this size before the encoder")
    parser.add_argument("--output", default="coil100_clusters.png",
                        help="path of the figure to write, '' to write none (default: %(default)s)")
    parser.add_argument("--device", default="auto",
                        help="'auto', 'cpu' or 'cuda' (default: %(default)s)")
    # parse_known_args: sphinx-gallery, which runs the examples for the
    # documentation, passes arguments of its own.
    args, _ = parser.parse_known_args(argv)
    # SKDSC_EXAMPLES_QUICK=1 in the environment also asks for the quick settings.
    args.quick = args.quick or os.environ.get("SKDSC_EXAMPLES_QUICK", "0") not in ("", "0")
    return args


def data_file(path=None, data_dir=None):
    """Path of the data file: ``path``, or in ``data_dir``, ``$SKDSC_DATA_DIR``, ``../shared/data``."""
    if path is None:
        data_dir = data_dir or os.environ.get("SKDSC_DATA_DIR")
        if not data_dir:
            # Next to the repository; sphinx-gallery defines no __file__ but
            # puts the example's path in sys.argv[0].
            script = Path(globals().get("__file__") or sys.argv[0]).resolve()
            data_dir = script.parent.parent.parent / "shared" / "data"
        path = Path(data_dir) / DATA_FILE
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path.name} was not found at {path.resolve()}. It holds the 7,200 COIL-100 "
            "images (Columbia University) at 32x32 pixels in RGB: an array X of shape "
            "(7200, 32, 32, 3), uint8, and the object labels y. Make it from the COIL-100 "
            "images, then pass its folder with --data-dir DIR (or SKDSC_DATA_DIR=DIR) or "
            "the file with --data PATH."
        )
    return path


def load_objects(path, n_objects):
    """Images of the first ``n_objects`` objects as rows, with their labels."""
    X, y = load_npz(path)
    keep = y < n_objects
    return X[keep], y[keep]


def plot_clusters(X, labels, path):
    """Draw a few images of the largest found clusters, one cluster per row.

    Parameters
    ----------
    X : ndarray of shape (n_samples, 3 * 32 * 32)
        Images flattened from ``(3, 32, 32)``, values in [0, 1].
    labels : ndarray of shape (n_samples,)
        Cluster of each image.
    path : str
        Where the figure is written.
    """
    images = X.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    sizes = np.bincount(labels)
    shown_clusters = np.argsort(-sizes, kind="stable")[:N_CLUSTERS_SHOWN]
    fig, axes = plt.subplots(len(shown_clusters), N_IMAGES_SHOWN,
                             figsize=(N_IMAGES_SHOWN * 0.9, len(shown_clusters) * 0.95),
                             layout="constrained", squeeze=False)
    rng = np.random.default_rng(0)
    for row, cluster in enumerate(shown_clusters):
        members = np.flatnonzero(labels == cluster)
        chosen = np.sort(rng.choice(members, size=min(N_IMAGES_SHOWN, len(members)),
                                    replace=False))
        for col, ax in enumerate(axes[row]):
            ax.set_axis_off()
            if col < len(chosen):
                ax.imshow(np.clip(images[chosen[col]], 0, 1), interpolation="nearest")
        axes[row, 0].set_title(f"cluster {cluster} ({sizes[cluster]} images)", loc="left",
                               fontsize=8)
    fig.suptitle(f"Random images from the {len(shown_clusters)} largest found clusters")
    if path:
        fig.savefig(path, dpi=110)


def main(argv=None):
    args = parse_args(argv)
    n_objects = 10 if args.quick else args.objects
    X, y = load_objects(data_file(args.data, args.data_dir), n_objects)
    model = ContrastiveDSC(
        n_clusters=n_objects,
        image_shape=(3, 32, 32),
        encoder=args.encoder,
        pretrained=args.pretrained,
        input_size=args.input_size,
        n_pretrain_epochs=1 if args.quick else 30,
        n_epochs=1 if args.quick else 5,
        device=args.device,
        random_state=0,
    )
    print(f"Fitting on {len(X)} images of {n_objects} objects "
          f"({'quick' if args.quick else 'full'} mode, device={args.device!r}) ...")
    start = time.perf_counter()
    model.fit(X)
    print(f"fit time: {time.perf_counter() - start:.1f} s on {model.device_}")
    print(f"ACC = {clustering_accuracy(y, model.labels_):.3f}, "
          f"NMI = {normalized_mutual_info_score(y, model.labels_):.3f}")
    plot_clusters(X, model.labels_, args.output)
    if args.output:
        print(f"figure written to {args.output}")


if __name__ == "__main__":
    main()
