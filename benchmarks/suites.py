"""The benchmark suites: what each one fits, with which settings.

A suite turns its command-line arguments into harness tasks (one fresh
process per fit, see ``harness.py``). Every suite has a ``--quick`` form: a
smoke run of the same code on at most a few hundred samples with a couple of
epochs, which falls back to scikit-learn's digits where a data file is
missing. Its figures mean nothing and it writes to ``benchmarks/_work/``.

The suites fold in the protocol (``protocol.py``), the choice of defaults
(``tune_defaults.py``), the bank-consistency study
(``study_bank_consistency.py``) and the ImageNet-weights study
(``pretrained_efficientnet.py``) by calling them, and replace the one-off
scripts that came before the harness.
"""

import itertools
import json
import time

import numpy as np

import peers as peers_module
import study_bank_consistency
import tune_defaults
from harness import Task, peak_rss_mb, reset_peak_rss, resident_mb
from protocol import (ALL_SETS, DEVELOPMENT_SETS, REPORT_SETS, fit_and_score, linear_baseline,
                      load, scores)

SET_SIZES = peers_module.SET_SIZES
QUICK_SAMPLES = peers_module.QUICK_SAMPLES
# Epochs of every skdsc fit in a quick run.
QUICK_EPOCHS = {"n_epochs": 2, "n_pretrain_epochs": 2}
ESTIMATOR_CLASSES = ("MiniBatchDeepSubspaceClustering", "ContrastiveDSC")

# DSC-Net's published settings (Ji et al. 2017) for ORL and COIL-20, with the
# autoencoder pretrained inside fit (no external weights); images in [0, 1].
# Its loss terms are absolute (normalize_losses=False), the default when the
# records of results/bdsc_cpu.jsonl were made.
PUBLISHED = {
    "orl": dict(hidden_channels=(3, 3, 5), kernel_sizes=(3, 3, 3), lambda_coef=2.0,
                lambda_self=0.2, n_epochs=700, n_pretrain_epochs=500, learning_rate=1e-3,
                threshold=0.2, subspace_dim=3, affinity_power=1.0, normalize_losses=False),
    "coil20": dict(hidden_channels=(15,), kernel_sizes=(3,), lambda_coef=1.0,
                   lambda_self=75.0, n_epochs=40, n_pretrain_epochs=200, learning_rate=1e-3,
                   threshold=0.04, subspace_dim=12, affinity_power=8.0, normalize_losses=False),
}
# The fully connected autoencoder of DEC (Xie et al., 2016) and EDESC on MNIST
# pixels, d-500-500-2000-10, on the flattened images.
DEC_AUTOENCODER = dict(hidden_channels=(), hidden_units=(500, 500, 2000, 10))
# Named estimator settings: (class, parameters). One epoch of all of MNIST is
# 547 steps of 128 digits, so its settings have far fewer epochs.
SETTINGS = {
    "mnist-sparse": ("MiniBatchDeepSubspaceClustering",
                     dict(n_pretrain_epochs=30, n_epochs=10, refresh_epochs=5,
                          self_expression="sparse")),
    "mnist-dec": ("MiniBatchDeepSubspaceClustering",
                  dict(DEC_AUTOENCODER, n_pretrain_epochs=30, n_epochs=10, refresh_epochs=5,
                       self_expression="sparse")),
    # Five times the pretraining in batches of 256, as DEC and IDEC pretrain.
    "mnist-dec-long": ("MiniBatchDeepSubspaceClustering",
                       dict(DEC_AUTOENCODER, batch_size=256, n_pretrain_epochs=150,
                            n_epochs=10, refresh_epochs=5, self_expression="sparse")),
    # Pretrained on shifted, zoomed and rotated views; a view costs about a
    # third more per step, so 120 pretraining epochs keep the fit in the hour.
    "mnist-dec-aug": ("MiniBatchDeepSubspaceClustering",
                      dict(DEC_AUTOENCODER, pretrain_augmentation=True, batch_size=256,
                           n_pretrain_epochs=120, n_epochs=10, refresh_epochs=5,
                           self_expression="sparse")),
    "mnist-contrastive": ("ContrastiveDSC",
                          dict(encoder="resnet10t", n_pretrain_epochs=1, n_epochs=1,
                               self_expression="sparse")),
    # The README's quick start, and ContrastiveDSC's moderate CPU setting.
    "contrastive-30+5": ("ContrastiveDSC", dict(n_pretrain_epochs=30, n_epochs=5)),
}


