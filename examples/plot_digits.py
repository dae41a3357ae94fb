"""
Deep subspace clustering of handwritten digits
==============================================

This example clusters scikit-learn's bundled 8x8 handwritten digits (1797
images, 10 classes; no download needed) with
:class:`skdsc.MiniBatchDeepSubspaceClustering`.

It shows how to

* pass images as flattened rows and tell the estimator their shape with
  ``image_shape=(1, 8, 8)``, which selects a convolutional autoencoder;
* fit the model on a training split and read the clusters from ``labels_``;
* score the clusters against the true digits with
  :func:`skdsc.metrics.clustering_accuracy` (accuracy under the best matching
  of clusters to classes) and the normalised mutual information;
* assign held-out images to the learned clusters with ``predict``, which
  expresses each new code against the fitted codes and never refits (the
  held-out accuracy uses the cluster-to-digit matching found on the training
  split, so it measures how well ``predict`` generalises);
* look at a few images per cluster and at the affinity matrix
  ``affinity_matrix_`` with its rows and columns ordered by cluster: a good
  clustering shows bright diagonal blocks.

The labels are used only to score the result, never during ``fit``.

Run it with::

    python examples/plot_digits.py                 # about 10 s on an idle 2-core CPU
    python examples/plot_digits.py --quick         # a few epochs, a smoke test
    python examples/plot_digits.py --output out.png

``--quick`` is also turned on by the environment variable
``SKDSC_EXAMPLES_QUICK=1``.
"""

import argparse
import os
import time

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from scipy.optimize import linear_sum_assignment  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402
from sklearn.metrics import normalized_mutual_info_score  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402

from skdsc import MiniBatchDeepSubspaceClustering  # noqa: E402
from skdsc.metrics import clustering_accuracy  # noqa: E402

DESCRIPTION = "Deep subspace clustering of handwritten digits."

N_SHOWN = 10  # images shown per cluster


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
    parser.add_argument("--quick", action="store_true",
                        help="train for a few epochs only (a fast smoke test)")
    parser.add_argument("--output", default="digits_clusters.png",
                        help="path of the figure to write, '' to write none (default: %(default)s)")
    parser.add_argument("--device", default="auto",
                        help="'auto', 'cpu' or 'cuda' (default: %(default)s)")
    # parse_known_args: sphinx-gallery, which runs the examples for the
    # documentation, passes arguments of its own.
    args, _ = parser.parse_known_args(argv)
    # SKDSC_EXAMPLES_QUICK=1 in the environment also asks for the quick settings.
    args.quick = args.quick or os.environ.get("SKDSC_EXAMPLES_QUICK", "0") not in ("", "0")
    return args


def match_clusters(labels_true, labels_pred, n_clusters):
    """Order clusters by the class each one is matched to.

    Parameters
    ----------
    labels_true : ndarray of shape (n_samples,)
        True classes ``0..n_clusters-1``.
    labels_pred : ndarray of shape (n_samples,)
        Cluster labels ``0..n_clusters-1``.
    n_clusters : int

    Returns
    -------
    order : ndarray of shape (n_clusters,)
        Cluster indices sorted by their matched class.
    matched : ndarray of shape (n_clusters,)
        ``matched[k]`` is the class matched to cluster ``k``.
    """
    table = np.zeros((n_clusters, n_clusters), dtype=np.int64)
    np.add.at(table, (labels_pred, labels_true), 1)
    rows, cols = linear_sum_assignment(table, maximize=True)
    matched = np.empty(n_clusters, dtype=np.int64)
    matched[rows] = cols
    return np.argsort(matched), matched


