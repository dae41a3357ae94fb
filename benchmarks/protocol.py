"""The evaluation protocol: development sets, report sets, and a linear baseline beside every row.

Defaults may be chosen only on the **development sets** (ORL, COIL-20 and the
synthetic families of ``skdsc.datasets``; see ``tune_defaults.py``). The
**report sets** (COIL-100 gray and RGB, all of MNIST, scikit-learn's digits)
are only measured, with the defaults untouched, after every change of a
default. Every fit gives only ``n_clusters`` and ``image_shape`` (plus
``random_state``); labels score the final labels and never enter ``fit``.

Beside every data set the script scores the **linear self-expression
baseline**: the closed-form ridge self-expression of the raw pixels (relative
penalty 0.1 of the mean squared row norm, chosen on ORL in
the former ``study_ridge_baseline.py``, results/study_ridge_baseline.txt) followed by the same post-processing as the
estimator's dense mode; above 10,000 samples each row is expressed over its 32
nearest rows instead (the sparse mode's rule).

Each fit runs in a fresh process, so its peak RSS is its own. Records are
appended as JSON lines to ``--out``; ``--table`` prints the markdown table of
a records file.

Usage::

    python benchmarks/protocol.py --sets report --seeds 0 1 2 \
        --out benchmarks/results/protocol.jsonl
    python benchmarks/protocol.py --table benchmarks/results/protocol.jsonl
"""

import argparse
import json
import os
import resource
import subprocess
import time
from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

DEFAULT_DATA_DIR = Path(__file__).resolve().parents[2] / "shared" / "data"
# name -> (n_clusters, image_shape); loaders below.
DEVELOPMENT_SETS = {"orl": (40, (1, 32, 32)), "coil20": (20, (1, 32, 32))}
REPORT_SETS = {
    "digits": (10, (1, 8, 8)),
    "coil100": (100, (1, 32, 32)),
    "coil100rgb": (100, (3, 32, 32)),
    "mnist": (10, (1, 28, 28)),
}
ALL_SETS = {**DEVELOPMENT_SETS, **REPORT_SETS}
# Relative ridge penalty of the linear baseline (fraction of the mean squared row norm).
BASELINE_PENALTY = 0.1
BASELINE_NEIGHBORS = 32


def load(name, data_dir, n_samples=None, seed=0):
    """``(X, y)`` of a protocol data set, rows flattened in C order, values in [0, 1].

    ``n_samples`` draws a stratified subset (seeded by ``seed``), for MNIST.
    """
    from skdsc.datasets import load_mat

    data_dir = Path(data_dir)
    if name == "orl":
        X, y = load_mat(data_dir / "ORL_32x32.mat", (32, 32))
    elif name == "coil20":
        X, y = load_mat(data_dir / "COIL20.mat", (32, 32))
    elif name == "coil100":
        X, y = load_mat(data_dir / "COIL100_32x32.mat", (32, 32))
    elif name == "coil100rgb":
        with np.load(data_dir / "COIL100_32x32_rgb.npz") as data:
            # (n, H, W, C) -> (n, C, H, W), flattened.
            X = data["X"].transpose(0, 3, 1, 2).reshape(len(data["X"]), -1) / np.float32(255)
            _, y = np.unique(data["y"], return_inverse=True)
    elif name == "mnist":
        with np.load(data_dir / "mnist.npz") as data:
            X = np.concatenate([data["x_train"], data["x_test"]]).reshape(-1, 784)
            y = np.concatenate([data["y_train"], data["y_test"]]).astype(np.int64)
        X = X / np.float32(255)
    elif name == "digits":
        from sklearn.datasets import load_digits

        X, y = load_digits(return_X_y=True)
        X = X / 16.0
    else:
        raise ValueError(f"Unknown data set {name!r}; known: {sorted(ALL_SETS)}.")
    X = np.asarray(X, dtype=np.float32)
    if n_samples is not None and n_samples < len(X):
        from sklearn.model_selection import train_test_split

        X, _, y, _ = train_test_split(X, y, train_size=n_samples, stratify=y, random_state=seed)
    return X, np.asarray(y, dtype=np.int64)


def scores(y, labels):
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    from skdsc.metrics import clustering_accuracy

    return {"acc": float(clustering_accuracy(y, labels)),
            "nmi": float(normalized_mutual_info_score(y, labels)),
            "ari": float(adjusted_rand_score(y, labels))}


def _commit():
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, cwd=Path(__file__).parent).stdout.strip()
    except OSError:
        return "unknown"


def fit_and_score(dataset, estimator, params, seed, data_dir, n_samples=None):
    """Fit one estimator with ``params`` on a data set and return its record.

    Run in a fresh process (see ``main``) so that ``peak_rss_mb`` is its own.
    """
    import torch

    import skdsc

    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "1")))
    n_clusters, image_shape = ALL_SETS[dataset]
    X, y = load(dataset, data_dir, n_samples)
    model = getattr(skdsc, estimator)(n_clusters, image_shape=image_shape, random_state=seed,
                                      **params)
    start = time.perf_counter()
    model.fit(X)
    seconds = time.perf_counter() - start
    return {
        "commit": _commit(), "dataset": dataset, "n_samples": len(X), "estimator": estimator,
        "params": params, "seed": seed, **scores(y, model.labels_), "fit_seconds": seconds,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "device": str(model.device_), "self_expression": model.self_expression_,
    }


