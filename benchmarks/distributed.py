"""One fit in one process against the same fit over several, side by side.

Each configuration is fitted once in a single process and once over
``--processes`` processes launched with ``torchrun`` on this machine, every
process with ``--threads`` threads (one by default), one run after the
other. A record per run is appended to ``results/distributed.jsonl``: fit
wall time (the slowest process), peak RSS of every process, ACC/NMI, and for
the multi-process runs the speed-up over the single process of the same
invocation, the adjusted Rand index between their labels and how their
per-epoch self-expression losses drift apart (the first epoch at which they
differ by more than 1e-3 relative, and the largest relative difference).
``--exact`` runs the several-process fit under
``init_process_group(exact=True)``::

    python benchmarks/distributed.py --sets coil20 --processes 2
    python benchmarks/distributed.py --sets coil20 --processes 2 --exact
    python benchmarks/distributed.py --sets mnist --n-samples 20000 --processes 2

``--ceiling`` also runs the single-process fit that many times at once, as
independent processes, and records how much slower each is than alone: the
limit the machine itself puts on any speed-up (memory bandwidth, shared
caches, other work).

``--collectives`` times, over ``--processes`` processes, the collective
operations a data-parallel step can use, at the sizes of the default COIL-20
and MNIST steps (a batch of 128; 1,440 coefficient columns; codes of 3,840
and 2,940 numbers): what decides how a step combines the processes' work::

    python benchmarks/distributed.py --collectives --processes 2

The worker modes (``worker``, ``collectives-worker``) are what ``torchrun``
starts; they are not meant to be run by hand.
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from protocol import DEFAULT_DATA_DIR, _commit, load, scores

HERE = Path(__file__).resolve().parent
IMAGE_SHAPES = {"orl": (32, 32), "coil20": (32, 32), "coil100": (32, 32),
                "coil100rgb": (3, 32, 32), "mnist": (28, 28), "digits": (8, 8)}


def worker(args):
    """Fit the defaults on the data set in this process (one of a torchrun group)."""
    from skdsc import MiniBatchDeepSubspaceClustering
    from skdsc.distributed import init_process_group

    if args.exact and int(os.environ.get("WORLD_SIZE", 1)) > 1:
        init_process_group(exact=True)
    X, y = load(args.set, args.data_dir, args.n_samples)
    model = MiniBatchDeepSubspaceClustering(
        n_clusters=len(np.unique(y)), image_shape=IMAGE_SHAPES[args.set],
        random_state=args.seed, **json.loads(args.params))
    start = time.perf_counter()
    model.fit(X)
    seconds = time.perf_counter() - start
    rank = int(os.environ.get("RANK", 0))
    np.save(Path(args.out) / f"labels.{rank}.npy", model.labels_)
    losses = [record["loss"] for record in model.history_
              if record.get("phase") == "self-expression" and "loss" in record]
    # Where the time went: the seconds of each phase's epochs, summed.
    phase_seconds = {}
    for record in model.history_:
        if "phase" in record and "seconds" in record:
            phase = record["phase"]
            phase_seconds[phase] = phase_seconds.get(phase, 0) + record["seconds"]
    with open(Path(args.out) / f"rank.{rank}.json", "w") as file:
        json.dump({"rank": rank, "fit_seconds": seconds, "mode": model.self_expression_,
                   "phase_seconds": phase_seconds,
                   "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                   "losses": losses, **scores(y, model.labels_)}, file)


def collectives_worker(args):
    """Time each collective operation; the first process appends the records."""
    import torch
    import torch.distributed as dist

    dist.init_process_group("gloo")
    rank, size = dist.get_rank(), dist.get_world_size()
    batch, columns, extra = 128, 1440, 700  # rows, coefficient columns, gradients + terms
    share = batch // size

    def timed(operation, shape, call, repeats=300):
        for _ in range(20):
            call()
        dist.barrier()
        start = time.perf_counter()
        for _ in range(repeats):
            call()
        milliseconds = (time.perf_counter() - start) / repeats * 1e3
        if rank == 0:
            record = {"suite": "distributed", "kind": "collectives", "commit": _commit(),
                      "processes": size, "threads_per_process": args.threads,
                      "operation": operation, "shape": shape, "repeats": repeats,
                      "milliseconds": milliseconds, "time": time.strftime("%Y-%m-%dT%H:%M:%S")}
            print(json.dumps(record), flush=True)
            with open(args.out, "a") as file:
                file.write(json.dumps(record) + "\n")

    # A dense step's combine: the whole batch's rows all-reduced, or each share's gathered.
    whole = torch.randn(batch * columns + extra)
    timed("all_reduce", [batch * columns + extra], lambda: dist.all_reduce(whole))
    mine = torch.randn(share * columns + extra)
    parts = [torch.empty_like(mine) for _ in range(size)]
    timed("all_gather", [share * columns + extra], lambda: dist.all_gather(parts, mine))
    small = torch.randn(extra)
    small_parts = [torch.empty_like(small) for _ in range(size)]
    timed("all_reduce", [extra], lambda: dist.all_reduce(small))
    timed("all_gather", [extra], lambda: dist.all_gather(small_parts, small))
    # The return of gathered codes' gradients: an all-reduce of all, or an all-to-all.
    for width in (2940, 3840):
        grad = torch.randn(batch, width)
        received = torch.empty_like(grad)
        timed("all_reduce", [batch, width], lambda: dist.all_reduce(grad))
        timed("all_to_all_single", [batch, width],
              lambda: dist.all_to_all_single(received, grad))
    dist.destroy_process_group()


def collectives(args):
    """Launch ``collectives_worker`` over ``--processes`` processes."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc_per_node={args.processes}", str(Path(__file__).resolve()),
               "collectives-worker", "--out", args.out]
    environment = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    subprocess.run(command, check=True, env=environment, cwd=HERE)