def expand_sets(names):
    """Data set names with the groups ``development`` and ``report`` expanded."""
    groups = {"development": list(DEVELOPMENT_SETS), "report": list(REPORT_SETS)}
    expanded = []
    for name in names:
        expanded += groups.get(name, [name])
    return expanded


def subset_size(dataset, n_samples, quick):
    """Samples to draw from ``dataset``: None for all of it."""
    size = n_samples or (QUICK_SAMPLES if quick else None)
    if size is not None and size >= SET_SIZES[dataset]:
        return None
    return size


def estimator_setting(name, params):
    """``(class name, parameters, setting name)`` of an ``--estimators`` entry.

    A class name takes ``params``; a named setting (:data:`SETTINGS`) its
    own, with ``params`` on top.
    """
    if name in ESTIMATOR_CLASSES:
        return name, dict(params), None
    if name in SETTINGS:
        estimator, settings = SETTINGS[name]
        return estimator, {**settings, **params}, name
    raise ValueError(f"unknown estimator {name!r}; give one of {ESTIMATOR_CLASSES} "
                     f"or a setting: {sorted(SETTINGS)}")


def fit_task(suite, dataset, estimator, params, seed, data_dir, n_samples, device="auto",
             **meta):
    """A ``protocol.fit_and_score`` task (records of the protocol's format).

    A ``device`` other than ``"auto"`` joins the parameters (the protocol's
    fits leave it to the estimator).
    """
    if device != "auto":
        params = {**params, "device": device}
    head = {"suite": suite, "dataset": dataset, "estimator": estimator, "params": params,
            "seed": seed, **meta}
    return Task(fit_and_score, (dataset, estimator, params, seed, str(data_dir), n_samples),
                head)


def quick_params(params, quick):
    """``params`` with the quick epochs when ``quick``."""
    return {**params, **QUICK_EPOCHS} if quick else params


# --- quality: data sets x estimators, the protocol's table ---------------------------------

def quality_tasks(args, sets):
    """The protocol's fits: the linear baseline and every estimator on every set."""
    tasks = []
    for dataset in sets:
        n = subset_size(dataset, args.n_samples, args.quick)
        if not args.no_baseline:
            tasks.append(Task(linear_baseline, (dataset, str(args.data_dir), n),
                              {"suite": "quality", "dataset": dataset,
                               "estimator": "linear ridge self-expression (raw pixels)",
                               "params": {}, "seed": 0}))
        for name in args.estimators:
            estimator, params, setting = estimator_setting(name, json.loads(args.params))
            params = quick_params(params, args.quick)
            extra = {"setting": setting} if setting else {}
            tasks += [fit_task("quality", dataset, estimator, params, seed, args.data_dir, n,
                               args.device, **extra) for seed in args.seeds]
    return tasks


# --- defaults: the grids of tune_defaults.py --------------------------------------------------

def defaults_tasks(args, sets):
    """``tune_defaults.py``'s grids on the development sets."""
    tasks = []
    for grid in args.grid:
        configs = tune_defaults.GRIDS[grid][:1] if args.quick else tune_defaults.GRIDS[grid]
        for params, dataset, seed in itertools.product(configs, sets, args.seeds):
            n = subset_size(dataset, args.n_samples, args.quick)
            tasks.append(fit_task("defaults", dataset, "MiniBatchDeepSubspaceClustering",
                                  quick_params(params, args.quick), seed, args.data_dir, n,
                                  args.device, grid=grid))
    return tasks


# --- scaling: memory and time over n ---------------------------------------------------------

