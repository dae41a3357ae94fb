"""Data-parallel fits over two CPU processes (gloo), launched as torchrun would."""

import json
import os
import pickle
import socket
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
from numpy.testing import assert_allclose, assert_array_equal
from scipy import sparse
from sklearn.metrics import adjusted_rand_score

from skdsc import ContrastiveDSC, MiniBatchDeepSubspaceClustering
from skdsc._training import batch_forward_flops
from skdsc.distributed import DataParallelGroup, init_process_group

from distributed_worker import data

pytestmark = pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(),
                                reason="torch.distributed with gloo is not available")

WORKER = Path(__file__).with_name("distributed_worker.py")
BDSC = dict(n_clusters=3, hidden_units=(32, 8), batch_size=16, n_epochs=6, n_pretrain_epochs=6,
            random_state=0, device="cpu")
# Enough training on 120 samples that the clusters are clear-cut, so the labels
# do not hang on the last bits of the coefficients.
SEPARABLE = {"per_cluster": 40, "n_features": 16}
TRAINED = dict(BDSC, batch_size=24, n_epochs=30, n_pretrain_epochs=30, learning_rate=1e-2,
               affinity="symmetric", threshold=1.0)
CONTRASTIVE = dict(n_clusters=3, encoder="test_resnet", projection_dim=8, batch_size=16,
                   n_epochs=3, n_pretrain_epochs=3, random_state=0, device="cpu")


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def launch(config, tmp_path, n_processes=2, wait=240):
    """Run ``n_processes`` workers as torchrun does; their results by rank and return codes."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    config = {**config, "out": str(tmp_path / "result")}
    environment = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port()),
                   "WORLD_SIZE": str(n_processes), "OMP_NUM_THREADS": "1",
                   "PYTHONPATH": os.pathsep.join([str(WORKER.parent),
                                                  os.environ.get("PYTHONPATH", "")])}
    processes = [
        subprocess.Popen([sys.executable, str(WORKER), json.dumps(config)],
                         env={**environment, "RANK": str(rank), "LOCAL_RANK": str(rank)},
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        for rank in range(n_processes)
    ]
    return processes, config["out"]


def results(processes, out, wait=240):
    """Wait for every process; their pickled results by rank (None where none was written)."""
    for process in processes:
        try:
            process.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    found = []
    for rank in range(len(processes)):
        path = Path(f"{out}.{rank}")
        found.append(pickle.loads(path.read_bytes()) if path.exists() else None)
    return found


def fit_in_two_processes(config, tmp_path):
    processes, out = launch(config, tmp_path)
    found = results(processes, out)
    for rank, result in enumerate(found):
        output = processes[rank].stdout.read().decode()
        assert result is not None and "error" not in result, (rank, result, output[-3000:])
    return found


def dense(matrix):
    return matrix.toarray() if sparse.issparse(matrix) else matrix


def assert_same_fit(a, b):
    assert_array_equal(a["labels"], b["labels"])
    assert_array_equal(dense(a["coef"]), dense(b["coef"]))
    assert_array_equal(a["embedding"], b["embedding"])
    assert_array_equal(dense(a["affinity"]), dense(b["affinity"]))
    assert a["history"] == b["history"]
    for p, q in zip(a["parameters"], b["parameters"]):
        assert_array_equal(p, q)


def _pretraining_losses(history):
    return [record["loss"] for record in history if record.get("phase") == "pretrain"]


@pytest.mark.parametrize("mode", ["dense", "sparse"])
def test_two_processes_give_the_single_process_fit(tmp_path, mode):
    """Each process trains on half of every batch; the fit is the single-process one.

    Gradients are summed in another order, so the numbers agree to rounding,
    and the labels exactly (in the sparse mode the partition: the k-means of
    the post-processing may number the same clusters otherwise).
    """
    params = dict(TRAINED, self_expression=mode, n_nonzero=8, refresh_epochs=5)
    first, second = fit_in_two_processes({"estimator": "bdsc", "params": params, **SEPARABLE},
                                         tmp_path)
    assert_same_fit(first, second)
    # Dense rows multiply the whole bank: every process encodes the whole batch
    # rather than gather codes. A sparse row is cheap: the network is split.
    assert (first["gathers_with_grad"] == 0) == (mode == "dense")
    X, _ = data(SEPARABLE)
    single = MiniBatchDeepSubspaceClustering(**params).fit(X)
    if mode == "dense":
        assert_array_equal(first["labels"], single.labels_)
    else:
        assert adjusted_rand_score(first["labels"], single.labels_) == 1.0
    assert_allclose(dense(first["coef"]), dense(single.coef_), atol=5e-3)
    assert_allclose(first["embedding"], single.embedding_, atol=2e-3)
    losses = [record["loss"] for record in first["history"] if "loss" in record]
    single_losses = [record["loss"] for record in single.history_ if "loss" in record]
    assert_allclose(losses, single_losses, rtol=1e-3)
    # A network this small pretrains whole in every process: no split, no
    # all-reduce, the single process's arithmetic to the last bit.
    assert _pretraining_losses(first["history"]) == _pretraining_losses(single.history_)


def test_large_network_gradients_are_all_reduced(tmp_path):
    """Past MAX_GATHERED_GRADIENTS the network's gradients are all-reduced rather
    than gathered. Two addends sum alike in either order, so the fit is the
    same to the bit."""
    params = dict(TRAINED, self_expression="dense")
    config = {"estimator": "bdsc", "params": params, **SEPARABLE}
    gathered, _ = fit_in_two_processes(config, tmp_path / "gathered")
    reduced, other = fit_in_two_processes({**config, "max_gathered_gradients": 0},
                                          tmp_path / "reduced")
    assert_same_fit(reduced, other)
    assert_same_fit(reduced, gathered)


@pytest.mark.parametrize("mode", ["dense", "sparse"])
def test_exact_group_gives_the_single_process_fit_to_the_bit(tmp_path, mode):
    """exact=True: every process runs the whole step and shares out only the rows
    of the products with the bank (dense) or with the candidates' codes
    (sparse), so nothing is summed in another order. The sparse fit refreshes
    its candidates, whose searches are shared out by rows too."""
    params = dict(TRAINED, self_expression=mode, n_nonzero=8, refresh_epochs=5)
    first, second = fit_in_two_processes(
        {"estimator": "bdsc", "params": params, "exact": True, **SEPARABLE}, tmp_path)
    assert_same_fit(first, second)
    assert first["gathers_with_grad"] == 0
    X, _ = data(SEPARABLE)
    single = MiniBatchDeepSubspaceClustering(**params).fit(X)
    assert single.self_expression_ == mode
    assert_array_equal(first["labels"], single.labels_)
    assert_array_equal(dense(first["coef"]), dense(single.coef_))
    assert_array_equal(first["embedding"], single.embedding_)
    # The worker leaves out the timings.
    assert first["history"] == [{key: value for key, value in record.items() if key != "seconds"}
                                for record in single.history_]


def test_contrastive_in_two_processes(tmp_path):
    """ContrastiveDSC: both processes end alike and cluster as one process does.

    Not the same numbers: each process draws the augmented views of its own
    share, and batch normalisation sees the share, not the whole batch.
    """
    X, y = data({})
    first, second = fit_in_two_processes({"estimator": "contrastive", "params": CONTRASTIVE},
                                         tmp_path)
    assert_same_fit(first, second)
    # Its encoder is the bulk of a step: each process encodes its share and
    # gathers the others' codes.
    assert first["gathers_with_grad"] > 0
    single = ContrastiveDSC(**CONTRASTIVE).fit(X)
    assert first["labels"].shape == single.labels_.shape
    assert adjusted_rand_score(y, first["labels"]) >= adjusted_rand_score(y, single.labels_) - 0.1


@pytest.mark.parametrize("how", ["exit", "hang"])
def test_a_failed_process_stops_the_others_with_an_error(tmp_path, how):
    """A process that dies or hangs mid-fit makes the other fail within the timeout."""
    config = {"estimator": "bdsc", "params": BDSC, "timeout": 10,
              "fault": {"how": how, "ranks": [1], "at_step": 30}}
    start = time.monotonic()
    processes, out = launch(config, tmp_path)
    processes[0].wait(timeout=120)
    elapsed = time.monotonic() - start
    found = results(processes, out, wait=5 if how == "hang" else 120)
    assert "error" in found[0]
    assert "RuntimeError: Process 0 of 2 could not" in found[0]["error"]
    assert elapsed < 100


def test_different_data_is_refused(tmp_path):
    first, second = results(*launch({"estimator": "bdsc", "params": BDSC,
                                     "different_data": True}, tmp_path))
    for found in (first, second):
        assert "every process must call fit with the same X" in found["error"]


def test_interrupted_fit_resumes_to_the_uninterrupted_one(tmp_path):
    """Both processes stopped mid-training resume from the first one's checkpoint."""
    params = dict(BDSC, checkpoint_path=str(tmp_path / "fit.ckpt"), checkpoint_interval=0)
    reference = fit_in_two_processes({"estimator": "bdsc", "params": BDSC},
                                     tmp_path / "reference")
    interrupted = results(*launch({"estimator": "bdsc", "params": params,
                                   "fault": {"how": "interrupt", "ranks": [0, 1],
                                             "at_step": 30}}, tmp_path))
    assert all("KeyboardInterrupt" in found["error"] for found in interrupted)
    assert (tmp_path / "fit.ckpt").exists()
    resumed = fit_in_two_processes({"estimator": "bdsc", "params": params}, tmp_path)
    assert_same_fit(resumed[0], resumed[1])
    assert_same_fit(resumed[0], reference[0])
    assert not (tmp_path / "fit.ckpt").exists()


