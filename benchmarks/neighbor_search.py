"""Nearest-neighbour search: exact against faiss, wall time and recall@k.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/neighbor_search.py --sizes 10000 70000
    python benchmarks/neighbor_search.py --sizes 20000 --features pca:10 --methods exact faiss

Each size draws a stratified subset of MNIST (all 70,000 digits at 70000),
searches every sample's ``--k`` nearest others (cosine, the sample itself
excluded: the candidate search of the sparse self-expression mode, whose
``n_nonzero`` default is 32) with each method, and appends one JSON line per
(size, method) to ``--out``: commit, n, d, k, method, seconds (index build
and search together, and each apart), recall@k against the exact search,
the fraction of neighbours of the sample's own digit, threads.

``--features`` says what is searched: ``pixels`` (the raw 784 pixels in
[0, 1]), ``pca:D`` (their D leading principal components, a stand-in for
low-dimensional codes), ``untrained-conv`` (2,940-dimensional codes of the
estimators' default convolutional encoder for 28 x 28 images, randomly
initialised: the dimension of the fits in RESULTS.md whose exact search took
387 s at 70,000) or ``codes:FILE.npy`` (codes of a fitted encoder, one
row per MNIST digit in the order of mnist.npz, train then test).

The exact neighbours of each (features, n, k) are cached in
``benchmarks/_work/`` (``--exact-cache``), so the exact search, minutes at
70,000 samples, runs once, and the recall of other methods or settings can be
measured again without it; its time is recorded only when it runs.

``--cluster`` also clusters the k-nearest-neighbour graph of each method
(binary, symmetrised; :func:`skdsc.spectral.spectral_labels`, 10 clusters)
and records its ACC, NMI and ARI: whether the approximate neighbours change
the clustering. ``--eigen-solvers arpack amg`` clusters it with each
eigensolver of the spectral step and times them.
"""

import argparse
import json
import os
import sys
import time
from pathlib import Path

# Threads are fixed before NumPy, torch or faiss load.
if __name__ == "__main__":
    _threads = "1"
    for _i, _arg in enumerate(sys.argv):
        if _arg == "--threads" and _i + 1 < len(sys.argv):
            _threads = sys.argv[_i + 1]
        elif _arg.startswith("--threads="):
            _threads = _arg.split("=", 1)[1]
    for _name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[_name] = _threads

import numpy as np  # noqa: E402

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from protocol import DEFAULT_DATA_DIR, _commit, load, scores  # noqa: E402

RESULTS = HERE / "results" / "neighbor_search.jsonl"
CACHE = HERE / "_work"


def features(kind, X):
    """The rows to search and a description of them."""
    if kind == "pixels":
        return X, "mnist raw pixels in [0, 1]"
    if kind.startswith("pca:"):
        from sklearn.decomposition import PCA

        n_components = int(kind.split(":", 1)[1])
        reduced = PCA(n_components, random_state=0).fit_transform(X).astype(np.float32)
        return reduced, f"mnist pixels, {n_components} leading principal components"
    if kind == "untrained-conv":
        import torch

        from skdsc.nn import ConvAutoencoder

        # The estimators' default network for 28 x 28 digits: one stride-2
        # layer of 15 channels, 2,940-dimensional codes (the latent space of
        # the 387 s exact search in RESULTS.md); random weights, seed 0.
        torch.manual_seed(0)
        network = ConvAutoencoder((1, 28, 28), (15,), (3,))
        with torch.no_grad():
            images = torch.from_numpy(X).reshape(-1, 1, 28, 28)
            codes = torch.cat([network.encode(images[i:i + 4096])
                               for i in range(0, len(X), 4096)])
        return codes.numpy(), ("codes of the default conv encoder for 28x28 (15 channels, "
                               "2,940 dims), untrained, seed 0")
    raise ValueError(f"unknown --features {kind!r}")


def load_rows(kind, n, data_dir):
    """``(rows, labels, description)`` of ``n`` MNIST digits (stratified, seed 0)."""
    if kind.startswith("codes:"):
        codes = np.load(kind.split(":", 1)[1]).astype(np.float32)
        _, y = load("mnist", data_dir)
        if n < len(codes):
            from sklearn.model_selection import train_test_split

            codes, _, y, _ = train_test_split(codes, y, train_size=n, stratify=y, random_state=0)
        return codes, y, f"codes from {kind.split(':', 1)[1]}"
    X, y = load("mnist", data_dir, n_samples=n if n < 70000 else None, seed=0)
    rows, description = features(kind, X)
    return np.ascontiguousarray(rows, dtype=np.float32), y, description


