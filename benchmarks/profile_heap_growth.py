"""Resident memory that the sparse mode's blockwise solvers leave behind.

The sparse mode's neighbour search, ridge solves and ``predict`` work block by
block. Until each of them wrote its blocks' results into one array allocated
up front, the small per-block results, kept alive between large freed
temporaries, fragmented the C heap and the allocator could not return those
temporaries to the system: resident memory grew with every block. How much
depends on what the process did before (the heap's state), which is why the
peak RSS of identical COIL-100 fits varied between 1.4 and 6.6 GB.

This script fits ``MiniBatchDeepSubspaceClustering`` in the sparse mode on
COIL-100 for one pretraining and one self-expressive epoch, then predicts
three times and prints the resident memory (Linux ``VmRSS``) after each
step: with blocks that no longer fragment, predicting again adds nothing.

Usage::

    python benchmarks/profile_heap_growth.py --data-dir ../shared/data
"""

import argparse
from pathlib import Path

import torch
from bench_mnist import resident_mb


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=Path(__file__).resolve().parents[2] / "shared" / "data")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()

    from skdsc import MiniBatchDeepSubspaceClustering
    from skdsc.datasets import load_mat

    torch.set_num_threads(args.threads)
    X, _ = load_mat(Path(args.data_dir) / "COIL100_32x32.mat", (32, 32))
    print(f"data loaded: {resident_mb('VmRSS'):,.0f} MB", flush=True)
    model = MiniBatchDeepSubspaceClustering(
        100, image_shape=(1, 32, 32), self_expression="sparse", n_pretrain_epochs=1,
        n_epochs=1, random_state=0,
    ).fit(X)
    print(f"fitted: {resident_mb('VmRSS'):,.0f} MB", flush=True)
    for call in (1, 2, 3):
        model.predict(X)
        print(f"after predict {call}: {resident_mb('VmRSS'):,.0f} MB", flush=True)


if __name__ == "__main__":
    main()
