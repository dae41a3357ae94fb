"""
Clustering points drawn from a union of linear subspaces
========================================================

:func:`skdsc.datasets.make_subspaces` draws samples from five random
3-dimensional subspaces of a 30-dimensional space. All subspaces pass through
the origin and every sample has (about) unit length, so the clusters are not
separated by distance: centroid-based methods such as k-means, and spectral
clustering on a Gaussian (RBF) affinity, do little better than chance.
Subspace clustering instead asks which samples can be written as combinations
of which others, and that does separate the subspaces.

The rows are plain feature vectors, so ``image_shape`` is left at ``None`` and
:class:`skdsc.MiniBatchDeepSubspaceClustering` uses a fully connected
autoencoder (``hidden_units``). The figure shows the magnitude of the learned
self-expression coefficients ``|C|`` (samples are generated subspace by
subspace, so a good ``C`` is block diagonal) next to the accuracy and NMI of
the three methods.

Run it with::

    python examples/plot_synthetic_subspaces.py            # a few seconds
    python examples/plot_synthetic_subspaces.py --quick    # a smoke test
    python examples/plot_synthetic_subspaces.py --output out.png

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
from sklearn.cluster import KMeans, SpectralClustering  # noqa: E402
from sklearn.metrics import normalized_mutual_info_score  # noqa: E402

from skdsc import MiniBatchDeepSubspaceClustering  # noqa: E402
from skdsc.datasets import make_subspaces  # noqa: E402
from skdsc.metrics import clustering_accuracy  # noqa: E402

DESCRIPTION = "Clustering points drawn from a union of linear subspaces."

N_CLUSTERS = 5


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
    parser.add_argument("--output", default="synthetic_subspaces.png",
                        help="path of the figure to write, '' to write none (default: %(default)s)")
    parser.add_argument("--device", default="auto",
                        help="'auto', 'cpu' or 'cuda' (default: %(default)s)")
    # parse_known_args: sphinx-gallery, which runs the examples for the
    # documentation, passes arguments of its own.
    args, _ = parser.parse_known_args(argv)
    # SKDSC_EXAMPLES_QUICK=1 in the environment also asks for the quick settings.
    args.quick = args.quick or os.environ.get("SKDSC_EXAMPLES_QUICK", "0") not in ("", "0")
    return args


def plot_results(coef, y, scores, path):
    """Draw ``|C|`` next to a bar chart of the scores.

    Parameters
    ----------
    coef : ndarray of shape (n_samples, n_samples)
        Self-expression coefficients; samples are assumed ordered by class.
    y : ndarray of shape (n_samples,)
        True subspace of each sample, used to mark the blocks.
    scores : dict of str to tuple of float
        ``{method: (accuracy, nmi)}``.
    path : str
        Where the figure is written.
    """
    fig, (ax_coef, ax_bar) = plt.subplots(
        1, 2, figsize=(11, 4.8), width_ratios=[1.15, 1.0], layout="constrained")

    magnitude = np.abs(coef)
    im = ax_coef.imshow(magnitude, cmap="magma_r", interpolation="nearest",
                        vmax=np.quantile(magnitude, 0.995))
    for b in np.flatnonzero(np.diff(y)) + 0.5:
        ax_coef.axhline(b, color="tab:blue", linewidth=0.6)
        ax_coef.axvline(b, color="tab:blue", linewidth=0.6)
    ax_coef.set_title("|C|, samples ordered by true subspace")
    ax_coef.set_xlabel("sample j (used to rebuild)")
    ax_coef.set_ylabel("sample i (rebuilt)")
    fig.colorbar(im, ax=ax_coef, shrink=0.85, label="|C_ij| (clipped at 99.5%)")

    names = list(scores)
    positions = np.arange(len(names))
    width = 0.38
    for offset, (metric, column) in zip((-width / 2, width / 2), (("ACC", 0), ("NMI", 1))):
        values = [scores[name][column] for name in names]
        bars = ax_bar.bar(positions + offset, values, width, label=metric)
        ax_bar.bar_label(bars, fmt="%.2f", fontsize=8)
    ax_bar.axhline(1.0 / N_CLUSTERS, color="gray", linestyle=":", linewidth=1,
                   label="chance ACC")
    ax_bar.set_xticks(positions, names)
    ax_bar.set_ylim(0, 1.1)
    ax_bar.set_title("Agreement with the true subspaces")
    ax_bar.legend(loc="upper left")
    if path:
        fig.savefig(path, dpi=110)


def main(argv=None):
    args = parse_args(argv)
    X, y = make_subspaces(n_clusters=N_CLUSTERS, n_samples_per_cluster=100, n_features=30,
                          subspace_dim=3, noise=0.05, random_state=0)
    print(f"{len(X)} samples from {N_CLUSTERS} subspaces of dimension 3 in R^{X.shape[1]}")

    baselines = {
        "k-means": KMeans(n_clusters=N_CLUSTERS, n_init=10, random_state=0),
        "spectral (RBF)": SpectralClustering(n_clusters=N_CLUSTERS, affinity="rbf",
                                             random_state=0),
    }
    scores = {}
    for name, estimator in baselines.items():
        labels = estimator.fit_predict(X)
        scores[name] = (clustering_accuracy(y, labels), normalized_mutual_info_score(y, labels))

    model = MiniBatchDeepSubspaceClustering(
        n_clusters=N_CLUSTERS,
        hidden_units=(256, 32),    # fully connected encoder 30 -> 256 -> 32
        batch_size=100,            # 5 mini-batches per epoch, self-expressed against the bank
        n_pretrain_epochs=10 if args.quick else 100,
        n_epochs=10 if args.quick else 100,
        learning_rate=1e-3,
        lambda_coef=1.0,
        lambda_self=1.0,
        affinity="dsc",
        threshold=0.1,
        subspace_dim=4,
        affinity_power=2.0,
        device=args.device,
        random_state=0,
    )
    start = time.perf_counter()
    model.fit(X)
    fit_seconds = time.perf_counter() - start
    scores["deep subspace\nclustering"] = (clustering_accuracy(y, model.labels_),
                                           normalized_mutual_info_score(y, model.labels_))

    print(f"{'method':<28} {'ACC':>6} {'NMI':>6}")
    for name, (acc, nmi) in scores.items():
        print(f"{name.replace(chr(10), ' '):<28} {acc:6.3f} {nmi:6.3f}")
    print(f"deep subspace clustering fit time: {fit_seconds:.1f} s on {model.device_}")

    plot_results(model.coef_, y, scores, args.output)
    if args.output:
        print(f"figure written to {args.output}")


if __name__ == "__main__":
    main()
