"""Peak memory of the post-processing (coefficients -> affinity -> labels) at size n.

Builds a block-structured coefficient matrix like a fitted one (n_clusters
blocks plus noise, zero diagonal, float32 as ``coef_`` is stored), runs
:func:`skdsc.spectral.coefficients_to_labels` in a fresh subprocess and prints
the peak resident memory of that process beyond the matrix itself, with the
time taken. Run it at two commits to compare implementations side by side.

Usage::

    python benchmarks/study_postprocessing_memory.py --n 7200 --n-clusters 100
"""

import argparse
import json
import resource
import subprocess
import sys
import time


def child(n, n_clusters, affinity):
    import numpy as np

    from skdsc.spectral import coefficients_to_labels

    rng = np.random.default_rng(0)
    labels = np.arange(n) % n_clusters
    coef = (rng.random((n, n), dtype=np.float32) * 1e-3
            + (labels[:, None] == labels[None, :]) * rng.random((n, n), dtype=np.float32))
    np.fill_diagonal(coef, 0.0)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    start = time.perf_counter()
    _, found = coefficients_to_labels(coef, n_clusters, affinity=affinity, threshold=0.1,
                                      subspace_dim=6, power=4.0, random_state=0)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"n": n, "affinity": affinity, "rss_before_mb": before, "peak_rss_mb": peak,
            "added_mb": peak - before, "seconds": seconds, "n_found": int(len(set(found)))}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, default=7200)
    parser.add_argument("--n-clusters", type=int, default=100)
    parser.add_argument("--affinity", default="dsc", choices=["dsc", "symmetric"])
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.n, args.n_clusters, args.affinity)))
        return
    done = subprocess.run([sys.executable, __file__, "--child", "--n", str(args.n),
                           "--n-clusters", str(args.n_clusters), "--affinity", args.affinity],
                          capture_output=True, text=True, check=True)
    print(done.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    main()
