"""The peers suite: skdsc beside other clustering methods, same data, same process settings.

Every peer is fitted by :func:`fit_peer` in a fresh process with the same
thread count, after the same imports (NumPy, scikit-learn, PyTorch and
skdsc, so that every peak RSS carries the same runtime) and on the same
arrays (the protocol's loaders: rows flattened in C order, values in
[0, 1]). Only ``n_clusters``, the image shape where a method takes one, the
seed and the settings in :data:`FULL_PARAMS` (or :data:`QUICK_PARAMS` for
``--quick``) are given. Labels only score the final labels.

Peers
-----
``kmeans``
    scikit-learn ``KMeans`` on the raw pixels (10 initialisations).
``spectral``
    scikit-learn ``SpectralClustering`` on the raw pixels, affinity of the 10
    nearest neighbours (its RBF default links nothing on 1,024 pixels).
``ridge``
    The protocol's linear self-expression baseline (``protocol.linear_baseline``):
    closed-form ridge of the raw pixels, the estimators' dense post-processing.
``elastic_net``
    Elastic-net self-expression of the raw pixels (:func:`elastic_net_coefficients`),
    each row over its nearest rows, then ``|C| + |C|^T`` spectral clustering.
``dsc_full_batch``
    ``MiniBatchDeepSubspaceClustering(batch_size=None, coef_init="constant")``:
    one full batch per step from DSC-Net's constant coefficients, the DSC-Net
    objective; other parameters at their defaults.
``dec``, ``idec``
    clustpy's ``DEC`` and ``IDEC`` with their defaults (fully connected
    autoencoder d-500-500-2000-10). Scored on their own assignment
    (``dec_labels_``); the k-means relabelling of the embedding that clustpy
    puts in ``labels_`` is scored too (``acc_kmeans_embedding``).
``minibatch``
    ``MiniBatchDeepSubspaceClustering`` with its defaults.
``contrastive``
    ``ContrastiveDSC`` with 30 pretraining and 5 self-expressive epochs
    (its defaults are 50 and 10; a ResNet-18 trained from scratch on one
    core is the slowest peer), everything else default.
"""

import json
import time
import warnings
from pathlib import Path

import numpy as np

from harness import Task, peak_rss_mb, resident_mb
from protocol import ALL_SETS, _commit, linear_baseline, load, scores

# Peers whose result does not depend on the seed: fitted once, seed 0.
DETERMINISTIC = ("ridge", "elastic_net")
# The reference of the time and memory ratios in the peers table.
REFERENCE = "dsc_full_batch"
# What a record calls each peer.
NAMES = {
    "kmeans": "KMeans (raw pixels)",
    "spectral": "SpectralClustering (raw pixels, 10-NN)",
    "ridge": "ridge self-expression (raw pixels)",
    "elastic_net": "elastic-net self-expression (raw pixels)",
    "dsc_full_batch": "full-batch DSC (MiniBatchDeepSubspaceClustering, batch_size=None, constant start)",
    "dec": "DEC (clustpy)",
    "idec": "IDEC (clustpy)",
    "minibatch": "MiniBatchDeepSubspaceClustering",
    "contrastive": "ContrastiveDSC",
}
PEERS = tuple(NAMES)
FULL_PARAMS = {
    "kmeans": {"n_init": 10},
    "spectral": {"affinity": "nearest_neighbors", "n_neighbors": 10},
    "ridge": {},
    "elastic_net": {"n_candidates": 200, "l1_ratio": 0.9, "gamma": 50.0},
    "dsc_full_batch": {"batch_size": None, "coef_init": "constant"},
    "dec": {},
    "idec": {},
    "minibatch": {},
    "contrastive": {"n_pretrain_epochs": 30, "n_epochs": 5},
}
# Smoke settings: every peer runs, in seconds; the figures mean nothing.
QUICK_PARAMS = {
    **FULL_PARAMS,
    "elastic_net": {"n_candidates": 50, "l1_ratio": 0.9, "gamma": 50.0},
    "dsc_full_batch": {"batch_size": None, "coef_init": "constant", "n_epochs": 2,
                       "n_pretrain_epochs": 2},
    "dec": {"pretrain_epochs": 2, "clustering_epochs": 2},
    "idec": {"pretrain_epochs": 2, "clustering_epochs": 2},
    "minibatch": {"n_epochs": 2, "n_pretrain_epochs": 2},
    "contrastive": {"n_pretrain_epochs": 1, "n_epochs": 1},
}
# The full peers run: the sets of the issue, MNIST as a stratified 10,000.
FULL_SETS = ("orl", "coil20", "coil100", "mnist")
SUBSET_SIZES = {"mnist": 10_000}
QUICK_SAMPLES = 400
# Samples of each whole set (known without loading the big ones).
SET_SIZES = {"orl": 400, "coil20": 1440, "coil100": 7200, "coil100rgb": 7200, "mnist": 70_000,
             "digits": 1797}


