"""Shared base of the deep subspace clustering estimators."""

import os
from abc import ABCMeta, abstractmethod
from contextlib import contextmanager
from numbers import Integral, Real

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClusterMixin, _fit_context
from sklearn.metrics import adjusted_rand_score
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted, validate_data

from ._checkpoint import (PortablePickleMixin, TrainingSession, open_checkpoint,
                          unchanged_on_failure)
from ._memory import SELF_EXPRESSION_MODES, explained_out_of_memory
from ._modes import mode_named, resolve_mode
from .distributed import DataParallelGroup
from ._training import (INFERENCE_CHUNK, encode_all, network_parallel, pretrained_network,
                        restored_self_expression, started_self_expression,
                        train_self_expression)
from .nn.memory_bank import BANK_UPDATES
from .nn.momentum import MomentumEncoder
from .nn.neighbors import METHODS as SEARCH_METHODS
from .nn.neighbors import NeighborIndex, faiss_available, search_method
from .nn.self_expression import mean_square_norm
from .nn.trainer import auto_epochs, batch_plan
from .spectral import (AFFINITIES, EIGEN_SOLVERS, LABEL_ASSIGNMENTS, amg_available,
                       check_n_components, coefficients_to_labels)



def resolve_device(device):
    """Turn the ``device`` parameter into a :class:`torch.device`.

    ``"auto"`` picks CUDA when it is available and the CPU otherwise.
    """
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(
            f"device must be 'auto', 'cpu', 'cuda' or 'cuda:<index>', got {device!r}."
        ) from exc
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"device={device!r} was requested but CUDA is not available on this "
            "machine; use device='auto' or device='cpu'."
        )
    if resolved.type not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda', got {device!r}.")
    return resolved


@contextmanager
def seeded_torch(seed, device):
    """Seed torch's global generators for the block and restore them afterwards."""
    cuda_devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda_devices):
        torch.manual_seed(seed)
        yield


def check_image_shape(image_shape, n_features):
    """Validate ``image_shape`` against the number of features.

    Returns
    -------
    shape : tuple of int
        ``(channels, height, width)``; a 2-tuple ``(height, width)`` means one
        channel.
    """
    shape = tuple(image_shape)
    if len(shape) == 2:
        shape = (1, *shape)
    if len(shape) != 3 or not all(isinstance(s, Integral) and s > 0 for s in shape):
        raise ValueError(
            "image_shape must be (height, width) or (channels, height, width) of "
            f"positive integers, got {image_shape!r}."
        )
    if int(np.prod(shape)) != n_features:
        raise ValueError(
            f"image_shape={image_shape!r} holds {int(np.prod(shape))} values but X "
            f"has {n_features} features per row; rows of X must be images "
            "flattened in C (row-major) order."
        )
    return tuple(int(s) for s in shape)


def rows_nearly_identical(matrix, block=INFERENCE_CHUNK):
    """Whether every row of a 2-D tensor is (nearly) the same, zero rows included.

    The spread of the rows around their mean is compared with their size.
    Rows are summed in blocks, in float64, so that no copy of the whole
    matrix is made.
    """
    matrix = matrix.flatten(1)
    total = torch.zeros(matrix.shape[1], dtype=torch.float64, device=matrix.device)
    size = 0.0
    for chunk in matrix.split(block):
        chunk = chunk.double()
        total += chunk.sum(0)
        size += chunk.pow(2).sum().item()
    mean = total / len(matrix)
    spread = sum((chunk.double() - mean).pow(2).sum().item() for chunk in matrix.split(block))
    return spread <= 1e-8 * size


def degenerate_codes(codes):
    """Say why latent codes cannot support subspace clustering, or return None.

    Small ReLU networks can die during training: most codes become exactly
    zero, or every sample gets the same code. Self-expression of such codes is
    meaningless and the clusters would be arbitrary.

    Parameters
    ----------
    codes : torch.Tensor of shape (n_samples, n_latent)

    Returns
    -------
    reason : str or None
    """
    zero = (codes.amax(dim=1) == 0) & (codes.amin(dim=1) == 0)
    zero_rows = zero.double().mean().item()
    if zero_rows > 0.5:
        return f"{zero_rows:.0%} of the samples have an all-zero latent code (dead ReLU units)"
    if rows_nearly_identical(codes):
        return "every sample has (nearly) the same latent code"
    return None