def scaling_fit(dataset, n_samples, mode, params, data_dir, stages=False):
    """One short fit of ``n_samples`` samples in ``mode``: memory and time per stage.

    The kernel's peak-RSS count is reset once the data are loaded, so
    ``peak_rss_mb`` is that of ``fit`` and one ``predict`` with the runtime
    and the data already resident (``rss_before_fit_mb``). Two more predicts
    follow, with the resident memory after each (``rss_after_predicts_mb``):
    blockwise solvers that fragment the heap grow it with every call. A
    dense fit whose memory estimate exceeds the free memory is not started.
    ``stages`` samples the resident memory every 0.2 s and keeps the peak
    of each stage of the fit (``stage_peak_rss_mb``).
    """
    import gc

    import torch

    from skdsc import MiniBatchDeepSubspaceClustering
    from skdsc._memory import available_memory, dense_memory_estimate

    n_clusters, image_shape = ALL_SETS[dataset]
    record = {"kind": "scaling", "dataset": dataset, "n_samples": n_samples, "mode": mode}
    if mode == "dense":
        device = torch.device("cpu")
        needed = dense_memory_estimate(n_samples, device)["host"]
        free = available_memory(device)["host"]
        if free is not None and needed > free:
            return {**record, "skipped": "dense estimate exceeds free memory",
                    "estimate_mb": needed / 2 ** 20, "free_mb": free / 2 ** 20}
    X, y = load(dataset, data_dir, n_samples if n_samples < SET_SIZES[dataset] else None)
    gc.collect()
    before = resident_mb()
    reset_peak_rss()
    model = MiniBatchDeepSubspaceClustering(n_clusters, image_shape=image_shape, random_state=0,
                                            self_expression=mode, **params)
    sampler = _StageSampler() if stages else None
    start = time.perf_counter()
    model.fit(X)
    seconds = time.perf_counter() - start
    if sampler is not None:
        sampler.stage = "predict"
    agreement = float(np.mean(model.predict(X) == model.labels_))
    peak = resident_mb("VmHWM")
    after = [resident_mb()]
    for _ in range(2):
        model.predict(X)
        after.append(resident_mb())
    history = model.history_
    per_phase = {}
    for phase in ("pretrain", "self-expression", "refresh"):
        times = [h["seconds"] for h in history if h["phase"] == phase]
        per_phase[phase] = sum(times) / len(times) if times else None
    record.update(
        **scores(y, model.labels_), fit_seconds=seconds, peak_rss_mb=peak,
        peak_rss_process_mb=peak_rss_mb(), rss_before_fit_mb=before,
        rss_after_predicts_mb=after, predict_agreement=agreement,
        estimator="MiniBatchDeepSubspaceClustering", params=params,
        pretrain_epoch_seconds=per_phase["pretrain"],
        self_expression_epoch_seconds=per_phase["self-expression"],
        refresh_seconds=per_phase["refresh"],
        postprocessing_seconds=seconds - sum(h.get("seconds", 0.0) for h in history),
        device=str(model.device_), mode=model.self_expression_)
    if sampler is not None:
        record["stage_peak_rss_mb"] = sampler.stop()
    return record


class _StageSampler:
    """Peak resident memory per stage of a fit, sampled every 0.2 s.

    The stages are the package functions that a sparse fit spends its
    memory in, each wrapped where the estimator looks it up, then
    ``predict`` (set by the caller); the rest of ``fit`` is ``"fit"``.
    """

    # (module or "module:Class", function or method name)
    WRAPPED = (("skdsc._modes", "nearest_neighbors"), ("skdsc._base", "coefficients_to_labels"),
               ("skdsc._modes:SparseMode", "coefficient_matrix"),
               ("skdsc.nn.self_expression", "local_ridge_regression"))

    def __init__(self):
        import importlib
        import threading

        self.stage, self.peaks, self.running = "fit", {}, True
        self.originals = []
        for owner_name, name in self.WRAPPED:
            module_name, _, class_name = owner_name.partition(":")
            owner = importlib.import_module(module_name)
            if class_name:
                owner = getattr(owner, class_name)
            self.originals.append((owner, name, getattr(owner, name)))
            setattr(owner, name, self._watched(name, getattr(owner, name)))
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()

    def _watched(self, name, function):
        def wrapper(*args, **kwargs):
            outer, self.stage = self.stage, name
            try:
                return function(*args, **kwargs)
            finally:
                self.stage = outer
        return wrapper

    def _sample(self):
        while self.running:
            self.peaks[self.stage] = max(self.peaks.get(self.stage, 0.0), resident_mb())
            time.sleep(0.2)

    def stop(self):
        self.running = False
        self.thread.join()
        for module, name, function in self.originals:
            setattr(module, name, function)
        return self.peaks


