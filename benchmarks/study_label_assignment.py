"""Label assignment of spectral clustering: k-means on unit rows vs column-pivoted QR.

Re-runs only the post-processing of fitted ``MiniBatchDeepSubspaceClustering``
models on their own ``coef_``: for each affinity (``"symmetric"``, ``"dsc"``)
the labels are read off the same spectral embedding by
``assign_labels="kmeans"`` (k-means on the rows scaled to unit length, Ng,
Jordan and Weiss) and by ``"cluster_qr"`` (Damle et al.). The threshold,
subspace dimension, power and seed are those the fit used. Labels are used
only to score.

Models come from two places:

* ``--fit DATASET ...`` fits the defaults (``self_expression`` dense and
  sparse, ``--seeds``) on ORL, COIL-20 or the grayscale COIL-100, each fit
  pickled into ``--cache-dir`` so that a rerun only re-scores;
* ``--mnist-models PICKLE ...`` scores estimators pickled by
  ``bench_mnist.py full --save-dir`` (all 70,000 digits); their records
  name the data set ``mnist/ESTIMATOR`` (earlier records: ``mnist``).

Usage::

    python benchmarks/study_label_assignment.py --data-dir ../shared/data \\
        --fit orl coil20 --seeds 0 1 2 --cache-dir /tmp/skdsc_label_study \\
        --out benchmarks/results/label_assignment.jsonl
    python benchmarks/study_label_assignment.py --data-dir ../shared/data \\
        --mnist-models /tmp/models/bdsc-dec-long_70000_seed*.pkl \\
        --out benchmarks/results/label_assignment.jsonl
    python benchmarks/study_label_assignment.py --summary \\
        --out benchmarks/results/label_assignment.jsonl
"""

import argparse
import json
import pickle
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import normalized_mutual_info_score
from sklearn.utils import check_random_state

import bench_bdsc
import bench_contrastive
from bench_mnist import load_mnist
from skdsc import MiniBatchDeepSubspaceClustering
from skdsc.datasets import load_mat
from skdsc.metrics import clustering_accuracy
from skdsc.spectral import AFFINITIES, LABEL_ASSIGNMENTS, coefficients_to_labels

MODES = ("dense", "sparse")
FILES = {**bench_bdsc.FILES, **bench_contrastive.FILES}


def fitted_model(dataset, mode, seed, data_dir, cache_dir):
    """``(model, y)`` of a default fit, from the cache when present."""
    path = Path(cache_dir) / f"{dataset}_{mode}_seed{seed}.pkl"
    if not path.exists():
        X, y = load_mat(Path(data_dir) / FILES[dataset], (32, 32))
        model = MiniBatchDeepSubspaceClustering(
            len(np.unique(y)), image_shape=(1, 32, 32), self_expression=mode, device="cpu",
            random_state=seed).fit(X)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as sink:
            pickle.dump((model, y), sink)
    with open(path, "rb") as source:
        return pickle.load(source)


def models(args):
    """``(dataset, seed, model, y)`` for the fits and pickles named on the command line."""
    for dataset in args.fit:
        for mode in args.modes:
            for seed in args.seeds:
                model, y = fitted_model(dataset, mode, seed, args.data_dir, args.cache_dir)
                yield dataset, seed, model, y
    if args.mnist_models:
        _, y = load_mnist(args.data_dir)
    for path in args.mnist_models:
        with open(path, "rb") as source:
            model = pickle.load(source)
        # bench_mnist.py names its pickles ESTIMATOR_NSAMPLES_seedSEED.pkl.
        yield f"mnist/{Path(path).stem.rsplit('_', 2)[0]}", model.random_state, model, y


def fit_seed(model):
    """The seed ``fit`` gave its post-processing (drawn from an int ``random_state``)."""
    return check_random_state(model.random_state).randint(np.iinfo(np.int32).max)


