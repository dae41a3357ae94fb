"""Dense ``predict`` forms no ``n_train x n_train`` matrix, and keeps the closed-form labels."""

import numpy as np
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

import skdsc._modes as modes_module
from skdsc._modes import DenseMode, _conjugate_gradient_ridge, _JacobiPreconditioner
from skdsc.datasets import make_subspaces
from skdsc.nn.self_expression import floored_penalty

from conftest import small_estimator


class NoSquareMatrices(TorchDispatchMode):
    """Fails on any tensor an operation makes that is ``n x n`` (or larger, without ``d``).

    Every ATen operation passes through the mode, so allocations inside
    ``torch.linalg`` or a matrix product are seen as well as explicit ones.
    ``(m, n)`` coefficient blocks with ``m < n`` and anything shaped like the
    bank ``(n, d)`` are allowed.
    """

    def __init__(self, n_train, n_latent):
        super().__init__()
        self.n_train, self.n_latent = n_train, n_latent
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for tensor in tree_flatten(out)[0]:
            if not isinstance(tensor, torch.Tensor):
                continue
            shape = tuple(tensor.shape)
            square = shape.count(self.n_train) >= 2
            large = tensor.numel() >= self.n_train ** 2 and self.n_latent not in shape
            if square or large:
                raise AssertionError(f"{func} made a tensor of shape {shape}")
            if self.n_latent not in shape:
                self.largest = max(self.largest, tensor.numel())
        return out


def closed_form_labels(codes, embedding, labels, n_clusters, penalty):
    """The former prediction: an explicit ``n x n`` solve of the ridge problem."""
    bank = torch.as_tensor(embedding, dtype=torch.float64)
    codes = torch.as_tensor(codes, dtype=torch.float64)
    penalty = floored_penalty(bank, penalty)
    gram = bank @ bank.T + penalty * torch.eye(len(bank), dtype=torch.float64)
    coefficients = torch.linalg.solve(gram, bank @ codes.T).T
    residuals = []
    for k in range(n_clusters):
        idx = np.flatnonzero(labels == k)
        residuals.append((codes - coefficients[:, idx] @ bank[idx]).pow(2).sum(1))
    return torch.stack(residuals, 1).argmin(1).numpy()


@pytest.fixture(scope="module")
def wide_codes():
    """40 training codes in R^100 on 4 planes (d > n), their labels and 25 queries."""
    X, y = make_subspaces(n_clusters=4, n_samples_per_cluster=10, n_features=100,
                          subspace_dim=2, noise=0.05, random_state=0)
    queries, _ = make_subspaces(n_clusters=4, n_samples_per_cluster=10, n_features=100,
                                subspace_dim=2, noise=0.3, random_state=0)
    rng = np.random.default_rng(0)
    return X, y, queries[rng.permutation(40)[:25]]


def test_detector_catches_an_n_by_n_matrix():
    bank = torch.randn(40, 100, dtype=torch.float64)
    with pytest.raises(AssertionError, match="shape"):
        with NoSquareMatrices(40, 100):
            torch.linalg.inv(bank @ bank.T + torch.eye(40, dtype=torch.float64))


@pytest.mark.parametrize("penalty", [1.0, 1e-3, 0.0])
def test_wide_codes_predict_without_n_by_n_and_as_the_closed_form(wide_codes, penalty):
    X, y, queries = wide_codes
    codes = torch.as_tensor(queries)
    with NoSquareMatrices(len(X), X.shape[1]) as detector:
        predicted = DenseMode().predict(codes, X, y, 4, penalty).numpy()
    assert detector.largest < len(X) ** 2
    expected = closed_form_labels(queries, X, y, 4, penalty)
    np.testing.assert_array_equal(predicted, expected)
    # A noisy query is not trivially in its own plane: the labels are not all
    # the same and the test compares real decisions.
    assert len(np.unique(predicted)) > 1


def test_narrow_codes_predict_without_n_by_n(wide_codes):
    """With d <= n the d x d system is solved; nothing n x n there either."""
    X, y, queries = wide_codes
    narrow, query_narrow = X[:, :30], queries[:, :30]
    with NoSquareMatrices(len(X), 30):
        predicted = DenseMode().predict(torch.as_tensor(query_narrow), narrow, y, 4,
                                        0.1).numpy()
    np.testing.assert_array_equal(predicted,
                                  closed_form_labels(query_narrow, narrow, y, 4, 0.1))


def test_conjugate_gradients_match_the_direct_solve(wide_codes):
    X, _, queries = wide_codes
    bank = torch.as_tensor(X, dtype=torch.float64)
    queries = torch.as_tensor(queries, dtype=torch.float64)
    for penalty in (10.0, 1e-2, floored_penalty(bank, 0.0)):
        direct = torch.linalg.solve(
            bank @ bank.T + penalty * torch.eye(len(bank), dtype=torch.float64),
            bank @ queries.T).T
        solved = _conjugate_gradient_ridge(bank, penalty, queries,
                                           _JacobiPreconditioner(bank, penalty))
        torch.testing.assert_close(solved, direct, rtol=1e-7,
                                   atol=1e-9 * float(direct.abs().max()))


def test_wide_projection_is_a_matrix_free_solver(monkeypatch, wide_codes):
    """``_ridge_projection`` returns a function of the queries; no (d, n) matrix is kept."""
    X, _, queries = wide_codes
    bank = torch.as_tensor(X, dtype=torch.float64)
    calls = []
    original = modes_module._conjugate_gradient_ridge

    def spy(*args, **kwargs):
        calls.append(args[2].shape)
        return original(*args, **kwargs)

    monkeypatch.setattr(modes_module, "_conjugate_gradient_ridge", spy)
    projection = modes_module._ridge_projection(bank, 1.0)
    assert calls == []
    assert projection(torch.as_tensor(queries, dtype=torch.float64)).shape == (25, 40)
    assert calls == [(25, 100)]


def test_fitted_wide_model_predicts_as_the_closed_form(subspace_data):
    """End to end: an autoencoder whose codes (80) outnumber its 60 training samples."""
    X, _ = subspace_data
    model = small_estimator(hidden_units=(16, 80), n_epochs=2, n_pretrain_epochs=2).fit(X)
    assert model.embedding_.shape == (60, 80)
    X_new = X[::2] + 0.05 * np.random.default_rng(0).standard_normal(X[::2].shape)
    with NoSquareMatrices(60, 80):
        predicted = model.predict(X_new)
    penalty = model._ridge_penalty(torch.as_tensor(model.embedding_))
    expected = closed_form_labels(model.encode(X_new), model.embedding_, model.labels_,
                                  model.n_clusters, penalty)
    np.testing.assert_array_equal(predicted, expected)
    np.testing.assert_array_equal(model.predict(X), closed_form_labels(
        model.encode(X), model.embedding_, model.labels_, model.n_clusters, penalty))
