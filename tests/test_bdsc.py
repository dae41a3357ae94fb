"""Behaviour of MiniBatchDeepSubspaceClustering: fitting, prediction, sklearn API, persistence."""

import inspect
import math
import pickle

import joblib
import numpy as np
import pytest
import torch
from numpy.testing import assert_allclose, assert_array_equal
from sklearn.base import clone
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import GridSearchCV, KFold
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import MinMaxScaler

from skdsc import MiniBatchDeepSubspaceClustering
from skdsc._base import degenerate_codes
from skdsc.datasets import make_subspaces
from skdsc.metrics import accuracy_scorer, clustering_accuracy, embedding_silhouette_scorer
from skdsc.nn import Augmentation, ConvAutoencoder, MLPAutoencoder
from skdsc.spectral import dsc_affinity, symmetric_affinity, threshold_coefficients

SELF_EXPRESSION_TERMS = {"loss", "reconstruction", "self_expression", "coefficient"}


def assert_fitted_attributes(model, n_samples, n_latent):
    """The documented fitted attributes exist and have their promised properties."""
    n_clusters = model.n_clusters
    assert model.labels_.shape == (n_samples,)
    assert model.labels_.dtype == np.int64
    assert set(np.unique(model.labels_)) <= set(range(n_clusters))

    A = model.affinity_matrix_
    assert A.shape == (n_samples, n_samples)
    assert_allclose(A, A.T)
    assert np.all(A >= 0)

    C = model.coef_
    assert C.shape == (n_samples, n_samples)
    assert np.all(np.isfinite(C))
    assert_array_equal(np.diag(C), 0.0)
    assert np.any(C != 0)

    assert model.embedding_.shape == (n_samples, n_latent)
    assert np.all(np.isfinite(model.embedding_))
    assert model.n_iter_ == model.n_epochs
    assert model.device_ == torch.device("cpu")
    assert not model.network_.training  # left in eval mode


def assert_history(history, n_pretrain_epochs, n_epochs, lambda_coef, lambda_self):
    """One record per epoch, pretraining first, with finite, consistent loss terms."""
    assert len(history) == n_pretrain_epochs + n_epochs
    pretrain, self_expr = history[:n_pretrain_epochs], history[n_pretrain_epochs:]
    assert [h["phase"] for h in pretrain] == ["pretrain"] * n_pretrain_epochs
    assert [h["phase"] for h in self_expr] == ["self-expression"] * n_epochs
    assert [h["epoch"] for h in pretrain] == list(range(1, n_pretrain_epochs + 1))
    assert [h["epoch"] for h in self_expr] == list(range(1, n_epochs + 1))
    for record in history:
        assert math.isfinite(record["loss"]) and record["loss"] >= 0
        assert record["seconds"] >= 0
    for record in self_expr:
        assert SELF_EXPRESSION_TERMS <= set(record)
        # The logged total is the weighted sum of the logged terms.
        total = (record["reconstruction"] + lambda_coef * record["coefficient"]
                 + lambda_self * record["self_expression"])
        assert record["loss"] == pytest.approx(total, rel=1e-5)


# -- fitting ------------------------------------------------------------------

def test_fit_mlp_fitted_attributes(fitted_small, subspace_data):
    """Rows that are not images: MLP autoencoder, all attributes as documented."""
    X, _ = subspace_data
    model = fitted_small
    assert isinstance(model.network_, MLPAutoencoder)
    assert_fitted_attributes(model, n_samples=len(X), n_latent=model.hidden_units[-1])
    assert_history(model.history_, model.n_pretrain_epochs, model.n_epochs,
                   model.lambda_coef, model.lambda_self)
    assert model.n_features_in_ == X.shape[1]
    assert model.input_scale_ == pytest.approx(np.abs(X).max())


@pytest.mark.parametrize("image_shape, n_latent", [
    ((8, 8), 4 * 4 * 4),        # (H, W): one channel, 8x8 -> 4 channels of 4x4
    ((3, 5, 4), 4 * 3 * 2),     # (C, H, W) with odd, non-square sizes
])
def test_fit_conv_image_shape(make_estimator, image_shape, n_latent):
    """Rows that are images: convolutional autoencoder with a flat latent code."""
    n_features = int(np.prod(image_shape))
    X, _ = make_subspaces(n_clusters=3, n_samples_per_cluster=10, n_features=n_features,
                          subspace_dim=2, random_state=0)
    model = make_estimator(image_shape=image_shape).fit(X)
    assert isinstance(model.network_, ConvAutoencoder)
    assert model.network_.image_shape == (image_shape if len(image_shape) == 3
                                          else (1, *image_shape))
    assert_fitted_attributes(model, n_samples=len(X), n_latent=n_latent)
    assert_history(model.history_, model.n_pretrain_epochs, model.n_epochs,
                   model.lambda_coef, model.lambda_self)
    assert model.encode(X[:3]).shape == (3, n_latent)