def elastic_net_coefficients(X, *, n_candidates=200, l1_ratio=0.9, gamma=50.0):
    """Elastic-net self-expression of the rows of ``X`` over their nearest rows.

    Each row ``x_i``, scaled to unit length like all rows, is written as a
    combination of its ``n_candidates`` nearest other rows (cosine) ``D`` by
    scikit-learn's :class:`~sklearn.linear_model.ElasticNet`::

        min_c 1 / (2 d) ||x_i - D c||^2 + a (r ||c||_1 + (1 - r) / 2 ||c||^2)

    with ``r = l1_ratio`` and ``a = r * a_max / gamma``, where ``a_max`` is
    the smallest ``a`` that makes ``c`` zero: the penalty is relative, the
    same on every row and every data set. Restricting each row to its
    nearest rows keeps the cost at ``n`` small problems (the full dictionary
    would be ``n`` problems in ``n - 1`` unknowns each).

    Parameters
    ----------
    X : ndarray of shape (n_samples, n_features)
    n_candidates : int, default=200
        Rows each row may use (at most ``n_samples - 1``).
    l1_ratio : float, default=0.9
        Share of the l1 term in the penalty.
    gamma : float, default=50.0
        How far below the all-zero penalty ``a_max`` the penalty lies, as in
        the parametrisation of You et al. (2016, "Oracle based active set
        algorithm for scalable elastic net subspace clustering").

    Returns
    -------
    coef : scipy.sparse.csr_matrix of shape (n_samples, n_samples)
        Zero diagonal.
    n_unconverged : int
        Rows whose coordinate descent stopped at ``max_iter``.
    """
    import torch
    from scipy import sparse
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import ElasticNet

    from skdsc.nn.neighbors import nearest_neighbors

    X = np.asarray(X, dtype=np.float64)
    X = X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)
    n_samples, n_features = X.shape
    k = min(n_candidates, n_samples - 1)
    neighbors = nearest_neighbors(torch.as_tensor(X), k).numpy()
    values = np.zeros((n_samples, k))
    n_unconverged = 0
    for i in range(n_samples):
        dictionary = X[neighbors[i]].T
        correlation = np.abs(dictionary.T @ X[i]).max()
        if correlation == 0:
            continue
        alpha = correlation / (n_features * gamma)  # = l1_ratio * a_max / gamma
        model = ElasticNet(alpha=alpha, l1_ratio=l1_ratio, fit_intercept=False,
                           precompute=True, max_iter=10_000)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ConvergenceWarning)
            values[i] = model.fit(dictionary, X[i]).coef_
        n_unconverged += any(issubclass(w.category, ConvergenceWarning) for w in caught)
    coef = sparse.csr_matrix((values.ravel(), neighbors.ravel(),
                              np.arange(0, n_samples * k + 1, k)), shape=(n_samples, n_samples))
    coef.eliminate_zeros()
    return coef, n_unconverged


def _fit_sklearn(peer, X, n_clusters, image_shape, seed, params, device):
    from sklearn.cluster import KMeans, SpectralClustering

    cls = KMeans if peer == "kmeans" else SpectralClustering
    return cls(n_clusters, random_state=seed, **params).fit(X).labels_, {"device": "cpu"}, {}