class BaseDeepSubspaceClustering(PortablePickleMixin, ClusterMixin, BaseEstimator,
                                 metaclass=ABCMeta):
    """Fit skeleton, prediction and persistence shared by the estimators.

    Subclasses build the network (``_build_network``) and supply the losses
    of its two phases (``_pretraining_objective``,
    ``_self_expression_objective``); this base validates the data, seeds
    torch, resolves the self-expression mode, hands the network, memory bank
    and self-expressive layer to the training phases of
    :mod:`skdsc._training` and turns the coefficients into labels.
    """

    _parameter_constraints: dict = {
        "n_clusters": [Interval(Integral, 1, None, closed="left")],
        "image_shape": [tuple, list, None],
        "batch_size": [Interval(Integral, 1, None, closed="left"), None],
        "n_epochs": [Interval(Integral, 0, None, closed="left")],
        "learning_rate": [Interval(Real, 0, None, closed="neither")],
        "lambda_coef": [Interval(Real, 0, None, closed="left")],
        "lambda_self": [Interval(Real, 0, None, closed="neither")],
        "self_expression": [StrOptions(set(SELF_EXPRESSION_MODES))],
        "n_nonzero": [Interval(Integral, 1, None, closed="left")],
        "neighbor_search": [StrOptions(set(SEARCH_METHODS))],
        "refresh_epochs": [Interval(Integral, 0, None, closed="left")],
        "bank_update": [StrOptions(set(BANK_UPDATES))],
        "scale_encoder_lr": ["boolean"],
        "bank_momentum": [Interval(Real, 0, 1, closed="left")],
        "normalize_losses": ["boolean"],
        "affinity": [StrOptions({*AFFINITIES, "auto"})],
        "threshold": [Interval(Real, 0, 1, closed="right"), StrOptions({"auto"})],
        "subspace_dim": [Interval(Integral, 1, None, closed="left")],
        "affinity_power": [Interval(Real, 0, None, closed="neither")],
        "assign_labels": [StrOptions(set(LABEL_ASSIGNMENTS))],
        "n_components": [Interval(Integral, 1, None, closed="left"), StrOptions({"auto"})],
        "eigen_solver": [StrOptions(set(EIGEN_SOLVERS))],
        "device": [str],
        "checkpoint_path": [str, os.PathLike, None],
        "checkpoint_interval": [Interval(Real, 0, None, closed="left")],
        "n_init": [Interval(Integral, 1, None, closed="left")],
        "coef_init": [StrOptions({"ridge", "constant"})],
        "random_state": ["random_state"],
        "verbose": ["verbose"],
    }

    @abstractmethod
    def __init__(self, n_clusters, *, image_shape, batch_size, n_epochs, learning_rate,
                 lambda_coef, lambda_self, self_expression, n_nonzero, neighbor_search,
                 refresh_epochs, bank_update, scale_encoder_lr, bank_momentum, normalize_losses,
                 affinity, threshold, subspace_dim, affinity_power, assign_labels, n_components,
                 eigen_solver, device,
                 checkpoint_path, checkpoint_interval, coef_init, n_init, random_state,
                 verbose):
        self.n_clusters = n_clusters
        self.image_shape = image_shape
        self.batch_size = batch_size
        self.n_epochs = n_epochs
        self.learning_rate = learning_rate
        self.lambda_coef = lambda_coef
        self.lambda_self = lambda_self
        self.self_expression = self_expression
        self.n_nonzero = n_nonzero
        self.neighbor_search = neighbor_search
        self.refresh_epochs = refresh_epochs
        self.bank_update = bank_update
        self.scale_encoder_lr = scale_encoder_lr
        self.bank_momentum = bank_momentum
        self.normalize_losses = normalize_losses
        self.affinity = affinity
        self.threshold = threshold
        self.subspace_dim = subspace_dim
        self.affinity_power = affinity_power
        self.assign_labels = assign_labels
        self.n_components = n_components
        self.eigen_solver = eigen_solver
        self.device = device
        self.checkpoint_path = checkpoint_path
        self.checkpoint_interval = checkpoint_interval
        self.n_init = n_init
        self.coef_init = coef_init
        self.random_state = random_state
        self.verbose = verbose

    # -- what a subclass supplies ---------------------------------------------

    @abstractmethod
    def _build_network(self, input_shape):
        """Return a module with ``encode(x) -> (batch, n_latent)``."""

    @abstractmethod
    def _pretraining_objective(self, network, generator, device):
        """The :class:`~skdsc._training.Objective` of pretraining: ``loss(x)``.

        ``generator`` is the fit's seeded CPU generator, for the loss's draws.
        """

    @abstractmethod
    def _self_expression_objective(self, network, bank, inputs, generator, encoder_lr):
        """The :class:`~skdsc._training.Objective` of the self-expressive phase.

        Its loss is the data term ``loss(x, codes, expressed, indices)``; the
        encoder's parameters learn at ``encoder_lr``.
        """

    def _representation_problem(self, network, codes):
        """Say why the pretrained representation cannot be clustered, or None."""
        return degenerate_codes(codes)

    def _memory_remedies(self):
        """Further parameter changes that lower memory, as phrases."""
        return []

    def _check_params_vs_input(self, X, device):
        """Check the parameters that depend on the data, before any training.

        Subclasses extend it with their own checks. Returns the shape of one
        sample as the network sees it and the resolved self-expression mode.
        """
        n_samples = X.shape[0]
        if n_samples < self.n_clusters:
            raise ValueError(
                f"n_samples={n_samples} should be >= n_clusters={self.n_clusters}."
            )
        check_n_components(self.n_components, self.n_clusters, self.assign_labels, n_samples)
        mode = resolve_mode(self.self_expression, n_samples, device,
                            bank_update=self.bank_update, n_nonzero=self.n_nonzero,
                            neighbor_search=self.neighbor_search)
        if self.neighbor_search == "faiss" and mode.name == "sparse" and not faiss_available():
            raise ImportError(
                "neighbor_search='faiss' needs the faiss package: pip install faiss-cpu (or "
                "pip install 'skdsc[faiss]'), or use neighbor_search='auto' or 'exact'."
            )
        if self.eigen_solver == "amg" and not amg_available():
            raise ImportError(
                "eigen_solver='amg' needs the pyamg package: pip install pyamg (or pip "
                "install 'skdsc[amg]'), or use eigen_solver='auto' or 'arpack'."
            )
        return self._input_shape(X.shape[1]), mode

    def _divergence_hint(self):
        """Advice given when the self-expressive phase's loss is not finite."""
        return (
            f"Lower learning_rate (now {self.learning_rate}) or lambda_self "
            f"(now {self.lambda_self}), or scale X to a smaller range."
        )

    def _epochs(self, n_epochs, n_samples):
        """A phase's number of epochs, with ``"auto"`` resolved for the data."""
        return auto_epochs(n_samples, self.batch_size) if n_epochs == "auto" else n_epochs

    def _ridge_penalty(self, codes):
        """Ridge weight of a self-expression against ``codes`` (the training objective's)."""
        penalty = self.lambda_coef / self.lambda_self
        if self.normalize_losses:
            penalty *= float(mean_square_norm(codes.double()))
        return penalty

    # -- fitting --------------------------------------------------------------

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None):
        """Learn the network, the self-expression coefficients and the clusters.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Training data. With ``image_shape`` set, each row is an image
            flattened in C order.
        y : Ignored
            Not used, present for API consistency.

        Returns
        -------
        self : object
            The fitted estimator.
        """
        # An interrupted or failed fit (Ctrl-C included) leaves the estimator
        # as it was before: fitted by the previous fit, or not.
        with unchanged_on_failure(self):
            return self._fit(X)

    def _fit(self, X):
        X = self._validate_X(X, reset=True)
        parallel = DataParallelGroup.current()
        parallel.check_same_data(X)
        device = parallel.device(resolve_device(self.device))
        input_shape, mode = self._check_params_vs_input(X, device)
        if self.batch_size is not None and self.batch_size < parallel.world_size:
            raise ValueError(
                f"batch_size={self.batch_size} is smaller than the {parallel.world_size} "
                "processes that share every batch; use a larger batch_size."
            )
        rng = check_random_state(self.random_state)
        # The first member's seed is the single fit's, so n_init=1 is unchanged;
        # every process takes the first one's seeds.
        seeds = parallel.broadcast_object(
            [rng.randint(np.iinfo(np.int32).max) for _ in range(self.n_init)])
        peak = float(np.max(np.abs(X)))
        # One global scale factor: data given in [0, 255] trains like data in
        # [0, 1], and the loss weights keep one meaning across data sets.
        self.input_scale_ = peak if peak > 0 else 1.0
        checkpoints = [open_checkpoint(self, X, member) for member in range(self.n_init)]
        members = [self._fit_member(X, input_shape, mode, device, seed, checkpoint, parallel)
                   for seed, checkpoint in zip(seeds, checkpoints)]
        chosen, agreement = choose_member([member["labels_"] for member in members])
        vars(self).update(members[chosen])
        vars(self).pop("_embedding_index", None)  # an index of the previous embedding_
        # A refit with n_init=1 leaves no member attributes of an earlier fit.
        for name in ("member_agreement_", "best_member_"):
            vars(self).pop(name, None)
        if self.n_init > 1:
            self.member_agreement_ = agreement
            self.best_member_ = chosen
        # Removed only now: an interrupted n_init fit resumes the finished
        # members from their last checkpoint instead of training them again.
        parallel.barrier()
        for checkpoint in checkpoints:
            if checkpoint is not None and parallel.is_main:
                checkpoint.remove()
        return self

    def _fit_member(self, X, input_shape, mode, device, seed, checkpoint, parallel):
        """Train one network and read its clusters; return its fitted attributes."""
        n_samples = X.shape[0]
        saved = checkpoint.load() if checkpoint is not None else None
        if saved is not None:
            # A random_state that is not an int drew a new seed, and free
            # memory may have changed: keep the interrupted fit's seed and mode.
            seed = saved["seed"]
            mode = mode_named(saved["mode"], self.n_nonzero, self.neighbor_search)

        with seeded_torch(seed, device), explained_out_of_memory(self, n_samples, mode.name,
                                                                 device):
            inputs = self._as_inputs(X, input_shape, device)
            generator = torch.Generator().manual_seed(seed)
            session = TrainingSession(checkpoint, saved, generator, device, n_samples,
                                      self.batch_size, self.verbose,
                                      meta={"seed": seed, "mode": mode.name}, parallel=parallel)
            if session.resumed_stage == "self-expression":
                network = self._build_network(input_shape).to(device)
                bank, layer = restored_self_expression(session, mode, bank_update=self.bank_update)
            else:
                network, codes = pretrained_network(
                    session, inputs, build=lambda: self._build_network(input_shape),
                    objective=self._pretraining_objective, learning_rate=self.learning_rate,
                    n_epochs=self._epochs(self.n_pretrain_epochs, n_samples),
                    problem=self._representation_problem, name=type(self).__name__,
                )
                bank, layer = started_self_expression(
                    codes, mode, bank_update=self.bank_update, coef_init=self.coef_init,
                    penalty=self._ridge_penalty(codes), parallel=parallel)
                del codes  # the bank holds its own copy
            _, n_batches = batch_plan(n_samples, self.batch_size)
            # Jiang et al.: the encoder moves 1/k as fast, so the k batches of an
            # epoch write the bank with nearly the same encoder.
            encoder_lr = self.learning_rate / (n_batches if self.scale_encoder_lr else 1)
            objective = self._self_expression_objective(network, bank, inputs, generator,
                                                        encoder_lr)
            momentum_encoder = (None if self.bank_momentum == 0
                                else MomentumEncoder(network, self.bank_momentum))
            n_epochs = self._epochs(self.n_epochs, n_samples)
            train_self_expression(
                session, network, layer, bank, inputs, objective, mode=mode,
                learning_rate=self.learning_rate, lambda_coef=self.lambda_coef,
                lambda_self=self.lambda_self, normalize_losses=self.normalize_losses,
                momentum_encoder=momentum_encoder, n_epochs=n_epochs,
                refresh_epochs=self.refresh_epochs,
            )
            codes = encode_all(network, inputs, network_parallel(parallel, network, inputs,
                                                                 session.batch_size))
            coef = mode.coefficient_matrix(layer)
            del objective, momentum_encoder, layer, bank

        network.eval()
        fitted = {"network_": network, "device_": device, "self_expression_": mode.name,
                  "history_": session.history, "n_iter_": n_epochs,
                  "embedding_": codes.cpu().numpy(), "coef_": coef,
                  "affinity_": mode.affinity if self.affinity == "auto" else self.affinity,
                  "threshold_": mode.threshold if self.threshold == "auto" else self.threshold}
        del codes, coef
        clusters = None
        if parallel.is_main:  # the post-processing runs once, its result goes to all
            clusters = coefficients_to_labels(
                fitted["coef_"], self.n_clusters, affinity=fitted["affinity_"],
                threshold=fitted["threshold_"], subspace_dim=self.subspace_dim,
                power=self.affinity_power, assign_labels=self.assign_labels,
                n_components=self.n_components, random_state=seed,
                eigen_solver=self.eigen_solver,
            )
        fitted["affinity_matrix_"], fitted["labels_"] = parallel.broadcast_object(clusters)
        return fitted

    def _validate_X(self, X, *, reset):
        """``validate_data`` for fit (``reset=True``) and for new data."""
        try:
            return validate_data(self, X, dtype=[np.float32, np.float64], reset=reset,
                                 ensure_min_samples=2 if reset else 1)
        except ValueError as exc:
            # NumPy's own message ("could not convert string to float: 'a'")
            # does not say which input is at fault.
            if not str(exc).startswith("could not convert"):
                raise
            raise ValueError(f"X must hold numbers (numeric or numeric strings); {exc}.") from exc

    def __sklearn_is_fitted__(self):
        # fit sets n_features_in_ and input_scale_ before steps that can still
        # fail (image_shape, divergence); only a finished fit sets labels_.
        return hasattr(self, "labels_")

    def _input_shape(self, n_features):
        """Shape of one sample as the network sees it."""
        if self.image_shape is None:
            return (n_features,)
        return check_image_shape(self.image_shape, n_features)

    def _as_inputs(self, X, input_shape, device):
        """Scaled float32 tensor of ``X`` in the network's input shape."""
        # Scale before the cast: float64 data beyond float32's range stays finite.
        inputs = torch.as_tensor(np.asarray(X / self.input_scale_, dtype=np.float32))
        return inputs.reshape(len(X), *input_shape).to(device)

    # -- prediction -----------------------------------------------------------

    def encode(self, X):
        """Latent codes of ``X`` from the fitted encoder.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Data in the layout used for ``fit``.

        Returns
        -------
        codes : ndarray of shape (n_samples, n_latent)
        """
        check_is_fitted(self)
        X = self._validate_X(X, reset=False)
        inputs = self._as_inputs(X, self._input_shape(X.shape[1]), self.device_)
        return encode_all(self.network_, inputs).cpu().numpy()

    def predict(self, X):
        """Assign each row to the cluster whose training codes rebuild it best.

        Every row is encoded with the fitted encoder and expressed against the
        fitted codes ``embedding_`` by ridge regression (the self-expression
        objective with ``C`` free for that row): against all of them in the
        dense mode, against its ``n_nonzero`` nearest ones in the sparse mode,
        as in training. The predicted cluster is the one whose codes, with
        those coefficients, leave the smallest residual. Nothing is refitted
        and each row is treated on its own. In the dense mode no
        ``n_samples x n_samples`` matrix is formed: when the codes have at most
        as many dimensions as there are training samples, the ridge problem is
        solved once through its ``n_latent x n_latent`` normal equations;
        otherwise each chunk of rows is solved by conjugate gradients that only
        multiply by the training codes, so memory stays linear in
        ``n_samples`` at the price of some dozens of products with the codes
        per chunk. The sparse mode forms nothing larger than
        ``n_samples x n_nonzero``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            New data in the layout used for ``fit``.

        Returns
        -------
        labels : ndarray of shape (n_samples,)
            Cluster index of each row.
        """
        codes = torch.as_tensor(self.encode(X), device=self.device_)
        mode = mode_named(self.self_expression_, self.n_nonzero, self.neighbor_search)
        embedding = torch.as_tensor(self.embedding_, device=self.device_)
        extra = {}
        if self.self_expression_ == "sparse":
            extra["index"] = self._neighbor_index(embedding, len(codes))
        labels = mode.predict(codes, self.embedding_, self.labels_, self.n_clusters,
                              self._ridge_penalty(embedding), **extra)
        return labels.cpu().numpy().astype(np.int64)

    def _neighbor_index(self, embedding, n_queries):
        """The approximate index of ``embedding_``, or None for an exact search.

        Built by the first ``predict`` large enough for the approximate search
        (see :func:`~skdsc.nn.nearest_neighbors`) and kept: later calls search
        the same index instead of training a new one. A new fit drops it.
        """
        method = self.neighbor_search
        if method == "exact":
            return None
        index = vars(self).get("_embedding_index")
        if index is None and "faiss" in (method, search_method(embedding, n_queries)):
            index = self._embedding_index = NeighborIndex(embedding, method="faiss")
        return index


def choose_member(labelings):
    """Index of the labelling that agrees most with the others, and the agreements.

    Each member's agreement is its mean adjusted Rand index with every other
    member: a run that ends in a poor local optimum disagrees with the rest,
    so the medoid of the members is a label-free choice. Ties go to the
    earlier member.

    Parameters
    ----------
    labelings : list of ndarray of shape (n_samples,)

    Returns
    -------
    chosen : int
    agreement : ndarray of shape (n_members,)
    """
    n_members = len(labelings)
    if n_members == 1:
        return 0, np.ones(1)
    pairwise = np.eye(n_members)
    for i in range(n_members):
        for j in range(i + 1, n_members):
            pairwise[i, j] = pairwise[j, i] = adjusted_rand_score(labelings[i], labelings[j])
    agreement = (pairwise.sum(1) - 1.0) / (n_members - 1)
    return int(np.argmax(agreement)), agreement