def test_fit_predict_equals_labels(make_estimator, subspace_data):
    """fit_predict returns labels_ (sklearn's check_clustering, minus its ARI bar)."""
    X, _ = subspace_data
    model = make_estimator()
    labels = model.fit_predict(X)
    assert_array_equal(labels, model.labels_)
    assert labels.dtype == np.int64


def test_fit_accepts_lists_and_read_only_arrays(make_estimator, subspace_data, fitted_small):
    """Nested lists and read-only arrays train exactly like a writable ndarray."""
    X, _ = subspace_data
    read_only = X.copy()
    read_only.setflags(write=False)
    for data in (X.tolist(), read_only):
        model = make_estimator().fit(data)
        # Lists become float64, which scales identically: labels and coef match.
        assert_array_equal(model.labels_, fitted_small.labels_)
        assert_allclose(model.coef_, fitted_small.coef_, rtol=1e-5, atol=1e-7)


def test_zero_self_expression_epochs(make_estimator, subspace_data):
    """n_epochs=0 is allowed: only pretraining runs, and n_iter_ says so."""
    X, _ = subspace_data
    model = make_estimator(n_epochs=0).fit(X)
    assert model.n_iter_ == 0
    assert {h["phase"] for h in model.history_} == {"pretrain"}
    assert model.labels_.shape == (len(X),)


def test_verbose_reports_every_epoch(make_estimator, subspace_data, capsys):
    """verbose=2 writes one line per epoch and phase to stderr, verbose=0 nothing."""
    X, _ = subspace_data
    make_estimator(n_epochs=2, n_pretrain_epochs=3, verbose=0).fit(X)
    assert capsys.readouterr().err == ""
    make_estimator(n_epochs=2, n_pretrain_epochs=3, verbose=2).fit(X)
    err = capsys.readouterr().err
    assert "[pretrain] epoch 3/3" in err
    assert "[self-expression] epoch 2/2" in err


# -- randomness and the training schedule -------------------------------------

def test_fully_connected_autoencoder_on_images(make_estimator):
    """hidden_channels=(): a fully connected autoencoder that rebuilds images."""
    X, _ = make_subspaces(n_clusters=3, n_samples_per_cluster=10, n_features=24,
                          subspace_dim=2, random_state=0)
    model = make_estimator(image_shape=(2, 3, 4), hidden_channels=(), hidden_units=(16, 5)).fit(X)
    assert isinstance(model.network_, MLPAutoencoder)
    assert_fitted_attributes(model, n_samples=len(X), n_latent=5)
    images = torch.as_tensor(X[:4] / model.input_scale_, dtype=torch.float32).reshape(4, 2, 3, 4)
    with torch.no_grad():
        assert model.network_(images).shape == (4, 2, 3, 4)
    assert model.encode(X[:3]).shape == (3, 5)


def _pretraining_views(monkeypatch):
    """Record the batches that Augmentation draws views of."""
    seen = []
    original = Augmentation.__call__

    def spy(self, images, generator):
        views = original(self, images, generator)
        seen.append((self, images.clone(), views.clone()))
        return views
    monkeypatch.setattr(Augmentation, "__call__", spy)
    return seen


