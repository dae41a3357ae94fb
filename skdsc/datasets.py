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

from pathlib import Path

import numpy as np
from scipy.io import loadmat
from sklearn.utils import check_random_state

from ._fetchers import (  # noqa: F401  (re-exported)
    fetch_coil20, fetch_coil100, fetch_mnist, fetch_orl, get_data_home,
)


def load_mat(path, image_shape, *, data_key="fea", target_key="gnd"):
    """Read a ``.mat`` file in the Deng Cai layout used by ORL, COIL-20 and COIL-100.

    Rows of ``data_key`` are images flattened in MATLAB column-major order; they
    are returned flattened in C (row-major) order, so that
    ``X[i].reshape(image_shape)`` is the upright image, and scaled to [0, 1].

    Parameters
    ----------
    path : str or path-like
        The ``.mat`` file.
    image_shape : tuple of int
        ``(height, width)`` of the images.
    data_key, target_key : str, default="fea", "gnd"
        Variable names of the data and of the labels.

    Returns
    -------
    X : ndarray of shape (n_samples, height * width), dtype float32
    y : ndarray of shape (n_samples,), dtype int64
        Labels renumbered 0..n_classes-1 in sorted order.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No .mat file at {path}.")
    contents = loadmat(path)
    for key in (data_key, target_key):
        if key not in contents:
            found = sorted(k for k in contents if not k.startswith("__"))
            raise KeyError(f"{path} has no variable {key!r}; it holds {found}.")
    height, width = image_shape
    raw = np.asarray(contents[data_key])
    if raw.ndim != 2 or raw.shape[1] != height * width:
        raise ValueError(
            f"{data_key!r} in {path} has shape {raw.shape}; expected (n_samples, "
            f"{height * width}) for image_shape={image_shape}."
        )
    images = raw.reshape(-1, width, height).transpose(0, 2, 1)
    X = _to_unit_range(images.reshape(len(raw), -1))
    _, y = np.unique(np.ravel(contents[target_key]), return_inverse=True)
    return X, y.astype(np.int64)


def load_npz(path, *, data_key="X", target_key="y"):
    """Read images and labels from a ``.npz`` file.

    Parameters
    ----------
    path : str or path-like
        The ``.npz`` file.
    data_key, target_key : str, default="X", "y"
        Array names. ``data_key`` may also be a list of names whose arrays are
        concatenated (e.g. ``["x_train", "x_test"]``), and ``target_key``
        likewise.

    Returns
    -------
    X : ndarray of shape (n_samples, n_features), dtype float32
        Each sample flattened in C order (``(H, W, C)`` images become
        ``(C, H, W)`` first) and scaled to [0, 1].
    y : ndarray of shape (n_samples,), dtype int64
        Labels renumbered 0..n_classes-1.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No .npz file at {path}.")
    with np.load(path) as contents:
        data = _gather(contents, data_key, path)
        target = _gather(contents, target_key, path)
    if data.ndim == 4 and data.shape[-1] in (1, 3):
        data = data.transpose(0, 3, 1, 2)
    X = _to_unit_range(data.reshape(len(data), -1))
    _, y = np.unique(target.ravel(), return_inverse=True)
    return X, y.astype(np.int64)


def _gather(contents, keys, path):
    keys = [keys] if isinstance(keys, str) else list(keys)
    missing = [k for k in keys if k not in contents.files]
    if missing:
        raise KeyError(f"{path} has no array {missing[0]!r}; it holds {sorted(contents.files)}.")
    return np.concatenate([contents[k] for k in keys])


def _to_unit_range(data):
    """float32 in [0, 1]: integers are divided by 255, floats by their maximum above 1."""
    data = np.asarray(data)
    if np.issubdtype(data.dtype, np.integer):
        return (data / 255.0).astype(np.float32)
    data = data.astype(np.float32)
    peak = float(np.abs(data).max()) if data.size else 0.0
    return data / peak if peak > 1 else data


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
