"""Shallow baseline: closed-form ridge self-expression on raw pixels (ORL).

``C = (G + alpha I)^-1 G`` with ``G = X X^T`` (diagonal then zeroed), followed by
skdsc's post-processing. No network is trained: this shows how far subspace
clustering gets without a learned representation. Labels are used only to
score; every setting of the small grid is printed (the best one is a ceiling
chosen with labels, not a method).

Usage::

    python benchmarks/study_ridge_baseline.py --data-dir ../shared/data
"""

import argparse
import itertools
from pathlib import Path

import numpy as np

from skdsc.datasets import load_mat
from skdsc.metrics import clustering_accuracy
from skdsc.spectral import coefficients_to_labels


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=Path(__file__).resolve().parents[2] / "shared" / "data")
    args = parser.parse_args()
    X, y = load_mat(Path(args.data_dir) / "ORL_32x32.mat", (32, 32))
    X = X.astype(np.float64)
    gram = X @ X.T
    scale = np.trace(gram) / len(gram)
    for relative_alpha, (threshold, d, power) in itertools.product(
            [1e-3, 1e-2, 1e-1], [(0.2, 3, 1.0), (0.1, 4, 2.0), (0.1, 6, 4.0), (1.0, 12, 4.0)]):
        coef = np.linalg.solve(gram + relative_alpha * scale * np.eye(len(gram)), gram).T
        np.fill_diagonal(coef, 0.0)
        _, labels = coefficients_to_labels(coef, 40, threshold=threshold, subspace_dim=d,
                                           power=power, random_state=0)
        print(f"alpha={relative_alpha:g}*trace/n threshold={threshold} d={d} power={power:g}: "
              f"ACC={clustering_accuracy(y, labels):.3f}")


if __name__ == "__main__":
    main()