def score(model, y):
    """One record per (affinity, assignment) on the model's ``coef_``."""
    mode = model.self_expression_
    for affinity in AFFINITIES:
        for assign_labels in LABEL_ASSIGNMENTS:
            yield dict(mode=mode, affinity=affinity, assign_labels=assign_labels,
                       **rescore(model, y, affinity=affinity, assign_labels=assign_labels,
                                 n_components=model.n_clusters))


def relabel(model, **settings):
    """Labels of the model's own post-processing (its fit's settings and seed),
    with the keyword arguments of ``coefficients_to_labels`` in ``settings`` changed."""
    mode = model.self_expression_
    fitted = dict(affinity=model._affinity(mode), threshold=model._threshold(mode),
                  subspace_dim=model.subspace_dim, power=model.affinity_power,
                  assign_labels=model.assign_labels, random_state=fit_seed(model))
    return coefficients_to_labels(model.coef_, model.n_clusters, **{**fitted, **settings})[1]


def rescore(model, y, **settings):
    """ACC, NMI and seconds of :func:`relabel`."""
    start = time.perf_counter()
    labels = relabel(model, **settings)
    return dict(acc=clustering_accuracy(y, labels), nmi=normalized_mutual_info_score(y, labels),
                seconds=time.perf_counter() - start)


def summary(path):
    """Markdown table: mean ACC / NMI per data set, mode and affinity, for each assignment."""
    records = [json.loads(line) for line in open(path)]
    groups = {}
    for record in records:
        key = (record["dataset"], record["mode"], record["affinity"])
        groups.setdefault(key, {}).setdefault(record["assign_labels"], []).append(record)
    print("| data | mode | affinity | fits | ACC kmeans | ACC cluster_qr | NMI kmeans "
          "| NMI cluster_qr | kmeans better / equal / worse |")
    print("|---|---|---|---|---|---|---|---|---|")
    for (dataset, mode, affinity), by_assignment in sorted(groups.items()):
        kmeans = {r["seed"]: r for r in by_assignment.get("kmeans", [])}
        qr = {r["seed"]: r for r in by_assignment.get("cluster_qr", [])}
        seeds = sorted(set(kmeans) & set(qr))
        if not seeds:
            continue
        gain = [kmeans[s]["acc"] - qr[s]["acc"] for s in seeds]
        counts = (sum(g > 0 for g in gain), sum(g == 0 for g in gain), sum(g < 0 for g in gain))

        def mean(table, key):
            return f"{np.mean([table[s][key] for s in seeds]):.3f}"

        print(f"| {dataset} | {mode} | {affinity} | {len(seeds)} | {mean(kmeans, 'acc')} "
              f"| {mean(qr, 'acc')} | {mean(kmeans, 'nmi')} | {mean(qr, 'nmi')} "
              f"| {' / '.join(map(str, counts))} |")


def main():
    run_study(__doc__, score, summary)


def run_study(doc, score, summary):
    """Command line of a post-processing study: score models, or summarise the records.

    ``score(model, y)`` yields one record per setting; each gets the data set
    and seed and is appended to ``--out``.
    """
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--data-dir", default=Path(__file__).resolve().parents[2] / "shared" / "data")
    parser.add_argument("--fit", nargs="*", default=[], choices=["orl", "coil20", "coil100"])
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--cache-dir", default="skdsc_label_study")
    parser.add_argument("--mnist-models", nargs="*", default=[])
    parser.add_argument("--threads", type=int, default=1, help="torch threads per fit")
    parser.add_argument("--out", required=True, help="JSON lines file (appended to)")
    parser.add_argument("--summary", action="store_true", help="only summarise --out")
    args = parser.parse_args()
    if args.summary:
        summary(args.out)
        return
    torch.set_num_threads(args.threads)

    with open(args.out, "a") as sink:
        for dataset, seed, model, y in models(args):
            for record in score(model, y):
                record.update(dataset=dataset, seed=seed)
                sink.write(json.dumps(record) + "\n")
                sink.flush()  # a long run keeps what it has scored if stopped
                print(json.dumps(record), flush=True)


if __name__ == "__main__":
    main()
