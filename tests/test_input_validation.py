"""Errors a user can cause: each names the input or parameter at fault."""

import sys

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from sklearn.exceptions import NotFittedError

import skdsc._base as base_module

from conftest import small_contrastive, small_estimator

# -- the data -----------------------------------------------------------------


@pytest.mark.parametrize("bad, match", [
    (np.nan, "Input X contains NaN"),
    (np.inf, "Input X contains infinity"),
    (-np.inf, "Input X contains infinity"),
])
def test_non_finite_X(any_estimator, subspace_data, bad, match):
    """NaN and +-inf are refused in fit and in predict."""
    make_estimator, fitted_small = any_estimator
    X, _ = subspace_data
    X = X.copy()
    X[3, 2] = bad
    with pytest.raises(ValueError, match=match):
        make_estimator().fit(X)
    with pytest.raises(ValueError, match=match):
        fitted_small.predict(X)


def test_1d_X(any_estimator, subspace_data):
    make_estimator, fitted_small = any_estimator
    X, _ = subspace_data
    with pytest.raises(ValueError, match="Expected 2D array, got 1D array"):
        make_estimator().fit(X[:, 0])
    with pytest.raises(ValueError, match="Expected 2D array, got 1D array"):
        fitted_small.predict(X[0])


def test_3d_X(any_estimator, subspace_data):
    """Images must be given flattened, with image_shape; 3-D arrays are refused."""
    make_estimator, _ = any_estimator
    X, _ = subspace_data
    with pytest.raises(ValueError, match="Found array with dim 3"):
        make_estimator().fit(X.reshape(len(X), 2, 5))


def test_one_sample(any_estimator, subspace_data):
    make_estimator, _ = any_estimator
    X, _ = subspace_data
    with pytest.raises(ValueError, match="1 sample.*minimum of 2 is required"):
        make_estimator().fit(X[:1])


def test_empty_X(any_estimator, subspace_data):
    make_estimator, fitted_small = any_estimator
    X, _ = subspace_data
    with pytest.raises(ValueError, match="0 sample"):
        make_estimator().fit(X[:0])
    with pytest.raises(ValueError, match="0 sample"):
        fitted_small.predict(X[:0])


def test_fewer_samples_than_clusters(any_estimator, subspace_data):
    make_estimator, _ = any_estimator
    X, _ = subspace_data
    with pytest.raises(ValueError, match=r"n_samples=4 should be >= n_clusters=5"):
        make_estimator(n_clusters=5).fit(X[:4])


def test_wrong_number_of_features_in_predict(any_estimator, subspace_data):
    _, fitted_small = any_estimator
    X, _ = subspace_data
    with pytest.raises(ValueError, match="X has 3 features.*expecting 10 features"):
        fitted_small.predict(X[:, :3])
    with pytest.raises(ValueError, match="X has 3 features.*expecting 10 features"):
        fitted_small.encode(X[:, :3])


def test_non_numeric_X(any_estimator):
    """Strings that are not numbers: the error names X (NumPy's alone does not)."""
    make_estimator, fitted_small = any_estimator
    words = np.array([["a", "b"], ["c", "d"], ["e", "f"]], dtype=object)
    with pytest.raises(ValueError, match="X must hold numbers.*could not convert"):
        make_estimator().fit(words)
    words = np.full((2, 10), "x", dtype=object)
    with pytest.raises(ValueError, match="X must hold numbers.*could not convert"):
        fitted_small.predict(words)


def test_complex_X(any_estimator, subspace_data):
    make_estimator, _ = any_estimator
    X, _ = subspace_data
    with pytest.raises(ValueError, match="Complex data not supported"):
        make_estimator().fit(X + 1j)


@pytest.mark.parametrize("fmt", ["csr", "csc", "coo"])
def test_sparse_X(any_estimator, subspace_data, fmt):
    """Dense data only: the message names X and says how to densify."""
    make_estimator, fitted_small = any_estimator
    X, _ = subspace_data
    with pytest.raises(TypeError, match=r"Sparse data was passed for X.*toarray"):
        make_estimator().fit(sp.random(20, 10, density=0.5, format=fmt, random_state=0))
    with pytest.raises(TypeError, match=r"Sparse data was passed for X"):
        fitted_small.predict(sp.csr_matrix(X))


# -- image_shape --------------------------------------------------------------

