"""ContrastiveDSC with whole-bank InfoNCE negatives against ``n_negatives`` drawn per step.

Two kinds of records, appended as JSON lines to ``--out``:

``"kind": "fit"``
    One ``ContrastiveDSC`` fit per (data set, ``n_negatives``): ACC, NMI, ARI,
    the fit's wall seconds and those of its self-expressive epochs (where the
    negatives are used). The settings are short ones for the CPU (see
    ``SHORT`` and the record's ``params``): the smallest timm ResNet used in
    the benchmarks (``resnet10t``), few epochs and the sparse mode, so that
    the self-expression itself costs ``O(n * n_nonzero)`` and the InfoNCE
    negatives are the only term of a step that grows with the bank. The
    accuracies are therefore far below those of the default settings; they
    compare the two negative rules, not the method.
``"kind": "loss_step"``
    The data term alone (own-slot mask, InfoNCE forward and backward, and for
    the sampled rule the draw and the gather), timed on random codes for a
    bank of ``n_slots`` codes, so that the ``O(n^2 d)`` against
    ``O(n n_negatives d)`` cost of an epoch is seen without the encoder.

Every record carries the commit, whether the package had uncommitted
changes, the thread count and the seed. Run with one thread, one job at a time::

    OMP_NUM_THREADS=1 python benchmarks/negatives.py --loss-steps
    OMP_NUM_THREADS=1 python benchmarks/negatives.py --fit coil100 --n-negatives none 1024
    OMP_NUM_THREADS=1 python benchmarks/negatives.py --fit mnist --n-samples 10000 \\
        --n-negatives none 1024
"""

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from protocol import ALL_SETS, DEFAULT_DATA_DIR, _commit, load, scores  # noqa: E402

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "negatives.jsonl"
# Short CPU settings: every fit of the comparison uses them.
SHORT = dict(encoder="resnet10t", n_pretrain_epochs=2, n_epochs=2, batch_size=128,
             self_expression="sparse", device="cpu")
NOTE = ("short CPU settings (resnet10t, n_pretrain_epochs=2, n_epochs=2, sparse mode), "
        "one thread: accuracies compare the negative rules, not the method's best")


def _uncommitted():
    """Whether ``skdsc/`` differs from the commit (the records then say so)."""
    try:
        result = subprocess.run(["git", "status", "--porcelain", "--", "skdsc"],
                                capture_output=True, text=True,
                                cwd=Path(__file__).resolve().parents[1])
        return bool(result.stdout.strip())
    except OSError:
        return None


def _negatives(value):
    return None if value.lower() == "none" else int(value)


def _write(record, out):
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "a") as file:
        file.write(json.dumps(record) + "\n")
    print(json.dumps(record), flush=True)


def fit_record(dataset, n_samples, n_negatives, seed, params, data_dir):
    """Fit ContrastiveDSC once and return its record."""
    from skdsc import ContrastiveDSC

    n_clusters, image_shape = ALL_SETS[dataset]
    X, y = load(dataset, data_dir, n_samples, seed=seed)
    subset = n_samples is not None and len(X) < len(load(dataset, data_dir)[1])
    settings = {**SHORT, **params, "n_negatives": n_negatives}
    model = ContrastiveDSC(n_clusters, image_shape=image_shape, random_state=seed, **settings)
    start = time.perf_counter()
    model.fit(X)
    seconds = time.perf_counter() - start
    phase_seconds = {}
    for entry in model.history_:
        phase = entry["phase"]
        phase_seconds[phase] = phase_seconds.get(phase, 0.0) + entry.get("seconds", 0.0)
    return {
        "kind": "fit", "dataset": dataset, "n_samples": len(X),
        "subset": "stratified" if subset else "full",
        "params": settings, "seed": seed, **scores(y, model.labels_),
        "fit_seconds": seconds,
        "pretrain_seconds": phase_seconds.get("pretrain", 0.0),
        "self_expression_seconds": phase_seconds.get("self-expression", 0.0),
        "self_expression_": model.self_expression_, "note": NOTE,
    }


def loss_step_record(n_slots, n_negatives, batch, dim, repeats, seed):
    """Seconds of one data-term step (forward and backward) on random codes."""
    from skdsc._contrastive import _own_slots, _sampled_slots
    from skdsc.nn.losses import info_nce_loss
    from skdsc.nn.memory_bank import MemoryBank

    generator = torch.Generator().manual_seed(seed)
    bank = MemoryBank(torch.randn(n_slots, dim, generator=generator))
    draws = torch.Generator().manual_seed(seed + 1)
    sampled = n_negatives is not None and n_slots > n_negatives

    def step():
        indices = torch.randperm(n_slots, generator=generator)[:batch]
        anchors = torch.randn(batch, dim, generator=generator, requires_grad=True)
        positives = torch.randn(batch, dim, generator=generator, requires_grad=True)
        if sampled:
            slots = _sampled_slots(n_slots, n_negatives, draws)
            loss = info_nce_loss(anchors, positives, bank.codes[slots], 0.2,
                                 exclude=_own_slots(bank, indices, slots))
        else:
            loss = info_nce_loss(anchors, positives, bank.codes, 0.2,
                                 exclude=_own_slots(bank, indices))
        loss.backward()

    step()  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        step()
    per_step = (time.perf_counter() - start) / repeats
    steps_per_epoch = -(-n_slots // batch)
    return {"kind": "loss_step", "n_slots": n_slots, "n_negatives": n_negatives,
            "negatives_seen": n_negatives if sampled else n_slots, "batch": batch, "dim": dim,
            "repeats": repeats, "seconds_per_step": per_step,
            "data_term_seconds_per_epoch": per_step * steps_per_epoch, "seed": seed}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fit", nargs="*", default=[], choices=sorted(ALL_SETS),
                        metavar="DATASET", help="data sets to fit ContrastiveDSC on")
    parser.add_argument("--n-samples", type=int, default=None,
                        help="stratified subset of this many samples (default: all)")
    parser.add_argument("--n-negatives", nargs="+", type=_negatives, default=[None, 1024],
                        help="values of n_negatives to compare ('none': whole bank)")
    parser.add_argument("--params", default="{}",
                        help="JSON of estimator parameters over the short settings")
    parser.add_argument("--loss-steps", action="store_true",
                        help="time the data term alone on random codes")
    parser.add_argument("--bank-sizes", nargs="+", type=int, default=[7200, 10000, 70000])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--data-dir", default=DEFAULT_DATA_DIR)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    if not args.fit and not args.loss_steps:
        parser.error("nothing to do: give --fit DATASET ... and/or --loss-steps")
    torch.set_num_threads(args.threads)
    common = {"commit": _commit(), "uncommitted_changes": _uncommitted(),
              "threads": args.threads}
    if args.loss_steps:
        for n_slots in args.bank_sizes:
            for n_negatives in args.n_negatives:
                _write({**common, **loss_step_record(n_slots, n_negatives, batch=128, dim=128,
                                                     repeats=args.repeats, seed=args.seed)},
                       args.out)
    params = json.loads(args.params)
    for dataset in args.fit:
        for n_negatives in args.n_negatives:
            record = fit_record(dataset, args.n_samples, n_negatives, args.seed, params,
                                args.data_dir)
            _write({**common, **record}, args.out)


if __name__ == "__main__":
    main()
