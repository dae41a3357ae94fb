"""Confusion matrix of a full-MNIST model pickled by ``bench_mnist.py full --save-dir``.

Rows are the true digits, columns the clusters, reordered by the matching
that defines ACC (Hungarian assignment), so the diagonal holds the digits
counted as correct. Labels are used here only to score.

With ``--n-components``, the labels are read again from the model's
``coef_`` (its fit's post-processing settings and seed) with that spectral
embedding size instead of taken from ``labels_``.

Usage::

    python benchmarks/confusion_mnist.py /tmp/models/bdsc-dec-aug_70000_seed0.pkl
    python benchmarks/confusion_mnist.py /tmp/models/bdsc-dec-aug_70000_seed0.pkl \
        --n-components auto
"""

import argparse
import pickle
from pathlib import Path

import numpy as np
from scipy.optimize import linear_sum_assignment
from sklearn.metrics import confusion_matrix

from bench_mnist import load_mnist
from study_label_assignment import relabel


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="pickled fitted estimator")
    parser.add_argument("--data-dir", default=Path(__file__).resolve().parents[2] / "shared" / "data")
    parser.add_argument("--n-components", type=lambda v: v if v == "auto" else int(v),
                        help="read the labels again with this embedding size ('auto' or an int)")
    args = parser.parse_args()
    _, y = load_mnist(args.data_dir)
    with open(args.model, "rb") as file:
        model = pickle.load(file)
    if args.n_components is None:
        labels = model.labels_
    else:
        labels = relabel(model, n_components=args.n_components)
    counts = confusion_matrix(y, labels)
    _, clusters = linear_sum_assignment(-counts)
    matched = counts[:, clusters]
    print("rows: digits 0-9; columns: the cluster matched to each digit")
    print(matched)
    print("cluster sizes (matched order):", matched.sum(axis=0).tolist())
    print("fraction of each digit in its matched cluster:",
          np.round(np.diag(matched) / matched.sum(axis=1), 3).tolist())


if __name__ == "__main__":
    main()
