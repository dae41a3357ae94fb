"""Contrastive, decoder-free deep subspace clustering on timm encoders (CLBDSC)."""

import os
from numbers import Integral, Real

import torch
from sklearn.utils._param_validation import Interval
from timm.data import resolve_model_data_config

from ._base import BaseDeepSubspaceClustering
from ._training import Objective
from .nn.augment import Augmentation, check_crop_scale, device_generator
from .nn.encoders import ProjectionEncoder, channel_statistics, create_backbone
from .nn.losses import info_nce_loss, paired_info_nce_loss


def _trainable(network):
    """Parameters of ``network`` that require gradients (not a frozen backbone)."""
    return [p for p in network.parameters() if p.requires_grad]


def _own_slots(bank, indices, slots=None):
    """Mask ``(batch, n_slots)`` of the bank slots holding each batch sample.

    With ``slots``, the mask ``(batch, len(slots))`` of those slots only.
    """
    owners = bank.owners if slots is None else bank.owners[slots]
    return owners[None, :] == indices[:, None]


def _sampled_slots(n_slots, n_draws, generator):
    """``n_draws`` distinct slots of ``n_slots``, a uniformly random subset.

    Drawn on ``generator``'s device. When the subset is a large part of the
    bank a permutation is cheapest; otherwise the first ``n_draws`` distinct
    values of independent uniform draws (a uniform subset too, by symmetry)
    cost ``O(n_draws log n_draws)``, whatever the size of the bank.
    """
    device = generator.device
    if 4 * n_draws >= n_slots:
        return torch.randperm(n_slots, generator=generator, device=device)[:n_draws]
    # With n_slots >= 4 n_draws, about n_draws**2 / (2 n_slots) <= n_draws / 8
    # of the draws repeat one: a quarter more is nearly always enough.
    margin = n_draws // 4 + 16
    draws = torch.randint(n_slots, (n_draws + margin,), generator=generator, device=device)
    while True:
        values, inverse = torch.unique(draws, return_inverse=True)
        if len(values) >= n_draws:
            break
        more = torch.randint(n_slots, (margin,), generator=generator, device=device)
        draws = torch.cat([draws, more])
    # Keep the distinct values seen first: the position of each value's first draw.
    positions = torch.arange(len(draws), device=device)
    first = torch.full((len(values),), len(draws), dtype=positions.dtype, device=device)
    first.scatter_reduce_(0, inverse, positions, reduce="amin")
    return values[first.argsort()[:n_draws]]


