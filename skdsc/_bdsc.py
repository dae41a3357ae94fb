"""Mini-batch deep subspace clustering with an autoencoder (BDSC)."""

import math
from numbers import Integral, Real

import torch
from sklearn.utils._param_validation import Interval, StrOptions

from ._base import BaseDeepSubspaceClustering, rows_nearly_identical
from ._training import Objective
from .nn.augment import Augmentation, check_crop_scale, device_generator
from .nn.autoencoder import ConvAutoencoder, MLPAutoencoder
from .nn.losses import reconstruction_loss

# Codes decoded to check that the pretrained decoder still depends on its input.
_COLLAPSE_CHECK_ROWS = 1024
# Views for reconstruction pretraining: small shifts, zooms and rotations that
# keep an image's identity (no mirroring, which changes digits and letters).
_MILD_AUGMENTATION = {"crop_scale": (0.8, 1.0), "rotation": 10.0, "flip": False, "jitter": 0.0}


def _positive_int_sequence(value, name):
    values = tuple(value)
    if not values or not all(isinstance(v, Integral) and v > 0 for v in values):
        raise ValueError(f"{name} must be a non-empty sequence of positive integers, got {value!r}.")
    return values


def auto_architecture(image_size):
    """Channels and kernel sizes of the convolutional encoder for ``image_size``.

    Stride-2 layers are added until the feature map is at most 16 pixels on
    its longer side (at least one layer): DSC-Net's one-layer network, whose
    16 x 16 maps serve 32 x 32 images, is kept at that resolution for larger
    images, so the self-expression always sees codes of similar granularity.
    Channels start at 15 and double at each layer, so the latent dimension
    grows with the image (3,840 at 32 x 32, 7,680 at 64 x 64) rather than
    shrinking as the maps get smaller.

    Parameters
    ----------
    image_size : tuple of int
        ``(height, width)``.

    Returns
    -------
    hidden_channels, kernel_sizes : tuple of int
    """
    n_layers = max(1, math.ceil(math.log2(max(image_size) / 16)))
    return tuple(15 * 2 ** i for i in range(n_layers)), (3,) * n_layers


