"""Confusion matrix of a full-MNIST model pickled by ``bench_mnist.py full --save-dir``.

Rows are the true digits, columns the clusters, reordered by the matching
that defines ACC (Hungarian assignment), so the diagonal holds the digits
counted as correct. Labels are used here only to score.

Usage::

    python benchmarks/confusion_mnist.py /tmp/models/bdsc-dec-aug_70000_seed0.pkl
"""

import argparse
import pickle
from pathlib import Path

import numpy as np
from scipy.optimize import linear_sum_assignment
from sklearn.metrics import confusion_matrix

from bench_mnist import load_mnist


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="pickled fitted estimator")
    parser.add_argument("--data-dir", default=Path(__file__).resolve().parents[2] / "shared" / "data")
    args = parser.parse_args()
    _, y = load_mnist(args.data_dir)
    with open(args.model, "rb") as file:
        labels = pickle.load(file).labels_
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