class ContrastiveDSC(BaseDeepSubspaceClustering):
    """Decoder-free deep subspace clustering with a contrastive timm encoder.

    A timm image model (any of ``timm.list_models()``, optionally with
    pretrained weights) and a projection head map each image to a unit-norm
    code ``z_i``. A self-expressive layer learns coefficients ``C`` (zero
    diagonal) so that each code is rebuilt from the others, ``z_hat_i =
    sum_j C_ij z_j``, read from a memory bank of the latest code of every
    sample. There is no decoder: what keeps the codes informative is an
    InfoNCE loss in which the self-expressed code ``z_hat_i`` is the anchor,
    the code of a randomly augmented view of the same image is the positive
    and the codes in the bank (at most ``n_negatives`` of them, drawn anew in
    every step) are the negatives (Jiang et al., 2025, CLBDSC).

    ``fit`` first trains the encoder alone by instance discrimination
    (``n_pretrain_epochs``; two augmented views of each image must find each
    other among the views of the batch), fills the bank with one encoding
    pass, starts ``C`` at the exact minimiser of its two terms for those codes
    (a ridge regression with zero diagonal) and then minimises, per batch,

    ``InfoNCE(z_hat_B, z_B^+, bank) + lambda_coef ||C[B, :]||^2 + lambda_self ||Z_B - C[B, :] Z||^2``

    (each term a mean over the batch's samples), writing the batch's codes into
    the bank before each step. Spectral clustering of the affinity built from
    ``C`` gives the clusters.

    Parameters
    ----------
    n_clusters : int, default=8
        Number of clusters.
    image_shape : tuple of int or None, default=None
        ``(height, width)`` or ``(channels, height, width)`` of the images that
        the rows of ``X`` hold (flattened in C order). ``None`` treats each
        row as a one-channel image one pixel high (for signals; give
        ``image_shape`` for images).
    encoder : str, default="resnet18"
        Name of the timm model used as backbone, optionally with a pretrained
        tag (``"resnet18.a1_in1k"``). It is built with ``num_classes=0`` and the
        data's number of channels.
    pretrained : bool or path-like, default=False
        ``False`` trains the encoder from a random initialisation. ``True``
        loads timm's published weights, from the local cache when they are
        there and otherwise downloaded; without network access the error comes
        at once. A path loads a local weights file (``.safetensors``, ``.pth``,
        ``.pt`` or ``.bin``) through timm's loader, which drops classifier
        weights and adapts the first convolution to the number of channels.
    freeze_encoder : bool, default=False
        Keep the backbone's weights (and batch-norm statistics) fixed and train
        only the projection head and the coefficients. Useful with pretrained
        weights.
    input_size : int, tuple of int or None, default=None
        Size ``(height, width)`` (or one int for square) the images are resized
        to, on the training device, before the backbone; e.g. 224 for weights
        pretrained at that size. ``None`` keeps the images' size.
    projection_dim : int, default=128
        Dimension of the codes.
    temperature : float, default=0.2
        Temperature of the InfoNCE loss.
    n_negatives : int or None, default=4096
        Negatives of each self-expressive step. When the memory bank holds
        more codes than this, every step draws ``n_negatives`` of its slots
        uniformly without replacement (shared by the batch; each anchor's own
        slot left out), so an epoch costs ``O(n_samples * n_negatives)``
        similarities instead of ``O(n_samples**2)``. ``None``, or a value of
        at least ``n_samples``, uses the whole bank in every step (the
        paper's rule).
    crop_scale : tuple of float, default=(0.5, 1.0)
        Range of the area fraction of the random resized crops.
    rotation : float, default=15.0
        Largest random rotation of a view, in degrees.
    flip : bool, default=True
        Mirror half of the views left to right.
    color_jitter : float, default=0.4
        Strength of the random brightness, contrast and (RGB) saturation
        changes of a view; 0 turns them off.
    batch_size : int or None, default=128
        Samples per step. ``None``, or a value of at least ``n_samples``, means
        one full batch per epoch.
    n_epochs : int, default=10
        Epochs of self-expressive training.
    n_pretrain_epochs : int, default=50
        Epochs of contrastive pretraining of the encoder.
    learning_rate : float, default=1e-3
        Adam learning rate of pretraining and of the coefficients, and of the
        encoder before the ``scale_encoder_lr`` rule.
    lambda_coef : float, default=1.0
        Weight of the coefficient penalty ``||C||^2``.
    lambda_self : float, default=10.0
        Weight of the self-expression penalty ``||Z - CZ||^2``.
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
        How batch codes are written to the memory bank.
    scale_encoder_lr : bool, default=True
        In self-expressive training, divide the encoder's (backbone and head)
        learning rate by ``k``, the number of batches per epoch, so that the
        codes in the bank stay consistent.
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
        Training device; ``"auto"`` uses CUDA when present. Augmentations run
        there too.
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
        Seeds initialisation, augmentations, batch order and spectral
        clustering. The same seed gives the same labels on the CPU; on CUDA
        some kernels are not deterministic.
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
        Self-expression coefficients (zero diagonal); sparse, with
        ``n_nonzero`` entries per row, in the sparse mode.
    self_expression_ : {"dense", "sparse"}
        The self-expression mode used (``self_expression="auto"`` resolved).
    affinity_ : {"dsc", "symmetric"}
        The affinity that ``affinity_matrix_`` was built with
        (``affinity="auto"`` resolved for ``self_expression_``).
    threshold_ : float
        The threshold applied to ``coef_`` before the affinity
        (``threshold="auto"`` resolved for ``self_expression_``).
    embedding_ : ndarray of shape (n_samples, projection_dim)
        Codes of the training samples from the final encoder.
    history_ : list of dict
        One entry per epoch (``phase`` "pretrain" or "self-expression") with
        the mean loss terms and the seconds it took; ``phase="restart"`` marks
        a discarded initialisation whose codes had collapsed and
        ``phase="refresh"`` a new search for the sparse candidates (with the
        fraction of candidates that ``changed``).
    n_iter_ : int
        Epochs of self-expressive training run.
    member_agreement_ : ndarray of shape (n_init,)
        With ``n_init > 1``: each member's mean adjusted Rand index with the
        other members' labels.
    best_member_ : int
        With ``n_init > 1``: index of the member kept.
    network_ : torch.nn.Module
        The fitted encoder (:class:`skdsc.nn.ProjectionEncoder`).
    device_ : torch.device
        Device the network lives on.
    input_scale_ : float
        Largest absolute value of the training data; inputs are divided by it
        (so images in [0, 255] or [0, 1] both reach the encoder in [0, 1])
        before the encoder's normalisation.
    n_features_in_ : int
        Number of features seen during fit.
    feature_names_in_ : ndarray of shape (`n_features_in_`,)
        Names of features seen during fit, when ``X`` has string column names.

    See Also
    --------
    MiniBatchDeepSubspaceClustering : The autoencoder-based estimator.

    References
    ----------
    Jiang, Yu, Lin and Liu, "A mini-batch training strategy for deep subspace
    clustering networks", 2025.

    Examples
    --------
    >>> import numpy as np
    >>> from skdsc import ContrastiveDSC
    >>> X = np.random.default_rng(0).random((40, 64))
    >>> model = ContrastiveDSC(n_clusters=2, image_shape=(8, 8), encoder="test_resnet",
    ...                        n_epochs=2, n_pretrain_epochs=2, batch_size=20,
    ...                        random_state=0).fit(X)
    >>> model.labels_.shape
    (40,)
    """

    _parameter_constraints: dict = {
        **BaseDeepSubspaceClustering._parameter_constraints,
        "encoder": [str],
        "pretrained": ["boolean", str, os.PathLike],
        "freeze_encoder": ["boolean"],
        "input_size": [Interval(Integral, 1, None, closed="left"), tuple, list, None],
        "projection_dim": [Interval(Integral, 1, None, closed="left")],
        "temperature": [Interval(Real, 0, None, closed="neither")],
        "n_negatives": [Interval(Integral, 1, None, closed="left"), None],
        "crop_scale": [tuple, list],
        "rotation": [Interval(Real, 0, 180, closed="both")],
        "flip": ["boolean"],
        "color_jitter": [Interval(Real, 0, 1, closed="both")],
        "n_pretrain_epochs": [Interval(Integral, 0, None, closed="left")],
    }

    def __init__(self, n_clusters=8, *, image_shape=None, encoder="resnet18", pretrained=False,
                 freeze_encoder=False, input_size=None, projection_dim=128, temperature=0.2,
                 n_negatives=4096, crop_scale=(0.5, 1.0), rotation=15.0, flip=True,
                 color_jitter=0.4,
                 batch_size=128, n_epochs=10, n_pretrain_epochs=50, learning_rate=1e-3,
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
        self.encoder = encoder
        self.pretrained = pretrained
        self.freeze_encoder = freeze_encoder
        self.input_size = input_size
        self.projection_dim = projection_dim
        self.temperature = temperature
        self.n_negatives = n_negatives
        self.crop_scale = crop_scale
        self.rotation = rotation
        self.flip = flip
        self.color_jitter = color_jitter
        self.n_pretrain_epochs = n_pretrain_epochs

    # -- network --------------------------------------------------------------

    def _input_shape(self, n_features):
        if self.image_shape is None:
            return (1, 1, n_features)
        return super()._input_shape(n_features)

    def _resize_to(self, image_size):
        """``(height, width)`` the backbone sees, or None to keep ``image_size``."""
        if self.input_size is None:
            return None
        size = self.input_size
        if isinstance(size, Integral):
            size = (size, size)
        size = tuple(size)
        if len(size) != 2 or not all(isinstance(s, Integral) and s > 0 for s in size):
            raise ValueError(
                "input_size must be a positive int or (height, width) of positive integers, "
                f"got {self.input_size!r}."
            )
        return None if size == tuple(image_size) else tuple(int(s) for s in size)

    def _augmentation(self):
        return Augmentation(crop_scale=check_crop_scale(self.crop_scale, "crop_scale"),
                            rotation=float(self.rotation), flip=bool(self.flip),
                            jitter=float(self.color_jitter))

    def _check_params_vs_input(self, X, device):
        input_shape, mode = super()._check_params_vs_input(X, device)
        self._augmentation()
        self._resize_to(input_shape[1:])
        return input_shape, mode

    def _build_network(self, input_shape):
        channels, image_size = input_shape[0], input_shape[1:]
        resize = self._resize_to(image_size)
        backbone = create_backbone(self.encoder, in_chans=channels,
                                   image_size=resize or image_size, pretrained=self.pretrained)
        mean, std = channel_statistics(resolve_model_data_config(backbone), channels)
        network = ProjectionEncoder(backbone, self.projection_dim, mean, std, input_size=resize)
        if self.freeze_encoder:
            network.freeze_backbone()
        return network

    def _memory_remedies(self):
        return ["a smaller input_size or encoder", "freeze_encoder=True"]

    # -- training -------------------------------------------------------------

    def _pretraining_objective(self, network, generator, device):
        augment = self._augmentation()
        views = device_generator(generator, device)

        def loss(x):
            return paired_info_nce_loss(network.encode(augment(x, views)),
                                        network.encode(augment(x, views)), self.temperature)

        return Objective(
            "contrastive", loss, [{"params": _trainable(network)}], {"views": views},
            divergence_hint=f"Lower learning_rate (now {self.learning_rate}) or raise "
                            f"temperature (now {self.temperature}).",
        )

    def _self_expression_objective(self, network, bank, inputs, generator, encoder_lr):
        augment = self._augmentation()
        views = device_generator(generator, inputs.device)
        generators = {"views": views}
        n_negatives = self.n_negatives
        sampled = n_negatives is not None and bank.n_slots > n_negatives
        if sampled:
            # Made only when there is something to draw, so that a bank of at
            # most n_negatives codes leaves every random stream as it was.
            generators["negatives"] = device_generator(generator, inputs.device)

        def loss(x, codes, expressed, indices):
            # The self-expressed code is the anchor, another view of the same
            # sample its positive, and the other codes in the bank (all, or a
            # fresh uniform draw of n_negatives slots) the negatives.
            positives = network.encode(augment(x, views))
            if not sampled:
                return info_nce_loss(expressed, positives, bank.codes, self.temperature,
                                     exclude=_own_slots(bank, indices))
            # Only the drawn codes are gathered and normalised: (n_negatives, d)
            # per step rather than the whole bank.
            slots = _sampled_slots(bank.n_slots, n_negatives, generators["negatives"])
            return info_nce_loss(expressed, positives, bank.codes[slots], self.temperature,
                                 exclude=_own_slots(bank, indices, slots))

        return Objective("contrastive", loss, [{"params": _trainable(network), "lr": encoder_lr}],
                         generators, self._divergence_hint())