@pytest.mark.parametrize("setting, rotation, crop_scale", [
    (True, 10.0, (0.8, 1.0)),
    ({"rotation": 30.0, "crop_scale": [0.5, 0.9]}, 30.0, (0.5, 0.9)),
])
def test_pretrain_augmentation_rebuilds_views(monkeypatch, make_estimator, setting,
                                              rotation, crop_scale):
    """Every pretraining step encodes and rebuilds a random view of its batch."""
    X, _ = make_subspaces(n_clusters=3, n_samples_per_cluster=20, n_features=64,
                          subspace_dim=2, random_state=0)
    X = np.abs(X)
    seen = _pretraining_views(monkeypatch)
    params = dict(image_shape=(8, 8), hidden_channels=(), hidden_units=(16, 4),
                  n_pretrain_epochs=2, n_epochs=2)
    model = make_estimator(pretrain_augmentation=setting, **params).fit(X)
    pretraining_steps = 2 * math.ceil(len(X) / model.batch_size)
    # One view per pretraining step; the self-expressive phase sees the images.
    assert len(seen) == pretraining_steps
    augmentation, images, views = seen[0]
    assert (augmentation.rotation, augmentation.crop_scale) == (rotation, crop_scale)
    assert not augmentation.flip and augmentation.jitter == 0.0
    assert images.shape == views.shape == (len(images), 1, 8, 8)
    assert not torch.equal(images, views)
    # Views change the fit, reproducibly for a seed; the codes are of the images.
    again = make_estimator(pretrain_augmentation=setting, **params).fit(X)
    assert_array_equal(again.coef_, model.coef_)
    plain = make_estimator(pretrain_augmentation=None, **params).fit(X)
    assert not np.array_equal(plain.coef_, model.coef_)
    assert_allclose(model.encode(X), model.embedding_, rtol=1e-5, atol=1e-6)


def test_same_random_state_is_reproducible(make_estimator, subspace_data, fitted_small):
    """Same seed on the CPU: bit-identical coefficients, codes and labels."""
    X, _ = subspace_data
    again = make_estimator().fit(X)
    assert_array_equal(again.labels_, fitted_small.labels_)
    assert_array_equal(again.coef_, fitted_small.coef_)
    assert_array_equal(again.embedding_, fitted_small.embedding_)
    other = make_estimator(random_state=1).fit(X)
    assert not np.array_equal(other.coef_, fitted_small.coef_)


def test_fit_leaves_global_torch_rng_alone(make_estimator, subspace_data):
    """Seeding is local to fit: the caller's torch random stream is untouched."""
    X, _ = subspace_data
    torch.manual_seed(123)
    state = torch.random.get_rng_state()
    make_estimator().fit(X)
    assert torch.equal(torch.random.get_rng_state(), state)


def test_batch_size_above_n_samples_is_full_batch(make_estimator, subspace_data):
    """batch_size >= n_samples means one full batch, exactly like batch_size=None."""
    X, _ = subspace_data
    full = make_estimator(batch_size=None).fit(X)
    big = make_estimator(batch_size=10 * len(X)).fit(X)
    assert_array_equal(big.coef_, full.coef_)
    assert_array_equal(big.labels_, full.labels_)


@pytest.mark.parametrize("batch_size", [None, 16, 25])  # 25: tiny last batch is merged
def test_full_and_mini_batch_training_run(make_estimator, subspace_data, batch_size):
    """Full-batch and mini-batch training both fit and log one record per epoch."""
    X, _ = subspace_data
    model = make_estimator(batch_size=batch_size).fit(X)
    assert_fitted_attributes(model, n_samples=len(X), n_latent=4)
    assert_history(model.history_, 5, 5, 1.0, 1.0)


def test_mini_batches_change_training(make_estimator, subspace_data):
    """Mini-batch steps are not a relabelled full batch: coefficients differ."""
    X, _ = subspace_data
    full = make_estimator(batch_size=None).fit(X)
    mini = make_estimator(batch_size=16).fit(X)
    assert not np.allclose(full.coef_, mini.coef_)


def test_fifo_bank_update(make_estimator, subspace_data, fitted_small):
    """bank_update='fifo' trains, and differently from the index update."""
    X, _ = subspace_data
    fifo = make_estimator(bank_update="fifo").fit(X)
    assert_fitted_attributes(fifo, n_samples=len(X), n_latent=4)
    assert not np.array_equal(fifo.coef_, fitted_small.coef_)


def test_scale_encoder_lr(make_estimator, subspace_data):
    """The lr rule divides the encoder's lr by the number of batches k.

    With mini-batches (k > 1) it changes learning; with one full batch
    (k = 1) it is a no-op and the fits are identical.
    """
    X, _ = subspace_data
    scaled = make_estimator(batch_size=16, scale_encoder_lr=True).fit(X)
    unscaled = make_estimator(batch_size=16, scale_encoder_lr=False).fit(X)
    assert not np.allclose(scaled.embedding_, unscaled.embedding_)
    assert not np.allclose(scaled.coef_, unscaled.coef_)

    scaled = make_estimator(batch_size=None, scale_encoder_lr=True).fit(X)
    unscaled = make_estimator(batch_size=None, scale_encoder_lr=False).fit(X)
    assert_array_equal(scaled.coef_, unscaled.coef_)


