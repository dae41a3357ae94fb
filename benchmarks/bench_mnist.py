"""Scaling benchmark of dense vs sparse self-expression on MNIST (up to all 70,000 digits).

Two kinds of run, each fit in its own subprocess so that its peak resident
memory (RSS) is measured alone; labels only score the final labels:

``scaling``
    Stratified MNIST subsets of ``--sizes`` samples, dense and sparse mode, a
    short fit (``--pretrain-epochs`` / ``--epochs``, default 1 and 2) that
    records the peak RSS of fit and predict alone (the kernel's peak count is
    reset once the data are loaded), the RSS before ``fit``, seconds per
    pretraining and per self-expressive epoch, the neighbour refresh and the
    post-processing. A dense fit whose estimate (``skdsc._memory``) exceeds
    the free memory is not started; its estimate is recorded instead.

``full``
    All 70,000 digits (train and test together), the chosen estimator in the
    sparse mode, over ``--seeds``: ACC, NMI, fit time, peak RSS; then, outside
    the timed and measured fit, ACC and NMI of the labels rebuilt from
    ``coef_`` with each affinity (``acc_dsc``, ``acc_symmetric``, ...).

Usage::

    python benchmarks/bench_mnist.py scaling --sizes 2000 5000 10000 20000 70000 \
        --dense-max 10000 --threads 1 --out benchmarks/results/mnist_scaling.jsonl
    python benchmarks/bench_mnist.py full --estimator bdsc --seeds 0 1 2 --threads 1 \
        --out benchmarks/results/mnist_full.jsonl
    python benchmarks/bench_mnist.py full --estimator bdsc-dec --seeds 0 1 2 --threads 1 \
        --out benchmarks/results/mnist_full_dec.jsonl
    python benchmarks/bench_mnist.py full --estimator bdsc-dec-long --seeds 0 1 2 --threads 2 \
        --out benchmarks/results/mnist_full_dec_long.jsonl
    python benchmarks/bench_mnist.py full --estimator bdsc-dec-aug --seeds 0 1 2 --threads 2 \
        --save-dir /tmp/models --out benchmarks/results/mnist_full_dec_aug.jsonl
    python benchmarks/summarize_mnist.py benchmarks/results/mnist_scaling.jsonl
"""

import argparse
import gc
import json
import subprocess
import sys
import time
from pathlib import Path

from bench_bdsc import affinity_scores, measure

FILE = "mnist.npz"
# Settings of the full-MNIST fits (one epoch is 547 steps of 128 digits, so far
# fewer epochs than on the small sets); everything else is the default.
# The fully connected autoencoder that DEC (Xie et al., 2016) and EDESC use on
# MNIST pixels, d-500-500-2000-10, instead of the default convolutional one.
DEC_AUTOENCODER = dict(image_shape=None, hidden_units=(500, 500, 2000, 10))
FULL = {
    "bdsc": dict(n_pretrain_epochs=30, n_epochs=10, refresh_epochs=5),
    # The epochs are those of "bdsc".
    "bdsc-dec": dict(DEC_AUTOENCODER, n_pretrain_epochs=30, n_epochs=10, refresh_epochs=5),
    # Five times as many pretraining epochs, in batches of 256 as DEC and IDEC
    # do (2.5 times the steps of "bdsc-dec"). The batch size does not change
    # how often a row of the coefficients is updated (once per epoch), so the
    # self-expressive phase keeps its 10 epochs.
    "bdsc-dec-long": dict(DEC_AUTOENCODER, batch_size=256, n_pretrain_epochs=150,
                          n_epochs=10, refresh_epochs=5),
    # The same autoencoder pretrained on random views of the digits (shifts,
    # zooms, rotations; pretrain_augmentation=True) so that codes vary less
    # with a digit's position and slant. A view costs about a third more
    # time per step, so 120 pretraining epochs keep the fit within the hour.
    "bdsc-dec-aug": dict(DEC_AUTOENCODER, image_shape=(1, 28, 28), hidden_channels=(),
                         pretrain_augmentation=True, batch_size=256, n_pretrain_epochs=120,
                         n_epochs=10, refresh_epochs=5),
    "contrastive": dict(encoder="resnet10t", n_pretrain_epochs=1, n_epochs=1),
}

def load_mnist(data_dir, n_samples=None):
    """All 70,000 digits (train then test), or a stratified subset of ``n_samples``."""
    import numpy as np
    from sklearn.model_selection import train_test_split

    from skdsc.datasets import load_npz

    X, y = load_npz(Path(data_dir) / FILE, data_key=["x_train", "x_test"],
                    target_key=["y_train", "y_test"])
    if n_samples is None or n_samples >= len(X):
        return X, y
    X, _, y, _ = train_test_split(X, y, train_size=n_samples, stratify=y, random_state=0)
    return np.ascontiguousarray(X), y


def make_estimator(name, seed, device, params):
    from skdsc import ContrastiveDSC, MiniBatchDeepSubspaceClustering

    cls = ContrastiveDSC if name == "contrastive" else MiniBatchDeepSubspaceClustering
    params = {"image_shape": (1, 28, 28), **params}
    return cls(10, random_state=seed, device=device, **params)


def resident_mb(field):
    """``VmRSS`` (resident now) or ``VmHWM`` (peak since the last reset) in MB."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"{field} not in /proc/self/status (Linux only).")


def reset_peak_rss():
    """Restart the kernel's peak-RSS count (``VmHWM``) of this process (Linux >= 4.0)."""
    with open("/proc/self/clear_refs", "w") as clear_refs:
        clear_refs.write("5")