@pytest.mark.parametrize("image_shape", [(3, 3), (1, 2, 4), [2, 6]])
def test_image_shape_not_matching_n_features(any_estimator, subspace_data, image_shape):
    """The image must hold exactly n_features values."""
    make_estimator, _ = any_estimator
    X, _ = subspace_data  # 10 features
    with pytest.raises(ValueError, match="image_shape.*but X has 10 features"):
        make_estimator(image_shape=image_shape).fit(X)


@pytest.mark.parametrize("image_shape", [
    (0, 10), (-2, -5), (2.0, 5), (1, 1, 2, 5), (10,), (),
])
def test_bad_image_shape_values(any_estimator, subspace_data, image_shape):
    """Two or three positive integers are needed."""
    make_estimator, _ = any_estimator
    X, _ = subspace_data
    with pytest.raises(ValueError, match=r"image_shape must be \(height, width\) or "
                                         r"\(channels, height, width\) of positive integers"):
        make_estimator(image_shape=image_shape).fit(X)


@pytest.mark.parametrize("image_shape", ["2x5", 10])
def test_bad_image_shape_type(any_estimator, subspace_data, image_shape):
    make_estimator, _ = any_estimator
    X, _ = subspace_data
    with pytest.raises(ValueError, match="'image_shape' parameter"):
        make_estimator(image_shape=image_shape).fit(X)


# -- network parameters -------------------------------------------------------

def test_kernel_sizes_length_mismatch(make_estimator, subspace_data):
    X, _ = subspace_data
    est = make_estimator(image_shape=(2, 5), hidden_channels=(4, 4), kernel_sizes=(3,))
    with pytest.raises(ValueError, match="kernel_sizes must have one entry per "
                                         "hidden_channels entry"):
        est.fit(X)


@pytest.mark.parametrize("name, value", [
    ("hidden_channels", (4, -1)), ("hidden_channels", (4.5,)),
    ("kernel_sizes", (0,)), ("kernel_sizes", (3.0,)),
])
def test_bad_conv_layers(make_estimator, subspace_data, name, value):
    X, _ = subspace_data
    est = make_estimator(image_shape=(2, 5), **{name: value})
    with pytest.raises(ValueError, match=f"{name} must be a non-empty sequence of "
                                         "positive integers"):
        est.fit(X)


@pytest.mark.parametrize("value", [(), (16, 0), [8.0]])
def test_bad_hidden_units(make_estimator, subspace_data, value):
    X, _ = subspace_data
    with pytest.raises(ValueError, match="hidden_units must be a non-empty sequence"):
        make_estimator(hidden_units=value).fit(X)


def test_pretrain_augmentation_needs_images(make_estimator, subspace_data):
    X, _ = subspace_data
    with pytest.raises(ValueError, match="pretrain_augmentation needs images: set image_shape"):
        make_estimator(pretrain_augmentation=True).fit(X)


@pytest.mark.parametrize("setting, message", [
    ({"shift": 0.1}, r"unknown keys \['shift'\]; accepted keys are \['crop_scale', 'flip', "
                     r"'jitter', 'rotation'\]"),
    ({"crop_scale": (0.0, 1.0)}, r"\['crop_scale'\] must be \(low, high\)"),
    ({"crop_scale": (0.9, 0.5)}, r"\['crop_scale'\] must be \(low, high\)"),
    ({"crop_scale": 0.8}, r"\['crop_scale'\] must be \(low, high\)"),
    ({"rotation": -5.0}, r"\['rotation'\] must be a number of degrees"),
    ({"rotation": "10"}, r"\['rotation'\] must be a number of degrees"),
    ({"jitter": 2.0}, r"\['jitter'\] must be in \[0, 1\]"),
    ({"flip": "yes"}, r"\['flip'\] must be a bool"),
])
def test_bad_pretrain_augmentation(make_estimator, subspace_data, setting, message):
    X, _ = subspace_data
    est = make_estimator(image_shape=(2, 5), pretrain_augmentation=setting)
    with pytest.raises(ValueError, match=message):
        est.fit(X)
    assert not hasattr(est, "network_")


def test_pretrain_augmentation_type(make_estimator, subspace_data):
    X, _ = subspace_data
    with pytest.raises(ValueError, match="'pretrain_augmentation' parameter"):
        make_estimator(image_shape=(2, 5), pretrain_augmentation="mild").fit(X)