@pytest.mark.parametrize("affinity", ["dsc", "symmetric"])
def test_affinity_routes(make_estimator, subspace_data, affinity):
    """affinity_matrix_ is the chosen post-processing of the thresholded coef_."""
    X, _ = subspace_data
    model = make_estimator(affinity=affinity, threshold=0.5).fit(X)
    kept = threshold_coefficients(model.coef_, 0.5)
    if affinity == "symmetric":
        expected = symmetric_affinity(kept)
    else:
        expected = dsc_affinity(kept, model.n_clusters, model.subspace_dim,
                                model.affinity_power)
    assert_allclose(model.affinity_matrix_, expected, rtol=1e-10, atol=1e-12)


def test_input_scale_is_exact(make_estimator, subspace_data):
    """Inputs are divided by their peak: scaling X by a power of two changes nothing,
    even far beyond float32's range."""
    X, _ = subspace_data
    X = X.astype(np.float64)
    base = make_estimator().fit(X)
    huge = make_estimator().fit(X * 2.0 ** 200)
    assert huge.input_scale_ == pytest.approx(np.abs(X).max() * 2.0 ** 200)
    assert_array_equal(huge.coef_, base.coef_)
    assert_array_equal(huge.predict(X * 2.0 ** 200), base.predict(X))


# -- accuracy -----------------------------------------------------------------

@pytest.mark.parametrize("batch_size", [None, 32])
def test_accuracy_on_easy_subspaces(easy_data, accurate_params, batch_size):
    """Three noiseless planes in R^20 are clustered (nearly) perfectly.

    The configuration reached ACC >= 0.98 for 32 of 32 (data seed, model seed)
    pairs in full batch and >= 0.88 (31 of 32 >= 0.9) with batch_size=32.
    """
    X, y = easy_data
    model = MiniBatchDeepSubspaceClustering(**{**accurate_params, "batch_size": batch_size})
    assert clustering_accuracy(y, model.fit(X).labels_) >= 0.9


# -- prediction ---------------------------------------------------------------

def test_predict_on_training_rows_agrees_with_labels(fitted_accurate, easy_data):
    """A well-fitted model predicts the training rows into their own clusters."""
    X, y = easy_data
    predicted = fitted_accurate.predict(X)
    assert predicted.shape == (len(X),) and predicted.dtype == np.int64
    assert np.mean(predicted == fitted_accurate.labels_) >= 0.9


def test_predict_generalises_to_new_samples(fitted_accurate, easy_data):
    """New points on the training planes land in the clusters of their plane."""
    X, y = easy_data
    rng = np.random.RandomState(1)
    # Random combinations of two training points of a plane lie on that plane.
    X_new, y_new = [], []
    for k in range(3):
        members = X[y == k]
        for _ in range(10):
            a, b = members[rng.choice(len(members), 2, replace=False)]
            point = rng.standard_normal() * a + rng.standard_normal() * b
            X_new.append(point / np.linalg.norm(point))
            y_new.append(k)
    predicted = fitted_accurate.predict(np.array(X_new))
    # Compared with the training clusters, not only with the classes.
    train_to_class = {k: np.bincount(y[fitted_accurate.labels_ == k]).argmax()
                      for k in np.unique(fitted_accurate.labels_)}
    assert np.mean([train_to_class[p] == t for p, t in zip(predicted, y_new)]) >= 0.9


def test_predict_rows_are_independent(fitted_small, subspace_data):
    """A row's prediction depends on that row alone, not on the rest of the call."""
    X, _ = subspace_data
    together = fitted_small.predict(X)
    alone = np.array([fitted_small.predict(X[i:i + 1])[0] for i in range(len(X))])
    assert_array_equal(alone, together)
    perm = np.random.RandomState(0).permutation(len(X))
    assert_array_equal(fitted_small.predict(X[perm]), together[perm])
    assert_allclose(fitted_small.encode(X[perm]), fitted_small.encode(X)[perm], rtol=1e-6)


