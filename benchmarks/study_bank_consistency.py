"""The memory bank's consistency: the 1/k learning-rate rule against a momentum encoder.

Three ways to keep the codes of one epoch consistent, over batch sizes and
learning rates, all other parameters at their defaults:

- ``1/k``: the paper's rule (``scale_encoder_lr=True``, ``bank_momentum=0``);
- ``momentum``: the online encoder at the full rate, the bank written by its
  moving average (``scale_encoder_lr=False``, ``bank_momentum=0.99``);
- ``neither``: the full rate and the online codes (``scale_encoder_lr=False``).

Run on the development sets only; labels only score. Records are JSON lines.

Usage::

    python benchmarks/study_bank_consistency.py --datasets orl --seeds 0 1 \
        --out benchmarks/results/bank_consistency.jsonl
    python benchmarks/protocol.py --table benchmarks/results/bank_consistency.jsonl
"""

import argparse
import itertools
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from protocol import DEFAULT_DATA_DIR, DEVELOPMENT_SETS, fit_and_score, run_tasks  # noqa: E402

RULES = {
    "1/k": {"scale_encoder_lr": True, "bank_momentum": 0.0},
    "momentum": {"scale_encoder_lr": False, "bank_momentum": 0.99},
    "neither": {"scale_encoder_lr": False, "bank_momentum": 0.0},
}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=["orl"], choices=list(DEVELOPMENT_SETS))
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[32, 128])
    parser.add_argument("--learning-rates", nargs="+", type=float, default=[1e-3, 3e-3, 1e-2])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--data-dir", default=DEFAULT_DATA_DIR)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    tasks = [(fit_and_score, dataset, "MiniBatchDeepSubspaceClustering",
              {"batch_size": batch_size, "learning_rate": lr, **RULES[rule]}, seed,
              str(args.data_dir))
             for dataset, batch_size, lr, rule, seed in itertools.product(
                 args.datasets, args.batch_sizes, args.learning_rates, RULES, args.seeds)]
    run_tasks(tasks, args.workers, args.out)


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