@pytest.mark.parametrize("kernel_sizes", [(2,), (4,), (9,)])
def test_unusual_kernel_sizes_fit(make_estimator, subspace_data, kernel_sizes):
    """Even kernels, and kernels larger than the image, still give a working model."""
    X, _ = subspace_data
    model = make_estimator(image_shape=(2, 5), kernel_sizes=kernel_sizes).fit(X)
    assert model.encode(X).shape[0] == len(X)


# -- other parameters (checked by sklearn's parameter validation) -------------

@pytest.mark.parametrize("name, value", [
    ("n_clusters", 0), ("n_clusters", 2.5), ("batch_size", 0), ("n_epochs", -1),
    ("n_pretrain_epochs", -1), ("learning_rate", 0.0), ("learning_rate", -1e-3),
    ("lambda_coef", -1.0), ("lambda_self", 0.0), ("bank_update", "lifo"),
    ("scale_encoder_lr", "yes"), ("affinity", "foo"), ("threshold", 0),
    ("threshold", 1.5), ("threshold", "none"), ("subspace_dim", 0), ("affinity_power", 0.0),
    ("assign_labels", "discretize"), ("n_components", 0), ("n_components", 2.5),
    ("n_components", "all"),
    ("self_expression", "lowrank"), ("self_expression", None), ("n_nonzero", 0),
    ("n_nonzero", 2.5), ("refresh_epochs", -1), ("device", 5), ("random_state", "seed"), ("hidden_units", "abc"),
    ("hidden_channels", 4), ("kernel_sizes", None),
    ("hidden_channels", "wide"), ("kernel_sizes", "big"), ("n_epochs", "many"),
    ("n_pretrain_epochs", "auto-ish"), ("bank_momentum", 1.0), ("bank_momentum", -0.1),
    ("normalize_losses", "yes"), ("n_init", 0), ("n_init", 1.5),
    ("neighbor_search", "annoy"), ("eigen_solver", "lobpcg"),
])
def test_invalid_parameter_values(make_estimator, subspace_data, name, value):
    """Each invalid value is reported with the parameter's name, before training."""
    X, _ = subspace_data
    with pytest.raises(ValueError, match=f"The '{name}' parameter of "
                                         "MiniBatchDeepSubspaceClustering must be"):
        make_estimator(**{name: value}).fit(X)


@pytest.mark.parametrize("params, message", [
    (dict(n_components=61), r"n_components must be 'auto' or an int in \[1, n_samples=60\]"),
    (dict(assign_labels="cluster_qr", n_components=4),
     "assign_labels='cluster_qr' reads one cluster per eigenvector"),
])
def test_n_components_checked_before_training(any_estimator, subspace_data, monkeypatch,
                                             params, message):
    """An embedding size that the post-processing cannot use fails before any training."""
    make_estimator, _ = any_estimator
    X, _ = subspace_data
    monkeypatch.setattr(base_module, "pretrained_network", _must_not_train)
    with pytest.raises(ValueError, match=message):
        make_estimator(**params).fit(X)


@pytest.mark.parametrize("factory, params, image_shape, message", [
    (small_estimator, dict(pretrain_augmentation=True), None, "pretrain_augmentation needs images"),
    (small_estimator, dict(pretrain_augmentation={"zoom": 2}), (2, 5), "unknown keys"),
    (small_estimator, dict(hidden_channels=(4, 4), kernel_sizes=(3,)), (2, 5),
     "kernel_sizes must have one entry per hidden_channels entry"),
    (small_estimator, dict(hidden_units=(8, 0)), None, "hidden_units must be"),
    (small_contrastive, dict(input_size=(32,)), (2, 5), "input_size must be"),
    (small_contrastive, dict(crop_scale=(0.9, 0.1)), (2, 5), "crop_scale"),
    (small_estimator, dict(self_expression="sparse", bank_update="fifo"), None,
     "self_expression='sparse' needs bank_update='index'"),
])
def test_data_dependent_checks_run_before_training(subspace_data, monkeypatch, factory, params,
                                                   image_shape, message):
    """Every parameter that is checked against the data fails before any training."""
    X, _ = subspace_data
    monkeypatch.setattr(base_module, "pretrained_network", _must_not_train)
    with pytest.raises(ValueError, match=message):
        factory(image_shape=image_shape, **params).fit(X)


