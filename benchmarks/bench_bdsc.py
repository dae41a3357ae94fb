"""Benchmark MiniBatchDeepSubspaceClustering on ORL and COIL-20.

Every fit runs in its own subprocess so that its peak resident memory (RSS)
is measured alone. Labels are used only to score the final labels; ``fit``
never sees them. Results are appended as JSON lines to ``--out``; run
``summarize.py`` on that file for the table in RESULTS.md.

Usage::

    python benchmarks/bench_bdsc.py --data-dir ../shared/data --seeds 0 1 2 3 4 \
        --workers 2 --out benchmarks/results/bdsc_cpu.jsonl
"""

import argparse
import itertools
import json
import os
import resource
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

# DSC-Net's published settings (Ji et al. 2017) for these data sets, with the
# autoencoder pretrained inside fit (no external weights). Images are in [0, 1].
PUBLISHED = {
    "orl": dict(hidden_channels=(3, 3, 5), kernel_sizes=(3, 3, 3), lambda_coef=2.0,
                lambda_self=0.2, n_epochs=700, n_pretrain_epochs=500, learning_rate=1e-3,
                threshold=0.2, subspace_dim=3, affinity_power=1.0),
    "coil20": dict(hidden_channels=(15,), kernel_sizes=(3,), lambda_coef=1.0,
                   lambda_self=75.0, n_epochs=40, n_pretrain_epochs=200, learning_rate=1e-3,
                   threshold=0.04, subspace_dim=12, affinity_power=8.0),
}
FILES = {"orl": "ORL_32x32.mat", "coil20": "COIL20.mat"}
N_SAMPLES = {"orl": 400, "coil20": 1440}


def configurations(dataset):
    """(name, parameters) pairs: published settings at k = 1, 2, 4, 8, and the defaults."""
    n = N_SAMPLES[dataset]
    for k in (1, 2, 4, 8):
        batch_size = None if k == 1 else n // k
        yield f"published k={k}", dict(PUBLISHED[dataset], batch_size=batch_size)
    yield "defaults", {}


def fit_once(dataset, params, seed, data_dir, device):
    """Fit in this process and return the measurements (run by the subprocess)."""
    import numpy as np
    import torch

    from skdsc import MiniBatchDeepSubspaceClustering
    from skdsc.datasets import load_mat

    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "1")))
    X, y = load_mat(Path(data_dir) / FILES[dataset], (32, 32))
    model = MiniBatchDeepSubspaceClustering(
        len(np.unique(y)), image_shape=(1, 32, 32), random_state=seed, device=device, **params)
    return measure(model, X, y)


def measure(model, X, y):
    """Fit ``model`` on ``X`` and return its scores (``y`` scores only), time and memory."""
    import numpy as np
    import torch
    from sklearn.metrics import normalized_mutual_info_score

    from skdsc.metrics import clustering_accuracy

    start = time.perf_counter()
    model.fit(X)
    seconds = time.perf_counter() - start
    restarts = sum(h["phase"] == "restart" for h in model.history_)
    agreement = float(np.mean(model.predict(X) == model.labels_))
    return {
        "acc": clustering_accuracy(y, model.labels_),
        "nmi": float(normalized_mutual_info_score(y, model.labels_)),
        "fit_seconds": seconds,
        "predict_agreement": agreement,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "threads": torch.get_num_threads(),
        "restarts": restarts,
        "device": torch.cuda.get_device_name() if model.device_.type == "cuda" else "cpu",
        "peak_gpu_mb": (torch.cuda.max_memory_allocated() / 2**20
                        if model.device_.type == "cuda" else None),
    }


def affinity_scores(model, y, seed):
    """ACC and NMI of labels rebuilt from ``coef_`` with each affinity.

    Run after the peak RSS is read, so that these extra post-processings do
    not count in it; the threshold is the one the fit used.
    """
    from sklearn.metrics import normalized_mutual_info_score

    from skdsc.metrics import clustering_accuracy
    from skdsc.spectral import AFFINITIES, coefficients_to_labels

    threshold = model._threshold(model.self_expression_)  # "auto" resolved as in fit
    scores = {}
    for affinity in AFFINITIES:
        _, labels = coefficients_to_labels(
            model.coef_, model.n_clusters, affinity=affinity, threshold=threshold,
            subspace_dim=model.subspace_dim, power=model.affinity_power,
            assign_labels=model.assign_labels, n_components=model.n_components,
            random_state=seed)
        scores[f"acc_{affinity}"] = clustering_accuracy(y, labels)
        scores[f"nmi_{affinity}"] = normalized_mutual_info_score(y, labels)
    return scores


def print_child_record(payload, fit):
    """In a ``--child`` process: fit the job described by ``payload``, print its record."""
    job = json.loads(payload)
    print(json.dumps(fit(job["dataset"], job["params"], job["seed"], job["data_dir"], job["device"])))


def run_in_subprocess(job, data_dir, device, script=__file__):
    """Run ``script --child`` on one job in a fresh process and return its record."""
    dataset, name, params, seed = job
    payload = json.dumps({"dataset": dataset, "params": params, "seed": seed,
                          "data_dir": str(data_dir), "device": device})
    done = subprocess.run([sys.executable, script, "--child", payload],
                          capture_output=True, text=True, check=True)
    record = json.loads(done.stdout.strip().splitlines()[-1])
    record.update(dataset=dataset, config=name, seed=seed, params=params)
    return record


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--data-dir", default=Path(__file__).resolve().parents[2] / "shared" / "data")
    parser.add_argument("--datasets", nargs="+", default=["orl", "coil20"], choices=sorted(FILES))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    parser.add_argument("--configs", nargs="*", help="only configurations whose name starts so")
    parser.add_argument("--workers", type=int, default=1, help="fits run side by side")
    parser.add_argument("--device", default="cpu", help="'cpu' or 'cuda'")
    parser.add_argument("--out", default="benchmarks/results/bdsc_cpu.jsonl")
    args = parser.parse_args()
    if args.child:
        print_child_record(args.child, fit_once)
        return
    jobs = [(d, name, params, seed)
            for d in args.datasets
            for (name, params), seed in itertools.product(configurations(d), args.seeds)
            if not args.configs or any(name.startswith(c) for c in args.configs)]
    run_jobs(jobs, args.data_dir, args.device, args.workers, args.out)


def run_jobs(jobs, data_dir, device, workers, out, script=__file__):
    """Run fits side by side, append their records to ``out`` and print a line each.

    ``script`` is the benchmark whose ``--child`` mode fits one job.
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor(workers) as pool, out.open("a") as sink:
        for record in pool.map(lambda job: run_in_subprocess(job, data_dir, device, script), jobs):
            sink.write(json.dumps(record) + "\n")
            sink.flush()
            print(f"{record['dataset']:11s} {record['config']:22s} seed={record['seed']} "
                  f"ACC={record['acc']:.3f} NMI={record['nmi']:.3f} restarts={record['restarts']} "
                  f"{record['fit_seconds']:.1f}s {record['peak_rss_mb']:.0f}MB", flush=True)


if __name__ == "__main__":
    main()
