"""Choose loss-weight defaults on the development sets only (ORL, COIL-20).

Every configuration is fitted with all other parameters at their defaults;
labels score the final labels, never enter ``fit``. This script refuses the
report sets (COIL-100, MNIST, digits): defaults are chosen here and only
measured there (``protocol.py``). Records are appended as JSON lines.

Usage::

    python benchmarks/tune_defaults.py --grid lambdas --seeds 0 1 \
        --out benchmarks/results/tune_defaults.jsonl
"""

import argparse
import itertools
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from protocol import DEVELOPMENT_SETS, fit_and_score, run_tasks  # noqa: E402

GRIDS = {
    # lambda_self and the relative ridge penalty lambda_coef / lambda_self
    # (normalize_losses=True makes both dimensionless).
    "lambdas": [
        {"lambda_self": s, "lambda_coef": s * a}
        for s, a in itertools.product([3.0, 10.0, 30.0], [3e-4, 3e-3, 3e-2])
    ],
    # The absolute terms of DSC-Net's objective with the weights of 86358b3
    # (lambda_coef=1, lambda_self=10), for comparison in the same run.
    "absolute": [{"normalize_losses": False, "lambda_coef": 1.0, "lambda_self": 10.0}],
    # Reconstruction pretraining on mildly shifted, zoomed and rotated views.
    "augment": [{"pretrain_augmentation": True}],
    # Self-expression over each sample's nearest codes at every size.
    "sparse": [{"self_expression": "sparse"}],
    # Shorter budgets than the 200 epochs that the step budget keeps on ORL and COIL-20.
    "budget": [{"n_epochs": 100, "n_pretrain_epochs": 100}, {"n_epochs": 50, "n_pretrain_epochs": 50}],
    # Label-free restarts: the medoid of three members (three times the time).
    "n_init": [{"n_init": 3}],
    # Where the coefficients start (the default is the ridge start at
    # lambda_coef=1): DSC-Net's constant at the earlier default penalty and at
    # the stronger one, and the ridge start at an intermediate penalty.
    "start": [{"coef_init": "constant", "lambda_coef": 0.03},
              {"coef_init": "constant", "lambda_coef": 1.0},
              {"coef_init": "ridge", "lambda_coef": 0.3}],
    # The corner of "lambdas" that led on ORL, for the slower COIL-20.
    "lambdas-narrow": [
        {"lambda_self": s, "lambda_coef": s * a}
        for s, a in itertools.product([3.0, 10.0], [3e-3, 3e-2])
    ],
}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grid", choices=sorted(GRIDS), required=True)
    parser.add_argument("--datasets", nargs="+", default=list(DEVELOPMENT_SETS),
                        choices=list(DEVELOPMENT_SETS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--data-dir", default=Path(__file__).resolve().parents[2] / "shared" / "data")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    tasks = [(fit_and_score, dataset, "MiniBatchDeepSubspaceClustering", params, seed,
              str(args.data_dir))
             for params in GRIDS[args.grid] for dataset in args.datasets for seed in args.seeds]
    run_tasks(tasks, args.workers, args.out, grid=args.grid)


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