def run(args, dataset, n_processes, out):
    """Launch one run; its per-process results and the first process's labels."""
    command = [sys.executable, str(Path(__file__).resolve()), "worker", "--set", dataset,
               "--seed", str(args.seed), "--out", out, "--data-dir", str(args.data_dir),
               "--params", args.params] + (["--exact"] if args.exact else [])
    if args.n_samples:
        command += ["--n-samples", str(args.n_samples)]
    if n_processes > 1:
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                   f"--nproc_per_node={n_processes}", *command[1:]]
    environment = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    load_before = os.getloadavg()[0]
    start = time.perf_counter()
    subprocess.run(command, check=True, env=environment, cwd=HERE)
    launch_seconds = time.perf_counter() - start
    ranks = [json.loads((Path(out) / f"rank.{rank}.json").read_text())
             for rank in range(n_processes)]
    return ranks, np.load(Path(out) / "labels.0.npy"), launch_seconds, load_before


def loss_agreement(single, several):
    """How the per-epoch self-expression losses of two runs drift apart.

    Returns the first epoch at which they differ by more than 1e-3 relative
    (None if never), and the largest relative difference.
    """
    single, several = np.asarray(single), np.asarray(several)
    relative = np.abs(several - single) / np.maximum(np.abs(single), 1e-300)
    apart = np.flatnonzero(relative > 1e-3)
    return (int(apart[0]) + 1 if len(apart) else None), float(relative.max(initial=0.0))