def postprocessing_memory(n_samples, n_clusters, affinity):
    """Peak RSS that the post-processing adds on a synthetic ``n x n`` coefficient matrix.

    The matrix looks like a fitted one: ``n_clusters`` blocks plus noise,
    zero diagonal, float32 as ``coef_`` is stored.
    """
    from skdsc.spectral import coefficients_to_labels

    rng = np.random.default_rng(0)
    labels = np.arange(n_samples) % n_clusters
    coef = (rng.random((n_samples, n_samples), dtype=np.float32) * 1e-3
            + (labels[:, None] == labels[None, :]) * rng.random((n_samples, n_samples),
                                                                dtype=np.float32))
    np.fill_diagonal(coef, 0.0)
    before = peak_rss_mb()
    start = time.perf_counter()
    _, found = coefficients_to_labels(coef, n_clusters, affinity=affinity, threshold=0.1,
                                      subspace_dim=6, power=4.0, random_state=0)
    seconds = time.perf_counter() - start
    return {"kind": "postprocessing_memory", "n_samples": n_samples, "n_clusters": n_clusters,
            "affinity": affinity, "rss_before_mb": before, "peak_rss_mb": peak_rss_mb(),
            "added_mb": peak_rss_mb() - before, "seconds": seconds, **scores(labels, found)}


def sparse_coefficients(n_samples, n_clusters, n_nonzero, across=0.1, seed=0):
    """Synthetic sparse coefficients like a fitted sparse ``coef_``, and their clusters.

    CSR, float32, ``n_nonzero`` entries per row, no diagonal: sample ``i``
    (cluster ``i % n_clusters``) draws ``(1 - across) * n_nonzero`` columns
    uniformly from its own cluster, with weights in [0, 1), and the rest from
    all samples, with weights in [0, 0.1). Built in O(n_samples * n_nonzero)
    memory, never an ``n x n`` array.
    """
    import scipy.sparse as sp

    rng = np.random.default_rng(seed)
    labels = np.arange(n_samples) % n_clusters
    n_inside = n_nonzero - int(round(across * n_nonzero))
    sizes = np.bincount(labels, minlength=n_clusters)
    rows = np.repeat(np.arange(n_samples), n_nonzero).reshape(n_samples, n_nonzero)
    columns = np.empty((n_samples, n_nonzero), dtype=np.int64)
    # Member j of cluster c is sample c + j * n_clusters.
    members = (rng.random((n_samples, n_inside)) * sizes[labels, None]).astype(np.int64)
    columns[:, :n_inside] = labels[:, None] + members * n_clusters
    columns[:, n_inside:] = rng.integers(0, n_samples, (n_samples, n_nonzero - n_inside))
    values = rng.random((n_samples, n_nonzero), dtype=np.float32)
    values[:, n_inside:] *= 0.1
    # A draw of the sample itself goes to the next member of its cluster.
    own = columns == rows
    columns[own] = (columns[own] + n_clusters) % n_samples
    del rows, members, own
    coef = sp.csr_matrix((values.ravel(), columns.ravel(),
                          np.arange(0, n_samples * n_nonzero + 1, n_nonzero)),
                         shape=(n_samples, n_samples))
    return coef, labels


def sparse_postprocessing(n_samples, n_clusters, n_nonzero, affinity, eigen_solver):
    """Time and peak RSS of ``coefficients_to_labels`` on synthetic sparse coefficients.

    The coefficients (:func:`sparse_coefficients`) are made first; the
    kernel's peak-RSS count is then reset, so ``peak_rss_mb`` is the peak of
    the post-processing with the coefficients resident (``rss_before_mb``).
    The spectral embedding and the k-means step are timed apart
    (``stage_seconds``), as is the eigensolver actually used.
    """
    from skdsc import spectral

    start = time.perf_counter()
    coef, labels = sparse_coefficients(n_samples, n_clusters, n_nonzero)
    make_seconds = time.perf_counter() - start
    solver = spectral._resolve_eigen_solver(eigen_solver, coef)
    stage_seconds = {}
    originals = {}

    def timed(name):
        original = originals[name] = getattr(spectral, name)

        def wrapper(*args, **kwargs):
            begin = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                stage_seconds[name] = stage_seconds.get(name, 0.0) + time.perf_counter() - begin
        return wrapper

    for name in ("_spectral_embedding_sparse", "_kmeans_on_directions", "_cluster_qr"):
        setattr(spectral, name, timed(name))
    try:
        before = resident_mb()
        reset_peak_rss()
        start = time.perf_counter()
        _, found = spectral.coefficients_to_labels(coef, n_clusters, affinity=affinity,
                                                   threshold=1.0, random_state=0,
                                                   eigen_solver=eigen_solver)
        seconds = time.perf_counter() - start
        peak = resident_mb("VmHWM")
    finally:
        for name, original in originals.items():
            setattr(spectral, name, original)
    return {"kind": "postprocessing_sparse", "n_samples": n_samples, "n_clusters": n_clusters,
            "n_nonzero": n_nonzero, "affinity": affinity, "eigen_solver": eigen_solver,
            "eigen_solver_used": solver, "coef_nnz": int(coef.nnz),
            "make_seconds": make_seconds, "rss_before_mb": before, "peak_rss_mb": peak,
            "added_mb": peak - before, "seconds": seconds,
            "stage_seconds": {name.strip("_"): value for name, value in stage_seconds.items()},
            **scores(labels, found)}


