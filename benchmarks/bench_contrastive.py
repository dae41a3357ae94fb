"""Benchmark ContrastiveDSC against MiniBatchDeepSubspaceClustering (ORL, COIL-100).

Every fit runs in its own subprocess (see ``bench_bdsc.run_jobs``) so that its
peak resident memory is measured alone; labels only score the final labels.
Data sets: ``orl`` and ``coil100`` (grayscale 32x32 .mat files) and
``coil100-rgb`` (the colour 32x32 .npz file), read from ``--data-dir``.

The encoders are trained from scratch unless ``--pretrained`` names a local
weights file for ``--encoder`` (e.g. ImageNet weights saved with
``torch.save(timm.create_model("resnet18", pretrained=True).state_dict(), "resnet18.pth")``
on a machine with network access); ``--input-size 64`` upsamples the images
on the device before the encoder.

Usage::

    python benchmarks/bench_contrastive.py --data-dir ../shared/data \
        --datasets orl coil100 coil100-rgb --seeds 0 1 2 --workers 2 \
        --out benchmarks/results/contrastive_cpu.jsonl
    python benchmarks/summarize.py benchmarks/results/contrastive_cpu.jsonl
"""

import argparse
import itertools
import os
from pathlib import Path

from bench_bdsc import measure, print_child_record, run_jobs

FILES = {"orl": "ORL_32x32.mat", "coil100": "COIL100_32x32.mat",
         "coil100-rgb": "COIL100_32x32_rgb.npz"}
ESTIMATORS = ("contrastive", "bdsc")


def load(dataset, data_dir):
    """``(X, y, image_shape)`` of a data set, images scaled to [0, 1]."""
    from skdsc.datasets import load_mat, load_npz

    path = Path(data_dir) / FILES[dataset]
    if dataset == "coil100-rgb":
        X, y = load_npz(path)
        return X, y, (3, 32, 32)
    X, y = load_mat(path, (32, 32))
    return X, y, (1, 32, 32)


def configurations(args):
    """(name, parameters) pairs of the estimators to compare."""
    contrastive = dict(estimator="contrastive", encoder=args.encoder)
    if args.pretrained:
        contrastive.update(pretrained=str(Path(args.pretrained).resolve()))
    if args.input_size:
        contrastive.update(input_size=args.input_size)
    if args.pretrain_epochs is not None:
        contrastive.update(n_pretrain_epochs=args.pretrain_epochs)
    if args.epochs is not None:
        contrastive.update(n_epochs=args.epochs)
    name = f"ContrastiveDSC {args.encoder}" + (" pretrained" if args.pretrained else "")
    name += f" {args.input_size}px" if args.input_size else ""
    if args.pretrain_epochs is None and args.epochs is None:
        name += " defaults"
    else:
        shown = ["default" if e is None else e for e in (args.pretrain_epochs, args.epochs)]
        name += f" epochs {shown[0]}+{shown[1]}"
    bdsc, bdsc_name = dict(estimator="bdsc"), "MiniBatchDSC defaults"
    if args.self_expression:
        for params in (contrastive, bdsc):
            params.update(self_expression=args.self_expression)
        name += f" {args.self_expression}"
        bdsc_name += f" {args.self_expression}"
    if args.n_nonzero is not None:
        for params in (contrastive, bdsc):
            params.update(n_nonzero=args.n_nonzero)
        name += f" n_nonzero {args.n_nonzero}"
        bdsc_name += f" n_nonzero {args.n_nonzero}"
    if "contrastive" in args.estimators:
        yield name, contrastive
    if "bdsc" in args.estimators:
        yield bdsc_name, bdsc


def fit_once(dataset, params, seed, data_dir, device):
    """Fit in this process and return the measurements (run by the subprocess)."""
    import numpy as np
    import torch

    from skdsc import ContrastiveDSC, MiniBatchDeepSubspaceClustering

    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "1")))
    X, y, image_shape = load(dataset, data_dir)
    params = dict(params)
    estimator = {"contrastive": ContrastiveDSC,
                 "bdsc": MiniBatchDeepSubspaceClustering}[params.pop("estimator")]
    model = estimator(len(np.unique(y)), image_shape=image_shape, random_state=seed,
                      device=device, **params)
    return measure(model, X, y)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--data-dir", default=Path(__file__).resolve().parents[2] / "shared" / "data")
    parser.add_argument("--datasets", nargs="+", default=["orl", "coil100"], choices=sorted(FILES))
    parser.add_argument("--estimators", nargs="+", default=list(ESTIMATORS), choices=ESTIMATORS)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--encoder", default="resnet18", help="timm model name")
    parser.add_argument("--pretrained", help="local weights file for --encoder")
    parser.add_argument("--input-size", type=int, help="resize images to this many pixels")
    parser.add_argument("--pretrain-epochs", type=int, help="n_pretrain_epochs (default: the estimator's)")
    parser.add_argument("--epochs", type=int, help="n_epochs (default: the estimator's)")
    parser.add_argument("--self-expression", choices=["dense", "sparse"],
                        help="self_expression of both estimators (default: their 'auto')")
    parser.add_argument("--n-nonzero", type=int,
                        help="n_nonzero of both estimators (default: theirs; used by the sparse mode)")
    parser.add_argument("--workers", type=int, default=1, help="fits run side by side")
    parser.add_argument("--device", default="cpu", help="'cpu' or 'cuda'")
    parser.add_argument("--out", default="benchmarks/results/contrastive_cpu.jsonl")
    args = parser.parse_args()
    if args.child:
        print_child_record(args.child, fit_once)
        return
    jobs = [(dataset, name, params, seed)
            for dataset in args.datasets
            for (name, params), seed in itertools.product(configurations(args), args.seeds)]
    run_jobs(jobs, args.data_dir, args.device, args.workers, args.out, script=__file__)


if __name__ == "__main__":
    main()
