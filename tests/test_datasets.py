"""Loaders and synthetic data (skdsc.datasets)."""

from pathlib import Path

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal
from scipy.io import savemat

from skdsc.datasets import load_mat, load_npz, make_subspaces

# The repository is cloned with shared/ beside it; the real files are optional.
DATA_DIR = Path(__file__).resolve().parents[2] / "shared" / "data"


def data_file(name):
    path = DATA_DIR / name
    if not path.is_file():
        pytest.skip(f"{name} not found in {DATA_DIR}")
    return path


# -- load_mat -----------------------------------------------------------------

def _write_deng_cai_mat(path, images, labels):
    """Save images the MATLAB way: one image per row, flattened column-major."""
    fea = np.stack([image.flatten(order="F") for image in images])
    savemat(path, {"fea": fea, "gnd": labels.reshape(-1, 1)})


@pytest.mark.parametrize("dtype", [np.uint8, np.float64])
def test_load_mat_returns_upright_images(tmp_path, dtype):
    """Column-major rows come back in C order: X[i].reshape(H, W) is the image."""
    rng = np.random.RandomState(0)
    height, width = 4, 6  # not square, so a transposition cannot go unnoticed
    if dtype == np.uint8:
        images = rng.randint(0, 256, (5, height, width)).astype(np.uint8)
        expected = images / 255.0
    else:
        images = rng.uniform(0, 1, (5, height, width))
        expected = images
    labels = np.array([3, 1, 3, 2, 1])  # 1-based, as in the standard files
    path = tmp_path / "faces.mat"
    _write_deng_cai_mat(path, images, labels)

    X, y = load_mat(path, (height, width))
    assert X.shape == (5, height * width) and X.dtype == np.float32
    assert_allclose(X.reshape(5, height, width), expected, rtol=1e-6)
    assert_array_equal(y, [2, 0, 2, 1, 0])
    assert y.dtype == np.int64


def test_load_mat_other_keys(tmp_path):
    images = np.arange(2 * 3 * 2, dtype=np.float64).reshape(2, 3, 2) / 20
    path = tmp_path / "data.mat"
    savemat(path, {"X": np.stack([i.flatten(order="F") for i in images]), "labels": [[5], [9]]})
    X, y = load_mat(path, (3, 2), data_key="X", target_key="labels")
    assert_allclose(X.reshape(2, 3, 2), images, rtol=1e-6)
    assert_array_equal(y, [0, 1])


def test_load_mat_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="No .mat file at"):
        load_mat(tmp_path / "missing.mat", (2, 2))
    path = tmp_path / "data.mat"
    savemat(path, {"fea": np.zeros((3, 4)), "gnd": np.ones((3, 1))})
    with pytest.raises(KeyError, match="no variable 'X'.*'fea', 'gnd'"):
        load_mat(path, (2, 2), data_key="X")
    with pytest.raises(ValueError, match=r"'fea'.*has shape \(3, 4\).*image_shape=\(3, 3\)"):
        load_mat(path, (3, 3))


def test_load_orl():
    """The real ORL file: 400 upright 32x32 faces of 40 people, scaled to [0, 1]."""
    X, y = load_mat(data_file("ORL_32x32.mat"), (32, 32))
    assert X.shape == (400, 1024) and X.dtype == np.float32
    assert X.min() >= 0 and X.max() <= 1 and X.max() > 0.5
    assert_array_equal(np.bincount(y), np.full(40, 10))
    # Upright faces are nearly symmetric left-right, far from it top-bottom;
    # transposed images would show the opposite.
    mean_face = X.reshape(-1, 32, 32).mean(0)
    left_right = np.abs(mean_face - mean_face[:, ::-1]).mean()
    top_bottom = np.abs(mean_face - mean_face[::-1, :]).mean()
    assert left_right < 0.5 * top_bottom


def test_load_coil20():
    X, y = load_mat(data_file("COIL20.mat"), (32, 32))
    assert X.shape == (1440, 1024) and X.dtype == np.float32
    assert X.min() >= 0 and X.max() == pytest.approx(1.0)
    assert_array_equal(np.bincount(y), np.full(20, 72))