def scaling_tasks(args, sets):
    """Short fits over ``--sizes`` in each mode, or the post-processing alone."""
    dataset = sets[0]
    sizes = args.sizes or ([200, 400] if args.quick else [2000, 5000, 10000, 20000, 70000])
    tasks = []
    for n in sizes:
        if args.kind == "postprocessing" and getattr(args, "coef", "dense") == "sparse":
            affinity = args.affinity or "symmetric"
            tasks.append(Task(sparse_postprocessing,
                              (n, args.n_clusters, args.n_nonzero, affinity, args.eigen_solver),
                              {"suite": "scaling", "kind": "postprocessing_sparse",
                               "estimator": "coefficients_to_labels", "dataset": "synthetic",
                               "n_samples": n, "seed": 0}))
            continue
        if args.kind == "postprocessing":
            tasks.append(Task(postprocessing_memory, (n, args.n_clusters, args.affinity or "dsc"),
                              {"suite": "scaling", "kind": "postprocessing_memory",
                               "estimator": "coefficients_to_labels", "dataset": "synthetic",
                               "n_samples": n, "seed": 0}))
            continue
        n = min(n, SET_SIZES[dataset])
        for mode in args.modes:
            params = {"n_pretrain_epochs": args.pretrain_epochs, "n_epochs": args.epochs,
                      "refresh_epochs": 1}
            meta = {"suite": "scaling", "kind": "scaling", "dataset": dataset, "n_samples": n,
                    "mode": mode, "seed": 0, "estimator": "MiniBatchDeepSubspaceClustering",
                    "params": params}
            if mode == "dense" and args.dense_max is not None and n > args.dense_max:
                tasks.append(Task(dense_estimate, (n, args.dense_max), meta))
            else:
                tasks.append(Task(scaling_fit, (dataset, n, mode, params, str(args.data_dir),
                                                args.stages), meta))
    return tasks


def dense_estimate(n_samples, dense_max):
    """The record of a dense fit not run because ``n_samples`` is above ``--dense-max``."""
    import torch

    from skdsc._memory import dense_memory_estimate

    needed = dense_memory_estimate(n_samples, torch.device("cpu"))["host"]
    return {"kind": "scaling", "skipped": f"n above --dense-max {dense_max}",
            "estimate_mb": needed / 2 ** 20, "free_mb": None}


# --- ablations ------------------------------------------------------------------------------

def published_params(dataset, quick):
    """DSC-Net's published settings for ``dataset`` (COIL-20's where none exist, quick only)."""
    if dataset in PUBLISHED:
        return dict(PUBLISHED[dataset])
    if not quick:
        raise ValueError(f"DSC-Net published settings exist for {sorted(PUBLISHED)} only.")
    return dict(PUBLISHED["coil20"])


def _batch_size(dataset, n, k):
    """Batch size giving ``k`` batches per epoch (None: one full batch)."""
    return None if k == 1 else (n or SET_SIZES[dataset]) // k


def batch_lr_tasks(args, dataset, n):
    """The defaults over batch sizes x learning rates (the 1/k rule on)."""
    return [{"batch_size": batch_size, "learning_rate": lr}
            for batch_size, lr in itertools.product(args.batch_sizes, args.learning_rates)]