def _fit_elastic_net(peer, X, n_clusters, image_shape, seed, params, device):
    from skdsc.spectral import coefficients_to_labels

    coef, n_unconverged = elastic_net_coefficients(X, **params)
    # The estimators' sparse post-processing: |C| + |C|^T, no threshold.
    _, labels = coefficients_to_labels(coef, n_clusters, affinity="symmetric", threshold=1.0,
                                       random_state=0)
    fields = {"device": "cpu", "n_unconverged": n_unconverged,
              "nonzeros_per_row": coef.nnz / X.shape[0]}
    return labels, fields, {}


def _fit_skdsc(peer, X, n_clusters, image_shape, seed, params, device, checkpoint=None):
    import skdsc

    cls = skdsc.ContrastiveDSC if peer == "contrastive" else skdsc.MiniBatchDeepSubspaceClustering
    saving = {} if checkpoint is None else {"checkpoint_path": checkpoint,
                                            "checkpoint_interval": CHECKPOINT_INTERVAL}
    model = cls(n_clusters, image_shape=image_shape, random_state=seed, device=device,
                **params, **saving).fit(X)
    fields = {"device": str(model.device_), "self_expression": model.self_expression_}
    return model.labels_, fields, {}


def _fit_clustpy(peer, X, n_clusters, image_shape, seed, params, device):
    from clustpy.deep import DEC, IDEC

    cls = DEC if peer == "dec" else IDEC
    model = cls(n_clusters, random_state=seed, device=None if device == "auto" else device,
                **params).fit(X)
    used = next(model.neural_network_trained_.parameters()).device
    return model.dec_labels_, {"device": str(used)}, {"kmeans_embedding": model.labels_}


# Seconds between two checkpoints of a resumable fit (work lost at a kill).
CHECKPOINT_INTERVAL = 300.0


class SegmentLedger:
    """Wall time of a fit that ran in several segments, resumed from checkpoints.

    A segment's useful time runs from its start to its last checkpoint (the
    checkpoint file's modification time when the next segment starts): work
    done after that save was lost and is counted once, in the segment that
    redoes it. The file sits beside the checkpoint and goes with it.
    """

    def __init__(self, checkpoint):
        self.path = Path(f"{checkpoint}.segments.json")
        self.checkpoint = Path(checkpoint)

    def start(self, commit):
        """Note a segment's start, and how far the checkpoint it resumes from got.

        Raises RuntimeError when the checkpoint was written by another commit:
        one fit must not mix two versions of the code.
        """
        segments = json.loads(self.path.read_text()) if self.path.exists() else []
        saved_at = self.checkpoint.stat().st_mtime if self.checkpoint.exists() else None
        if saved_at is None:
            segments = []  # no checkpoint: the fit starts afresh, earlier segments are void
        elif segments and segments[0]["commit"] != commit:
            raise RuntimeError(
                f"{self.checkpoint} was written at commit {segments[0]['commit']}, this is "
                f"{commit}: resume it from a checkout of that commit, or delete it and its "
                f"{self.path.name} to start afresh."
            )
        segments.append({"started": time.time(), "resumes_from_save_at": saved_at,
                         "commit": commit})
        self.path.write_text(json.dumps(segments))
        return segments

    def finish(self, segments, last_seconds):
        """Total useful seconds and the number of segments; removes the ledger."""
        # A segment stopped before its first save did nothing that lasted.
        earlier = sum(max(0.0, following["resumes_from_save_at"] - segment["started"])
                      for segment, following in zip(segments, segments[1:]))
        self.path.unlink(missing_ok=True)
        return earlier + last_seconds, len(segments)


# Each fits one peer and returns its labels, fields for the record (at least
# the device) and other labellings to score beside them.
FITS = {"kmeans": _fit_sklearn, "spectral": _fit_sklearn, "elastic_net": _fit_elastic_net,
        "dsc_full_batch": _fit_skdsc, "minibatch": _fit_skdsc, "contrastive": _fit_skdsc,
        "dec": _fit_clustpy, "idec": _fit_clustpy}


