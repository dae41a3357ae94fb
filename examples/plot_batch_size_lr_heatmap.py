"""
Batch size and learning rate: does mini-batch training stay consistent?
=======================================================================

With a memory bank, a mini-batch is self-expressed against codes that earlier
batches wrote, with an older encoder. :class:`skdsc.MiniBatchDeepSubspaceClustering`
keeps those codes up to date by dividing the encoder's learning rate by ``k``,
the number of batches per epoch (``scale_encoder_lr=True``, see
:doc:`/memory_bank`). If the rule works, the accuracy should depend little on
the batch size at a given learning rate: this is the consistency figure of
Jiang, Yu, Lin and Liu (2025).

This example fits the model on COIL20 (1,440 grayscale images of 20 objects,
72 views each) for every cell of a grid of batch sizes and learning rates,
with DSC-Net's published COIL20 architecture, loss weights and
post-processing (the "published" setting of ``benchmarks/RESULTS.md``), and
draws the accuracy as a heat map. The labels are used only for that score.

One fit per cell and one seed: a single fit varies with the seed (over five
seeds, ``benchmarks/RESULTS.md`` reports standard deviations of 0.02 to 0.04
in COIL20 accuracy for these settings), so compare rows and columns rather
than single cells.

The full grid (5 batch sizes x 3 learning rates) takes about ten minutes on
one CPU core; ``--quick`` or ``SKDSC_EXAMPLES_QUICK=1`` runs a 2 x 2 grid with
few epochs, which shows the mechanics but not converged accuracies. Run it
as a script with::

    python examples/plot_batch_size_lr_heatmap.py --data-dir DIR
"""

# %%
# Settings and data
# -----------------

import argparse
import os
import sys
import time
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from skdsc import MiniBatchDeepSubspaceClustering
from skdsc.datasets import fetch_coil20, load_mat
from skdsc.metrics import clustering_accuracy
from skdsc.nn.trainer import batch_plan

parser = argparse.ArgumentParser(description="Accuracy over batch size x learning rate.")
parser.add_argument("--data-dir", help="folder holding COIL20.mat")
parser.add_argument("--quick", action="store_true", help="a 2 x 2 grid and few epochs")
parser.add_argument("--output", help="save the figure to OUTPUT-1.png instead of showing it")
parser.add_argument("--device", default="auto", help="'auto', 'cpu' or 'cuda'")
args, _ = parser.parse_known_args()  # sphinx-gallery passes arguments of its own
QUICK = args.quick or os.environ.get("SKDSC_EXAMPLES_QUICK", "0") not in ("", "0")


def load_images(name, data_dir=None):
    """``(X, y)`` from ``name`` in ``data_dir``, ``$SKDSC_DATA_DIR`` or ``../shared/data``.

    When the file is in none of them, :func:`skdsc.datasets.fetch_coil20` downloads
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
    return fetch_coil20(return_X_y=True)


X, y = load_images("COIL20.mat", args.data_dir)
n_samples = len(X)

if QUICK:
    batch_sizes = [None, n_samples // 4]
    learning_rates = [1e-3, 3e-3]
    n_pretrain_epochs, n_epochs = 5, 3
else:
    # k = 1 (full batch), 2, 4, 8 and 16 batches per epoch.
    batch_sizes = [None, n_samples // 2, n_samples // 4, n_samples // 8, n_samples // 16]
    learning_rates = [3e-4, 1e-3, 3e-3]
    n_pretrain_epochs, n_epochs = 200, 40

# DSC-Net's COIL20 settings: one convolution of 15 channels, kernel 3,
# lambda_coef 1, lambda_self 75 on DSC-Net's absolute loss terms
# (normalize_losses=False), threshold 0.04, subspace dimension 12, power 8.
settings = dict(
    n_clusters=20, image_shape=(32, 32), hidden_channels=(15,), kernel_sizes=(3,),
    lambda_coef=1.0, lambda_self=75.0, normalize_losses=False, threshold=0.04, subspace_dim=12, affinity_power=8.0,
    n_pretrain_epochs=n_pretrain_epochs, n_epochs=n_epochs, scale_encoder_lr=True,
    device=args.device, random_state=0,
)

# %%
# The grid
# --------
# Every cell is a complete fit, autoencoder pretraining included. With
# ``scale_encoder_lr=True`` the encoder of a fit with ``k`` batches per epoch
# learns at ``learning_rate / k`` in the self-expressive phase; the decoder
# and the coefficients use ``learning_rate`` itself.

accuracy = np.zeros((len(learning_rates), len(batch_sizes)))
for i, learning_rate in enumerate(learning_rates):
    for j, batch_size in enumerate(batch_sizes):
        start = time.perf_counter()
        model = MiniBatchDeepSubspaceClustering(
            batch_size=batch_size, learning_rate=learning_rate, **settings)
        labels = model.fit_predict(X)
        accuracy[i, j] = clustering_accuracy(y, labels)  # labels only score the fit
        print(f"learning_rate={learning_rate:g}, batch_size={batch_size}: "
              f"ACC {accuracy[i, j]:.3f} ({time.perf_counter() - start:.0f} s)")

# %%
# The heat map
# ------------
# Columns are batch sizes (with ``k``, the batches per epoch), rows learning
# rates. A consistent method gives rows of similar colour. ``k`` is counted
# as ``fit`` counts it (:func:`skdsc.nn.trainer.batch_plan`: a last batch of
# less than half a batch is merged into the previous one).


fig, ax = plt.subplots(figsize=(1.5 * len(batch_sizes) + 2.5, 1.0 * len(learning_rates) + 1.8))
im = ax.imshow(accuracy, cmap="viridis", vmin=0, vmax=1, aspect="auto")
for (i, j), value in np.ndenumerate(accuracy):
    ax.text(j, i, f"{value:.2f}", ha="center", va="center",
            color="black" if value > 0.6 else "white")
ax.set_xticks(range(len(batch_sizes)),
              [f"{b or n_samples}\n(k={batch_plan(n_samples, b)[1]})" for b in batch_sizes])
ax.set_yticks(range(len(learning_rates)), [f"{lr:g}" for lr in learning_rates])
ax.set_xlabel("batch_size (batches per epoch)")
ax.set_ylabel("learning_rate")
ax.set_title(f"COIL20 accuracy, encoder lr scaled by 1/k"
             f"{' (quick settings)' if QUICK else ''}")
fig.colorbar(im, ax=ax, label="ACC")
fig.tight_layout()

# %%
# Spread across batch sizes for each learning rate:

for i, learning_rate in enumerate(learning_rates):
    row = accuracy[i]
    print(f"learning_rate={learning_rate:g}: ACC from {row.min():.3f} to {row.max():.3f}")

if args.output:  # run as a script with --output: save instead of showing
    for number in plt.get_fignums():
        plt.figure(number).savefig(f"{Path(args.output).with_suffix('')}-{number}.png", dpi=110)
else:
    plt.show()