def linear_baseline(dataset, data_dir, n_samples=None):
    """Record of the ridge self-expression of the raw pixels (no network)."""
    import torch

    from skdsc.nn.neighbors import nearest_neighbors
    from skdsc.nn.self_expression import local_ridge_regression, ridge_coefficients
    from skdsc.spectral import coefficients_to_labels

    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "1")))
    n_clusters, _ = ALL_SETS[dataset]
    X, y = load(dataset, data_dir, n_samples)
    start = time.perf_counter()
    codes = torch.as_tensor(X, dtype=torch.float64)
    penalty = BASELINE_PENALTY * float(codes.pow(2).sum(1).mean())
    if len(X) <= 10_000:
        coef = ridge_coefficients(codes, penalty).numpy()
        settings = dict(affinity="dsc", threshold=0.1, subspace_dim=6, power=4.0)
    else:
        from scipy import sparse

        neighbors = nearest_neighbors(codes.float(), BASELINE_NEIGHBORS)
        values = local_ridge_regression(codes, codes, neighbors, penalty).numpy()
        k = neighbors.shape[1]
        coef = sparse.csr_matrix((values.ravel(), neighbors.numpy().ravel(),
                                  np.arange(0, len(X) * k + 1, k)), shape=(len(X), len(X)))
        settings = dict(affinity="symmetric", threshold=1.0)
    _, labels = coefficients_to_labels(coef, n_clusters, random_state=0, **settings)
    return {"commit": _commit(), "dataset": dataset, "n_samples": len(X),
            "estimator": "linear ridge self-expression (raw pixels)", "params": {},
            "seed": 0, **scores(y, labels), "fit_seconds": time.perf_counter() - start,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "device": "cpu"}


def table(path):
    """Markdown table (mean ± std over seeds) of a records file."""
    # A seed run again (a resumed benchmark) counts once: its last record.
    latest = {}
    for line in Path(path).read_text().splitlines():
        record = json.loads(line)
        key = (record["dataset"], record["n_samples"], record["estimator"],
               json.dumps(record["params"], sort_keys=True))
        latest[key, record["seed"]] = record
    groups = defaultdict(list)
    for (key, _), record in latest.items():
        groups[key].append(record)
    rows = ["| data | n | estimator | params | seeds | ACC | NMI | ARI | fit (s) | peak RSS (MB) |",
            "|---|---|---|---|---|---|---|---|---|---|"]

    def stat(records, key, fmt):
        values = np.array([r[key] for r in records])
        if len(values) == 1:
            return format(values[0], fmt)
        return f"{format(values.mean(), fmt)} ± {format(values.std(), fmt)}"

    for (dataset, n, estimator, params), records in sorted(groups.items()):
        params = "defaults" if params == "{}" else f"`{params}`"
        rows.append(
            f"| {dataset} | {n} | {estimator} | {params} | {len(records)} "
            f"| {stat(records, 'acc', '.3f')} | {stat(records, 'nmi', '.3f')} "
            f"| {stat(records, 'ari', '.3f')} | {stat(records, 'fit_seconds', '.0f')} "
            f"| {max(r['peak_rss_mb'] for r in records):.0f} |")
    return "\n".join(rows)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", nargs="+", default=["report"],
                        help="'development', 'report', or data set names: "
                             + ", ".join(ALL_SETS))
    parser.add_argument("--estimators", nargs="+", default=["MiniBatchDeepSubspaceClustering"])
    parser.add_argument("--params", default="{}",
                        help="JSON of extra estimator parameters (the protocol's rows use none)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--n-samples", type=int, default=None,
                        help="stratified subset size (for MNIST)")
    parser.add_argument("--data-dir", default=DEFAULT_DATA_DIR)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--no-baseline", action="store_true")
    parser.add_argument("--out")
    parser.add_argument("--table", metavar="RECORDS", help="print the table of a records file")
    args = parser.parse_args()
    if args.table:
        print(table(args.table))
        return
    if not args.out:
        parser.error("--out is required to run fits")
    names = []
    for name in args.sets:
        names += {"development": list(DEVELOPMENT_SETS), "report": list(REPORT_SETS)}.get(
            name, [name])
    unknown = sorted(set(names) - set(ALL_SETS))
    if unknown:
        parser.error(f"unknown data sets {unknown}; known: {sorted(ALL_SETS)}")
    params = json.loads(args.params)
    tasks = []
    for name in names:
        if not args.no_baseline:
            tasks.append((linear_baseline, name, str(args.data_dir), args.n_samples))
        for estimator in args.estimators:
            for seed in args.seeds:
                tasks.append((fit_and_score, name, estimator, params, seed, str(args.data_dir),
                              args.n_samples))
    run_tasks(tasks, args.workers, args.out)


def run_tasks(tasks, workers, out_path, **extra):
    """Run ``(function, *args)`` tasks, one fresh process each, appending their records.

    Records are written (with ``extra`` added) in the order of ``tasks`` as
    they complete, and echoed to stdout.
    """
    # One task per process: each fit's peak RSS is its own.
    with ProcessPoolExecutor(workers, max_tasks_per_child=1) as pool, \
            open(out_path, "a") as out:
        futures = [pool.submit(*task) for task in tasks]
        for future in futures:
            record = {**future.result(), **extra}
            out.write(json.dumps(record) + "\n")
            out.flush()
            print(json.dumps(record), flush=True)


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