def fit_peer(peer, dataset, seed, data_dir, n_samples=None, params=None, device="auto",
             checkpoint_dir=None):
    """Fit one peer on one data set in this process and return its record.

    Run by the harness in a fresh process: ``peak_rss_mb`` is this fit's
    (with the runtime and the data), ``rss_before_fit_mb`` what the process
    held before the fit started.

    With ``checkpoint_dir``, the skdsc peers save a checkpoint there every
    :data:`CHECKPOINT_INTERVAL` seconds, and a fit that was stopped (a
    timeout, a session's end) resumes from it when the same command runs
    again: the way to fit the peers that take longer than one sitting. Its
    ``fit_seconds`` is then the useful time of all segments (see
    :class:`SegmentLedger`), ``segments`` says how many there were, and
    ``peak_rss_mb`` is the last segment's (the one that also clusters).
    """
    import sklearn  # noqa: F401  (the same runtime in every peer's process)
    import torch  # noqa: F401

    import skdsc  # noqa: F401

    params = dict(FULL_PARAMS[peer] if params is None else params)
    n_clusters, image_shape = ALL_SETS[dataset]
    X, y = load(dataset, data_dir, n_samples)
    record = {"peer": peer, "estimator": NAMES[peer], "params": params, "dataset": dataset,
              "n_samples": len(X), "seed": seed, "rss_before_fit_mb": resident_mb()}
    if peer == "ridge":
        # The protocol's own baseline, unchanged (it loads the set again).
        baseline = linear_baseline(dataset, data_dir, n_samples)
        return {**record, **{k: baseline[k] for k in ("acc", "nmi", "ari", "fit_seconds")},
                "peak_rss_mb": peak_rss_mb(), "device": "cpu"}
    resumable = checkpoint_dir is not None and FITS[peer] is _fit_skdsc
    extra = {}
    if resumable:
        Path(checkpoint_dir).mkdir(parents=True, exist_ok=True)
        checkpoint = Path(checkpoint_dir) / f"{dataset}-{len(X)}-{peer}-seed{seed}.ckpt"
        ledger = SegmentLedger(checkpoint)
        segments = ledger.start(_commit())
        extra = {"checkpoint": str(checkpoint)}
    start = time.perf_counter()
    labels, fields, alternatives = FITS[peer](peer, X, n_clusters, image_shape, seed, params,
                                              device, **extra)
    seconds = time.perf_counter() - start
    if resumable:
        fields["last_segment_seconds"] = seconds
        seconds, fields["segments"] = ledger.finish(segments, seconds)
    record.update(**scores(y, labels), fit_seconds=seconds, peak_rss_mb=peak_rss_mb(), **fields)
    for name, other in alternatives.items():
        other_scores = scores(y, other)
        record.update({f"{metric}_{name}": value for metric, value in other_scores.items()})
    return record


def peer_tasks(peers, sets, seeds, data_dir, *, quick=False, device="auto", n_samples=None,
               checkpoint_dir=None):
    """The harness tasks of a peers run (see :class:`harness.Task`).

    MNIST is a stratified 10,000 of its 70,000 digits (the same for every
    peer and seed) unless ``n_samples`` says otherwise; a quick run takes at
    most :data:`QUICK_SAMPLES` of every set. ``checkpoint_dir`` makes the
    skdsc fits resumable (see :func:`fit_peer`).
    """
    table = QUICK_PARAMS if quick else FULL_PARAMS
    tasks = []
    for dataset in sets:
        size = n_samples or (QUICK_SAMPLES if quick else SUBSET_SIZES.get(dataset))
        if size is not None and size >= SET_SIZES[dataset]:
            size = None
        for peer in peers:
            for seed in seeds[:1] if peer in DETERMINISTIC else seeds:
                params = table[peer]
                meta = {"suite": "peers", "peer": peer, "estimator": NAMES[peer],
                        "params": params, "dataset": dataset, "seed": seed}
                tasks.append(Task(fit_peer, (peer, dataset, seed, str(data_dir), size, params,
                                             device, checkpoint_dir), meta))
    return tasks