@pytest.mark.parametrize("params, module, message", [
    (dict(self_expression="sparse", neighbor_search="faiss"), "faiss",
     "neighbor_search='faiss' needs the faiss package"),
    (dict(eigen_solver="amg"), "pyamg", "eigen_solver='amg' needs the pyamg package"),
])
def test_missing_optional_dependency_fails_before_training(any_estimator, subspace_data,
                                                           monkeypatch, params, module, message):
    """A solver whose package is missing is named, with the install, before any training."""
    make_estimator, _ = any_estimator
    X, _ = subspace_data
    monkeypatch.setitem(sys.modules, module, None)  # not importable, installed or not
    monkeypatch.setattr(base_module, "pretrained_network", _must_not_train)
    with pytest.raises(ImportError, match=message):
        make_estimator(**params).fit(X)


def _must_not_train(*args, **kwargs):
    raise AssertionError("training started")


@pytest.mark.parametrize("device", ["tpu", "gpu", "cuda:x"])
def test_unknown_device(any_estimator, subspace_data, device):
    make_estimator, _ = any_estimator
    X, _ = subspace_data
    with pytest.raises(ValueError, match="device must be 'auto', 'cpu'"):
        make_estimator(device=device).fit(X)


def test_device_that_is_not_cpu_or_cuda(any_estimator, subspace_data):
    """torch knows 'meta', but the estimator trains on CPU or CUDA only."""
    make_estimator, _ = any_estimator
    X, _ = subspace_data
    with pytest.raises(ValueError, match="device must be 'auto', 'cpu' or 'cuda', got 'meta'"):
        make_estimator(device="meta").fit(X)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
@pytest.mark.parametrize("device", ["cuda", "cuda:0"])
def test_cuda_requested_without_cuda(any_estimator, subspace_data, device):
    make_estimator, _ = any_estimator
    X, _ = subspace_data
    with pytest.raises(ValueError, match=f"device='{device}' was requested but CUDA is "
                                         "not available"):
        make_estimator(device=device).fit(X)


# -- state --------------------------------------------------------------------

@pytest.mark.parametrize("method", ["predict", "encode"])
def test_not_fitted(any_estimator, subspace_data, method):
    make_estimator, _ = any_estimator
    X, _ = subspace_data
    with pytest.raises(NotFittedError, match="not fitted yet"):
        getattr(make_estimator(), method)(X)


@pytest.mark.parametrize("params, error", [
    ({"image_shape": (3, 3)}, ValueError),
    ({"learning_rate": 1e10}, FloatingPointError),
])
def test_failed_fit_leaves_estimator_unfitted(any_estimator, subspace_data, params, error):
    """A fit that fails part-way is not mistaken for a fitted model."""
    make_estimator, _ = any_estimator
    X, _ = subspace_data
    est = make_estimator(**params)
    with pytest.raises(error):
        est.fit(X)
    with pytest.raises(NotFittedError):
        est.predict(X)


# -- divergence ---------------------------------------------------------------

def test_diverging_pretraining_names_learning_rate(make_estimator, subspace_data):
    """A loss that overflows stops fit with advice on the parameter to change."""
    X, _ = subspace_data
    with pytest.raises(FloatingPointError,
                       match=r"pretrain loss became (nan|inf).*learning_rate \(now 1"):
        make_estimator(learning_rate=1e10).fit(X)


def test_diverging_self_expression_names_learning_rate(any_estimator, subspace_data):
    make_estimator, _ = any_estimator
    X, _ = subspace_data
    with pytest.raises(FloatingPointError,
                       match=r"self-expression loss became (nan|inf).*learning_rate.*lambda_self"):
        make_estimator(learning_rate=1e10, n_pretrain_epochs=0).fit(X)


def test_explicit_kernel_sizes_must_match_the_auto_network(make_estimator):
    """kernel_sizes given for hidden_channels="auto": one per layer the rule builds."""
    X = np.random.default_rng(0).random((20, 64 * 64))
    model = make_estimator(image_shape=(64, 64), hidden_channels="auto", kernel_sizes=(3,))
    with pytest.raises(ValueError, match=r"kernel_sizes must have one entry per hidden_channels "
                                         r"entry; got 1 kernel sizes for 2 layers \(hidden_"
                                         r"channels='auto' gives \(15, 30\)\)"):
        model.fit(X)