def fit_child(job):
    """Fit one job in this (child) process and return its record."""
    import torch

    torch.set_num_threads(job["threads"])
    X, y = load_mnist(job["data_dir"], job.get("n_samples"))
    gc.collect()
    before = resident_mb("VmRSS")
    # Loading all of MNIST peaks above small fits: restart the peak count here
    # so that it measures fit and predict alone.
    reset_peak_rss()
    model = make_estimator(job["estimator"], job["seed"], job["device"], job["params"])
    record = measure(model, X, y)
    record["peak_rss_process_mb"] = record["peak_rss_mb"]
    record["peak_rss_mb"] = resident_mb("VmHWM")
    history = model.history_
    per_phase = {}
    for phase in ("pretrain", "self-expression", "refresh"):
        seconds = [h["seconds"] for h in history if h["phase"] == phase]
        per_phase[phase] = (sum(seconds) / len(seconds)) if seconds else None
    record.update(
        n_samples=len(X), mode=model.self_expression_, rss_before_fit_mb=before,
        pretrain_epoch_seconds=per_phase["pretrain"],
        self_expression_epoch_seconds=per_phase["self-expression"],
        refresh_seconds=per_phase["refresh"],
        postprocessing_seconds=record["fit_seconds"] - sum(h.get("seconds", 0.0)
                                                             for h in history),
    )
    if job.get("compare_affinities"):
        record.update(affinity_scores(model, y, job["seed"]))
    if job.get("save_dir"):
        # For studies of the post-processing on the same coefficients, without refitting.
        import pickle

        path = Path(job["save_dir"]) / f"{job['estimator']}_{len(X)}_seed{job['seed']}.pkl"
        with open(path, "wb") as sink:
            pickle.dump(model, sink)
        record["saved_model"] = str(path)
    return record


def run_child(job):
    done = subprocess.run([sys.executable, __file__, "--child", json.dumps(job)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        return {"error": done.stderr.strip().splitlines()[-1] if done.stderr else
                f"exit {done.returncode}"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def scaling_jobs(args):
    for n in args.sizes:
        for mode in ("sparse", "dense"):
            params = dict(self_expression=mode, n_pretrain_epochs=args.pretrain_epochs,
                          n_epochs=args.epochs, refresh_epochs=1)
            yield dict(kind="scaling", estimator=args.estimator, n_samples=n, seed=0,
                       params=params)


def full_jobs(args):
    for seed in args.seeds:
        params = dict(FULL[args.estimator], self_expression="sparse")
        yield dict(kind="full", estimator=args.estimator, n_samples=None, seed=seed,
                   params=params, compare_affinities=True)


def dense_estimate(n_samples, device):
    """Estimated dense-mode bytes and free bytes, or None when the fit can start."""
    import torch

    from skdsc._memory import available_memory, dense_memory_estimate

    device = torch.device(device)
    needed, free = dense_memory_estimate(n_samples, device), available_memory(device)
    if all(free[k] is None or needed[k] <= free[k] for k in needed):
        return None
    return {"estimate_mb": max(needed.values()) / 2 ** 20,
            "free_mb": min(v for v in free.values() if v is not None) / 2 ** 20}


def skipped_dense(job, args):
    """The record of a dense fit that is not run (with its estimate), or None."""
    if job["params"]["self_expression"] != "dense":
        return None
    n_samples = job["n_samples"] or 70000
    over = dense_estimate(n_samples, args.device)
    if over:
        return {"skipped": "dense estimate exceeds free memory", **over}
    if args.dense_max is not None and n_samples > args.dense_max:
        import torch

        from skdsc._memory import dense_memory_estimate

        needed = dense_memory_estimate(n_samples, torch.device(args.device))
        return {"skipped": f"n above --dense-max {args.dense_max}",
                "estimate_mb": max(needed.values()) / 2 ** 20, "free_mb": None}
    return None


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kind", nargs="?", choices=["scaling", "full"])
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--data-dir", default=Path(__file__).resolve().parents[2] / "shared" / "data")
    parser.add_argument("--estimator", choices=sorted(FULL), default="bdsc")
    parser.add_argument("--sizes", nargs="+", type=int, default=[2000, 5000, 10000, 20000, 70000])
    parser.add_argument("--pretrain-epochs", type=int, default=1)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--dense-max", type=int,
                        help="largest n for a dense scaling fit (larger: estimate only)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--threads", type=int, default=2, help="torch threads per fit")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", required=False)
    parser.add_argument("--save-dir", help="pickle each fitted estimator into this folder")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(fit_child(json.loads(args.child))))
        return
    if args.kind is None or args.out is None:
        parser.error("give 'scaling' or 'full' and --out")
    jobs = scaling_jobs(args) if args.kind == "scaling" else full_jobs(args)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    for job in jobs:
        job.update(threads=args.threads, device=args.device, data_dir=str(args.data_dir),
                   save_dir=args.save_dir)
        record = skipped_dense(job, args) or run_child(job)
        record.update({k: job[k] for k in ("kind", "estimator", "seed", "params", "threads")},
                      n_samples=job["n_samples"] or 70000,
                      mode=record.get("mode", job["params"]["self_expression"]),
                      finished=time.strftime("%Y-%m-%d %H:%M:%S"))
        with out.open("a") as sink:
            sink.write(json.dumps(record) + "\n")
        print(json.dumps({k: v for k, v in record.items() if k != "params"}), flush=True)


if __name__ == "__main__":
    main()
