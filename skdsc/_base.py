"""Shared base of the deep subspace clustering estimators."""

import copy
import os
import time
import warnings
from abc import ABCMeta, abstractmethod
from contextlib import contextmanager
from numbers import Integral, Real

import numpy as np
import torch
import torch.nn.functional as F
from scipy import sparse
from sklearn.base import BaseEstimator, ClusterMixin, _fit_context
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import adjusted_rand_score
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted, validate_data

from ._checkpoint import FitCheckpoint, TrainingSession, fit_fingerprint
from ._memory import SELF_EXPRESSION_MODES, explained_out_of_memory, resolve_self_expression
from .nn.memory_bank import BANK_UPDATES, MemoryBank
from .nn.momentum import MomentumEncoder
from .nn.neighbors import nearest_neighbors
from .nn.self_expression import (
    DenseSelfExpression, SparseSelfExpression, floored_penalty, local_ridge_regression,
    mean_square_norm,
)
from .nn.trainer import auto_epochs, batch_plan
from .spectral import (AFFINITIES, LABEL_ASSIGNMENTS, check_n_components,
                       coefficients_to_labels)

# Rows encoded at once outside training (prediction, bank refresh).
_INFERENCE_CHUNK = 1024
# Initialisations tried when pretraining leaves codes that cannot be clustered.
_MAX_INITIALISATIONS = 3


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


def rows_nearly_identical(matrix, block=_INFERENCE_CHUNK):
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