def test_predict_does_not_refit(fitted_small, subspace_data):
    """predict and encode leave the fitted state untouched."""
    X, _ = subspace_data
    coef, labels = fitted_small.coef_.copy(), fitted_small.labels_.copy()
    weights = [p.detach().clone() for p in fitted_small.network_.parameters()]
    fitted_small.predict(X[::-1] * 3)
    assert_array_equal(fitted_small.coef_, coef)
    assert_array_equal(fitted_small.labels_, labels)
    for before, after in zip(weights, fitted_small.network_.parameters()):
        assert torch.equal(before, after)


def test_encode_matches_embedding(fitted_small, subspace_data):
    """encode(X_train) gives the stored training codes embedding_."""
    X, _ = subspace_data
    assert_allclose(fitted_small.encode(X), fitted_small.embedding_, rtol=1e-6, atol=1e-7)


# -- scikit-learn integration -------------------------------------------------

def test_pipeline_fit_predict_and_predict(make_estimator, subspace_data):
    """In a Pipeline the scaler's output is what the clusterer sees, in fit and predict."""
    X, _ = subspace_data
    pipe = Pipeline([("scale", MinMaxScaler()), ("dsc", make_estimator())])
    labels = pipe.fit_predict(X)
    assert_array_equal(labels, pipe["dsc"].labels_)

    X_scaled = MinMaxScaler().fit_transform(X)
    direct = make_estimator().fit(X_scaled)
    assert_array_equal(labels, direct.labels_)
    assert_array_equal(pipe.predict(X), direct.predict(X_scaled))


def test_grid_search_with_accuracy_scorer(make_estimator, subspace_data):
    """GridSearchCV over two parameters, scored by clustering accuracy."""
    X, y = subspace_data
    grid = {"lambda_coef": [0.5, 1.0], "threshold": [0.1, 1.0]}
    search = GridSearchCV(make_estimator(n_epochs=3, n_pretrain_epochs=3), grid,
                          scoring=accuracy_scorer, cv=KFold(2, shuffle=True, random_state=0),
                          error_score="raise")
    search.fit(X, y)
    scores = search.cv_results_["mean_test_score"]
    assert len(scores) == 4
    assert np.all((scores >= 1 / 3 - 1e-12) & (scores <= 1))  # 3 balanced classes
    assert search.best_params_ in search.cv_results_["params"]
    assert search.best_estimator_.labels_.shape == (len(X),)
    assert search.predict(X).shape == (len(X),)


def test_grid_search_label_free(make_estimator, subspace_data):
    """GridSearchCV without labels, scored by the silhouette of the latent codes."""
    X, _ = subspace_data
    grid = {"lambda_self": [0.5, 1.0], "affinity": ["dsc", "symmetric"]}
    search = GridSearchCV(make_estimator(n_epochs=3, n_pretrain_epochs=3), grid,
                          scoring=embedding_silhouette_scorer, cv=2, error_score="raise")
    search.fit(X)
    scores = search.cv_results_["mean_test_score"]
    assert len(scores) == 4
    assert np.all(np.isfinite(scores)) and np.all((scores >= -1) & (scores <= 1))
    assert search.best_params_ in search.cv_results_["params"]


def test_get_set_params_and_clone(make_estimator, fitted_small):
    """Parameters are exactly the __init__ arguments; clone copies them, not the fit."""
    init_names = set(inspect.signature(MiniBatchDeepSubspaceClustering).parameters)
    params = fitted_small.get_params()
    assert set(params) == init_names
    assert params["hidden_units"] == (16, 4) and params["random_state"] == 0

    est = make_estimator()
    assert est.set_params(threshold=0.5, affinity="symmetric") is est
    assert est.get_params()["threshold"] == 0.5 and est.affinity == "symmetric"
    with pytest.raises(ValueError, match="foo"):
        est.set_params(foo=1)

    copy = clone(fitted_small)
    assert copy.get_params() == params
    assert not hasattr(copy, "labels_") and not hasattr(copy, "network_")
    assert hasattr(fitted_small, "labels_")


def test_fit_does_not_change_params(make_estimator, subspace_data):
    """fit stores fitted state in trailing-underscore attributes only."""
    X, _ = subspace_data
    est = make_estimator(hidden_units=[16, 4], image_shape=None)
    before = est.get_params()
    est.fit(X)
    assert est.get_params() == before
    assert est.hidden_units == [16, 4]


# -- persistence --------------------------------------------------------------