class MiniBatchDeepSubspaceClustering(BaseDeepSubspaceClustering):
    """Deep subspace clustering trained with mini-batches and a memory bank.

    An autoencoder maps each sample to a latent code; a self-expressive layer
    learns coefficients ``C`` (``n_samples x n_samples``, zero diagonal) such that
    every code is rebuilt from the others, ``z_i ~ sum_j C_ij z_j``; spectral
    clustering of an affinity built from ``C`` gives the clusters. A memory bank
    holds the latest code of every sample outside the autograd graph, so a
    mini-batch ``B`` is self-expressed as ``C[B, :] @ bank`` and the whole data
    set never has to pass through the network at once (Jiang et al., 2025).

    ``fit`` pretrains the autoencoder on reconstruction, fills the bank with one
    encoding pass and then minimises, per batch,

    ``||X_B - decoder(C[B, :] Z)||^2 + lambda_coef ||C[B, :]||^2 + lambda_self ||Z_B - C[B, :] Z||^2``

    (each term a mean over the batch's samples), writing the batch's codes into
    the bank before each step. With ``batch_size=None`` this is the full-batch
    DSC-Net objective.

    Parameters
    ----------
    n_clusters : int, default=8
        Number of clusters.
    image_shape : tuple of int or None, default=None
        ``(height, width)`` or ``(channels, height, width)`` of the images that
        the rows of ``X`` hold (flattened in C order). Given, the autoencoder is
        convolutional (unless ``hidden_channels`` is empty); ``None`` uses a
        fully connected one.
    hidden_channels : tuple of int or "auto", default="auto"
        Output channels of each stride-2 convolution of the encoder (images).
        An empty tuple gives a fully connected autoencoder (``hidden_units``)
        on the flattened images, which can still be augmented. ``"auto"``
        grows the network with the image: stride-2 layers until the feature
        map is at most 16 pixels on its longer side (at least one layer), with
        15 channels doubling at each layer
        (:func:`skdsc._bdsc.auto_architecture`):
        ``(15,)`` for images up to 32 pixels, ``(15, 30)`` up to 64.
    kernel_sizes : tuple of int or "auto", default="auto"
        Kernel size of each convolution (one per layer of
        ``hidden_channels``; ignored when that is empty). ``"auto"`` is 3 for
        every layer.
    hidden_units : tuple of int, default=(256, 32)
        Widths of the fully connected encoder; the last one is the latent
        dimension (used when ``image_shape`` is None or ``hidden_channels``
        is empty).
    batch_size : int or None, default=128
        Samples per step. ``None``, or a value of at least ``n_samples``, means
        one full batch per epoch.
    n_epochs : int or "auto", default="auto"
        Epochs of self-expressive training. ``"auto"`` sets a budget in
        optimizer steps rather than epochs, so that 400 and 70,000 samples
        both get enough updates (see :func:`skdsc.nn.trainer.auto_epochs`):
        about 2,400 steps, at most 200 and at least 10 epochs.
    n_pretrain_epochs : int or "auto", default="auto"
        Epochs of autoencoder pretraining on reconstruction alone; ``"auto"``
        as for ``n_epochs``.
    pretrain_augmentation : None, bool or dict, default=None
        Pretrain on random views of the images instead of the images
        themselves (each view is encoded and rebuilt), so that codes change
        little under small shifts and rotations; needs ``image_shape``. The
        self-expressive phase and the codes that are clustered always use the
        images as given. ``True`` draws views shifted and zoomed by up to
        about 10% and rotated by up to 10 degrees; a dict overrides those
        settings, with keys ``crop_scale`` (range of the fraction of the
        image a view covers, default ``(0.8, 1.0)``), ``rotation`` (degrees,
        ``10.0``), ``flip`` (mirror half of the views, ``False``) and
        ``jitter`` (brightness and contrast, ``0.0``); see
        :class:`skdsc.nn.Augmentation`. ``None`` or ``False`` pretrains on the
        images.
    learning_rate : float, default=3e-3
        Adam learning rate of the decoder and the coefficients, and of the
        encoder before the ``scale_encoder_lr`` rule.
    lambda_coef : float, default=1.0
        Weight of the coefficient penalty ``||C||^2``. With
        ``normalize_losses``, ``lambda_coef / lambda_self`` (default 0.1)
        is the ridge penalty in units of the codes' mean squared norm.
    lambda_self : float, default=10.0
        Weight of the self-expression penalty ``||Z - CZ||^2`` (relative to
        the codes' energy with ``normalize_losses``). Both defaults were
        chosen on the development sets ORL and COIL-20
        (``benchmarks/tune_defaults.py``).
    self_expression : {"auto", "dense", "sparse"}, default="auto"
        Storage of the coefficients. ``"dense"`` learns the full
        ``n_samples x n_samples`` matrix (the paper's method; memory and time
        per epoch grow as ``n_samples**2``). ``"sparse"`` lets each sample use
        only its ``n_nonzero`` nearest codes (cosine similarity in latent
        space, itself excluded), so memory and time grow as
        ``n_samples * n_nonzero``, the affinity is a sparse matrix and spectral
        clustering uses a sparse eigensolver. ``"auto"`` picks ``"dense"`` for
        at most 10,000 samples when its memory estimate fits in half of the
        free memory, ``"sparse"`` otherwise; the choice is in
        ``self_expression_``. A ``"dense"`` request that cannot fit raises a
        :class:`MemoryError` with the estimate before any training.
    n_nonzero : int, default=32
        Candidates per sample in the sparse mode (at most ``n_samples - 1``).
    neighbor_search : {"auto", "exact", "faiss"}, default="auto"
        How the sparse mode finds each sample's candidates (after pretraining,
        at every refresh) and ``predict`` its rows' nearest training codes:
        ``"exact"`` compares every pair of codes; ``"faiss"`` searches an
        approximate index (the ``faiss-cpu`` package; see
        :class:`skdsc.nn.NeighborIndex`), which ``predict`` builds once and
        keeps; ``"auto"`` is ``"faiss"`` for searches among at least 20,000
        codes when faiss is installed, ``"exact"`` otherwise.
    refresh_epochs : int, default=10
        In the sparse mode, epochs between two searches for the candidates in
        the current memory bank, so that they follow the encoder; a kept
        candidate keeps its coefficient, a new one starts at zero. 0 keeps
        the candidates found after pretraining.
    bank_update : {"index", "fifo"}, default="index"
        How batch codes are written to the memory bank: into the samples' own
        slots, or over the oldest slots as in a queue.
    scale_encoder_lr : bool, default=True
        Divide the encoder's learning rate by ``k``, the number of batches per
        epoch, so that the encoder moves as far in one epoch as it would with a
        full batch and the codes in the bank stay consistent.
    bank_momentum : float in [0, 1), default=0.0
        With 0, the memory bank is written with the online encoder's codes
        (the paper's rule). Above 0, it is written by a momentum encoder: an
        exponential moving average of the network whose weights move by a
        fraction ``1 - bank_momentum`` towards the online ones after every
        step (as in MoCo), another way to keep the codes of one epoch
        consistent; it is usually combined with ``scale_encoder_lr=False``.
        See :ref:`memory-bank-guide` for the two compared.
    normalize_losses : bool, default=True
        Divide the self-expression term by the bank's mean squared code norm
        (and, for the autoencoder, the reconstruction term by the data's mean
        squared norm), so that every term is relative and one set of
        ``lambda_coef`` / ``lambda_self`` means the same on codes and images
        of any scale or size: ``lambda_coef / lambda_self`` is then a ridge
        penalty in units of the codes' energy. ``False`` uses the absolute
        terms of DSC-Net's objective.
    affinity : {"auto", "dsc", "symmetric"}, default="auto"
        Post-processing of the coefficients: DSC-Net's thresholded,
        SVD-based affinity, or the plain ``|C| + |C|^T``. ``"auto"`` is
        ``"dsc"`` in the dense mode and ``"symmetric"`` in the sparse mode,
        where the SVD-based affinity can only reweight each sample's
        ``n_nonzero`` candidate edges (it clustered worse there on three of
        the four benchmark data sets).
    threshold : float in (0, 1] or "auto", default="auto"
        Fraction of each column's l1 mass kept before building the affinity.
        ``"auto"`` is 0.1 in the dense mode (DSC-Net's thresholding) and 1
        (keep all) in the sparse mode, whose rows already hold only their
        ``n_nonzero`` candidates.
    subspace_dim : int, default=6
        Assumed subspace dimension (``affinity="dsc"``).
    affinity_power : float, default=4.0
        Exponent of the DSC-Net affinity (``affinity="dsc"``).
    assign_labels : {"kmeans", "cluster_qr"}, default="kmeans"
        How spectral clustering reads labels off its embedding: k-means (10
        restarts, seeded by ``random_state``) on the rows scaled to unit
        length, or column-pivoted QR, which has no random start (see
        :func:`skdsc.spectral.spectral_labels`).
    n_components : int or "auto", default="auto"
        Number of eigenvectors in the spectral embedding. ``"auto"`` is
        ``n_clusters + 1`` with ``assign_labels="kmeans"``: one eigenvector
        more than clusters keeps the cut between two close clusters when
        another, stretched cluster takes an eigenvector for a cut through
        itself; ``"cluster_qr"`` needs exactly ``n_clusters`` (see
        :func:`skdsc.spectral.spectral_labels`).
    eigen_solver : {"auto", "arpack", "amg"}, default="auto"
        Eigensolver of the spectral embedding: ARPACK, or LOBPCG
        preconditioned by algebraic multigrid (the ``pyamg`` package), far
        faster on large sparse affinities. ``"auto"`` is ``"amg"`` for sparse
        affinities of at least 100,000 samples when pyamg is installed,
        ``"arpack"`` otherwise (see :func:`skdsc.spectral.spectral_labels`).
    device : {"auto", "cpu", "cuda"} or str, default="auto"
        Training device; ``"auto"`` uses CUDA when present.
    checkpoint_path : str, os.PathLike or None, default=None
        File in which ``fit`` saves its training state (network, optimisers,
        memory bank, coefficients, random generators) at the end of epochs.
        When the file exists, ``fit`` resumes from it instead of starting
        again and, with the same ``X``, parameters and an int
        ``random_state``, ends with the same model as an uninterrupted fit (on
        the CPU). A file written by another fit, or a corrupt one, raises
        ``ValueError``; the file is deleted when ``fit`` finishes. Use one
        path per fit (not in a parallel grid search). See
        :ref:`checkpointing`.
    checkpoint_interval : float, default=60.0
        Least number of seconds between two checkpoints (besides the one at
        the start of self-expressive training and the one at the end of each
        phase); 0 saves after every epoch.
    coef_init : {"ridge", "constant"}, default="ridge"
        Start of the coefficients for the self-expressive phase. ``"ridge"``
        starts every row at the exact minimiser of the self-expression and
        coefficient terms for the pretrained codes (in the sparse mode, over
        its candidates); ``"constant"`` starts every coefficient at 1e-8, as
        DSC-Net does. A row is updated once per epoch, so from a constant it
        moves little on large data sets (see :doc:`/defaults`).
    n_init : int, default=1
        Number of networks trained from different seeds (drawn from
        ``random_state``); the one kept is the medoid of their labellings,
        the member whose labels agree most (mean adjusted Rand index) with
        the others', so that a run stuck in a poor optimum is dropped without
        looking at any label. Fit time grows ``n_init`` times; the members'
        fitted arrays are held until the choice. See :ref:`n-init`.
    random_state : int, RandomState instance or None, default=None
        Seeds initialisation, batch order and spectral clustering. The same
        seed gives the same labels on the CPU; on CUDA some kernels are not
        deterministic, so labels may differ slightly between runs.
    verbose : int, default=0
        0 is silent, 1 shows progress bars, 2 also prints every epoch.

    Attributes
    ----------
    labels_ : ndarray of shape (n_samples,)
        Cluster of each training sample.
    affinity_matrix_ : ndarray or scipy.sparse.csr_matrix of shape (n_samples, n_samples)
        Symmetric, non-negative affinity that was clustered; sparse (with at
        most ``2 * n_samples * n_nonzero`` entries) in the sparse mode.
    coef_ : ndarray or scipy.sparse.csr_matrix of shape (n_samples, n_samples)
        Self-expression coefficients (zero diagonal); row ``i`` rebuilds
        sample ``i``. Sparse, with ``n_nonzero`` entries per row, in the
        sparse mode.
    self_expression_ : {"dense", "sparse"}
        The self-expression mode used (``self_expression="auto"`` resolved).
    affinity_ : {"dsc", "symmetric"}
        The affinity that ``affinity_matrix_`` was built with
        (``affinity="auto"`` resolved for ``self_expression_``).
    threshold_ : float
        The threshold applied to ``coef_`` before the affinity
        (``threshold="auto"`` resolved for ``self_expression_``).
    embedding_ : ndarray of shape (n_samples, n_latent)
        Latent codes of the training samples from the final encoder.
    history_ : list of dict
        One entry per epoch (pretraining and self-expression, see ``phase``)
        with the mean loss terms and the seconds it took; an entry with
        ``phase="restart"`` marks a discarded initialisation (see Notes) and
        one with ``phase="refresh"`` a new search for the sparse candidates
        (with the fraction of candidates that ``changed``).
    n_iter_ : int
        Epochs of self-expressive training run.
    member_agreement_ : ndarray of shape (n_init,)
        With ``n_init > 1``: each member's mean adjusted Rand index with the
        other members' labels.
    best_member_ : int
        With ``n_init > 1``: index of the member kept.
    network_ : torch.nn.Module
        The fitted autoencoder.
    device_ : torch.device
        Device the network lives on.
    input_scale_ : float
        Largest absolute value of the training data; inputs are divided by it.
    n_features_in_ : int
        Number of features seen during fit.
    feature_names_in_ : ndarray of shape (`n_features_in_`,)
        Names of features seen during fit, when ``X`` has string column names.

    Notes
    -----
    Small ReLU autoencoders sometimes die during pretraining: most latent codes
    become exactly zero, all samples share one code, or the decoder returns the
    same image whatever the code. ``fit`` checks the codes
    after pretraining and, if they are degenerate, starts again from a new
    initialisation drawn from the same seed (at most three tries, recorded in
    ``history_``); if all tries fail it raises a
    :class:`~sklearn.exceptions.ConvergenceWarning`.

    See Also
    --------
    sklearn.cluster.SpectralClustering : Spectral clustering on a given affinity.

    References
    ----------
    Jiang, Yu, Lin and Liu, "A mini-batch training strategy for deep subspace
    clustering networks", 2025.

    Ji, Zhang, Li, Salzmann and Reid, "Deep subspace clustering networks",
    NeurIPS 2017.

    Examples
    --------
    >>> from skdsc import MiniBatchDeepSubspaceClustering
    >>> from skdsc.datasets import make_subspaces
    >>> X, y = make_subspaces(n_clusters=3, n_samples_per_cluster=30, random_state=0)
    >>> model = MiniBatchDeepSubspaceClustering(
    ...     n_clusters=3, n_epochs=20, n_pretrain_epochs=20, random_state=0).fit(X)
    >>> model.labels_.shape
    (90,)
    """

    _parameter_constraints: dict = {
        **BaseDeepSubspaceClustering._parameter_constraints,
        "n_epochs": [Interval(Integral, 0, None, closed="left"), StrOptions({"auto"})],
        "hidden_channels": [tuple, list, StrOptions({"auto"})],
        "kernel_sizes": [tuple, list, StrOptions({"auto"})],
        "hidden_units": [tuple, list],
        "n_pretrain_epochs": [Interval(Integral, 0, None, closed="left"), StrOptions({"auto"})],
        "pretrain_augmentation": [None, "boolean", dict],
    }

    def __init__(self, n_clusters=8, *, image_shape=None, hidden_channels="auto",
                 kernel_sizes="auto", hidden_units=(256, 32), batch_size=128,
                 n_epochs="auto", n_pretrain_epochs="auto", pretrain_augmentation=None,
                 learning_rate=3e-3,
                 lambda_coef=1.0, lambda_self=10.0, self_expression="auto", n_nonzero=32,
                 neighbor_search="auto", refresh_epochs=10, bank_update="index",
                 scale_encoder_lr=True, bank_momentum=0.0, normalize_losses=True,
                 affinity="auto", threshold="auto", subspace_dim=6,
                 affinity_power=4.0, assign_labels="kmeans", n_components="auto",
                 eigen_solver="auto", device="auto", checkpoint_path=None,
                 checkpoint_interval=60.0, coef_init="ridge", n_init=1, random_state=None,
                 verbose=0):
        super().__init__(
            n_clusters, image_shape=image_shape, batch_size=batch_size,
            n_epochs=n_epochs, learning_rate=learning_rate, lambda_coef=lambda_coef,
            lambda_self=lambda_self, self_expression=self_expression, n_nonzero=n_nonzero,
            neighbor_search=neighbor_search,
            refresh_epochs=refresh_epochs, bank_update=bank_update,
            scale_encoder_lr=scale_encoder_lr, bank_momentum=bank_momentum,
            normalize_losses=normalize_losses, affinity=affinity, threshold=threshold,
            subspace_dim=subspace_dim, affinity_power=affinity_power,
            assign_labels=assign_labels, n_components=n_components,
            eigen_solver=eigen_solver, device=device,
            checkpoint_path=checkpoint_path, checkpoint_interval=checkpoint_interval,
            n_init=n_init, coef_init=coef_init,
            random_state=random_state, verbose=verbose,
        )
        self.hidden_channels = hidden_channels
        self.kernel_sizes = kernel_sizes
        self.hidden_units = hidden_units
        self.n_pretrain_epochs = n_pretrain_epochs
        self.pretrain_augmentation = pretrain_augmentation

    def _augmentation(self, input_shape):
        """The pretraining views' :class:`Augmentation`, or None for none."""
        setting = self.pretrain_augmentation
        if setting is None or setting is False:
            return None
        if len(input_shape) == 1:
            raise ValueError(
                "pretrain_augmentation needs images: set image_shape to the (height, width) "
                "or (channels, height, width) of the rows of X, or pretrain_augmentation=None."
            )
        overrides = {} if setting is True else dict(setting)
        unknown = sorted(set(overrides) - set(_MILD_AUGMENTATION))
        if unknown:
            raise ValueError(
                f"pretrain_augmentation got unknown keys {unknown}; accepted keys are "
                f"{sorted(_MILD_AUGMENTATION)}."
            )
        settings = {**_MILD_AUGMENTATION, **overrides}
        crop_scale = check_crop_scale(settings["crop_scale"], "pretrain_augmentation['crop_scale']")
        rotation, jitter = settings["rotation"], settings["jitter"]
        if not isinstance(rotation, Real) or not 0 <= rotation <= 180:
            raise ValueError("pretrain_augmentation['rotation'] must be a number of degrees in "
                             f"[0, 180], got {rotation!r}.")
        if not isinstance(jitter, Real) or not 0 <= jitter <= 1:
            raise ValueError(f"pretrain_augmentation['jitter'] must be in [0, 1], got {jitter!r}.")
        if not isinstance(settings["flip"], bool):
            raise ValueError(f"pretrain_augmentation['flip'] must be a bool, got {settings['flip']!r}.")
        return Augmentation(crop_scale=crop_scale, rotation=float(rotation), flip=bool(settings["flip"]),
                            jitter=float(jitter))

    def _check_params_vs_input(self, X, device):
        input_shape, mode = super()._check_params_vs_input(X, device)
        self._augmentation(input_shape)
        self._architecture(input_shape)
        return input_shape, mode

    def _architecture(self, input_shape):
        """``("mlp", hidden_units)`` or ``("conv", hidden_channels, kernel_sizes)``, checked."""
        fully_connected = self.hidden_channels != "auto" and len(tuple(self.hidden_channels)) == 0
        if len(input_shape) == 1 or fully_connected:
            return "mlp", _positive_int_sequence(self.hidden_units, "hidden_units")
        channels = (auto_architecture(input_shape[1:])[0] if self.hidden_channels == "auto"
                    else _positive_int_sequence(self.hidden_channels, "hidden_channels"))
        kernels = ((3,) * len(channels) if self.kernel_sizes == "auto"
                   else _positive_int_sequence(self.kernel_sizes, "kernel_sizes"))
        if len(channels) != len(kernels):
            raise ValueError(
                f"kernel_sizes must have one entry per hidden_channels entry; got "
                f"{len(kernels)} kernel sizes for {len(channels)} layers "
                f"(hidden_channels={self.hidden_channels!r} gives {channels})."
            )
        return "conv", channels, kernels

    def _build_network(self, input_shape):
        kind, *layers = self._architecture(input_shape)
        if kind == "mlp":
            image_shape = input_shape if len(input_shape) > 1 else None
            return MLPAutoencoder(int(torch.Size(input_shape).numel()), layers[0], image_shape)
        return ConvAutoencoder(input_shape, *layers)

    def _representation_problem(self, network, codes):
        problem = super()._representation_problem(network, codes)
        if problem is not None:
            return problem
        # A decoder whose hidden units all died returns the same image for every
        # code; the encoder then gets no gradient and the codes carry nothing.
        with torch.no_grad():
            if rows_nearly_identical(network.decode(codes[:_COLLAPSE_CHECK_ROWS])):
                return "the decoder returns the same output for every sample (dead ReLU units)"
        return None

    def _pretraining_objective(self, network, generator, device):
        augment = self._augmentation(self._input_shape(self.n_features_in_))
        generators = {}
        if augment is not None:
            views = generators["views"] = device_generator(generator, device)

        def loss(x):
            if augment is not None:
                x = augment(x, views)
            return reconstruction_loss(x, network(x))

        return Objective(
            "reconstruction", loss, [{"params": list(network.parameters())}], generators,
            divergence_hint=f"Lower learning_rate (now {self.learning_rate}) or scale X "
                            "to a smaller range.",
        )

    def _self_expression_objective(self, network, bank, inputs, generator, encoder_lr):
        # Reconstruction relative to the data's energy (normalize_losses): the
        # term means the same for 8 x 8 and 128 x 128 images.
        energy = float(inputs.pow(2).flatten(1).sum(1).mean().clamp_min(1e-12))
        scale = 1.0 / energy if self.normalize_losses else 1.0

        def loss(x, codes, expressed, indices):
            return scale * reconstruction_loss(x, network.decode(expressed))

        groups = [{"params": network.encoder.parameters(), "lr": encoder_lr},
                  {"params": network.decoder.parameters(), "lr": self.learning_rate}]
        # The convolutional autoencoder costs far less than the dense rows and
        # draws nothing (Objective.cheap_network).
        return Objective("reconstruction", loss, groups, {}, self._divergence_hint(),
                         cheap_network=True)
