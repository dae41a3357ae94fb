"""
Training curves: the loss terms in ``history_``
===============================================

``fit`` records one entry per epoch in ``history_``: the phase, the
sample-weighted mean of every loss term over the epoch, and the seconds it
took. This example fits :class:`skdsc.MiniBatchDeepSubspaceClustering` on
scikit-learn's bundled 8x8 digits twice, with dense and with sparse
self-expression, and plots

* the reconstruction loss of the autoencoder pretraining (phase
  ``"pretrain"``, whose only term is ``loss``);
* the terms of the self-expressive phase (``"self-expression"``): the
  reconstruction from the self-expressed codes, the self-expression residual
  ``||z_i - sum_j C_ij z_j||^2``, the coefficient penalty ``||C_i||^2`` and the
  weighted total ``loss``.

The sparse mode also logs an entry with ``phase="refresh"`` each time it
searches the candidates again (every ``refresh_epochs`` epochs); it has no loss
terms, only the fraction of candidates that ``changed``, and is drawn as a
vertical line. An entry with ``phase="restart"`` (a discarded
initialisation, see :doc:`/method`) has no loss terms either.

Run it as a script with::

    python examples/plot_training_curves.py            # about 30 s on one CPU core
    python examples/plot_training_curves.py --quick    # fewer epochs
"""

# %%
# Two fits
# --------
# ``SKDSC_EXAMPLES_QUICK=1`` in the environment, or ``--quick``, trains for
# fewer epochs.

import argparse
import os
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from sklearn.datasets import load_digits

from skdsc import MiniBatchDeepSubspaceClustering

parser = argparse.ArgumentParser(description="Plot the training history.")
parser.add_argument("--quick", action="store_true", help="fewer epochs")
parser.add_argument("--output", help="save the figures to OUTPUT-1.png, ... instead of showing them")
parser.add_argument("--device", default="auto", help="'auto', 'cpu' or 'cuda'")
args, _ = parser.parse_known_args()  # sphinx-gallery passes arguments of its own
QUICK = args.quick or os.environ.get("SKDSC_EXAMPLES_QUICK", "0") not in ("", "0")

X, _ = load_digits(return_X_y=True)  # the labels are not needed here
X = X / 16.0

params = dict(
    n_clusters=10, image_shape=(1, 8, 8), hidden_channels=(16,), kernel_sizes=(3,),
    batch_size=256, n_pretrain_epochs=10 if QUICK else 50, n_epochs=15 if QUICK else 60,
    learning_rate=1e-3, lambda_self=4.0, device=args.device, random_state=0,
)
fits = {
    "dense": MiniBatchDeepSubspaceClustering(self_expression="dense", **params).fit(X),
    "sparse": MiniBatchDeepSubspaceClustering(
        self_expression="sparse", n_nonzero=32, refresh_epochs=5 if QUICK else 15,
        **params).fit(X),
}

# %%
# Reading ``history_``
# --------------------
# Entries are selected by phase. If pretraining had to start again from a new
# initialisation, the epochs of the discarded tries come before the
# ``"restart"`` entry; only the pretraining that was kept is drawn.


def phase_curves(history, phase):
    """``{term: array over epochs}`` of one phase of ``history_``."""
    restarts = [i for i, entry in enumerate(history) if entry["phase"] == "restart"]
    kept = history[restarts[-1] + 1:] if restarts else history
    rows = [entry for entry in kept if entry["phase"] == phase]
    terms = [key for key in rows[0] if key not in ("phase", "seconds")]
    return {key: np.array([entry[key] for entry in rows]) for key in terms}


dense_history = fits["dense"].history_
print("first pretraining entry:   ", dense_history[0])
print("first self-expression entry:",
      next(e for e in dense_history if e["phase"] == "self-expression"))
print("refresh entries of the sparse fit:",
      [e for e in fits["sparse"].history_ if e["phase"] == "refresh"])

# %%
# Every term per epoch
# --------------------
# One panel per term, both modes in each. The terms have different scales, so
# each panel has its own logarithmic axis. Pretraining does not depend on the
# self-expression mode and both fits use the same seed, so their pretraining
# curves coincide. In the self-expressive phase
# ``loss = reconstruction + lambda_coef * coefficient + lambda_self *
# self_expression``.

panels = [("pretrain", "loss", "pretraining: reconstruction"),
          ("self-expression", "reconstruction", "reconstruction from self-expressed codes"),
          ("self-expression", "self_expression", "self-expression residual"),
          ("self-expression", "coefficient", "coefficient penalty ||C_i||^2"),
          ("self-expression", "loss", "weighted total loss")]
fig, axes = plt.subplots(1, len(panels), figsize=(16, 3.4))
for ax, (phase, term, title) in zip(axes, panels):
    for mode, model in fits.items():
        curve = phase_curves(model.history_, phase)
        ax.plot(curve["epoch"], curve[term], label=mode)
    if phase == "self-expression":
        for entry in fits["sparse"].history_:
            if entry["phase"] == "refresh":
                ax.axvline(entry["epoch"], color="gray", linestyle=":", linewidth=1)
    ax.set_yscale("log")
    ax.set_title(title, fontsize=10)
    ax.set_xlabel(f"{phase} epoch")
axes[0].legend(title="self_expression")
fig.tight_layout()

# %%
# The two modes start the self-expressive phase differently. The dense layer
# starts from DSC-Net's small constant (:math:`10^{-8}`), so its coefficient
# penalty starts near zero and its residual high, and both move quickly in
# the first epochs. The sparse layer starts every row at the exact ridge
# minimiser for the pretrained codes, so on these digits its terms start
# close to where they end.
# After each refresh of the sparse candidates (dotted lines) the new
# candidates start at zero, which shows as a small step in its curves.
#
# The self-expression residual is the one term that says how well the codes
# are rebuilt from the others; it is the first thing to look at when
# comparing settings without labels (see :doc:`/model_selection`). Dotted
# lines mark the sparse mode's candidate refreshes; the fraction of
# candidates that changed at each one is below.

fig, ax = plt.subplots(figsize=(5.5, 3.2))
refreshes = [e for e in fits["sparse"].history_ if e["phase"] == "refresh"]
ax.bar([e["epoch"] for e in refreshes], [e["changed"] for e in refreshes], width=1.5)
ax.set_xlabel("self-expression epoch of the refresh")
ax.set_ylabel("candidates changed")
ax.set_ylim(0, 1)
ax.set_title("Sparse mode: candidate refreshes")
fig.tight_layout()

# %%
# Time per epoch, from the ``seconds`` of each entry:

for mode, model in fits.items():
    per_epoch = [e["seconds"] for e in model.history_ if e["phase"] == "self-expression"]
    print(f"{mode:>6}: {np.mean(per_epoch):.3f} s per self-expressive epoch")

if args.output:  # run as a script with --output: save instead of showing
    for number in plt.get_fignums():
        plt.figure(number).savefig(f"{Path(args.output).with_suffix('')}-{number}.png", dpi=110)
else:
    plt.show()