def plot_clusters(images, labels, affinity, order, matched, path):
    """Draw a few images per cluster next to the cluster-ordered affinity.

    Parameters
    ----------
    images : ndarray of shape (n_samples, 8, 8)
    labels : ndarray of shape (n_samples,)
        Cluster of each image.
    affinity : ndarray of shape (n_samples, n_samples)
    order : ndarray of shape (n_clusters,)
        Order in which clusters are drawn.
    matched : ndarray of shape (n_clusters,)
        Class matched to each cluster, shown as the row title.
    path : str
        Where the figure is written.
    """
    n_clusters = len(order)
    fig = plt.figure(figsize=(13, 6.5), layout="constrained")
    left, right = fig.subfigures(1, 2, width_ratios=[1.0, 1.05])

    left.suptitle(f"{N_SHOWN} images from each found cluster")
    axes = left.subplots(n_clusters, N_SHOWN, gridspec_kw=dict(wspace=0.05, hspace=0.1))
    rng = np.random.default_rng(0)
    for row, cluster in enumerate(order):
        members = np.flatnonzero(labels == cluster)
        shown = rng.choice(members, size=min(N_SHOWN, len(members)), replace=False)
        for col in range(N_SHOWN):
            ax = axes[row, col]
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
            if col < len(shown):
                ax.imshow(images[shown[col]], cmap="gray_r", interpolation="nearest")
        axes[row, 0].set_ylabel(f"{matched[cluster]} ({len(members)})", rotation=0,
                                ha="right", va="center", fontsize=9)

    # Samples sorted by cluster (in the drawing order) so that blocks line up.
    rank = np.empty(n_clusters, dtype=np.int64)
    rank[order] = np.arange(n_clusters)
    perm = np.argsort(rank[labels], kind="stable")
    ax = right.subplots()
    shown_affinity = np.sqrt(affinity[np.ix_(perm, perm)])  # sqrt: faint entries stay visible
    im = ax.imshow(shown_affinity, cmap="viridis", interpolation="nearest")
    bounds = np.cumsum(np.bincount(rank[labels], minlength=n_clusters))[:-1]
    for b in bounds:
        ax.axhline(b - 0.5, color="white", linewidth=0.5)
        ax.axvline(b - 0.5, color="white", linewidth=0.5)
    ax.set_title("Affinity matrix, samples ordered by cluster (square root)")
    ax.set_xlabel("sample")
    ax.set_ylabel("sample")
    right.colorbar(im, ax=ax, shrink=0.8)
    left.supylabel("matched digit (cluster size)", fontsize=10)
    if path:
        fig.savefig(path, dpi=110)


def main(argv=None):
    args = parse_args(argv)
    X, y = load_digits(return_X_y=True)
    X = X / 16.0  # pixel values 0..16 -> [0, 1]
    X_train, X_test, y_train, y_test = train_test_split(
        X, y, test_size=0.2, stratify=y, random_state=0)

    model = MiniBatchDeepSubspaceClustering(
        n_clusters=10,
        image_shape=(1, 8, 8),
        # The network ("auto": one stride-2 convolution of 15 channels for
        # 8 x 8 images, 240-d codes), the loss weights and the post-processing
        # are the defaults; fewer epochs than the default step budget.
        n_pretrain_epochs=5 if args.quick else 50,
        n_epochs=5 if args.quick else 50,
        device=args.device,
        random_state=0,
    )
    print(f"Fitting on {len(X_train)} digits ({'quick' if args.quick else 'full'} mode, "
          f"device={args.device!r}) ...")
    start = time.perf_counter()
    model.fit(X_train)
    fit_seconds = time.perf_counter() - start

    acc = clustering_accuracy(y_train, model.labels_)
    nmi = normalized_mutual_info_score(y_train, model.labels_)
    print(f"fit time: {fit_seconds:.1f} s on {model.device_}")
    print(f"training clusters: ACC = {acc:.3f}, NMI = {nmi:.3f}")

    # Held-out images: each one is assigned on its own, the model is not refitted.
    # Scored with the cluster-to-digit matching learned on the training split.
    predicted = model.predict(X_test)
    order, matched = match_clusters(y_train, model.labels_, model.n_clusters)
    test_acc = np.mean(matched[predicted] == y_test)
    test_nmi = normalized_mutual_info_score(y_test, predicted)
    print(f"held-out predict ({len(X_test)} digits): ACC = {test_acc:.3f}, "
          f"NMI = {test_nmi:.3f}")

    plot_clusters(X_train.reshape(-1, 8, 8), model.labels_, model.affinity_matrix_,
                  order, matched, args.output)
    if args.output:
        print(f"figure written to {args.output}")


if __name__ == "__main__":
    main()