def _assert_same_model(loaded, original, X):
    assert_array_equal(loaded.predict(X), original.predict(X))
    assert_array_equal(loaded.encode(X), original.encode(X))
    assert_array_equal(loaded.labels_, original.labels_)
    assert_array_equal(loaded.coef_, original.coef_)
    assert loaded.get_params() == original.get_params()
    assert loaded.device_ == torch.device("cpu") and not loaded.network_.training


def test_pickle_round_trip(fitted_small, subspace_data):
    """A pickled model predicts and encodes exactly like the original."""
    X, _ = subspace_data
    loaded = pickle.loads(pickle.dumps(fitted_small))
    assert loaded is not fitted_small
    _assert_same_model(loaded, fitted_small, X)


def test_joblib_round_trip(fitted_small, subspace_data, tmp_path):
    """A model saved with joblib predicts and encodes exactly like the original."""
    X, _ = subspace_data
    path = tmp_path / "model.joblib"
    joblib.dump(fitted_small, path)
    _assert_same_model(joblib.load(path), fitted_small, X)


def test_unfitted_pickle_round_trip(make_estimator):
    """An unfitted estimator also pickles, keeping its parameters."""
    est = make_estimator(image_shape=(2, 5))
    loaded = pickle.loads(pickle.dumps(est))
    assert loaded.get_params() == est.get_params()


# -- collapsed representations ---------------------------------------------------


class _DeadEncoderClustering(MiniBatchDeepSubspaceClustering):
    """Builds networks whose codes are all alike for the first ``n_dead`` tries."""

    def __init__(self, n_clusters=8, *, n_dead=0, **params):
        super().__init__(n_clusters, **params)
        self.n_dead = n_dead

    def _build_network(self, input_shape):
        network = super()._build_network(input_shape)
        self.n_built_ = getattr(self, "n_built_", 0) + 1
        if self.n_built_ <= self.n_dead:
            with torch.no_grad():  # a huge bias swamps the input: codes are all alike
                network.encoder[-1].bias.fill_(-1e6)
        return network


@pytest.mark.parametrize("n_dead", [1, 2])
def test_collapsed_initialisation_is_replaced(subspace_data, n_dead):
    """Dead codes after pretraining start a new initialisation, logged in history_."""
    X, _ = subspace_data
    params = dict(hidden_units=(16, 4), n_epochs=3, n_pretrain_epochs=2, batch_size=32,
                  device="cpu", random_state=0)
    model = _DeadEncoderClustering(3, n_dead=n_dead, **params).fit(X)
    restarts = [h for h in model.history_ if h["phase"] == "restart"]
    assert [h["attempt"] for h in restarts] == list(range(1, n_dead + 1))
    assert "latent code" in restarts[0]["reason"]
    assert model.n_built_ == n_dead + 1
    assert np.any(model.embedding_ != 0)
    assert len([h for h in model.history_ if h["phase"] == "pretrain"]) == 2 * (n_dead + 1)


def test_persistent_collapse_warns(subspace_data):
    """When every initialisation collapses, fit warns and says what to change."""
    X, _ = subspace_data
    model = _DeadEncoderClustering(3, n_dead=10, hidden_units=(16, 4), n_epochs=2,
                                   n_pretrain_epochs=1, device="cpu", random_state=0)
    with pytest.warns(ConvergenceWarning, match="hidden_channels / hidden_units"):
        model.fit(X)
    assert model.n_built_ == 3
    assert model.labels_.shape == (len(X),)


def test_constant_decoder_is_detected():
    """A decoder that ignores its input is reported even when codes look fine."""
    model = MiniBatchDeepSubspaceClustering(3, hidden_units=(8, 4))
    network = MLPAutoencoder(6, (8, 4))
    codes = torch.randn(20, 4)
    assert model._representation_problem(network, codes) is None
    with torch.no_grad():
        network.decoder[-1].weight.zero_()
    assert "same output" in model._representation_problem(network, codes)


def test_degenerate_codes():
    """All-zero rows and identical rows are degenerate; ordinary codes are not."""
    codes = torch.randn(50, 4)
    assert degenerate_codes(codes) is None
    zeroed = codes.clone()
    zeroed[:30] = 0
    assert "60% of the samples" in degenerate_codes(zeroed)
    assert "same latent code" in degenerate_codes(torch.ones(50, 4))
    assert degenerate_codes(torch.zeros(50, 4)) is not None