def bank_tasks(args, dataset, n):
    """``study_bank_consistency.py``: batch size x learning rate x rule."""
    return [{"batch_size": batch_size, "learning_rate": lr, **study_bank_consistency.RULES[rule]}
            for batch_size, lr, rule in itertools.product(
                args.batch_sizes, args.learning_rates, study_bank_consistency.RULES)]


def bank_update_tasks(args, dataset, n):
    """Writing the bank by sample index or as a queue, per batch size."""
    return [{"batch_size": batch_size, "bank_update": update}
            for batch_size, update in itertools.product(args.batch_sizes, ("index", "fifo"))]


def published_tasks(args, dataset, n):
    """DSC-Net's published settings at k = 1, 2, 4, 8 batches per epoch, and the defaults."""
    return [dict(published_params(dataset, args.quick), batch_size=_batch_size(dataset, n, k))
            for k in (1, 2, 4, 8)] + [{}]


def pretraining_tasks(args, dataset, n):
    """Augmented pretraining on the defaults, and longer pretraining of the published settings."""
    configs = [{"pretrain_augmentation": None}, {"pretrain_augmentation": True}]
    for epochs, k in itertools.product(args.pretrain_epochs, (1, 4)):
        configs.append(dict(published_params(dataset, args.quick), n_pretrain_epochs=epochs,
                            batch_size=_batch_size(dataset, n, k)))
    return configs


# Studies that fit MiniBatchDeepSubspaceClustering once per configuration.
FIT_STUDIES = {
    "batch-lr": batch_lr_tasks,
    "bank": bank_tasks,
    "bank-update": bank_update_tasks,
    "published": published_tasks,
    "pretraining": pretraining_tasks,
}
# Embedding sizes of the "components" variants, as functions of n_clusters.
EMBEDDING_SIZES = {"k": lambda k: k, "k+1": lambda k: k + 1, "k+2": lambda k: k + 2,
                   "k+3": lambda k: k + 3, "2k": lambda k: 2 * k}
# Relative ridge penalties of the "ridge" coefficient source.
RIDGE_PENALTIES = (1e-3, 1e-2, 1e-1)


def postprocessing_variants(names, n_clusters):
    """``(variant, settings)`` pairs: keyword arguments of ``coefficients_to_labels``."""
    from skdsc.spectral import AFFINITIES, LABEL_ASSIGNMENTS

    variants = []
    if "assign" in names:
        variants += [("assign", dict(affinity=a, assign_labels=s, n_components=n_clusters))
                     for a, s in itertools.product(AFFINITIES, LABEL_ASSIGNMENTS)]
    if "components" in names:
        variants += [(f"components {size}", dict(affinity=a, assign_labels="kmeans",
                                                 n_components=f(n_clusters)))
                     for a, (size, f) in itertools.product(AFFINITIES, EMBEDDING_SIZES.items())]
    if "settings" in names:
        grid = itertools.product([0.05, 0.1, 0.2, 1.0], [3, 4, 6, 8, 12], [1.0, 2.0, 4.0, 8.0])
        variants += [("settings", dict(affinity="dsc", threshold=t, subspace_dim=d, power=p))
                     for t, d, p in grid]
    return variants


