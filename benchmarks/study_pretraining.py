"""Does longer autoencoder pretraining close the gap to DSC-Net? (ORL / COIL-20)

Fits MiniBatchDeepSubspaceClustering with DSC-Net's published settings (see
``bench_bdsc.PUBLISHED``) and several pretraining lengths, and prints the
accuracy of ``labels_`` per fit. Labels are used only to score. Each fit runs
in its own subprocess (via ``bench_bdsc.run_in_subprocess``).

Usage::

    python benchmarks/study_pretraining.py --data-dir ../shared/data --dataset orl \
        --pretrain-epochs 500 5000 --k 1 4 --seeds 0 1 --workers 2 \
        --out benchmarks/results/study_pretraining.jsonl
"""

import argparse
import itertools
from pathlib import Path

from bench_bdsc import N_SAMPLES, PUBLISHED, run_jobs


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=Path(__file__).resolve().parents[2] / "shared" / "data")
    parser.add_argument("--dataset", default="orl", choices=sorted(PUBLISHED))
    parser.add_argument("--pretrain-epochs", nargs="+", type=int, default=[500, 5000])
    parser.add_argument("--k", nargs="+", type=int, default=[1, 4], help="batches per epoch")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--out", default="benchmarks/results/study_pretraining.jsonl")
    args = parser.parse_args()
    n = N_SAMPLES[args.dataset]
    jobs = []
    for epochs, k, seed in itertools.product(args.pretrain_epochs, args.k, args.seeds):
        params = dict(PUBLISHED[args.dataset], n_pretrain_epochs=epochs,
                      batch_size=None if k == 1 else n // k)
        jobs.append((args.dataset, f"pretrain={epochs} k={k}", params, seed))
    run_jobs(jobs, args.data_dir, args.device, args.workers, args.out)

if __name__ == "__main__":
    main()