def test_coil100_gray_mat_matches_rgb_npz():
    """Both loaders orient images alike: the luma of the RGB .npz (HWC -> CHW)
    is the grayscale .mat (column-major), to within Pillow's rounding."""
    gray, y_gray = load_mat(data_file("COIL100_32x32.mat"), (32, 32))
    rgb, y_rgb = load_npz(data_file("COIL100_32x32_rgb.npz"))
    assert gray.shape == (7200, 1024) and rgb.shape == (7200, 3 * 1024)
    assert_array_equal(y_gray, y_rgb)
    channels = rgb.reshape(-1, 3, 32, 32)
    luma = 0.299 * channels[:, 0] + 0.587 * channels[:, 1] + 0.114 * channels[:, 2]
    assert np.abs(luma - gray.reshape(-1, 32, 32)).max() <= 1 / 255


# -- load_npz -----------------------------------------------------------------

def test_load_npz_list_keys_and_hwc_images(tmp_path):
    """Lists of keys are concatenated in order; (H, W, C) images become (C, H, W)."""
    rng = np.random.RandomState(0)
    train = rng.randint(0, 256, (4, 5, 6, 3)).astype(np.uint8)
    test = rng.randint(0, 256, (2, 5, 6, 3)).astype(np.uint8)
    path = tmp_path / "images.npz"
    np.savez(path, x_train=train, x_test=test, y_train=[7, 7, 8, 9], y_test=[9, 8])

    X, y = load_npz(path, data_key=["x_train", "x_test"], target_key=["y_train", "y_test"])
    images = np.concatenate([train, test])
    assert X.shape == (6, 3 * 5 * 6) and X.dtype == np.float32
    assert_allclose(X.reshape(6, 3, 5, 6), images.transpose(0, 3, 1, 2) / 255.0, rtol=1e-6)
    assert_array_equal(y, [0, 0, 1, 2, 2, 1])


def test_load_npz_grayscale_and_float_data(tmp_path):
    """(H, W) images are flattened as they are; floats above 1 are divided by their peak."""
    images = np.arange(2 * 3 * 4, dtype=np.float64).reshape(2, 3, 4)
    path = tmp_path / "gray.npz"
    np.savez(path, X=images, y=[1, 0])
    X, y = load_npz(path)
    assert_allclose(X, images.reshape(2, -1) / images.max(), rtol=1e-6)
    assert_array_equal(y, [1, 0])


def test_load_npz_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="No .npz file at"):
        load_npz(tmp_path / "missing.npz")
    path = tmp_path / "data.npz"
    np.savez(path, X=np.zeros((2, 3)), y=[0, 1])
    with pytest.raises(KeyError, match="no array 'x_test'.*'X', 'y'"):
        load_npz(path, data_key=["X", "x_test"])


# -- make_subspaces -----------------------------------------------------------

def test_make_subspaces_shapes():
    X, y = make_subspaces(n_clusters=4, n_samples_per_cluster=7, n_features=12,
                          subspace_dim=3, random_state=0)
    assert X.shape == (28, 12) and X.dtype == np.float32
    assert y.shape == (28,) and y.dtype == np.int64
    assert_array_equal(np.bincount(y), [7, 7, 7, 7])


@pytest.mark.parametrize("subspace_dim", [1, 2, 4])
def test_make_subspaces_cluster_rank(subspace_dim):
    """Without noise each cluster spans exactly subspace_dim dimensions, with
    unit-norm rows, and the clusters together span more."""
    X, y = make_subspaces(n_clusters=3, n_samples_per_cluster=20, n_features=15,
                          subspace_dim=subspace_dim, noise=0.0, random_state=0)
    for k in range(3):
        assert np.linalg.matrix_rank(X[y == k], tol=1e-4) == subspace_dim
    assert np.linalg.matrix_rank(X, tol=1e-4) == 3 * subspace_dim
    assert_allclose(np.linalg.norm(X, axis=1), 1.0, rtol=1e-5)


def test_make_subspaces_noise_makes_full_rank():
    X, y = make_subspaces(n_clusters=2, n_samples_per_cluster=20, n_features=10,
                          subspace_dim=2, noise=0.1, random_state=0)
    assert np.linalg.matrix_rank(X[y == 0], tol=1e-4) == 10


def test_make_subspaces_random_state():
    first, _ = make_subspaces(random_state=3)
    assert_array_equal(make_subspaces(random_state=3)[0], first)
    assert not np.allclose(make_subspaces(random_state=4)[0], first)


def test_make_subspaces_dim_too_large():
    with pytest.raises(ValueError, match="subspace_dim=5 cannot exceed n_features=4"):
        make_subspaces(n_features=4, subspace_dim=5)
