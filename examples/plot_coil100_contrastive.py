"""Clustering COIL-100 objects with a contrastive timm encoder.

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
and ``y``; pass its path with ``--data``. Run it with::

    python examples/plot_coil100_contrastive.py --data ../shared/data/COIL100_32x32_rgb.npz
    python examples/plot_coil100_contrastive.py --data ... --objects 20   # first 20 objects
    python examples/plot_coil100_contrastive.py --data ... --quick        # smoke test
"""

import argparse
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

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "COIL100_32x32_rgb.npz"
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
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=str(DEFAULT_DATA),
                        help="path of COIL100_32x32_rgb.npz (default: %(default)s)")
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
                        help="path of the figure to write (default: %(default)s)")
    parser.add_argument("--device", default="auto",
                        help="'auto', 'cpu' or 'cuda' (default: %(default)s)")
    return parser.parse_args(argv)


def load_objects(path, n_objects):
    """Images of the first ``n_objects`` objects as rows, with their labels."""
    if not Path(path).is_file():
        raise SystemExit(f"No COIL-100 file at {path}; pass its path with --data.")
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
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None):
    args = parse_args(argv)
    n_objects = 10 if args.quick else args.objects
    X, y = load_objects(args.data, n_objects)
    model = ContrastiveDSC(
        n_clusters=n_objects,
        image_shape=(3, 32, 32),
        encoder=args.encoder,
        pretrained=args.pretrained,
        input_size=args.input_size,
        n_pretrain_epochs=2 if args.quick else 30,
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
    print(f"figure written to {args.output}")


if __name__ == "__main__":
    main()