def run_torchrun(config):
    """Launch two workers with torchrun; its return code and its last output lines."""
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    finished = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
         str(WORKER), json.dumps(config)],
        env=environment, timeout=240, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return finished.returncode, "\n".join(finished.stdout.splitlines()[-40:])


def test_torchrun_launch_joins_the_group_by_itself(tmp_path):
    """Under torchrun the estimator joins the process group without any call."""
    out = tmp_path / "result"
    config = {"estimator": "bdsc", "params": BDSC, "join": False, "out": str(out)}
    paths = [Path(f"{out}.{rank}") for rank in (0, 1)]
    returncode, output = run_torchrun(config)
    if returncode != 0 and not any(path.exists() for path in paths):
        # The launcher failed before either worker got as far as writing a
        # result (its own rendezvous, not the estimator): try once more, and
        # say so, so that a launcher that keeps failing still fails the test.
        warnings.warn(f"torchrun failed before the fit (exit {returncode}); retrying. "
                      f"Its output:\n{output}")
        returncode, output = run_torchrun(config)
    assert returncode == 0, f"torchrun exited with {returncode}:\n{output}"
    first, second = (pickle.loads(path.read_bytes()) for path in paths)
    assert_same_fit(first, second)


def test_single_process_group_is_inactive(monkeypatch):
    for name in ("WORLD_SIZE", "RANK", "MASTER_ADDR"):
        monkeypatch.delenv(name, raising=False)
    group = DataParallelGroup.current()
    assert not group.active and group.is_main and group.world_size == 1


