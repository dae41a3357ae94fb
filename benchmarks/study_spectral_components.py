"""Size of the spectral embedding: ``n_clusters`` eigenvectors or a few more.

Re-runs only the post-processing of fitted ``MiniBatchDeepSubspaceClustering``
models on their own ``coef_``: for each affinity (``"symmetric"``, ``"dsc"``)
the labels are k-means (on unit-length rows) of the ``m`` leading eigenvectors
of the normalised affinity, for ``m`` = ``n_clusters`` (scikit-learn's
default), ``n_clusters + 1`` (skdsc's ``n_components="auto"``),
``n_clusters + 2``, ``n_clusters + 3`` and ``2 * n_clusters``. The threshold,
subspace dimension, power and seed are those the fit used; training does not
depend on ``n_components``, so these are the labels a fit with that setting
gives. Labels are used only to score.

Models come from the same places as in ``study_label_assignment.py`` (whose
``--cache-dir`` fits are reused): ``--fit DATASET ...`` for ORL, COIL-20 and
the grayscale COIL-100, ``--mnist-models PICKLE ...`` for estimators pickled by
``bench_mnist.py full --save-dir``.

Usage::

    python benchmarks/study_spectral_components.py --data-dir ../shared/data \\
        --fit orl coil20 coil100 --seeds 0 1 2 --cache-dir /tmp/skdsc_label_study \\
        --out benchmarks/results/spectral_components.jsonl
    python benchmarks/study_spectral_components.py --data-dir ../shared/data \\
        --mnist-models /tmp/models/bdsc-dec-aug_70000_seed*.pkl \\
        --out benchmarks/results/spectral_components.jsonl
    python benchmarks/study_spectral_components.py --summary \\
        --out benchmarks/results/spectral_components.jsonl
"""

import json

import numpy as np

from study_label_assignment import rescore, run_study
from skdsc.spectral import AFFINITIES

# Embedding sizes compared, as functions of n_clusters.
SIZES = {
    "k": lambda k: k,
    "k+1": lambda k: k + 1,
    "k+2": lambda k: k + 2,
    "k+3": lambda k: k + 3,
    "2k": lambda k: 2 * k,
}


def score(model, y):
    """One record per (affinity, embedding size) on the model's ``coef_``."""
    mode = model.self_expression_
    k = model.n_clusters
    for affinity in AFFINITIES:
        for size, n_components in SIZES.items():
            yield dict(mode=mode, affinity=affinity, size=size, n_components=n_components(k),
                       **rescore(model, y, affinity=affinity, assign_labels="kmeans",
                                 n_components=n_components(k)))


def summary(path):
    """Markdown table: mean ACC / NMI per data set, mode and affinity, for each size."""
    records = [json.loads(line) for line in open(path)]
    groups = {}
    for record in records:
        key = (record["dataset"], record["mode"], record["affinity"])
        groups.setdefault(key, {}).setdefault(record["size"], {})[record["seed"]] = record
    sizes = list(SIZES)
    print("| data | mode | affinity | fits | " + " | ".join(f"ACC {s}" for s in sizes)
          + " | " + " | ".join(f"NMI {s}" for s in sizes) + " | k+1 better / equal / worse |")
    print("|---" * (5 + 2 * len(sizes)) + "|")
    for (dataset, mode, affinity), by_size in sorted(groups.items()):
        seeds = sorted(set.intersection(*(set(by_size.get(s, {})) for s in sizes)))
        if not seeds:
            continue

        def mean(size, key):
            return f"{np.mean([by_size[size][s][key] for s in seeds]):.3f}"

        gain = [by_size["k+1"][s]["acc"] - by_size["k"][s]["acc"] for s in seeds]
        counts = (sum(g > 0 for g in gain), sum(g == 0 for g in gain), sum(g < 0 for g in gain))
        print(f"| {dataset} | {mode} | {affinity} | {len(seeds)} | "
              + " | ".join(mean(s, "acc") for s in sizes) + " | "
              + " | ".join(mean(s, "nmi") for s in sizes) + " | "
              + " / ".join(map(str, counts)) + " |")


def main():
    run_study(__doc__, score, summary)


if __name__ == "__main__":
    main()
