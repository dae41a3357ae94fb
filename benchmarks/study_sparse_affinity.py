"""Which affinity suits the sparse self-expression mode: ``"dsc"`` or ``"symmetric"``?

Fits MiniBatchDeepSubspaceClustering with its defaults and
``self_expression="sparse"`` on the grayscale 32x32 image sets, then rebuilds
the labels from the same ``coef_`` with each affinity (the ``"auto"``
threshold of the sparse mode, 1). One record per fit: the fit's own ACC/NMI
(the default ``affinity="auto"``), ``acc_dsc``, ``acc_symmetric`` and the
NMIs. Labels only score; they choose nothing inside ``fit``.

Full MNIST records the same two scores in ``bench_mnist.py full``.

Usage::

    python benchmarks/study_sparse_affinity.py --data-dir ../shared/data \
        --datasets orl coil20 --seeds 0 1 2 --out benchmarks/results/study_sparse_affinity.jsonl
    python benchmarks/study_sparse_affinity.py --data-dir ../shared/data \
        --datasets coil100 --seeds 0 --out benchmarks/results/study_sparse_affinity.jsonl
"""

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import normalized_mutual_info_score

import bench_bdsc
import bench_contrastive
from bench_bdsc import affinity_scores
from skdsc import MiniBatchDeepSubspaceClustering
from skdsc.datasets import load_mat
from skdsc.metrics import clustering_accuracy

FILES = {**bench_bdsc.FILES, "coil100": bench_contrastive.FILES["coil100"]}


def study_one(dataset, seed, data_dir):
    X, y = load_mat(Path(data_dir) / FILES[dataset], (32, 32))
    model = MiniBatchDeepSubspaceClustering(
        len(np.unique(y)), image_shape=(1, 32, 32), self_expression="sparse",
        random_state=seed, device="cpu")
    start = time.perf_counter()
    model.fit(X)
    record = {
        "dataset": dataset, "seed": seed, "fit_seconds": time.perf_counter() - start,
        "acc": clustering_accuracy(y, model.labels_),
        "nmi": float(normalized_mutual_info_score(y, model.labels_)),
    }
    record.update(affinity_scores(model, y, seed))
    return record


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default="../shared/data")
    parser.add_argument("--datasets", nargs="+", default=["orl", "coil20"], choices=sorted(FILES))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--out", required=True, help="JSON lines file to append to")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    for dataset in args.datasets:
        for seed in args.seeds:
            record = study_one(dataset, seed, args.data_dir)
            print(json.dumps(record), flush=True)
            with open(args.out, "a") as out:
                out.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    main()
