"""One process of a data-parallel fit, started by tests/test_distributed.py.

Usage: ``python distributed_worker.py CONFIG_JSON``. The configuration names
the estimator, its parameters, the output file (``.RANK`` is appended) and,
for the failure tests, what this process should do wrong. The result is a
pickle of the fitted attributes, or of the error ``fit`` raised.
"""

import json
import os
import pickle
import sys
import time

import numpy as np

from skdsc import ContrastiveDSC, MiniBatchDeepSubspaceClustering
from skdsc import distributed
from skdsc._checkpoint import TrainingSession
from skdsc.datasets import make_subspaces
from skdsc.distributed import DataParallelGroup, init_process_group

ESTIMATORS = {"bdsc": MiniBatchDeepSubspaceClustering, "contrastive": ContrastiveDSC}


def data(config):
    X, y = make_subspaces(n_clusters=3, n_samples_per_cluster=config.get("per_cluster", 20),
                          n_features=config.get("n_features", 10), subspace_dim=2,
                          noise=0.01, random_state=0)
    return X, y


def misbehave(config, rank):
    """Make this process die, hang or stop at a step, as the configuration says."""
    fault = config.get("fault")
    calls = {"n": 0}
    original_run = TrainingSession.run

    def run(self, step, *, stage, **kwargs):
        def faulty(indices):
            calls["n"] += 1
            if fault["at_step"] == calls["n"] and rank in fault["ranks"]:
                if fault["how"] == "exit":
                    os._exit(3)
                if fault["how"] == "hang":
                    time.sleep(3600)
                if fault["how"] == "interrupt":
                    raise KeyboardInterrupt
            return step(indices)
        return original_run(self, faulty, stage=stage, **kwargs)

    if fault is not None:
        TrainingSession.run = run


def count_gathers():
    """Count the differentiable gathers of live codes (how a step shares the codes)."""
    calls = {"n": 0}
    original = DataParallelGroup.gather_rows_with_grad

    def counted(self, *args, **kwargs):
        # A single-process group (a step run whole) gathers nothing.
        calls["n"] += self.active
        return original(self, *args, **kwargs)

    DataParallelGroup.gather_rows_with_grad = counted
    return calls


def main():
    config = json.loads(sys.argv[1])
    rank = int(os.environ["RANK"])
    gathers = count_gathers()
    if "max_gathered_gradients" in config:
        distributed.MAX_GATHERED_GRADIENTS = config["max_gathered_gradients"]
    if config.get("join", True):
        init_process_group(timeout=config.get("timeout", 60), exact=config.get("exact", False))
    # Otherwise the estimator joins torchrun's process group by itself.
    X, _ = data(config)
    if config.get("different_data") and rank == 1:
        X = X[::-1].copy()
    misbehave(config, rank)
    model = ESTIMATORS[config["estimator"]](**config["params"])
    try:
        model.fit(X)
        result = {"labels": model.labels_, "coef": model.coef_, "embedding": model.embedding_,
                  "affinity": model.affinity_matrix_,
                  "history": [{k: v for k, v in record.items() if k != "seconds"}
                              for record in model.history_],
                  # Batch-norm statistics too: every process ends with the first one's.
                  "parameters": [p.detach().numpy().copy()
                                 for p in [*model.network_.parameters(),
                                           *model.network_.buffers()]],
                  "gathers_with_grad": gathers["n"]}
    except (Exception, KeyboardInterrupt) as exc:
        result = {"error": f"{type(exc).__name__}: {exc}"}
    with open(f"{config['out']}.{rank}", "wb") as file:
        pickle.dump(result, file)


if __name__ == "__main__":
    main()