@pytest.mark.parametrize("kwargs, message", [
    (dict(backend="mpi"), "backend must be 'auto', 'gloo' or 'nccl'"),
    (dict(timeout=0), "timeout must be a positive number of seconds"),
    (dict(exact="yes"), "exact must be True or False"),
])
def test_init_process_group_validates(kwargs, message):
    with pytest.raises(ValueError, match=message):
        init_process_group(**kwargs)


def test_init_process_group_outside_torchrun(monkeypatch):
    for name in ("WORLD_SIZE", "RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(RuntimeError, match="start the processes with torchrun"):
        init_process_group()


def test_batch_smaller_than_the_processes_is_refused(tmp_path):
    first, _ = results(*launch({"estimator": "bdsc", "params": dict(BDSC, batch_size=1)},
                               tmp_path))
    assert "batch_size=1 is smaller than the 2 processes" in first["error"]


def test_batch_forward_flops_counts_one_batch_of_the_network():
    """The split rule's count: a linear layer's 2 x in x out per sample, per batch."""
    network = torch.nn.Linear(10, 4)
    inputs = torch.randn(50, 10)
    assert batch_forward_flops(network, inputs, 16) == 2 * 10 * 4 * 16
    assert batch_forward_flops(network, inputs, None) == 2 * 10 * 4 * 50
    assert network.training
