"""Loaders for the standard subspace clustering files and synthetic data.

Fetchers (download on first use, verify the sha256, cache in :func:`get_data_home`):

- :func:`fetch_orl`: ORL faces, 32x32, 40 classes.
- :func:`fetch_coil20`: COIL-20 objects, 32x32 grayscale, 20 classes.
- :func:`fetch_coil100`: COIL-100 objects from the original PNG files, 100 classes.
- :func:`fetch_mnist`: MNIST digits, 28x28, 10 classes.
- :func:`get_data_home`: the folder where downloaded files are kept.

Loaders of local files: :func:`load_mat`, :func:`load_npz`. Synthetic data:
:func:`make_subspaces`.
"""

import numpy as np
from sklearn.utils import check_random_state

from ._fetchers import (  # noqa: F401  (re-exported)
    fetch_coil20, fetch_coil100, fetch_mnist, fetch_orl, get_data_home,
)
from ._loaders import load_mat, load_npz  # noqa: F401  (re-exported)


def make_subspaces(n_clusters=5, n_samples_per_cluster=50, *, n_features=30,
                   subspace_dim=3, noise=0.01, random_state=None):
    """Samples from a union of random linear subspaces.

    Each cluster spans a random ``subspace_dim``-dimensional subspace of
    ``R^n_features``; samples are random combinations of its basis, normalised to
    unit length, plus isotropic Gaussian noise.

    Parameters
    ----------
    n_clusters : int, default=5
        Number of subspaces.
    n_samples_per_cluster : int, default=50
        Samples drawn from each subspace.
    n_features : int, default=30
        Ambient dimension.
    subspace_dim : int, default=3
        Dimension of each subspace.
    noise : float, default=0.01
        Standard deviation of the added noise.
    random_state : int, RandomState instance or None, default=None

    Returns
    -------
    X : ndarray of shape (n_clusters * n_samples_per_cluster, n_features), float32
    y : ndarray of shape (n_clusters * n_samples_per_cluster,), int64
    """
    if subspace_dim > n_features:
        raise ValueError(f"subspace_dim={subspace_dim} cannot exceed n_features={n_features}.")
    rng = check_random_state(random_state)
    blocks = []
    for _ in range(n_clusters):
        basis, _ = np.linalg.qr(rng.standard_normal((n_features, subspace_dim)))
        points = rng.standard_normal((n_samples_per_cluster, subspace_dim)) @ basis.T
        blocks.append(points / np.linalg.norm(points, axis=1, keepdims=True))
    X = np.vstack(blocks) + noise * rng.standard_normal((n_clusters * n_samples_per_cluster, n_features))
    y = np.repeat(np.arange(n_clusters), n_samples_per_cluster)
    return X.astype(np.float32), y.astype(np.int64)
