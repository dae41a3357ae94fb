"""Closed-form ridge self-expression of an estimator's codes, against its trained coefficients.

A diagnostic of where the clustering comes from: fit
``MiniBatchDeepSubspaceClustering`` (defaults plus ``--params``), then score
the labels of the closed-form ridge self-expression (zero diagonal, the
dense mode's post-processing) of its codes ``embedding_``, of the raw pixels
and of both side by side (each block scaled to unit mean squared norm,
the pixels weighted by ``beta``), at three relative penalties. With
``--params '{"n_epochs": 0}'`` the codes are the pretrained ones.

The records of ``results/ridge_on_codes.jsonl`` were made at commit b20578a,
whose defaults started the coefficients at DSC-Net's constant with
``lambda_coef=0.03``; with the current package that is
``--params '{"coef_init": "constant", "lambda_coef": 0.03}'``.

Usage::

    python benchmarks/ridge_on_codes.py coil20 --seed 0 --params '{"n_epochs": 0}' \
        --out benchmarks/results/ridge_on_codes.jsonl
"""

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from protocol import ALL_SETS, DEFAULT_DATA_DIR, _commit, load, scores  # noqa: E402

PENALTIES = (0.003, 0.03, 0.1)
BETAS = (0.3, 1.0, 3.0)


def _mean_square_norm(rows):
    return float(rows.pow(2).sum(1).mean())


def ridge_accuracy(features, relative_penalty, y, n_clusters):
    """ACC of the closed-form ridge self-expression of ``features``."""
    from skdsc.nn.self_expression import ridge_coefficients
    from skdsc.spectral import coefficients_to_labels

    coef = ridge_coefficients(features, relative_penalty * _mean_square_norm(features)).numpy()
    _, labels = coefficients_to_labels(coef, n_clusters, affinity="dsc", threshold=0.1,
                                       subspace_dim=6, power=4.0, random_state=0)
    return round(scores(y, labels)["acc"], 3)


def main():
    from skdsc import MiniBatchDeepSubspaceClustering

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", choices=sorted(ALL_SETS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--params", default="{}", help="JSON of estimator parameters")
    parser.add_argument("--data-dir", default=DEFAULT_DATA_DIR)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    torch.set_num_threads(1)
    params = json.loads(args.params)
    X, y = load(args.dataset, args.data_dir)
    n_clusters, image_shape = ALL_SETS[args.dataset]
    start = time.perf_counter()
    model = MiniBatchDeepSubspaceClustering(n_clusters, image_shape=image_shape,
                                            random_state=args.seed, **params).fit(X)
    record = {"commit": _commit(), "dataset": args.dataset, "seed": args.seed,
              "params": params, "fit_seconds": round(time.perf_counter() - start),
              "trained": scores(y, model.labels_)["acc"]}
    codes = torch.as_tensor(model.embedding_, dtype=torch.float64)
    pixels = torch.as_tensor(X, dtype=torch.float64)
    unit_codes = codes / _mean_square_norm(codes) ** 0.5
    unit_pixels = pixels / _mean_square_norm(pixels) ** 0.5
    for penalty in PENALTIES:
        record[f"codes@{penalty}"] = ridge_accuracy(codes, penalty, y, n_clusters)
        record[f"pixels@{penalty}"] = ridge_accuracy(pixels, penalty, y, n_clusters)
        for beta in BETAS:
            both = torch.cat([unit_codes, beta ** 0.5 * unit_pixels], 1)
            record[f"codes+{beta}pixels@{penalty}"] = ridge_accuracy(both, penalty, y,
                                                                     n_clusters)
    print(json.dumps(record), flush=True)
    with open(args.out, "a") as out:
        out.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    main()
