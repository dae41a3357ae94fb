"""Peak RSS of each stage of a sparse MNIST fit, sampled every 0.2 s.

Wraps the neighbour search, the local ridge start, the coefficient matrix and
spectral clustering, and reports the largest resident memory seen while each
ran, then the peak during ``predict``; same settings as the scaling rows of
``bench_mnist.py`` (1 pretraining and 2 self-expressive epochs, one refresh).

Usage::

    python benchmarks/profile_mnist_memory.py 70000 1     # n_samples, torch threads
"""

import json
import sys
import threading
import time
from pathlib import Path

import torch

from bench_mnist import load_mnist

import skdsc._base as base
import skdsc.nn.self_expression as self_expression
from skdsc import MiniBatchDeepSubspaceClustering


def resident_mb():
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) // 1024
    raise RuntimeError("VmRSS not in /proc/self/status (Linux only).")


def main():
    n_samples = int(sys.argv[1])
    torch.set_num_threads(int(sys.argv[2]) if len(sys.argv) > 2 else 1)
    stage, peaks = ["load"], {}

    def sample():
        while True:
            peaks[stage[0]] = max(peaks.get(stage[0], 0), resident_mb())
            time.sleep(0.2)

    def watched(module, name):
        function = getattr(module, name)

        def wrapper(*args, **kwargs):
            outer, stage[0] = stage[0], name
            try:
                return function(*args, **kwargs)
            finally:
                stage[0] = outer
        setattr(module, name, wrapper)

    for module, name in [(base, "nearest_neighbors"), (base, "coefficients_to_labels"),
                         (base, "_coefficient_matrix"),
                         (self_expression, "local_ridge_regression")]:
        watched(module, name)
    threading.Thread(target=sample, daemon=True).start()
    X, _ = load_mnist(data_dir(), n_samples)
    stage[0] = "fit"
    model = MiniBatchDeepSubspaceClustering(
        10, image_shape=(1, 28, 28), random_state=0, self_expression="sparse",
        n_pretrain_epochs=1, n_epochs=2, refresh_epochs=1).fit(X)
    stage[0] = "predict"
    model.predict(X)
    time.sleep(0.5)
    print(json.dumps(peaks))


def data_dir():
    return Path(__file__).resolve().parents[2] / "shared" / "data"


if __name__ == "__main__":
    main()
