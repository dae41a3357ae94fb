"""
Faces of ORL: found clusters and a block-diagonal affinity
==========================================================

The ORL face data set has 400 grayscale images of 40 people, ten images per
person, taken with different expressions, lighting and small head turns. Images
of one face under such changes lie near a low-dimensional subspace, which is
the assumption of subspace clustering.

This example fits :class:`skdsc.MiniBatchDeepSubspaceClustering` with its
default settings on the 32x32 version of ORL and shows

* a few faces from a few of the found clusters: a good cluster holds one person;
* the affinity matrix ``affinity_matrix_`` with its rows and columns ordered
  by found cluster: a good clustering makes it block diagonal, bright inside
  the blocks and dark outside.

Neither figure uses the true identities; they are used once, at the end, to
report the accuracy.

The data file is ``ORL_32x32.mat`` (see :ref:`the gallery's introduction
<examples>` for where it is looked for). Run it as a script
with::

    python examples/plot_orl_faces.py --data-dir DIR      # about 15 s on one CPU core
    python examples/plot_orl_faces.py --quick             # fewer epochs
"""

# %%
# Settings and data
# -----------------
# ``SKDSC_EXAMPLES_QUICK=1`` in the environment, or ``--quick`` on the
# command line, trains for fewer epochs. ``load_mat`` returns the images
# flattened in C order and scaled to [0, 1], and the labels, which are kept
# aside for the final score only.

import argparse
import os
import sys
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import scipy.sparse as sp

from skdsc import MiniBatchDeepSubspaceClustering
from skdsc.datasets import fetch_orl, load_mat
from skdsc.metrics import clustering_accuracy

parser = argparse.ArgumentParser(description="Cluster the ORL faces.")
parser.add_argument("--data-dir", help="folder holding ORL_32x32.mat")
parser.add_argument("--quick", action="store_true", help="fewer epochs")
parser.add_argument("--output", help="save the figures to OUTPUT-1.png, ... instead of showing them")
parser.add_argument("--device", default="auto", help="'auto', 'cpu' or 'cuda'")
args, _ = parser.parse_known_args()  # sphinx-gallery passes arguments of its own
QUICK = args.quick or os.environ.get("SKDSC_EXAMPLES_QUICK", "0") not in ("", "0")


def load_images(name, data_dir=None):
    """``(X, y)`` from ``name`` in ``data_dir``, ``$SKDSC_DATA_DIR`` or ``../shared/data``.

    When the file is in none of them, :func:`skdsc.datasets.fetch_orl` downloads
    it (once, checksum-verified) into :func:`skdsc.datasets.get_data_home`.
    """
    data_dir = data_dir or os.environ.get("SKDSC_DATA_DIR")
    if not data_dir:
        # Next to the repository; sphinx-gallery defines no __file__ but puts
        # the example's path in sys.argv[0].
        script = Path(globals().get("__file__") or sys.argv[0]).resolve()
        data_dir = script.parent.parent.parent / "shared" / "data"
    path = Path(data_dir) / name
    if path.is_file():
        return load_mat(path, image_shape=(32, 32))
    print(f"{name} is not in {Path(data_dir).resolve()}; downloading it.")
    return fetch_orl(return_X_y=True)


X, y = load_images("ORL_32x32.mat", args.data_dir)
n_people = len(np.unique(y))
print(f"{len(X)} images of {n_people} people, {X.shape[1]} pixels each")

# %%
# Fit
# ---
# Only the number of clusters and the image shape are given; everything else
# is a default. ``fit`` pretrains the convolutional autoencoder, then trains
# it with the self-expressive layer in mini-batches of 128 images (three per
# epoch for 400 images), and cuts the affinity by spectral clustering.

model = MiniBatchDeepSubspaceClustering(
    n_clusters=n_people,
    image_shape=(32, 32),
    n_pretrain_epochs=40 if QUICK else 200,
    n_epochs=40 if QUICK else 200,
    device=args.device,
    random_state=0,
)
labels = model.fit_predict(X)
print(f"self-expression mode: {model.self_expression_}, device: {model.device_}")

# %%
# Faces per found cluster
# -----------------------
# Six clusters drawn at random, with up to ten of their faces each. A row that
# shows one person throughout is a cluster that matches an identity.

images = X.reshape(-1, 32, 32)
rng = np.random.default_rng(0)
shown = rng.choice(model.n_clusters, size=6, replace=False)
n_faces = 10
fig, axes = plt.subplots(len(shown), n_faces, figsize=(n_faces * 0.9, len(shown) * 1.05),
                         squeeze=False)
for row, cluster in zip(axes, shown):
    members = np.flatnonzero(labels == cluster)
    for col, ax in enumerate(row):
        ax.set_axis_off()
        if col < len(members):
            ax.imshow(images[members[col]], cmap="gray", vmin=0, vmax=1)
    row[0].set_title(f"cluster {cluster}: {len(members)} faces", loc="left", fontsize=9)
fig.suptitle("Faces of six found clusters")
fig.tight_layout()

# %%
# The affinity ordered by cluster
# -------------------------------
# ``affinity_matrix_`` is an ndarray in the dense self-expression mode and a
# scipy sparse matrix in the sparse mode; 400 x 400 is small enough to draw
# either way. Sorting the samples by found cluster puts every cluster's
# affinities in one diagonal block (thin lines mark the cluster boundaries).
# The diagonal (each sample with itself, which spectral clustering ignores)
# is left out, and the colour scale stops at the 99th percentile of the
# other entries so that weaker links stay visible.

affinity = model.affinity_matrix_
if sp.issparse(affinity):
    affinity = affinity.toarray()
affinity = affinity.copy()
np.fill_diagonal(affinity, 0.0)
order = np.argsort(labels, kind="stable")
fig, ax = plt.subplots(figsize=(6.4, 5.6))
im = ax.imshow(affinity[np.ix_(order, order)], cmap="magma_r", interpolation="nearest",
               vmin=0, vmax=np.quantile(affinity[affinity > 0], 0.99))
for boundary in np.cumsum(np.bincount(labels, minlength=model.n_clusters))[:-1]:
    ax.axhline(boundary - 0.5, color="tab:blue", linewidth=0.2, alpha=0.5)
    ax.axvline(boundary - 0.5, color="tab:blue", linewidth=0.2, alpha=0.5)
ax.set_title("Affinity, samples ordered by found cluster")
ax.set_xlabel("sample")
ax.set_ylabel("sample")
fig.colorbar(im, ax=ax, shrink=0.85, label="affinity (clipped at the 99th percentile)")
fig.tight_layout()

# %%
# The share of the affinity that falls inside the blocks is a label-free
# summary of this picture: 100% would mean no affinity between clusters.

same = labels[:, None] == labels[None, :]
print(f"affinity inside the cluster blocks: {affinity[same].sum() / affinity.sum():.1%}")

# %%
# Score against the identities
# ----------------------------
# Only now are the true identities used: the accuracy under the best
# one-to-one matching of clusters to people.

print(f"ACC = {clustering_accuracy(y, labels):.3f}")

if args.output:  # run as a script with --output: save instead of showing
    for number in plt.get_fignums():
        plt.figure(number).savefig(f"{Path(args.output).with_suffix('')}-{number}.png", dpi=110)
else:
    plt.show()
