"""
Choosing parameters without labels: a grid search with a label-free scorer
==========================================================================

Clustering is used where there are no labels, so its parameters have to be
chosen without them. :func:`skdsc.metrics.embedding_silhouette_scorer` scores
a fitted model on data it was not fitted on, without labels: it assigns the
rows to clusters with ``predict``, encodes them with the fitted encoder, and
returns the silhouette of those clusters in the latent space (cosine
distance). It works as the ``scoring`` of scikit-learn's
:class:`~sklearn.model_selection.GridSearchCV`, also when the estimator is the
last step of a :class:`~sklearn.pipeline.Pipeline`.

This example searches ``lambda_self`` (the weight of the self-expression
term) and ``subspace_dim`` (the rank of the DSC post-processing) for
:class:`skdsc.MiniBatchDeepSubspaceClustering` on scikit-learn's bundled 8x8
digits, with three-fold cross-validation: each setting is fitted on two
thirds of the digits and scored on the remaining third. The true digits are
used only after the search, to report the accuracy of what it chose.

A silhouette compares the tightness of clusters across different latent
spaces; it is a guide, not a guarantee (see :doc:`/model_selection`).

Run it as a script with::

    python examples/plot_label_free_grid_search.py            # about 5 minutes on one CPU core
    python examples/plot_label_free_grid_search.py --quick    # 2 settings, few epochs
"""

# %%
# Data and pipeline
# -----------------
# ``SKDSC_EXAMPLES_QUICK=1`` in the environment, or ``--quick``, searches two
# settings with few epochs and two folds. The pipeline scales each pixel to [0, 1] and
# clusters the digits as 1-channel 8x8 images.

import argparse
import os
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import GridSearchCV, KFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import MinMaxScaler

from skdsc import MiniBatchDeepSubspaceClustering
from skdsc.metrics import clustering_accuracy, embedding_silhouette_scorer

parser = argparse.ArgumentParser(description="Label-free grid search on digits.")
parser.add_argument("--quick", action="store_true", help="two settings, few epochs")
parser.add_argument("--output", help="save the figure to OUTPUT-1.png instead of showing it")
parser.add_argument("--device", default="auto", help="'auto', 'cpu' or 'cuda'")
args, _ = parser.parse_known_args()  # sphinx-gallery passes arguments of its own
QUICK = args.quick or os.environ.get("SKDSC_EXAMPLES_QUICK", "0") not in ("", "0")

X, y_true = load_digits(return_X_y=True)  # y_true is used only after the search

pipeline = make_pipeline(
    MinMaxScaler(),
    MiniBatchDeepSubspaceClustering(
        n_clusters=10, image_shape=(1, 8, 8), hidden_channels=(16,), kernel_sizes=(3,),
        batch_size=256, n_pretrain_epochs=5 if QUICK else 50, n_epochs=5 if QUICK else 50,
        learning_rate=1e-3, affinity_power=2.0, device=args.device, random_state=0,
    ),
)
step = "minibatchdeepsubspaceclustering__"
if QUICK:
    param_grid = {step + "lambda_self": [1.0, 16.0], step + "subspace_dim": [4]}
else:
    param_grid = {step + "lambda_self": [1.0, 4.0, 16.0], step + "subspace_dim": [2, 4, 8]}

# %%
# The search
# ----------
# ``fit`` gets ``X`` only. Each candidate is fitted on the training folds
# and scored on the held-out fold: ``predict`` assigns the held-out digits to
# the fitted clusters and the silhouette of those clusters is measured on
# their codes. The best candidate is then refitted on all digits.

n_folds = 2 if QUICK else 3
search = GridSearchCV(pipeline, param_grid, scoring=embedding_silhouette_scorer,
                      cv=KFold(n_folds, shuffle=True, random_state=0))
search.fit(X)
print("chosen parameters:", {k.removeprefix(step): v for k, v in search.best_params_.items()})
print(f"its mean held-out silhouette: {search.best_score_:.3f}")

# %%
# Scores per setting
# ------------------
# Mean held-out silhouette over the folds, with the standard deviation as
# error bars; the chosen setting is marked.

results = search.cv_results_
lambdas = param_grid[step + "lambda_self"]
dims = param_grid[step + "subspace_dim"]
fig, ax = plt.subplots(figsize=(6.5, 4))
width = 0.8 / len(dims)
for d_index, dim in enumerate(dims):
    rows = [np.flatnonzero((results["param_" + step + "lambda_self"] == lam)
                           & (results["param_" + step + "subspace_dim"] == dim))[0]
            for lam in lambdas]
    positions = np.arange(len(lambdas)) + (d_index - (len(dims) - 1) / 2) * width
    ax.bar(positions, results["mean_test_score"][rows], width,
           yerr=results["std_test_score"][rows], capsize=3, label=f"subspace_dim={dim}")
best = search.best_index_
best_position = (lambdas.index(results["param_" + step + "lambda_self"][best])
                 + (dims.index(results["param_" + step + "subspace_dim"][best])
                    - (len(dims) - 1) / 2) * width)
ax.annotate("chosen", (best_position, results["mean_test_score"][best]),
            xytext=(0, 18), textcoords="offset points", ha="center",
            arrowprops=dict(arrowstyle="->"))
ax.set_xticks(range(len(lambdas)), [f"{lam:g}" for lam in lambdas])
ax.set_xlabel("lambda_self")
ax.set_ylabel("held-out silhouette of the codes")
ax.set_title(f"Label-free score of each setting ({n_folds}-fold CV)")
ax.legend(loc="lower right")
fig.tight_layout()

# %%
# Accuracy, afterwards
# --------------------
# Only now are the true digits used. ``best_estimator_`` is the chosen
# setting refitted on all digits; for comparison, the setting the scorer
# ranked last is fitted on all digits too.

chosen = search.best_estimator_
print(f"chosen setting:        ACC = {clustering_accuracy(y_true, chosen[-1].labels_):.3f}")
worst = pipeline.set_params(**results["params"][int(np.argmin(results["mean_test_score"]))])
worst_labels = worst.fit(X)[-1].labels_
print(f"lowest-ranked setting: ACC = {clustering_accuracy(y_true, worst_labels):.3f}")

if args.output:  # run as a script with --output: save instead of showing
    for number in plt.get_fignums():
        plt.figure(number).savefig(f"{Path(args.output).with_suffix('')}-{number}.png", dpi=110)
else:
    plt.show()
