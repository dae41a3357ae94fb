"""Full MNIST: rerun only the self-expressive phase of a fitted model, or only more pretraining.

Full-MNIST fits spend most of their time pretraining the autoencoder (150
epochs for ``bdsc-dec-long``, about 40 minutes on two cores). To ask what the
self-expressive phase and the codes contribute without paying for that each
time, this study starts from a model pickled by ``bench_mnist.py full
--save-dir`` and runs one of two things; labels are used only to score.

``se``
    The self-expressive phase again (the ``bdsc-dec-long`` settings, sparse
    mode) on the pickled network, with ``--se-seed`` as ``random_state`` and
    the encoder's learning rate divided by ``k`` (``--encoder-rate linear``,
    the estimator's rule) or by ``sqrt(k)`` (``sqrt``), ``k`` being the
    number of batches per epoch. Records ACC / NMI of the labels from each
    affinity x label assignment on the new ``coef_``.
``pretrain``
    ``--epochs`` more epochs of plain reconstruction training of the pickled
    network (Adam, batches of 256, ``--lr``), scoring its codes every
    ``--every`` epochs: k-means on the codes, and spectral clustering
    (``skdsc.spectral.spectral_labels``) on their symmetrised 10-nearest-
    neighbour graph, which is about what the sparse self-expressive affinity
    reaches on these codes.

Usage::

    python benchmarks/bench_mnist.py full --estimator bdsc-dec-long --seeds 0 --threads 2 \\
        --save-dir /tmp/models --out /tmp/mnist_seed0.jsonl
    python benchmarks/study_mnist_se_phase.py se /tmp/models/bdsc-dec-long_70000_seed0.pkl \\
        --se-seed 0 --encoder-rate sqrt --out benchmarks/results/study_mnist_se_phase.jsonl
    python benchmarks/study_mnist_se_phase.py pretrain /tmp/models/bdsc-dec-long_70000_seed0.pkl \\
        --epochs 100 --out benchmarks/results/study_mnist_se_phase.jsonl
"""

import argparse
import copy
import json
import math
import pickle
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch
from sklearn.cluster import KMeans
from sklearn.metrics import normalized_mutual_info_score
from sklearn.neighbors import NearestNeighbors

from bench_mnist import FULL, load_mnist
from skdsc import MiniBatchDeepSubspaceClustering
from skdsc.metrics import clustering_accuracy
from skdsc.nn.losses import reconstruction_loss
from skdsc.spectral import AFFINITIES, LABEL_ASSIGNMENTS, coefficients_to_labels, spectral_labels

ENCODER_RATES = {"linear": lambda k: k, "sqrt": math.sqrt}


def scores(y, labels):
    return [round(clustering_accuracy(y, labels), 4),
            round(normalized_mutual_info_score(y, labels), 4)]


def rerun_self_expression(model, X, y, se_seed, encoder_rate):
    """Fit the self-expressive phase again on ``model.network_``; one record."""
    state = copy.deepcopy(model.network_.state_dict())
    divisor = ENCODER_RATES[encoder_rate]

    class Pretrained(MiniBatchDeepSubspaceClustering):
        def _pretrain(self, network, inputs, session):
            network.load_state_dict(state)

        def _make_step(self, network, self_expression, coef_optimizer, bank, inputs,
                       n_batches, generator):
            # The step divides the encoder's rate by its n_batches argument.
            return super()._make_step(network, self_expression, coef_optimizer, bank,
                                      inputs, divisor(n_batches), generator)

    params = dict(FULL["bdsc-dec-long"], self_expression="sparse", n_pretrain_epochs=0)
    rerun = Pretrained(10, random_state=se_seed, device="cpu", **params)
    start = time.perf_counter()
    rerun.fit(X)
    record = dict(kind="se", se_seed=se_seed, encoder_rate=encoder_rate,
                  seconds=round(time.perf_counter() - start), labels_=scores(y, rerun.labels_))
    for affinity in AFFINITIES:
        for assign_labels in LABEL_ASSIGNMENTS:
            _, labels = coefficients_to_labels(
                rerun.coef_, 10, affinity=affinity, threshold=rerun._threshold("sparse"),
                subspace_dim=rerun.subspace_dim, power=rerun.affinity_power,
                assign_labels=assign_labels, n_components=10, random_state=0)
            record[f"{affinity}_{assign_labels}"] = scores(y, labels)
    return record


def code_scores(network, inputs, y):
    """k-means on the codes and spectral clustering on their 10-NN graph."""
    with torch.no_grad():
        codes = torch.cat([network.encode(inputs[i:i + 4096])
                           for i in range(0, len(inputs), 4096)]).numpy()
    kmeans = KMeans(10, n_init=10, random_state=0).fit_predict(codes)
    neighbours = NearestNeighbors(n_neighbors=11).fit(codes).kneighbors(codes)[1][:, 1:]
    rows = np.repeat(np.arange(len(codes)), neighbours.shape[1])
    graph = sp.csr_matrix((np.ones(len(rows)), (rows, neighbours.ravel())),
                          shape=(len(codes), len(codes)))
    spectral = spectral_labels((graph + graph.T) / 2, 10, random_state=0)
    return {"kmeans_codes": scores(y, kmeans), "knn10_spectral": scores(y, spectral)}


def more_pretraining(model, X, y, n_epochs, every, lr):
    """Train ``model.network_`` on reconstruction only; a record every ``every`` epochs."""
    network = model.network_.cpu()
    inputs = torch.as_tensor(X, dtype=torch.float32)
    yield dict(kind="pretrain", extra_epochs=0, **code_scores(network, inputs, y))
    optimizer = torch.optim.Adam(network.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(0)
    for epoch in range(1, n_epochs + 1):
        start, total = time.perf_counter(), 0.0
        for batch in torch.randperm(len(inputs), generator=generator).split(256):
            x = inputs[batch]
            loss = reconstruction_loss(x, network(x))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += loss.item() * len(batch)
        print(f"epoch {epoch}: loss {total / len(inputs):.3f} "
              f"({time.perf_counter() - start:.1f} s)", flush=True)
        if epoch % every == 0:
            yield dict(kind="pretrain", extra_epochs=epoch, lr=lr,
                       reconstruction=round(total / len(inputs), 3),
                       **code_scores(network, inputs, y))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kind", choices=["se", "pretrain"])
    parser.add_argument("model", help="estimator pickled by bench_mnist.py full --save-dir")
    parser.add_argument("--data-dir",
                        default=Path(__file__).resolve().parents[2] / "shared" / "data")
    parser.add_argument("--se-seed", type=int, default=0)
    parser.add_argument("--encoder-rate", choices=sorted(ENCODER_RATES), default="linear")
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--every", type=int, default=25)
    parser.add_argument("--lr", type=float, default=3e-3, help="the fits' learning_rate")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", required=True, help="JSON lines file (appended to)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    X, y = load_mnist(args.data_dir)
    X = X.reshape(len(X), -1)
    with open(args.model, "rb") as source:
        model = pickle.load(source)
    if args.kind == "se":
        records = [rerun_self_expression(model, X, y, args.se_seed, args.encoder_rate)]
    else:
        records = more_pretraining(model, X, y, args.epochs, args.every, args.lr)
    for record in records:
        record.update(model=str(args.model).rsplit("/", 1)[-1], threads=args.threads)
        print(json.dumps(record), flush=True)
        with open(args.out, "a") as sink:
            sink.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    main()