class BaseDeepSubspaceClustering(ClusterMixin, BaseEstimator, metaclass=ABCMeta):
    """Fit skeleton, prediction and persistence shared by the estimators.

    Subclasses build the network (``_build_network``), may pretrain it
    (``_pretrain``) and define one optimisation step (``_make_step``); this base
    validates the data, seeds torch, keeps the memory bank and the
    self-expressive layer, runs the epochs and turns the coefficients into
    labels.
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
                 lambda_coef, lambda_self, self_expression, n_nonzero, refresh_epochs,
                 bank_update, scale_encoder_lr, bank_momentum, normalize_losses, affinity,
                 threshold, subspace_dim, affinity_power, assign_labels, n_components, device,
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
        self.device = device
        self.checkpoint_path = checkpoint_path
        self.checkpoint_interval = checkpoint_interval
        self.n_init = n_init
        self.coef_init = coef_init
        self.random_state = random_state
        self.verbose = verbose

    # -- hooks for subclasses -------------------------------------------------

    @abstractmethod
    def _build_network(self, input_shape):
        """Return a module with ``encode(x) -> (batch, n_latent)``."""

    def _pretrain(self, network, inputs, session):
        """Train ``network`` before self-expression.

        Implementations run their epochs with ``session.run(step,
        stage="pretrain", ..., objects=...)``, naming every object the phase
        changes (the network, optimisers, generators) so that a checkpoint can
        restore them; ``session.generator`` is the fit's seeded CPU generator.
        """

    @abstractmethod
    def _make_step(self, network, self_expression, coef_optimizer, bank, inputs, n_batches,
                   generator):
        """Return ``(step, state)``: one optimisation step and what it changes.

        ``step(indices) -> dict`` does one step; ``coef_optimizer`` updates
        ``self_expression`` and must be stepped with the network's optimiser.
        ``state`` names the step's own optimisers and generators (saved in
        checkpoints). ``generator`` is the fit's seeded CPU generator, for any
        randomness the step needs.
        """

    def _representation_problem(self, network, codes):
        """Say why the pretrained representation cannot be clustered, or None."""
        return degenerate_codes(codes)

    def _memory_remedies(self):
        """Further parameter changes that lower memory, as phrases."""
        return []

    def _divergence_hint(self):
        return (
            f"Lower learning_rate (now {self.learning_rate}) or lambda_self "
            f"(now {self.lambda_self}), or scale X to a smaller range."
        )

    def _epochs(self, n_epochs, n_samples):
        """A phase's number of epochs, with ``"auto"`` resolved for the data."""
        return auto_epochs(n_samples, self.batch_size) if n_epochs == "auto" else n_epochs

    # -- loss weights and the bank's writer ---------------------------------------

    def _self_expression_scale(self, bank):
        """Factor applied to ``||Z_B - C[B, :] Z||^2`` before it is weighted.

        With ``normalize_losses`` it is one over the bank's mean squared code
        norm, so that the term is a relative residual and ``lambda_coef /
        lambda_self`` a ridge penalty relative to the codes' energy, whatever
        their scale; otherwise 1.
        """
        if not self.normalize_losses:
            return 1.0
        return 1.0 / bank.mean_square_norm()

    def _ridge_penalty(self, codes):
        """Ridge weight of a self-expression against ``codes`` (the training objective's)."""
        penalty = self.lambda_coef / self.lambda_self
        if self.normalize_losses:
            penalty *= float(mean_square_norm(codes.double()))
        return penalty

    def _momentum_encoder(self, network):
        """The :class:`~skdsc.nn.MomentumEncoder` that writes the bank, or None.

        None (``bank_momentum=0``) writes the online encoder's codes, the
        paper's rule.
        """
        if self.bank_momentum == 0:
            return None
        return MomentumEncoder(network, self.bank_momentum)

    # -- fitting --------------------------------------------------------------

    def _initialise(self, input_shape, inputs, session):
        """Build and pretrain the network, starting afresh if its codes collapse.

        Up to ``_MAX_INITIALISATIONS`` networks are tried, each drawn from the
        seeded generators, so the outcome stays reproducible. Returns the
        network and its codes of ``inputs``.
        """
        # A resumed fit goes on with the attempt it was interrupted in.
        for attempt in range(session.attempt, _MAX_INITIALISATIONS + 1):
            session.attempt = attempt
            network = self._build_network(input_shape).to(inputs.device)
            self._pretrain(network, inputs, session)
            codes = self._encode_tensor(network, inputs)
            problem = self._representation_problem(network, codes)
            if problem is None:
                break
            session.history.append({"phase": "restart", "attempt": attempt, "reason": problem})
            if self.verbose:
                print(f"[{type(self).__name__}] initialisation {attempt}: {problem}; "
                      "starting again from a new initialisation.")
        else:
            warnings.warn(
                f"{type(self).__name__}: after {_MAX_INITIALISATIONS} initialisations "
                f"{problem}, so the clusters are not meaningful. Use a wider network "
                "(hidden_channels / hidden_units), a lower learning_rate or another "
                "random_state.", ConvergenceWarning, stacklevel=4,
            )
        return network, codes

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
        previous = self._fitted_attributes()
        try:
            return self._fit(X)
        except BaseException:
            # An interrupted or failed fit (Ctrl-C included) leaves the
            # estimator as it was before: fitted by the previous fit, or not.
            for name in self._fitted_attributes():
                delattr(self, name)
            vars(self).update(previous)
            raise

    def _fitted_attributes(self):
        """Attributes set by ``fit`` (trailing underscore), by name."""
        return {name: value for name, value in vars(self).items()
                if name.endswith("_") and not name.startswith("__")}

    def _fit(self, X):
        X = self._validate_X(X, reset=True)
        n_samples = X.shape[0]
        if n_samples < self.n_clusters:
            raise ValueError(
                f"n_samples={n_samples} should be >= n_clusters={self.n_clusters}."
            )
        # Checked before training, not after it.
        check_n_components(self.n_components, self.n_clusters, self.assign_labels, n_samples)
        input_shape = self._input_shape(X.shape[1])
        device = resolve_device(self.device)
        rng = check_random_state(self.random_state)
        # The first member's seed is the single fit's, so n_init=1 is unchanged.
        seeds = [rng.randint(np.iinfo(np.int32).max) for _ in range(self.n_init)]
        peak = float(np.max(np.abs(X)))
        # One global scale factor: data given in [0, 255] trains like data in
        # [0, 1], and the loss weights keep one meaning across data sets.
        self.input_scale_ = peak if peak > 0 else 1.0
        checkpoints = [self._open_checkpoint(X, member) for member in range(self.n_init)]
        members = [self._fit_member(X, input_shape, device, seed, checkpoint)
                   for seed, checkpoint in zip(seeds, checkpoints)]
        chosen, agreement = choose_member([member["labels_"] for member in members])
        vars(self).update(members[chosen])
        # A refit with n_init=1 leaves no member attributes of an earlier fit.
        for name in ("member_agreement_", "best_member_"):
            vars(self).pop(name, None)
        if self.n_init > 1:
            self.member_agreement_ = agreement
            self.best_member_ = chosen
        # Removed only now: an interrupted n_init fit resumes the finished
        # members from their last checkpoint instead of training them again.
        for checkpoint in checkpoints:
            if checkpoint is not None:
                checkpoint.remove()
        return self

    def _fit_member(self, X, input_shape, device, seed, checkpoint):
        """Train one network and read its clusters; return its fitted attributes."""
        n_samples = X.shape[0]
        saved = checkpoint.load() if checkpoint is not None else None
        if saved is not None:
            # A random_state that is not an int drew a new seed: keep the
            # interrupted fit's one.
            seed, mode = saved["seed"], saved["mode"]
        else:
            mode = self._resolve_mode(n_samples, device)

        with seeded_torch(seed, device), explained_out_of_memory(self, n_samples, mode, device):
            inputs = self._as_inputs(X, input_shape, device)
            generator = torch.Generator().manual_seed(seed)
            session = TrainingSession(checkpoint, saved, generator, device, n_samples,
                                      self.batch_size, self.verbose,
                                      meta={"seed": seed, "mode": mode})
            if session.resumed_stage == "self-expression":
                network = self._build_network(input_shape).to(device)
                bank, self_expression = self._restored_self_expression(session, device)
            else:
                network, codes = self._initialise(input_shape, inputs, session)
                bank = MemoryBank(codes, update=self.bank_update)
                del codes  # the bank holds its own copy
                self_expression = self._self_expression_layer(mode, bank)
                if self.coef_init == "ridge":
                    # Every row is visited once per epoch, and large data sets
                    # get few epochs: start each at its exact minimiser for the
                    # pretrained codes rather than DSC-Net's small constant.
                    self_expression.ridge_start(bank.codes, self._ridge_penalty(bank.codes))
            coef_optimizer = torch.optim.SparseAdam(self_expression.parameters(),
                                                    lr=self.learning_rate)
            _, n_batches = batch_plan(n_samples, self.batch_size)
            step, step_state = self._make_step(network, self_expression, coef_optimizer, bank,
                                               inputs, n_batches, generator)
            objects = {"network": network, "bank": bank, "self_expression": self_expression,
                       "coef_optimizer": coef_optimizer, **step_state}
            self._train_self_expression(step, objects, session)
            codes = self._encode_tensor(network, inputs)
            coef = self_expression.coefficients()
            # The optimiser state (two moments per coefficient) is no longer
            # needed: free it before the post-processing allocates its arrays.
            del step, step_state, objects, self_expression, coef_optimizer, bank

        network.eval()
        fitted = {"network_": network, "device_": device, "self_expression_": mode,
                  "history_": session.history, "n_iter_": self._epochs(self.n_epochs, n_samples),
                  "embedding_": codes.cpu().numpy()}
        del codes
        fitted["coef_"] = _coefficient_matrix(coef, n_samples)
        del coef
        fitted["affinity_matrix_"], fitted["labels_"] = coefficients_to_labels(
            fitted["coef_"], self.n_clusters, affinity=self._affinity(mode),
            threshold=self._threshold(mode),
            subspace_dim=self.subspace_dim, power=self.affinity_power,
            assign_labels=self.assign_labels, n_components=self.n_components,
            random_state=seed,
        )
        return fitted

    def _open_checkpoint(self, X, member=0):
        """A member's :class:`FitCheckpoint`, or None without ``checkpoint_path``.

        The first member writes ``checkpoint_path`` itself; member ``i > 0`` of
        an ``n_init`` fit writes ``checkpoint_path`` with ``.i`` appended.
        """
        if self.checkpoint_path is None:
            return None
        path = os.fspath(self.checkpoint_path)
        fingerprint = fit_fingerprint(self, X)
        if member:
            path, fingerprint = f"{path}.{member}", f"{fingerprint}.{member}"
        return FitCheckpoint(path, fingerprint, self.checkpoint_interval)

    def _restored_self_expression(self, session, device):
        """Memory bank and self-expressive layer shaped as in the checkpoint.

        Their values are loaded when the session resumes the phase.
        """
        codes = session.saved_state("bank")["codes"].to(device)
        bank = MemoryBank(codes, update=self.bank_update)
        layer = session.saved_state("self_expression")
        if "neighbors" in layer:
            return bank, SparseSelfExpression(layer["neighbors"].to(device))
        return bank, DenseSelfExpression(bank.n_slots).to(device)

    def _resolve_mode(self, n_samples, device):
        """``"dense"`` or ``"sparse"``, checked before any training."""
        mode = resolve_self_expression(self.self_expression, n_samples, device)
        if mode == "sparse" and self.bank_update != "index":
            raise ValueError(
                "self_expression='sparse' needs bank_update='index' (candidates are "
                f"looked up by sample), got bank_update={self.bank_update!r}."
            )
        return mode

    def _affinity(self, mode):
        """``affinity``, with ``"auto"`` resolved for the self-expression mode."""
        if self.affinity != "auto":
            return self.affinity
        # The DSC rebuild links samples whose low-rank rows point alike, which
        # pays off when every pair can be linked (dense). On a sparse pattern
        # it can only reweight the candidate edges, and its sharpened angles
        # drop many of them: |C| + |C|^T clusters better there
        # (benchmarks/RESULTS.md, "Affinity of the sparse mode").
        return "dsc" if mode == "dense" else "symmetric"

    def _threshold(self, mode):
        """``threshold``, with ``"auto"`` resolved for the self-expression mode."""
        if self.threshold != "auto":
            return self.threshold
        # A dense row spreads small weights over every sample: keep the largest
        # 10% of each column's mass, as DSC-Net does. A sparse row already holds
        # only its n_nonzero candidates; thresholding again cuts the graph apart.
        return 0.1 if mode == "dense" else 1.0

    def _n_candidates(self, n_samples):
        """Candidates per sample in the sparse mode: ``n_nonzero``, at most all others."""
        return min(self.n_nonzero, n_samples - 1)

    def _self_expression_layer(self, mode, bank):
        n_samples = bank.n_slots
        if mode == "dense":
            return DenseSelfExpression(n_samples).to(bank.codes.device)
        neighbors = nearest_neighbors(bank.codes, self._n_candidates(n_samples))
        return SparseSelfExpression(neighbors)

    def _train_self_expression(self, step, objects, session):
        """Run the self-expressive epochs; refresh sparse candidates on schedule.

        Every ``refresh_epochs`` epochs (sparse mode, not after the last one)
        the candidates become the nearest codes in the current bank, so they
        follow the encoder.
        """
        self_expression, bank = objects["self_expression"], objects["bank"]
        sparse_layer = isinstance(self_expression, SparseSelfExpression)
        refresh = self.refresh_epochs if sparse_layer else 0
        n_epochs = self._epochs(self.n_epochs, bank.n_slots)

        def refresh_candidates(epoch, history):
            if not refresh or epoch % refresh or epoch >= n_epochs:
                return
            start = time.perf_counter()
            neighbors = nearest_neighbors(bank.codes, self_expression.neighbors.shape[1])
            changed = self_expression.refresh(neighbors, objects["coef_optimizer"])
            history.append({"epoch": epoch, "phase": "refresh", "changed": changed,
                            "seconds": time.perf_counter() - start})

        session.run(step, stage="self-expression", n_epochs=n_epochs, objects=objects,
                    divergence_hint=self._divergence_hint(), on_epoch_end=refresh_candidates,
                    save_at_start=True)

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

    @torch.no_grad()
    def _encode_tensor(self, network, inputs):
        """Latent codes of ``inputs`` in eval mode, chunk by chunk."""
        was_training = network.training
        network.eval()
        chunks = inputs.split(_INFERENCE_CHUNK)
        first = network.encode(chunks[0])
        # Filled in place: concatenating a list would hold the codes twice.
        codes = first.new_empty((len(inputs), *first.shape[1:]))
        codes[:len(first)] = first
        start = len(first)
        for chunk in chunks[1:]:
            codes[start:start + len(chunk)] = network.encode(chunk)
            start += len(chunk)
        network.train(was_training)
        return codes

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
        return self._encode_tensor(self.network_, inputs).cpu().numpy()

    def predict(self, X):
        """Assign each row to the cluster whose training codes rebuild it best.

        Every row is encoded with the fitted encoder and expressed against the
        fitted codes ``embedding_`` by ridge regression (the self-expression
        objective with ``C`` free for that row): against all of them in the
        dense mode, against its ``n_nonzero`` nearest ones in the sparse mode,
        as in training. The predicted cluster is the one whose codes, with
        those coefficients, leave the smallest residual. Nothing is refitted
        and each row is treated on its own. The dense mode solves the ridge
        problem in the smaller of the latent dimension and the number of
        training samples: when the codes have more dimensions than there are
        training samples, it forms their ``n_samples x n_samples`` Gram
        matrix once per call; the sparse mode forms nothing larger than
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
        if self.self_expression_ == "sparse":
            labels = self._predict_from_candidates(codes)
        else:
            labels = self._predict_from_all(codes)
        return labels.cpu().numpy().astype(np.int64)

    def _predict_from_all(self, codes):
        bank = torch.as_tensor(self.embedding_, dtype=torch.float64, device=self.device_)
        projection = _ridge_projection(bank, self._ridge_penalty(bank))
        members = [
            torch.as_tensor(np.flatnonzero(self.labels_ == k), device=self.device_)
            for k in range(self.n_clusters)
        ]
        # Filled in place (see skdsc.nn.neighbors): no per-chunk results left
        # between the large temporaries.
        labels = torch.empty(len(codes), dtype=torch.int64, device=codes.device)
        for start in range(0, len(codes), _INFERENCE_CHUNK):
            chunk = codes[start:start + _INFERENCE_CHUNK].double()
            coefficients = chunk @ projection
            residuals = torch.stack([
                (chunk - coefficients[:, idx] @ bank[idx]).pow(2).sum(1)
                if len(idx) else torch.full((len(chunk),), torch.inf, dtype=chunk.dtype,
                                            device=chunk.device)
                for idx in members
            ], dim=1)
            labels[start:start + len(chunk)] = residuals.argmin(1)
        return labels

    def _predict_from_candidates(self, codes):
        bank = torch.as_tensor(self.embedding_, device=self.device_)
        train_labels = torch.as_tensor(self.labels_, device=self.device_)
        # The search and the ridge solves block their own work, so every row
        # is handled in one call each (bank norms and penalty computed once).
        neighbors = nearest_neighbors(bank, min(self.n_nonzero, len(bank)), queries=codes)
        # Rows per block so that the gathered candidates and the per-cluster
        # rebuilds, (block, n_nonzero or n_clusters, n_latent), stay small.
        block = max(1, (1 << 23) // (max(neighbors.shape[1], self.n_clusters) * bank.shape[1]))
        coefficients = local_ridge_regression(codes, bank, neighbors, self._ridge_penalty(bank),
                                              block=block)
        labels = torch.empty(len(codes), dtype=torch.int64, device=codes.device)
        for start in range(0, len(codes), block):
            rows = slice(start, start + block)
            basis = bank[neighbors[rows]].double()
            members = F.one_hot(train_labels[neighbors[rows]], self.n_clusters).double()
            # Rebuild of each row from the candidates of each cluster alone; a
            # cluster without candidates rebuilds nothing (residual ||z||^2).
            weights = (coefficients[rows].double()[:, :, None] * members).transpose(1, 2)
            residuals = (codes[rows, None, :].double() - weights @ basis).pow(2).sum(2)
            labels[rows] = residuals.argmin(1)
        return labels

    # -- persistence ----------------------------------------------------------

    def __getstate__(self):
        state = super().__getstate__()
        network = state.get("network_")
        if network is not None and next(network.parameters()).device.type != "cpu":
            # Pickles always hold CPU tensors, so they load on machines without CUDA.
            state["network_"] = copy.deepcopy(network).cpu()
        return state

    def __setstate__(self, state):
        super().__setstate__(state)
        device = getattr(self, "device_", None)
        if device is None or not hasattr(self, "network_"):
            return
        if device.type == "cuda" and not torch.cuda.is_available():
            warnings.warn(
                f"This model was fitted on {device} but CUDA is not available; it is "
                "loaded on the CPU.", UserWarning, stacklevel=2,
            )
            self.device_ = torch.device("cpu")
        self.network_.to(self.device_)


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


def _coefficient_matrix(coef, n_samples):
    """The fitted coefficients as an array: dense, or CSR from ``(neighbors, values)``."""
    if torch.is_tensor(coef):
        return coef.cpu().numpy()
    neighbors, values = (part.cpu().numpy() for part in coef)
    n_nonzero = neighbors.shape[1]
    matrix = sparse.csr_matrix(
        (values.ravel(), neighbors.ravel(), np.arange(0, n_samples * n_nonzero + 1, n_nonzero)),
        shape=(n_samples, n_samples),
    )
    matrix.sort_indices()
    return matrix


def _ridge_projection(bank, penalty):
    """Matrix ``P`` with ``codes @ P`` the ridge coefficients against ``bank``.

    Solves ``min_c ||z - c @ bank||^2 + penalty * ||c||^2`` for every row; uses
    the smaller of the two equivalent normal equations.
    """
    n_samples, n_latent = bank.shape
    penalty = floored_penalty(bank, penalty)
    if n_latent <= n_samples:
        gram = bank.T @ bank + penalty * torch.eye(n_latent, dtype=bank.dtype, device=bank.device)
        return torch.linalg.solve(gram, bank.T)
    gram = bank @ bank.T + penalty * torch.eye(n_samples, dtype=bank.dtype, device=bank.device)
    return bank.T @ torch.linalg.inv(gram)
