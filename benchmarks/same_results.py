"""Check that a change of code leaves fits unchanged, bit for bit.

Fits a fixed set of configurations (defaults on ORL and COIL-20, the sparse
mode, momentum bank, augmented pretraining, ``n_init``, full batch, both
estimators), saves ``labels_``, ``coef_``, ``affinity_matrix_`` and
``predict`` of 200 rows, and compares two such files::

    git stash; python benchmarks/same_results.py save before.pkl; git stash pop
    python benchmarks/same_results.py save after.pkl
    python benchmarks/same_results.py compare before.pkl after.pkl

Run both with the same thread count (``OMP_NUM_THREADS=1``): results are
reproducible bit for bit only on the same settings.
"""

import argparse
import pickle
import time

import numpy as np
from scipy import sparse

from protocol import DEFAULT_DATA_DIR, load
from skdsc import ContrastiveDSC, MiniBatchDeepSubspaceClustering

SHORT = dict(n_pretrain_epochs=5, n_epochs=4)
CONTRASTIVE = dict(encoder="resnet10t", n_pretrain_epochs=2, n_epochs=2, batch_size=100)
CONFIGURATIONS = {
    "orl_defaults": ("orl", MiniBatchDeepSubspaceClustering, {}),
    "coil20_defaults": ("coil20", MiniBatchDeepSubspaceClustering, {}),
    "orl_sparse": ("orl", MiniBatchDeepSubspaceClustering,
                   dict(SHORT, self_expression="sparse", n_epochs=6, refresh_epochs=2)),
    "orl_momentum_augmentation_n_init": (
        "orl", MiniBatchDeepSubspaceClustering,
        dict(SHORT, bank_momentum=0.5, pretrain_augmentation=True, n_init=2)),
    "orl_full_batch_constant": ("orl", MiniBatchDeepSubspaceClustering,
                                dict(SHORT, batch_size=None, coef_init="constant", n_epochs=10)),
    "orl_contrastive": ("orl", ContrastiveDSC, CONTRASTIVE),
    "orl_contrastive_momentum_sparse": (
        "orl", ContrastiveDSC,
        dict(CONTRASTIVE, n_pretrain_epochs=1, bank_momentum=0.5, self_expression="sparse")),
}


def _dense(matrix):
    return matrix.toarray() if sparse.issparse(matrix) else matrix


def save(path, names, data_dir):
    results = {}
    for name in names:
        dataset, estimator, params = CONFIGURATIONS[name]
        X, y = load(dataset, data_dir)
        start = time.perf_counter()
        model = estimator(n_clusters=len(np.unique(y)), image_shape=(32, 32), random_state=0,
                          **params).fit(X)
        results[name] = {"labels": model.labels_, "coef": _dense(model.coef_),
                         "affinity": _dense(model.affinity_matrix_),
                         "predict": model.predict(X[:200])}
        print(f"{name}: {time.perf_counter() - start:.1f} s", flush=True)
        with open(path, "wb") as file:
            pickle.dump(results, file)


def compare(before, after):
    with open(before, "rb") as file:
        old = pickle.load(file)
    with open(after, "rb") as file:
        new = pickle.load(file)
    same = True
    for name in old:
        if name not in new:
            print(f"{name}: missing from {after}")
            same = False
            continue
        equal = {key: bool(np.array_equal(old[name][key], new[name][key])) for key in old[name]}
        same &= all(equal.values())
        print(f"{name}: {'identical' if all(equal.values()) else equal}")
    return same


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    saving = commands.add_parser("save", help="fit the configurations and save their results")
    saving.add_argument("path")
    saving.add_argument("names", nargs="*",
                        help=f"configurations (default: all): {', '.join(CONFIGURATIONS)}")
    saving.add_argument("--data-dir", default=DEFAULT_DATA_DIR)
    comparing = commands.add_parser("compare", help="compare two saved files")
    comparing.add_argument("before")
    comparing.add_argument("after")
    args = parser.parse_args()
    unknown = sorted(set(getattr(args, "names", [])) - set(CONFIGURATIONS))
    if unknown:
        parser.error(f"unknown configurations {unknown}; known: {', '.join(CONFIGURATIONS)}")
    if args.command == "save":
        save(args.path, args.names or list(CONFIGURATIONS), args.data_dir)
    elif not compare(args.before, args.after):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