def ceiling(args, dataset, out):
    """The same single-process fit twice at once, in independent processes.

    What the machine gives two processes that never wait for each other: the
    best a two-process fit could do here.
    """
    command = [sys.executable, str(Path(__file__).resolve()), "worker", "--set", dataset,
               "--seed", str(args.seed), "--data-dir", str(args.data_dir), "--params",
               args.params] + (["--n-samples", str(args.n_samples)] if args.n_samples else [])
    environment = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    load_before = os.getloadavg()[0]
    folders = [Path(out) / str(i) for i in range(args.processes)]
    for folder in folders:
        folder.mkdir()
    processes = [subprocess.Popen(command + ["--out", str(folder)], env=environment, cwd=HERE)
                 for folder in folders]
    for process in processes:
        if process.wait():
            raise subprocess.CalledProcessError(process.returncode, command)
    return [json.loads((folder / "rank.0.json").read_text()) for folder in folders], load_before


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", nargs="?", choices=["compare", "worker", "collectives-worker"],
                        default="compare")
    parser.add_argument("--sets", nargs="+", default=["coil20"])
    parser.add_argument("--set", help="worker: the data set")
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="threads per process")
    parser.add_argument("--n-samples", type=int, default=None, help="stratified subset")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--params", default="{}", help="estimator parameters as JSON")
    parser.add_argument("--data-dir", default=DEFAULT_DATA_DIR)
    parser.add_argument("--out", default=str(HERE / "results" / "distributed.jsonl"))
    parser.add_argument("--exact", action="store_true",
                        help="init_process_group(exact=True): the several-process fit is "
                             "to be the single process's to the last bit")
    parser.add_argument("--ceiling", action="store_true",
                        help="also run the single-process fit --processes times at once, "
                             "independently: the machine's own limit on the speed-up")
    parser.add_argument("--collectives", action="store_true",
                        help="time the collective operations of a step instead of fitting")
    args = parser.parse_args()
    if args.mode == "worker":
        return worker(args)
    if args.mode == "collectives-worker":
        return collectives_worker(args)
    if args.collectives:
        return collectives(args)

    from sklearn.metrics import adjusted_rand_score

    for dataset in args.sets:
        single_seconds, single_labels = None, None
        for n_processes in (1, args.processes):
            with tempfile.TemporaryDirectory() as out:
                ranks, labels, launch_seconds, load = run(args, dataset, n_processes, out)
            record = {
                "suite": "distributed", "commit": _commit(), "dataset": dataset,
                "n_samples": args.n_samples, "seed": args.seed, "params": json.loads(args.params),
                "processes": n_processes, "threads_per_process": args.threads,
                "exact": args.exact and n_processes > 1, "mode": ranks[0]["mode"],
                "acc": ranks[0]["acc"], "nmi": ranks[0]["nmi"],
                "fit_seconds": max(rank["fit_seconds"] for rank in ranks),
                "launch_seconds": launch_seconds,
                # Other work on the machine: 1-minute load average before the run.
                "load_average_before": load,
                "peak_rss_mb": [rank["peak_rss_mb"] for rank in ranks],
                "phase_seconds": ranks[0]["phase_seconds"],
                "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
            }
            if n_processes == 1:
                single_seconds, single_labels = record["fit_seconds"], labels
                single_losses = ranks[0]["losses"]
            else:
                record["losses_apart_from_epoch"], record["loss_max_relative_difference"] = (
                    loss_agreement(single_losses, ranks[0]["losses"]))
                record["speedup"] = single_seconds / record["fit_seconds"]
                record["time_ratio"] = record["fit_seconds"] / single_seconds
                record["ari_vs_single"] = float(adjusted_rand_score(single_labels, labels))
                record["same_labels"] = bool(np.array_equal(single_labels, labels))
            print(json.dumps(record), flush=True)
            with open(args.out, "a") as file:
                file.write(json.dumps(record) + "\n")
        if args.ceiling:
            with tempfile.TemporaryDirectory() as out:
                runs, load = ceiling(args, dataset, out)
            record = {
                "suite": "distributed", "kind": "ceiling", "commit": _commit(),
                "dataset": dataset, "n_samples": args.n_samples, "seed": args.seed,
                "params": json.loads(args.params), "processes": args.processes,
                "threads_per_process": args.threads, "load_average_before": load,
                "fit_seconds": [run["fit_seconds"] for run in runs],
                "slowdown": max(run["fit_seconds"] for run in runs) / single_seconds,
                "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
            }
            print(json.dumps(record), flush=True)
            with open(args.out, "a") as file:
                file.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    main()