def search(method, codes, k, args):
    """``(indices, timings)`` of one method."""
    from skdsc.nn.neighbors import NeighborIndex

    start = time.perf_counter()
    index = NeighborIndex(codes, method=method, n_lists=args.n_lists, n_probe=args.n_probe,
                          n_components=args.n_components)
    built = time.perf_counter()
    found = index.search(None, k).numpy()
    done = time.perf_counter()
    timing = {"seconds": done - start, "build_seconds": built - start,
              "search_seconds": done - built}
    if index.method_ == "faiss":
        search_ = index._faiss
        timing.update(n_lists=search_.n_lists, n_probe=search_.n_probe,
                      indexed_dimensions=(search_.basis.shape[1] if search_.reduced
                                          else codes.shape[1]))
    return found, timing


def recall(found, exact):
    """Mean fraction of each row's exact neighbours that ``found`` holds."""
    hits = sum(len(np.intersect1d(a, b, assume_unique=True)) for a, b in zip(found, exact))
    return hits / exact.size


def cluster_scores(neighbors, y, solvers, n_clusters=10):
    """Spectral clustering of the symmetrised binary k-NN graph, scored.

    The first solver's scores head the record; with more than one, each
    solver's scores and seconds are under ``by_eigen_solver``, with the ARI
    between their labels and the first one's.
    """
    import scipy.sparse as sp
    from sklearn.metrics import adjusted_rand_score

    from skdsc.spectral import spectral_labels

    n, k = neighbors.shape
    graph = sp.csr_matrix((np.ones(n * k), neighbors.ravel(), np.arange(0, n * k + 1, k)),
                          shape=(n, n))
    graph = (graph + graph.T).tocsr()
    record, by_solver, first = {}, {}, None
    for solver in solvers:
        start = time.perf_counter()
        labels = spectral_labels(graph, n_clusters, random_state=0, eigen_solver=solver)
        seconds = time.perf_counter() - start
        first = labels if first is None else first
        by_solver[solver] = {**scores(y, labels), "seconds": seconds,
                             "ari_to_first": float(adjusted_rand_score(first, labels))}
        if not record:
            record = {**scores(y, labels), "cluster_seconds": seconds,
                      "cluster_eigen_solver": solver}
    if len(solvers) > 1:
        record["by_eigen_solver"] = by_solver
    return record


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", type=int, default=[10000, 70000])
    parser.add_argument("--k", type=int, default=32, help="neighbours (n_nonzero's default)")
    parser.add_argument("--methods", nargs="+", default=["exact", "faiss"],
                        choices=["exact", "faiss"])
    parser.add_argument("--features", default="pixels",
                        help="pixels, pca:D, untrained-conv or codes:FILE.npy (default: pixels)")
    parser.add_argument("--threads", type=int, default=1,
                        help="threads of torch, BLAS and faiss (default 1)")
    parser.add_argument("--n-lists", type=int, help="faiss lists (default: the library's)")
    parser.add_argument("--n-probe", type=int, help="faiss lists visited (default: the library's)")
    parser.add_argument("--n-components", type=int,
                        help="faiss: principal components indexed (default: the library's)")
    parser.add_argument("--cluster", action="store_true",
                        help="also cluster each method's k-NN graph and score it")
    parser.add_argument("--eigen-solvers", nargs="+", default=["auto"],
                        choices=["auto", "arpack", "amg"],
                        help="--cluster: eigensolvers of the spectral step, each timed")
    parser.add_argument("--exact-cache", type=Path, default=CACHE,
                        help="folder of the cached exact neighbours")
    parser.add_argument("--data-dir", type=Path,
                        default=Path(os.environ.get("SKDSC_DATA_DIR", DEFAULT_DATA_DIR)))
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    try:
        import faiss
        faiss_version = faiss.__version__
    except ImportError:
        faiss_version = None
    common = {"commit": _commit(), "k": args.k, "threads": args.threads,
              "torch": torch.__version__, "faiss": faiss_version}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    for n in args.sizes:
        rows, y, description = load_rows(args.features, n, args.data_dir)
        codes = torch.from_numpy(rows)
        tag = args.features.replace(":", "-").replace("/", "_")
        cache = args.exact_cache / f"neighbors_exact_{tag}_n{len(rows)}_k{args.k}.npy"
        exact = np.load(cache) if cache.is_file() else None
        for method in args.methods:
            if method == "exact" and exact is not None:
                found, timing = exact, None  # cached: recall only, no time
            else:
                found, timing = search(method, codes, args.k, args)
            if method == "exact" and exact is None:
                exact = found
                cache.parent.mkdir(parents=True, exist_ok=True)
                np.save(cache, exact)
            record = {**common, "n": len(rows), "d": rows.shape[1], "method": method,
                      "features": description, **(timing or {"seconds": None, "cached": True})}
            if exact is not None:
                record["recall"] = recall(found, exact)
            record["same_digit"] = float(np.mean(y[found] == y[:, None]))
            if args.cluster:
                record.update(cluster_scores(found, y, args.eigen_solvers))
            record["load_average_1min"] = os.getloadavg()[0]  # other jobs on the machine
            record["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
            with args.out.open("a") as sink:
                sink.write(json.dumps(record) + "\n")
            print(json.dumps(record), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
