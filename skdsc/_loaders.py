"""Readers of local data files, shared by :mod:`skdsc.datasets` and the fetchers.

They live apart from :mod:`skdsc.datasets`, which re-exports them, so that
``skdsc._fetchers`` can use them without importing :mod:`skdsc.datasets` (which
imports ``skdsc._fetchers``).
"""

from pathlib import Path

import numpy as np
from scipy.io import loadmat

__all__ = ["load_mat", "load_npz"]


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