def postprocessing_study(dataset, source, mode, seed, data_dir, n_samples, variants, params):
    """Coefficients fitted once, labelled again with each post-processing variant.

    ``source`` is an estimator class or named setting (fitted with
    ``self_expression=mode``) or ``"ridge"`` (the closed-form ridge
    self-expression of the raw pixels at each of :data:`RIDGE_PENALTIES`).
    Every variant starts from the fit's own post-processing settings and
    seed and changes only what it names. One record per coefficient source
    and variant; labels only score.
    """
    from sklearn.utils import check_random_state

    import skdsc
    from skdsc.spectral import coefficients_to_labels

    n_clusters, image_shape = ALL_SETS[dataset]
    X, y = load(dataset, data_dir, n_samples)
    sources = []
    if source == "ridge":
        import torch

        from skdsc.nn.self_expression import ridge_coefficients

        codes = torch.as_tensor(X, dtype=torch.float64)
        for penalty in RIDGE_PENALTIES:
            start = time.perf_counter()
            coef = ridge_coefficients(codes, penalty * float(codes.pow(2).sum(1).mean())).numpy()
            fitted = dict(affinity="dsc", threshold=0.1, subspace_dim=6, power=4.0,
                          assign_labels="kmeans", random_state=0)
            sources.append(({"estimator": "ridge self-expression (raw pixels)",
                             "params": {"relative_penalty": penalty}, "mode": "dense",
                             "fit_seconds": time.perf_counter() - start,
                             "peak_rss_mb": peak_rss_mb(), "device": "cpu"}, coef, fitted))
    else:
        estimator, params, setting = estimator_setting(source, params)
        params["self_expression"] = mode
        model = getattr(skdsc, estimator)(n_clusters, image_shape=image_shape, random_state=seed,
                                          **params)
        start = time.perf_counter()
        model.fit(X)
        fit_seconds = time.perf_counter() - start
        used = model.self_expression_
        # The seed fit gave its post-processing: the first member's.
        fit_seed = check_random_state(seed).randint(np.iinfo(np.int32).max)
        fitted = dict(affinity=model.affinity_, threshold=model.threshold_,
                      subspace_dim=model.subspace_dim, power=model.affinity_power,
                      assign_labels=model.assign_labels, random_state=fit_seed)
        sources.append(({"estimator": estimator, "params": params, "setting": setting,
                         "mode": used, "fit_seconds": fit_seconds, "peak_rss_mb": peak_rss_mb(),
                         "fit_scores": scores(y, model.labels_), "device": str(model.device_)},
                        model.coef_, fitted))
    records = []
    for head, coef, fitted in sources:
        for variant, settings in postprocessing_variants(variants, n_clusters):
            start = time.perf_counter()
            _, labels = coefficients_to_labels(coef, n_clusters, **{**fitted, **settings})
            records.append({**head, "study": "postprocessing", "dataset": dataset,
                            "n_samples": len(X), "seed": seed, "variant": variant,
                            "changed": settings, "postprocessing": {**fitted, **settings},
                            **scores(y, labels),
                            "postprocessing_seconds": time.perf_counter() - start,
                            **_class_recall(y, labels, n_clusters)})
    return records


def _class_recall(y, labels, n_clusters, max_clusters=20):
    """Fraction of each class in its matched cluster (the matching of ACC), few classes only."""
    if n_clusters > max_clusters:
        return {}
    from scipy.optimize import linear_sum_assignment
    from sklearn.metrics import confusion_matrix

    counts = confusion_matrix(y, labels)
    _, clusters = linear_sum_assignment(-counts)
    matched = counts[:, clusters]
    return {"class_recall": np.round(np.diag(matched) / matched.sum(axis=1), 3).tolist()}


def ablation_tasks(args, sets):
    """Tasks of the ``--study`` ablations on every set."""
    tasks = []
    for study, dataset in itertools.product(args.study, sets):
        n = subset_size(dataset, args.n_samples, args.quick)
        if study == "postprocessing":
            for source, mode, seed in itertools.product(args.estimators, args.modes, args.seeds):
                meta = {"suite": "ablations", "study": study, "dataset": dataset,
                        "estimator": source, "mode": mode, "seed": seed}
                params = dict(QUICK_EPOCHS) if args.quick else {}
                if args.device != "auto":
                    params["device"] = args.device
                tasks.append(Task(postprocessing_study,
                                  (dataset, source, mode, seed, str(args.data_dir), n,
                                   args.variants, params), meta))
                if source == "ridge":
                    break  # deterministic and dense: one fit is all of it
            continue
        configs = FIT_STUDIES[study](args, dataset, n)
        for params, seed in itertools.product(configs, args.seeds):
            tasks.append(fit_task("ablations", dataset, "MiniBatchDeepSubspaceClustering",
                                  quick_params(params, args.quick), seed, args.data_dir, n,
                                  args.device, study=study))
    return tasks


def peers_tasks(args, sets):
    """The peers side by side (see ``peers.py``)."""
    return peers_module.peer_tasks(args.peers, sets, args.seeds, args.data_dir,
                                   quick=args.quick, device=args.device,
                                   n_samples=args.n_samples,
                                   checkpoint_dir=args.checkpoint_dir)


STUDIES = (*FIT_STUDIES, "postprocessing")
